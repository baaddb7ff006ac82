process NORMALIZE {
    tag "${meta.id}"
    label 'process_medium'
    label 'process_gpu'

    conda "${moduleDir}/environment.yml"

    input:
    // tables: every DE task's tables, staged together as tables/<combination_id>.csv
    tuple val(meta), path(h5ad), path(model), path(plan), path(tables, stageAs: 'tables/*')

    output:
    tuple val(meta), path('normalized/normalized.h5ad')         , emit: h5ad
    tuple val(meta), path('normalized/cluster_batch_means.csv') , emit: means
    tuple val(meta), path('normalized/layer_genes.csv')         , emit: layer_genes
    tuple val("${task.process}"), val('desweep'), eval('desweep --version')                                                                      , emit: versions_desweep, topic: versions
    tuple val("${task.process}"), val('scvi-tools'), eval("python3 -c 'from importlib.metadata import version; print(version(\"scvi-tools\"))'") , emit: versions_scvi_tools, topic: versions
    tuple val("${task.process}"), val('torch'), eval("python3 -c 'from importlib.metadata import version; print(version(\"torch\"))'")           , emit: versions_torch, topic: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    def device = task.ext.use_gpu ? '--accelerator gpu' : '--accelerator cpu'
    """
    desweep-normalize \\
        --input ${h5ad} \\
        --model ${model} \\
        --plan ${plan} \\
        --tables tables \\
        ${device} \\
        --threads ${task.cpus} \\
        ${args} \\
        --outdir normalized
    """

    stub:
    """
    mkdir -p normalized
    touch normalized/normalized.h5ad
    touch normalized/cluster_batch_means.csv
    touch normalized/layer_genes.csv
    """
}
