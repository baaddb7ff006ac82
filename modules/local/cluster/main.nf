process CLUSTER {
    tag "${meta.id}"
    label 'process_low'

    conda "${moduleDir}/environment.yml"

    input:
    tuple val(meta), path(h5ad)

    output:
    tuple val(meta), path('cluster/clustered.h5ad')     , emit: h5ad
    tuple val(meta), path('cluster/cluster_metrics.csv'), emit: metrics
    tuple val("${task.process}"), val('desweep'), eval('desweep --version')                                                                    , emit: versions_desweep, topic: versions
    tuple val("${task.process}"), val('scanpy'), eval("python3 -c 'from importlib.metadata import version; print(version(\"scanpy\"))'")       , emit: versions_scanpy, topic: versions
    tuple val("${task.process}"), val('leidenalg'), eval("python3 -c 'from importlib.metadata import version; print(version(\"leidenalg\"))'") , emit: versions_leidenalg, topic: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    """
    desweep-cluster \\
        --input ${h5ad} \\
        ${args} \\
        --outdir cluster
    """

    stub:
    """
    mkdir -p cluster
    touch cluster/clustered.h5ad
    touch cluster/cluster_metrics.csv
    """
}
