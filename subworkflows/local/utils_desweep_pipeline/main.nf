/*
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
    desweep: start and end of a run
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
    PIPELINE_INITIALISATION  --help / --version, checks params against nextflow_schema.json
                             (no plugin needed, so runs stay offline), and writes
                             OUTDIR/pipeline_info/params.yaml
    PIPELINE_COMPLETION      the closing message
    softwareVersionsToYaml() collates every task's versions (the `versions` topic) into
                             OUTDIR/pipeline_info/software_versions.yml (used by DESWEEP,
                             before the report)
----------------------------------------------------------------------------------------
*/

import groovy.json.JsonSlurper
import java.nio.file.Path
import org.yaml.snakeyaml.DumperOptions
import org.yaml.snakeyaml.Yaml

workflow PIPELINE_INITIALISATION {

    take:
    parameters  // map: params
    schema      // path: nextflow_schema.json

    main:
    if (parameters.version) {
        log.info("${workflow.manifest.name} ${workflow.manifest.version}")
        System.exit(0)
    }
    def definitions = schemaParameters(schema)
    if (parameters.help) {
        log.info(helpMessage(definitions))
        System.exit(0)
    }
    def problems = checkParameters(parameters, definitions)
    if (problems) {
        error("Invalid parameters:\n  " + problems.join('\n  ') + "\nSee --help or docs/usage.md.")
    }
    log.info(summaryMessage(parameters, definitions))

    // OUTDIR/pipeline_info/params.yaml: the resolved parameters, as `desweep run` records them
    def recorded = parameters.findAll { k, v -> definitions.containsKey(k) && !(k in ['help', 'version', 'trace_report_suffix']) }
        .collectEntries { k, v -> [k, v instanceof CharSequence || v instanceof Path ? v.toString() : v] }
    ch_params_yaml = Channel.of(toYaml(new TreeMap(recorded)))
        .collectFile(name: 'params.yaml', storeDir: "${parameters.outdir}/pipeline_info")

    emit:
    params_yaml = ch_params_yaml  // channel: path(params.yaml)
}

workflow PIPELINE_COMPLETION {

    take:
    outdir  // string: params.outdir

    main:
    workflow.onComplete {
        completionLog(outdir)
    }
}

/*
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
    FUNCTIONS
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
*/

// name -> [group, definition] for every parameter of nextflow_schema.json
def schemaParameters(schema) {
    def json = new JsonSlurper().parse(file(schema).toFile())
    def definitions = [:]
    json['$defs'].each { group, block ->
        block.properties.each { name, definition -> definitions[name] = [group: block.title ?: group, definition: definition] }
    }
    return definitions
}

// One message per problem: unknown names, wrong types, values outside an enum or range
def checkParameters(parameters, definitions) {
    def problems = []
    // Nextflow also stores --foo-bar as fooBar: accept those spellings of known names
    def camel = { String name -> name.replaceAll(/[_-]([a-z])/) { all, c -> c.toUpperCase() } }
    parameters.each { name, value ->
        if (definitions.containsKey(name)) {
            def definition = definitions[name].definition
            def problem = checkValue(value, definition)
            if (problem) {
                problems << "--${name} ${value}: ${problem}"
            }
        } else if (!definitions.keySet().any { known -> camel(known) == name || known.replace('_', '-') == name }) {
            problems << "--${name}: unknown parameter (see --help)"
        }
    }
    if (!parameters.outdir) {
        problems << '--outdir: required'
    }
    if (!parameters.input && !parameters.simulate_cells) {
        problems << '--input: required (an .h5ad with raw counts or a samplesheet CSV), unless --simulate_cells is given'
    }
    return problems
}

def checkValue(value, definition) {
    if (value == null) {
        return null
    }
    def types = definition.type instanceof List ? definition.type : [definition.type]
    def ok = types.any { type ->
        switch (type) {
            case 'integer': return value instanceof Integer || value instanceof Long
            case 'number':  return value instanceof Number
            case 'boolean': return value instanceof Boolean
            case 'string':  return value instanceof CharSequence
            case 'null':    return false
            default:        return true
        }
    }
    if (!ok) {
        return "must be ${types.findAll { it != 'null' }.join(' or ')}"
    }
    if (definition.enum && !(value in definition.enum)) {
        return "must be one of ${definition.enum.join(', ')}"
    }
    if (definition.minimum != null && value instanceof Number && value < definition.minimum) {
        return "must be at least ${definition.minimum}"
    }
    if (definition.maximum != null && value instanceof Number && value > definition.maximum) {
        return "must be at most ${definition.maximum}"
    }
    if (definition.pattern && value instanceof CharSequence && !(value ==~ definition.pattern)) {
        return "must match ${definition.pattern}"
    }
    return null
}

def helpMessage(definitions) {
    def lines = [
        "${workflow.manifest.name} ${workflow.manifest.version}: ${workflow.manifest.description}",
        '',
        'Usage:',
        '    nextflow run desweep/desweep -profile docker --input data.h5ad --batch_key batch --outdir results',
        '',
    ]
    definitions.groupBy { name, entry -> entry.group }.each { group, entries ->
        lines << "${group}:"
        entries.findAll { name, entry -> !entry.definition.hidden }.each { name, entry ->
            def d = entry.definition
            def shown = d.default != null ? " [default: ${d.default}]" : ''
            lines << "    --${name.padRight(26)} ${d.description ?: ''}${shown}".toString()
        }
        lines << ''
    }
    lines << 'Profiles: docker, singularity, apptainer, podman, conda, gpu, slurm, awsbatch, google, test, test_full'
    return lines.join('\n')
}

def summaryMessage(parameters, definitions) {
    def shown = definitions.keySet().findAll { name ->
        parameters[name] != null && parameters[name] != definitions[name].definition.default && !definitions[name].definition.hidden
    }
    def width = (shown.collect { it.size() } + [10]).max()
    return (["${workflow.manifest.name} ${workflow.manifest.version}", "profile: ${workflow.profile}"]
        + shown.collect { name -> "  ${name.padRight(width)} : ${parameters[name]}" }).join('\n')
}

def completionLog(outdir) {
    if (workflow.success) {
        log.info("desweep: done. Results in ${outdir}")
    } else {
        log.error("desweep: failed. See the error above and .nextflow.log; fix it and rerun with -resume.")
    }
}

def toYaml(Map data) {
    def options = new DumperOptions()
    options.setDefaultFlowStyle(DumperOptions.FlowStyle.BLOCK)
    options.setIndent(2)
    return new Yaml(options).dump(data)
}

// channel of [ process, tool, version ] (the `versions` topic) -> channel of one YAML text keyed by process name
def softwareVersionsToYaml(ch_versions) {
    return ch_versions
        .collect(flat: false)
        .map { entries -> softwareVersions(entries) }
}

// [ "NAME:SUB:PROCESS", tool, version ] of every task -> one YAML keyed by process name
def softwareVersions(List entries) {
    def merged = new TreeMap()
    entries.each { process, tool, version ->
        def name = process.toString().tokenize(':').last()
        merged[name] = new TreeMap((merged[name] ?: [:]) + [(tool.toString()): version.toString()])
    }
    merged['Workflow'] = new TreeMap([
        desweep: workflow.manifest.version.toString(),
        Nextflow: workflow.nextflow.version.toString(),
    ])
    return toYaml(merged)
}
