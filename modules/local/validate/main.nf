process VALIDATE {
    tag "${meta.id}"
    label 'process_low'

    conda "${moduleDir}/environment.yml"

    input:
    // input: an .h5ad with raw counts, or a samplesheet CSV whose `path` column names the
    // files staged as `samples` (INPUT_CHECK rewrites it to the staged names)
    tuple val(meta), path(input), path(samples, stageAs: 'samples/?/*')

    output:
    tuple val(meta), path('validate/validated.h5ad')  , emit: h5ad
    tuple val(meta), path('validate/validation.json') , emit: report
    tuple val("${task.process}"), val('desweep'), eval('desweep --version')                                                                , emit: versions_desweep, topic: versions
    tuple val("${task.process}"), val('anndata'), eval("python3 -c 'from importlib.metadata import version; print(version(\"anndata\"))'") , emit: versions_anndata, topic: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    """
    desweep-validate \\
        --input ${input} \\
        ${args} \\
        --outdir validate
    """

    stub:
    """
    mkdir -p validate
    touch validate/validated.h5ad
    echo '{}' > validate/validation.json
    """
}
