process SIMULATE {
    tag "${meta.id}"
    label 'process_low'

    conda "${moduleDir}/environment.yml"

    input:
    val(meta)

    output:
    tuple val(meta), path("${meta.id}.h5ad"), emit: h5ad
    tuple val("${task.process}"), val('desweep'), eval('desweep --version') , emit: versions_desweep, topic: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    """
    desweep-simulate \\
        ${args} \\
        --output ${meta.id}.h5ad
    """

    stub:
    """
    touch ${meta.id}.h5ad
    """
}
