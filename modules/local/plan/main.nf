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
    // one plan row per model (--models in ext.args), so that the stub run fans DE out as a real run does
    def models = ((task.ext.args ?: '').find(/--models (\d+)/) { match -> match[1] } ?: '1') as int
    def rows = (0..<models).collect { model ->
        def replicate = models > 1 ? "__model${model}" : ''
        "stub__nobc__vanilla__uniform__fdr0.05${replicate}__seed0,stub__nobc__uniform${replicate}__seed0,stub__nobc__vanilla__uniform__fdr0.05,stub,${model}"
    }
    """
    mkdir -p de
    printf 'combination_id,sampling_key,setting_id,comparison_id,model\\n${rows.join('\\n')}\\n' > de/plan.csv
    touch de/plan_skipped.csv
    """
}
