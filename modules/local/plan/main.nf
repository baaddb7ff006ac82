process PLAN {
    tag "${meta.id}"
    label 'process_single'

    conda "${moduleDir}/environment.yml"

    input:
    tuple val(meta), path(comparisons), path(counts)
    path(grid)  // grid YAML, or [] for desweep's default grid

    output:
    tuple val(meta), path('de/plan.csv')        , emit: plan
    tuple val(meta), path('de/plan_skipped.csv'), emit: skipped
    tuple val("${task.process}"), val('desweep'), eval('desweep --version') , emit: versions_desweep, topic: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    def grid_arg = grid ? "--grid ${grid}" : ''
    """
    desweep-plan \\
        --comparisons ${comparisons} \\
        --batch-counts ${counts} \\
        ${grid_arg} \\
        ${args} \\
        --outdir de
    """

    stub:
    // one plan row, so that the stub run fans out one DE task
    """
    mkdir -p de
    printf 'combination_id,sampling_key,setting_id,comparison_id,model\\nstub__nobc__vanilla__uniform__fdr0.05__seed0,stub__nobc__uniform__seed0,stub__nobc__vanilla__uniform__fdr0.05,stub,0\\n' > de/plan.csv
    touch de/plan_skipped.csv
    """
}
