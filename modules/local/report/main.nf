process REPORT {
    tag "${meta.id}"
    label 'process_single'

    conda "${moduleDir}/environment.yml"

    input:
    // each step's published files, staged in the output contract's layout under results/
    tuple val(meta),
        path(validate   , stageAs: 'results/validate/*'),
        path(integrate  , stageAs: 'results/integrate/*'),
        path(cluster    , stageAs: 'results/cluster/*'),
        path(composition, stageAs: 'results/composition/*'),
        path(de         , stageAs: 'results/de/*'),
        path(de_tables  , stageAs: 'results/de/tables/*'),
        path(normalized , stageAs: 'results/normalized/*'),
        path(diagnostics, stageAs: 'results/diagnostics/*'),
        path(baselines  , stageAs: 'results/baselines/*'),
        path(replicates , stageAs: 'results/integrate/replicate*/history.csv')  // models 1, 2, ...: training curves, in model order
    path(pipeline_info, stageAs: 'results/pipeline_info/*')  // params.yaml, software_versions.yml
    path(multiqc_config)                                      // MultiQC config, or [] for desweep's

    output:
    tuple val(meta), path('multiqc/multiqc_report.html'), emit: report
    tuple val(meta), path('multiqc/multiqc_data')       , emit: data
    tuple val(meta), path('multiqc/custom_content')     , emit: custom_content
    // not on the versions topic: the report reads software_versions.yml, which waits for the topic to close
    tuple val("${task.process}"), val('desweep'), eval('desweep --version')                                                                , emit: versions_desweep
    tuple val("${task.process}"), val('multiqc'), eval("python3 -c 'from importlib.metadata import version; print(version(\"multiqc\"))'") , emit: versions_multiqc

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    def config = multiqc_config ? "--config ${multiqc_config}" : ''
    """
    desweep-report \\
        --results results \\
        ${config} \\
        ${args} \\
        --outdir multiqc
    """

    stub:
    """
    mkdir -p multiqc/multiqc_data multiqc/custom_content
    touch multiqc/multiqc_report.html
    touch multiqc/multiqc_data/multiqc.log
    touch multiqc/custom_content/section_order.yml
    """
}
