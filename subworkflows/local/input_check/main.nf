/*
    INPUT_CHECK: the pipeline input as one [ meta, input, samples ] tuple for VALIDATE.

    - an .h5ad:        [ [id: <name>], data.h5ad, [] ]
    - a samplesheet:   [ [id: <name>], <sheet with staged paths>.csv, [ file1, file2, ... ] ]
      Each row's file (relative paths are relative to the sheet) is checked to exist and
      staged by VALIDATE as samples/<row>/<name> (so containers and cloud executors see
      them); the sheet handed to VALIDATE names them by absolute path with a local work dir
      and by their staged name with a cloud one. The rows are checked at launch, before
      any task is submitted, against assets/schema_input.json (the schema `desweep
      validate` applies again in the task).
    - simulate_cells:  SIMULATE makes the counts (-profile test_full)
    meta.input_bytes is the size of the counts (every file, in folders too): the steps that read
    counts ask for memory in proportion (conf/memory.config).
*/

include { SIMULATE   } from '../../../modules/local/simulate/main'
include { checkValue } from '../utils_desweep_pipeline'

workflow INPUT_CHECK {

    take:
    input           // string: path to an .h5ad or a samplesheet CSV, or null with simulate_cells
    simulate_cells  // integer: cells to simulate instead of reading input, or null
    schema          // path: assets/schema_input.json, the samplesheet's JSON schema

    main:
    ch_versions = Channel.empty()
    if (simulate_cells) {
        SIMULATE([id: 'simulated'])
        ch_input    = SIMULATE.out.h5ad.map { meta, h5ad -> [ meta + [ input_bytes: inputBytes([ h5ad ]) ], h5ad, [] ] }
        ch_versions = SIMULATE.out.versions_desweep
    } else {
        def input_file = file(input, checkIfExists: true)
        if (input_file.name.toLowerCase().endsWith('.csv')) {
            ch_input = Channel.of(stagedSamplesheet(input_file, schema))
                .map { meta, sheet, files -> [ meta + [ input_bytes: inputBytes(files) ], sheet, files ] }
        } else {
            ch_input = Channel.of([ [id: input_file.baseName, input_bytes: inputBytes([ input_file ])], input_file, [] ])
        }
    }

    emit:
    input    = ch_input     // channel: [ val(meta), path(input), path(samples) ]
    versions = ch_versions  // channel: [ process, tool, version ] (SIMULATE's, when it ran)
}

/*
    Read a samplesheet (sample,batch,path), check that each file exists, and return
    [ meta, sheet, files ] where `sheet` is a copy whose paths are the staged names
    samples/<i>/<name>. The copy lives in the work dir under a name derived from its
    content, and is written only once, so -resume finds VALIDATE's inputs unchanged.
*/
def stagedSamplesheet(sheet, schema) {
    def rows = sheet.splitCsv(header: true, strip: true)
    if (!rows) {
        error("${sheet}: samplesheet: has no rows")
    }
    def missing = ['sample', 'batch', 'path'].findAll { column -> !rows[0].containsKey(column) }
    if (missing) {
        error("${sheet}: samplesheet: missing column(s) ${missing.join(', ')} (need sample,batch,path)")
    }
    def problems = samplesheetProblems(rows, new groovy.json.JsonSlurper().parse(file(schema).toFile()))
    if (problems) {
        error(problems.collect { problem -> "${sheet}: ${problem}" }.join('\n'))
    }
    def files = rows.collect { row ->
        def where = row.path ==~ /^[a-zA-Z][a-zA-Z0-9+.-]*:\/\/.*/ || row.path.startsWith('/') ? row.path : "${sheet.parent}/${row.path}"
        file(where)
    }
    def absent = files.withIndex().findAll { found, i -> !found.exists() }
        .collect { found, i -> "${sheet}: row ${i + 2} column 'path': ${rows[i].path}: no such file (${found})" }
    if (absent) {
        error(absent.join('\n'))
    }
    def lines = ['sample,batch,path']
    rows.eachWithIndex { row, i ->
        // With a local work dir, tasks see the sheet as a symlink, which `desweep validate`
        // follows before resolving relative paths: name local files by absolute path (Nextflow
        // mounts input paths into containers). With a cloud work dir (AWS/Google Batch) every
        // input is copied into the task, next to the sheet: name the staged copies.
        def local = workflow.workDir.scheme == 'file' && files[i].scheme == 'file'
        def staged_path = local ? files[i].toAbsolutePath().toString() : "samples/${i + 1}/${files[i].name}"
        lines << [ row.sample, row.batch, staged_path ].collect { csvField(it) }.join(',')
    }
    def text = lines.join('\n') + '\n'
    def staged = file("${workflow.workDir}/desweep-input/${text.md5()}/${sheet.name}")
    if (!staged.exists()) {
        staged.parent.mkdirs()
        staged.text = text
    }
    return [ [id: sheet.baseName], staged, files ]
}

/*
    One line per row and column that break the samplesheet schema (the properties' type,
    pattern and minLength, with the schema's errorMessage; `required`; `uniqueEntries`), as
    `row N column 'name': problem` with N the line of the sheet, as `desweep validate` words it.
*/
def samplesheetProblems(List rows, Map schema) {
    def properties = schema.items.properties
    def problems = []
    rows.eachWithIndex { row, i ->
        def line = i + 2
        schema.items.required.findAll { column -> row[column] == null }
            .each { column -> problems << "row ${line} column '${column}': is required" }
        properties.each { column, definition ->
            def value = row[column]
            if (value == null) {
                return
            }
            def problem = checkValue(value, definition)
            if (!problem && definition.minLength != null && value.size() < definition.minLength) {
                problem = "must have at least ${definition.minLength} characters"
            }
            if (problem) {
                problems << "row ${line} column '${column}': ${definition.errorMessage ?: problem}"
            }
        }
    }
    (schema.uniqueEntries ?: []).each { column ->
        def seen = [:]
        rows.eachWithIndex { row, i ->
            def value = row[column]
            if (seen.containsKey(value)) {
                problems << "row ${i + 2} column '${column}': '${value}' is used more than once (also row ${seen[value]})"
            } else {
                seen[value] = i + 2
            }
        }
    }
    return problems
}

// The size in bytes of the given files, a folder counting every file in it (a 10x matrix folder)
def inputBytes(paths) {
    return paths.sum(0L) { path -> path.isDirectory() ? path.listFiles().toList().sum(0L) { inner -> inputBytes([ inner ]) } : path.size() }
}

// A CSV field, quoted when it holds a comma, a quote or a line break
def csvField(value) {
    def text = value.toString()
    return text ==~ /(?s).*[,"\n\r].*/ ? '"' + text.replace('"', '""') + '"' : text
}
