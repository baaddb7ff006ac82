process DE_MERGE {
    tag "${meta.id}"
    label 'process_single'

    conda "${moduleDir}/environment.yml"

    input:
    // every DE task's tables and per-key summaries, staged together
    tuple val(meta), path(plan), path(tables, stageAs: 'tables/*'), path(summaries, stageAs: 'summary/*')

    output:
    tuple val(meta), path('de/summary.csv')  , emit: summary
    tuple val(meta), path('de/stability.csv'), emit: stability
    tuple val("${task.process}"), val('desweep'), eval('desweep --version') , emit: versions_desweep, topic: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    """
    desweep-de \\
        --merge \\
        --plan ${plan} \\
        --tables tables \\
        --partials summary \\
        ${args} \\
        --outdir de
    """

    stub:
    """
    mkdir -p de
    touch de/summary.csv
    touch de/stability.csv
    """
}
