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
    path 'versions.yml'                                      , emit: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    """
    desweep-baselines \\
        --adata ${h5ad} \\
        --comparisons ${comparisons} \\
        --means ${means} \\
        --threads ${task.cpus} \\
        ${args} \\
        --outdir baselines

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        desweep: \$(python3 -c "from importlib.metadata import version; print(version('desweep'))")
        scanpy: \$(python3 -c "from importlib.metadata import version; print(version('scanpy'))")
        pydeseq2: \$(python3 -c "from importlib.metadata import version; print(version('pydeseq2'))")
    END_VERSIONS
    """

    stub:
    """
    mkdir -p baselines
    touch baselines/wilcoxon.csv
    touch baselines/pseudobulk.csv
    touch baselines/baseline_patterns.csv
    touch baselines/baseline_scores.csv

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        desweep: \$(python3 -c "from importlib.metadata import version; print(version('desweep'))")
        scanpy: \$(python3 -c "from importlib.metadata import version; print(version('scanpy'))")
        pydeseq2: \$(python3 -c "from importlib.metadata import version; print(version('pydeseq2'))")
    END_VERSIONS
    """
}
