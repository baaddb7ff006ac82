process SIMULATE {
    tag "${meta.id}"
    label 'process_low'

    conda "${moduleDir}/environment.yml"

    input:
    val(meta)

    output:
    tuple val(meta), path("${meta.id}.h5ad"), emit: h5ad
    path 'versions.yml'                     , emit: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    """
    desweep-simulate \\
        ${args} \\
        --output ${meta.id}.h5ad

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        desweep: \$(python3 -c "from importlib.metadata import version; print(version('desweep'))")
    END_VERSIONS
    """

    stub:
    """
    touch ${meta.id}.h5ad

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        desweep: \$(python3 -c "from importlib.metadata import version; print(version('desweep'))")
    END_VERSIONS
    """
}
