process CLUSTER {
    tag "${meta.id}"
    label 'process_low'

    conda "${moduleDir}/environment.yml"

    input:
    tuple val(meta), path(h5ad)

    output:
    tuple val(meta), path('cluster/clustered.h5ad')     , emit: h5ad
    tuple val(meta), path('cluster/cluster_metrics.csv'), emit: metrics
    path 'versions.yml'                                 , emit: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    """
    desweep-cluster \\
        --input ${h5ad} \\
        ${args} \\
        --outdir cluster

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        desweep: \$(python3 -c "from importlib.metadata import version; print(version('desweep'))")
        scanpy: \$(python3 -c "from importlib.metadata import version; print(version('scanpy'))")
        leidenalg: \$(python3 -c "from importlib.metadata import version; print(version('leidenalg'))")
    END_VERSIONS
    """

    stub:
    """
    mkdir -p cluster
    touch cluster/clustered.h5ad
    touch cluster/cluster_metrics.csv

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        desweep: \$(python3 -c "from importlib.metadata import version; print(version('desweep'))")
        scanpy: \$(python3 -c "from importlib.metadata import version; print(version('scanpy'))")
        leidenalg: \$(python3 -c "from importlib.metadata import version; print(version('leidenalg'))")
    END_VERSIONS
    """
}
