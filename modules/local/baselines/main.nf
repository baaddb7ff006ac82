process BASELINES {
    tag "${meta.id}"
    label 'process_medium'

    conda "${moduleDir}/environment.yml"

    input:
    tuple val(meta), path(h5ad), path(comparisons), path(means)

    output:
    tuple val(meta), path('baselines/wilcoxon.csv')          , emit: wilcoxon
    tuple val(meta), path('baselines/pseudobulk.csv')        , emit: pseudobulk
    tuple val(meta), path('baselines/baseline_patterns.csv') , emit: patterns
    tuple val(meta), path('baselines/baseline_scores.csv')   , emit: scores
    tuple val("${task.process}"), val('desweep'), eval('desweep --version')                                                                  , emit: versions_desweep, topic: versions
    tuple val("${task.process}"), val('scanpy'), eval("python3 -c 'from importlib.metadata import version; print(version(\"scanpy\"))'")     , emit: versions_scanpy, topic: versions
    tuple val("${task.process}"), val('pydeseq2'), eval("python3 -c 'from importlib.metadata import version; print(version(\"pydeseq2\"))'") , emit: versions_pydeseq2, topic: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    """
    desweep-baselines \\
        --input ${h5ad} \\
        --comparisons ${comparisons} \\
        --means ${means} \\
        --threads ${task.cpus} \\
        ${args} \\
        --outdir baselines
    """

    stub:
    """
    mkdir -p baselines
    touch baselines/wilcoxon.csv
    touch baselines/pseudobulk.csv
    touch baselines/baseline_patterns.csv
    touch baselines/baseline_scores.csv
    """
}
