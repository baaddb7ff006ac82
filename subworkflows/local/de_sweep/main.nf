/*
    DE_SWEEP: plan the grid of scvi-tools DE settings, run it in DE tasks that each keep the
    decoding passes their sampling keys share, and merge the per-key summaries into
    de/summary.csv and de/stability.csv.

    The plan (de/plan.csv) is the only place the sweep's settings live: this subworkflow
    reads just the columns that split it into tasks and hands each task its sampling keys
    (rows of one key share their posterior samples); `desweep de` reads the rest from the plan.
    `desweep de` decodes each group once per (model, seed, batch) for all the keys it runs,
    so a task per (model, seed) does the decoding passes of one `desweep de --all` and
    no more (docs/benchmarks.md, "DE fan-out").
*/

include { PLAN     } from '../../../modules/local/plan/main'
include { DE       } from '../../../modules/local/de/main'
include { DE_MERGE } from '../../../modules/local/de_merge/main'

workflow DE_SWEEP {

    take:
    ch_comparisons  // channel: [ val(meta), path(comparisons.csv), path(cluster_batch_counts.csv) ]
    ch_h5ad         // channel: [ val(meta), path(clustered.h5ad) ]
    ch_models       // channel: [ val(meta), val(model index), path(model) ], one per model replicate
    grid            // path: grid YAML, or [] for desweep's default grid
    split           // string: one DE task per 'model', 'seed' (model, seed), 'comparison' (model, comparison, seed) or 'sampling_key'

    main:
    PLAN(ch_comparisons, grid)

    // [ meta, model, [key1, key2, ...] ] per task, keys in the plan's order; every split keeps one model per task
    def task_columns = deTaskColumns(split)
    ch_key_groups = PLAN.out.plan
        .splitCsv(header: true, elem: 1)
        .map { meta, row -> [ meta, (row.model ?: '0') as int, row.subMap(task_columns), row.sampling_key ] }
        .unique()
        .groupTuple(by: [0, 1, 2])
        .map { meta, model, task, sampling_keys -> [ meta, model, sampling_keys ] }

    DE(
        ch_key_groups
            .combine(ch_models, by: [0, 1])
            .combine(PLAN.out.plan, by: 0)
            .combine(ch_h5ad, by: 0)
            .map { meta, model, sampling_keys, model_dir, plan, h5ad -> [ meta + [ model: model, sampling_keys: sampling_keys ], plan, h5ad, model_dir ] }
    )

    // every task's files per data set, sorted by name so the merge task's inputs are stable
    ch_tables    = collectPerDataset(DE.out.tables)
    ch_summaries = collectPerDataset(DE.out.summaries)

    DE_MERGE(PLAN.out.plan.join(ch_tables).join(ch_summaries))

    emit:
    plan      = PLAN.out.plan           // channel: [ val(meta), path(plan.csv) ]
    skipped   = PLAN.out.skipped        // channel: [ val(meta), path(plan_skipped.csv) ]
    tables    = ch_tables               // channel: [ val(meta), [ path(<combination_id>.csv), ... ] ]
    summary   = DE_MERGE.out.summary    // channel: [ val(meta), path(summary.csv) ]
    stability = DE_MERGE.out.stability  // channel: [ val(meta), path(stability.csv) ]
    versions  = PLAN.out.versions_desweep.mix(DE.out.versions_desweep, DE.out.versions_scvi_tools, DE.out.versions_torch,
                    DE_MERGE.out.versions_desweep)  // channel: [ process, tool, version ]
}

// the plan columns whose values make one DE task, per value of --de_split (the model is always one per task)
def deTaskColumns(split) {
    def columns = [ model: [ 'model' ], seed: [ 'seed' ], comparison: [ 'comparison_id', 'seed' ], sampling_key: [ 'sampling_key' ] ]
    if (!columns.containsKey(split)) {
        error "de_split: must be one of ${columns.keySet().join(', ')}, got '${split}'"
    }
    return columns[split]
}

// [ meta + model + sampling_keys, file(s) ] per task -> [ meta, [ files sorted by name ] ] per data set
def collectPerDataset(ch) {
    return ch
        .map { meta, files -> [ meta.findAll { key, value -> !(key in ['sampling_keys', 'model']) }, files instanceof List ? files : [ files ] ] }
        .transpose()
        .groupTuple(sort: { a, b -> a.name <=> b.name })
}
