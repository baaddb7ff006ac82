process COMPOSITION {
    tag "${meta.id}"
    label 'process_single'

    conda "${moduleDir}/environment.yml"

    input:
    tuple val(meta), path(h5ad)

    output:
    tuple val(meta), path('composition/cluster_batch_counts.csv'), emit: counts
    tuple val(meta), path('composition/clusters.csv')            , emit: clusters
    tuple val(meta), path('composition/comparisons.csv')         , emit: comparisons
    tuple val("${task.process}"), val('desweep'), eval('desweep --version') , emit: versions_desweep, topic: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    """
    desweep-composition \\
        --input ${h5ad} \\
        ${args} \\
        --outdir composition
    """

    stub:
    """
    mkdir -p composition
    touch composition/cluster_batch_counts.csv
    touch composition/clusters.csv
    touch composition/comparisons.csv
    """
}
