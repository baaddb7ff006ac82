/*
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
    desweep: start and end of a run
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
    PIPELINE_INITIALISATION  --help / --version, checks params against nextflow_schema.json
                             as the nf-schema plugin does (no plugin needed, so runs stay
                             offline; see checkParameters), and writes
                             OUTDIR/pipeline_info/params.yaml
    PIPELINE_COMPLETION      the closing message
    softwareVersionsToYaml() collates every task's versions (the `versions` topic) into
                             OUTDIR/pipeline_info/software_versions.yml (used by DESWEEP,
                             before the report)
----------------------------------------------------------------------------------------
*/

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
    def checked = checkParameters(parameters, definitions)
    if (checked.unknown) {
        def names = checked.unknown.collect { name -> "--${name}" }.join(', ')
        if (parameters.fail_unrecognised_params) {
            checked.errors << "${names}: unknown parameter(s) (see --help)".toString()
        } else {
            log.warn("Parameters this pipeline does not know, ignored: ${names} (--fail_unrecognised_params stops on them)")
        }
    }
    if (checked.errors) {
        error("Invalid parameters:\n  " + checked.errors.join('\n  ') + "\nSee --help or docs/usage.md.")
    }
    log.info(summaryMessage(parameters, definitions))
    if (workflow.profile.tokenize(',').contains('gpu')) {
        log.warn(gpuWarning())
    }
    def engines = workflow.profile.tokenize(',').intersect(['docker', 'podman', 'singularity', 'apptainer', 'awsbatch', 'google'])
    if (engines && parameters.container_registry == 'ghcr.io/desweep') {
        log.warn("desweep's images are not published yet: -profile ${engines.join(',')} pulls ${parameters.container_registry}/desweep:${workflow.manifest.version}, " +
            'which exists only where `make images` built it; elsewhere push them to your registry and give --container_registry (docs/usage.md, "Containers")')
    }

    // OUTDIR/pipeline_info/params.yaml: the resolved parameters, as `desweep run` records them
    // (not the launch's own switches, nor what institutional profiles set and desweep does not use)
    def not_recorded = ['help', 'version', 'trace_report_suffix', 'validate_params', 'fail_unrecognised_params',
                        'config_profile_contact', 'config_profile_url', 'igenomes_base']
    def recorded = parameters.findAll { k, v -> definitions.containsKey(k) && !(k in not_recorded) }
        .collectEntries { k, v -> [k, v instanceof CharSequence || v instanceof java.nio.file.Path ? v.toString() : v] }
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
    def json = new groovy.json.JsonSlurper().parse(file(schema).toFile())
    def definitions = [:]
    json['$defs'].each { group, block ->
        block.properties.each { name, definition -> definitions[name] = [group: block.title ?: group, definition: definition] }
    }
    return definitions
}

// [errors: one message per wrong value or missing required param, unknown: names the schema lacks].
// As the nf-schema plugin does by default: unknown names are returned for a warning (institutional
// profiles set their own params), wrong values of known ones are errors; --validate_params false
// checks nothing but the required params. The names a profile lists in the params
// schema_ignore_params or validationSchemaIgnoreParams (nf-validation's, comma-separated) are not
// reported; nf-schema's `validation.ignoreParams` is config, which a pipeline cannot read through a
// public API, so it is not. Unlike nf-schema, params from a config or -params-file are checked like
// the command line's.
def checkParameters(parameters, definitions) {
    def errors = []
    def unknown = []
    // what nf-core/configs profiles set and nf-core's template no longer declares (resource caps are
    // process.resourceLimits now), and the lists of names to ignore
    def lists = ['schema_ignore_params', 'validationSchemaIgnoreParams']
    def ignored = ['max_cpus', 'max_memory', 'max_time'] + lists + lists.collectMany { list -> (parameters[list] ?: '').toString().tokenize(',').collect { name -> name.trim() } }
    if (parameters.validate_params != false) {
        parameters.each { name, value ->
            if (definitions.containsKey(name)) {
                def problem = checkValue(value, definitions[name].definition)
                if (problem) {
                    errors << "--${name} ${value}: ${problem}".toString()
                }
            } else if (!(name in ignored) && !definitions.keySet().any { known -> camelCase(known) == name || known.replace('_', '-') == name }) {
                unknown << name
            }
        }
    }
    if (!parameters.outdir) {
        errors << '--outdir: required'
    }
    if (!parameters.input && !parameters.simulate_cells) {
        errors << '--input: required (an .h5ad with raw counts or a samplesheet CSV), unless --simulate_cells is given'
    }
    return [errors: errors, unknown: unknown]
}

// Nextflow also stores --foo-bar as fooBar: the spellings of a known name it may give
def camelCase(String name) {
    return name.replaceAll(/[_-]([a-z])/) { all, c -> c.toUpperCase() }
}

// does value have the JSON schema type?
def hasType(value, String type) {
    def checks = [
        integer: { v -> v instanceof Integer || v instanceof Long },
        number:  { v -> v instanceof Number },
        boolean: { v -> v instanceof Boolean },
        string:  { v -> v instanceof CharSequence },
        'null':  { v -> false },
    ]
    return checks.containsKey(type) ? checks[type](value) : true
}

def checkValue(value, definition) {
    if (value == null) {
        return null
    }
    def types = definition.type instanceof List ? definition.type : [definition.type]
    if (!types.any { type -> hasType(value, type) }) {
        return "must be ${types.findAll { type -> type != 'null' }.join(' or ')}"
    }
    if (definition['enum'] && !(value in definition['enum'])) {
        return "must be one of ${definition['enum'].join(', ')}"
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
    def lines = ["${workflow.manifest.name} ${workflow.manifest.version}", "profile: ${workflow.profile}"]
    lines.addAll(shown.collect { name -> "  ${name.padRight(width)} : ${parameters[name]}" })
    return lines.join('\n')
}

// what -profile gpu replaces, said at launch: Nextflow gives no public way to read it and merge
def gpuWarning() {
    return [
        '-profile gpu: the GPU steps (label process_gpu: INTEGRATE, DE, NORMALIZE) ask for their GPU with',
        'their own clusterOptions (--gres=gpu:1 on SLURM), containerOptions and machineType, which replace',
        'those your -c config or institutional profile sets for every process or with another label',
        '(withLabel: process_medium). To keep yours, give them with the GPU request in a -c config:',
        "process { withLabel: process_gpu { clusterOptions = '<your options> --gres=gpu:1' } } (docs/usage.md, \"GPUs\")",
    ].join(' ')
}

def completionLog(outdir) {
    if (workflow.success) {
        log.info("desweep: done. Results in ${outdir}")
    } else {
        log.error("desweep: failed. See the error above and .nextflow.log; fix it and rerun with -resume.")
    }
}

def toYaml(Map data) {
    def options = new org.yaml.snakeyaml.DumperOptions()
    options.setDefaultFlowStyle(org.yaml.snakeyaml.DumperOptions.FlowStyle.BLOCK)
    options.setIndent(2)
    return new org.yaml.snakeyaml.Yaml(options).dump(data)
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
