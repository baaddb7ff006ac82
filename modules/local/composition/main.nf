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
    path 'versions.yml'                                          , emit: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    """
    desweep-composition \\
        --input ${h5ad} \\
        ${args} \\
        --outdir composition

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        desweep: \$(python3 -c "from importlib.metadata import version; print(version('desweep'))")
    END_VERSIONS
    """

    stub:
    """
    mkdir -p composition
    touch composition/cluster_batch_counts.csv
    touch composition/clusters.csv
    touch composition/comparisons.csv

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        desweep: \$(python3 -c "from importlib.metadata import version; print(version('desweep'))")
    END_VERSIONS
    """
}
