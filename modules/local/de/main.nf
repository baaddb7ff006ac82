process DE {
    tag "${meta.id}:${meta.sampling_keys[0]}${meta.sampling_keys.size() > 1 ? " (+${meta.sampling_keys.size() - 1})" : ''}"
    label 'process_medium'
    label 'process_gpu'

    conda "${moduleDir}/environment.yml"

    input:
    // meta.sampling_keys: the plan's sampling keys this task runs (rows of one key share
    // their posterior samples); DE_SWEEP gives one task the sweep of one model by default (params.de_split)
    tuple val(meta), path(plan), path(h5ad), path(model)

    output:
    tuple val(meta), path('de/tables/*.csv') , emit: tables
    tuple val(meta), path('de/summary/*.csv'), emit: summaries
    tuple val("${task.process}"), val('desweep'), eval('desweep --version')                                                                      , emit: versions_desweep, topic: versions
    tuple val("${task.process}"), val('scvi-tools'), eval("python3 -c 'from importlib.metadata import version; print(version(\"scvi-tools\"))'") , emit: versions_scvi_tools, topic: versions
    tuple val("${task.process}"), val('torch'), eval("python3 -c 'from importlib.metadata import version; print(version(\"torch\"))'")           , emit: versions_torch, topic: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    def device = task.ext.use_gpu ? '--accelerator gpu' : '--accelerator cpu'
    def sampling_keys = meta.sampling_keys.collect { key -> "--sampling-key '${key}'" }.join(' ')
    """
    desweep-de \\
        --plan ${plan} \\
        --input ${h5ad} \\
        --model ${model} \\
        ${sampling_keys} \\
        ${device} \\
        --threads ${task.cpus} \\
        ${args} \\
        --outdir de
    """

    stub:
    def touch_summaries = meta.sampling_keys.collect { key -> "touch 'de/summary/${key}.csv'" }.join('\n    ')
    """
    mkdir -p de/tables de/summary
    touch de/tables/${meta.sampling_keys[0]}.csv
    ${touch_summaries}
    """
}
