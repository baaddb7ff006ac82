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

    desweep_version=\$(python3 -c "from importlib.metadata import version; print(version('desweep'))")
    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        desweep: \${desweep_version}
        scanpy: \$(python3 -c "from importlib.metadata import version; print(version('scanpy'))")
        leidenalg: \$(python3 -c "from importlib.metadata import version; print(version('leidenalg'))")
    END_VERSIONS
    """

    stub:
    """
    mkdir -p cluster
    touch cluster/clustered.h5ad
    touch cluster/cluster_metrics.csv

    desweep_version=\$(python3 -c "from importlib.metadata import version; print(version('desweep'))")
    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        desweep: \${desweep_version}
        scanpy: \$(python3 -c "from importlib.metadata import version; print(version('scanpy'))")
        leidenalg: \$(python3 -c "from importlib.metadata import version; print(version('leidenalg'))")
    END_VERSIONS
    """
}
