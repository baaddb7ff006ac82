/*
    DE_SWEEP: plan the grid of scvi-tools DE settings, run it one sampling key per task,
    and merge the per-key summaries into de/summary.csv and de/stability.csv.

    The plan (de/plan.csv) is the only place the sweep's settings live: this subworkflow
    reads just its `sampling_key` column (rows of one key share their posterior samples)
    and hands each task the keys to run; `desweep de` reads the rest from the plan.
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
    keys_per_task   // integer: sampling keys per DE task (1: one task per key)

    main:
    ch_versions = Channel.empty()

    PLAN(ch_comparisons, grid)
    ch_versions = ch_versions.mix(PLAN.out.versions)

    // [ meta, model, [key1, key2, ...] ] per task, in the plan's order: the keys of one task share a model
    ch_key_groups = PLAN.out.plan
        .splitCsv(header: true, elem: 1)
        .map { meta, row -> [ meta, (row.model ?: '0') as int, row.sampling_key ] }
        .unique()
        .groupTuple(by: [0, 1])
        .flatMap { meta, model, sampling_keys -> sampling_keys.collate(keys_per_task as int).collect { chunk -> [ meta, model, chunk ] } }

    DE(
        ch_key_groups
            .combine(ch_models, by: [0, 1])
            .combine(PLAN.out.plan, by: 0)
            .combine(ch_h5ad, by: 0)
            .map { meta, model, sampling_keys, model_dir, plan, h5ad -> [ meta + [ model: model, sampling_keys: sampling_keys ], plan, h5ad, model_dir ] }
    )
    ch_versions = ch_versions.mix(DE.out.versions.first())

    // every task's files per data set, sorted by name so the merge task's inputs are stable
    ch_tables    = collectPerDataset(DE.out.tables)
    ch_summaries = collectPerDataset(DE.out.summaries)

    DE_MERGE(PLAN.out.plan.join(ch_tables).join(ch_summaries))
    ch_versions = ch_versions.mix(DE_MERGE.out.versions)

    emit:
    plan      = PLAN.out.plan           // channel: [ val(meta), path(plan.csv) ]
    skipped   = PLAN.out.skipped        // channel: [ val(meta), path(plan_skipped.csv) ]
    tables    = ch_tables               // channel: [ val(meta), [ path(<combination_id>.csv), ... ] ]
    summary   = DE_MERGE.out.summary    // channel: [ val(meta), path(summary.csv) ]
    stability = DE_MERGE.out.stability  // channel: [ val(meta), path(stability.csv) ]
    versions  = ch_versions             // channel: [ path(versions.yml) ]
}

// [ meta + model + sampling_keys, file(s) ] per task -> [ meta, [ files sorted by name ] ] per data set
def collectPerDataset(ch) {
    return ch
        .map { meta, files -> [ meta.findAll { key, value -> !(key in ['sampling_keys', 'model']) }, files instanceof List ? files : [ files ] ] }
        .transpose()
        .groupTuple(sort: { a, b -> a.name <=> b.name })
}
