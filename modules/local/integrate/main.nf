process INTEGRATE {
    tag "${meta.id}:model${meta.model ?: 0}"
    label 'process_medium'
    label 'process_gpu'

    conda "${moduleDir}/environment.yml"

    input:
    tuple val(meta), path(h5ad)

    output:
    tuple val(meta), path('integrate/model')           , emit: model
    tuple val(meta), path('integrate/integrated.h5ad') , emit: h5ad
    tuple val(meta), path('integrate/history.csv')     , emit: history
    tuple val(meta), path('integrate/metrics.csv')     , emit: metrics
    tuple val("${task.process}"), val('desweep'), eval('desweep --version')                                                                      , emit: versions_desweep, topic: versions
    tuple val("${task.process}"), val('scvi-tools'), eval("python3 -c 'from importlib.metadata import version; print(version(\"scvi-tools\"))'") , emit: versions_scvi_tools, topic: versions
    tuple val("${task.process}"), val('torch'), eval("python3 -c 'from importlib.metadata import version; print(version(\"torch\"))'")           , emit: versions_torch, topic: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    // -profile gpu: train on the GPU and fail rather than fall back to the CPU
    def device = task.ext.use_gpu ? '--accelerator gpu --no-gpu-fallback' : '--accelerator cpu'
    """
    desweep-integrate \\
        --input ${h5ad} \\
        ${device} \\
        --threads ${task.cpus} \\
        ${args} \\
        --outdir integrate
    """

    stub:
    """
    mkdir -p integrate/model
    touch integrate/model/model.pt
    touch integrate/integrated.h5ad
    touch integrate/history.csv
    touch integrate/metrics.csv
    """
}
