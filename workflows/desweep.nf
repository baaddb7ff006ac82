/*
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
    DESWEEP: validate -> integrate -> cluster -> composition -> plan + DE sweep ->
             normalize -> diagnose -> baselines -> report
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
    Every step is one `desweep-<step>` command (bin/); its options come from
    conf/modules_args.config (ext.args, generated from src/desweep/params.py). This workflow only wires files between steps.
----------------------------------------------------------------------------------------
*/

include { VALIDATE    } from '../modules/local/validate/main'
include { INTEGRATE   } from '../modules/local/integrate/main'
include { CLUSTER     } from '../modules/local/cluster/main'
include { COMPOSITION } from '../modules/local/composition/main'
include { NORMALIZE   } from '../modules/local/normalize/main'
include { BASELINES   } from '../modules/local/baselines/main'
include { DIAGNOSE    } from '../modules/local/diagnose/main'
include { REPORT      } from '../modules/local/report/main'
include { DE_SWEEP    } from '../subworkflows/local/de_sweep/main'
include { softwareVersionsToYaml } from '../subworkflows/local/utils_desweep_pipeline'

workflow DESWEEP {

    take:
    ch_input          // channel: [ val(meta), path(input), path(samples) ]
    models            // integer: scVI models trained (replicates; model k with seed + k)
    grid              // path: grid.yaml for the DE sweep, or [] for the default grid
    de_split          // string: what one DE task runs: 'model', 'seed', 'comparison' or 'sampling_key' (docs/usage.md)
    multiqc_config    // path: MultiQC config, or [] for desweep's
    ch_params_yaml    // channel: path(params.yaml)
    outdir            // string: where pipeline_info/software_versions.yml goes
    ch_versions       // channel: [ process, tool, version ] of the tasks before this workflow (SIMULATE)

    main:
    VALIDATE(ch_input)

    // one INTEGRATE task per model replicate (meta.model); groups and clusters come from model 0
    INTEGRATE(
        VALIDATE.out.h5ad
            .combine(Channel.of(0..<(models as int)))
            .map { meta, h5ad, model -> [ meta + [ model: model ], h5ad ] }
    )
    ch_model0   = firstModel(INTEGRATE.out.model)
    ch_h5ad0    = firstModel(INTEGRATE.out.h5ad)
    ch_history0 = firstModel(INTEGRATE.out.history)
    ch_metrics0 = firstModel(INTEGRATE.out.metrics)
    // [ meta, model index, path(model) ] for every replicate: each DE task carries its model
    ch_models = INTEGRATE.out.model.map { meta, model -> [ meta.findAll { key, value -> key != 'model' }, meta.model, model ] }

    CLUSTER(ch_h5ad0)

    COMPOSITION(CLUSTER.out.h5ad)

    DE_SWEEP(
        COMPOSITION.out.comparisons.join(COMPOSITION.out.counts),
        CLUSTER.out.h5ad,
        ch_models,
        grid,
        de_split
    )

    // after the sweep: the layers hold the top genes of its tables (every model's); decoded with model 0
    NORMALIZE(
        CLUSTER.out.h5ad
            .join(ch_model0)
            .join(DE_SWEEP.out.plan)
            .join(DE_SWEEP.out.tables)
    )

    BASELINES(
        CLUSTER.out.h5ad
            .join(COMPOSITION.out.comparisons)
            .join(NORMALIZE.out.means)
    )

    DIAGNOSE(
        CLUSTER.out.h5ad
            .join(DE_SWEEP.out.plan)
            .join(DE_SWEEP.out.tables)
            .join(COMPOSITION.out.comparisons)
            .join(NORMALIZE.out.means)
            .join(ch_history0)
            .join(COMPOSITION.out.counts)
            .join(NORMALIZE.out.h5ad)
    )

    // OUTDIR/pipeline_info/software_versions.yml from every task's versions (each module's eval outputs,
    // so a missing tool fails its task), then the report over everything. The modules also put them on
    // the `versions` topic; it is mixed here by hand because Nextflow 24.10 reads Channel.topic() only
    // with the preview flag that the strict syntax of 25.04 and later rejects.
    ch_all_versions = ch_versions.mix(
        VALIDATE.out.versions_desweep, VALIDATE.out.versions_anndata,
        INTEGRATE.out.versions_desweep, INTEGRATE.out.versions_scvi_tools, INTEGRATE.out.versions_torch,
        CLUSTER.out.versions_desweep, CLUSTER.out.versions_scanpy, CLUSTER.out.versions_leidenalg,
        COMPOSITION.out.versions_desweep,
        DE_SWEEP.out.versions,
        NORMALIZE.out.versions_desweep, NORMALIZE.out.versions_scvi_tools, NORMALIZE.out.versions_torch,
        BASELINES.out.versions_desweep, BASELINES.out.versions_scanpy, BASELINES.out.versions_pydeseq2,
        DIAGNOSE.out.versions_desweep, DIAGNOSE.out.versions_matplotlib
    )
    ch_software_versions = softwareVersionsToYaml(ch_all_versions)
        .collectFile(name: 'software_versions.yml', storeDir: "${outdir}/pipeline_info")

    REPORT(
        VALIDATE.out.report
            .join(ch_history0.join(ch_metrics0).map { meta, history, metrics -> [ meta, [ history, metrics ] ] })
            .join(CLUSTER.out.metrics)
            .join(COMPOSITION.out.counts.join(COMPOSITION.out.clusters).join(COMPOSITION.out.comparisons)
                .map { meta, counts, clusters, comparisons -> [ meta, [ counts, clusters, comparisons ] ] })
            .join(DE_SWEEP.out.plan.join(DE_SWEEP.out.skipped).join(DE_SWEEP.out.summary).join(DE_SWEEP.out.stability)
                .map { meta, plan, skipped, summary, stability -> [ meta, [ plan, skipped, summary, stability ] ] })
            .join(DE_SWEEP.out.tables)
            .join(NORMALIZE.out.h5ad.join(NORMALIZE.out.means).map { meta, h5ad, means -> [ meta, [ h5ad, means ] ] })
            .join(DIAGNOSE.out.gene_patterns
                .join(DIAGNOSE.out.setting_scores)
                .join(DIAGNOSE.out.concordance)
                .join(DIAGNOSE.out.recommendations)
                .join(DIAGNOSE.out.thresholds)
                .join(DIAGNOSE.out.top_gene_expression)
                .join(DIAGNOSE.out.markers)
                .join(DIAGNOSE.out.rejected)
                .join(DIAGNOSE.out.markers_h5ad)
                .join(DIAGNOSE.out.recommended_settings)
                .join(DIAGNOSE.out.setting_scores_by_replicate)
                .join(DIAGNOSE.out.concordance_settings)
                .join(DIAGNOSE.out.plots, remainder: true)
                .map { row -> [ row[0], row[1..-1].findAll { file -> file != null } ] })
            .join(BASELINES.out.wilcoxon.join(BASELINES.out.pseudobulk).join(BASELINES.out.patterns).join(BASELINES.out.scores)
                .map { meta, wilcoxon, pseudobulk, patterns, scores -> [ meta, [ wilcoxon, pseudobulk, patterns, scores ] ] })
            .join(otherModels(INTEGRATE.out.history)),
        ch_params_yaml.mix(ch_software_versions).collect(),
        multiqc_config
    )

    emit:
    report      = REPORT.out.report             // channel: [ val(meta), path(multiqc_report.html) ]
    clustered   = CLUSTER.out.h5ad              // channel: [ val(meta), path(clustered.h5ad) ]
    model       = ch_model0                     // channel: [ val(meta), path(model) ] (model 0)
}

// [ meta + [model: k], file ] of every replicate -> [ meta, [ files of models 1, 2, ... in model order ] ] ([] with one model)
def otherModels(ch) {
    return ch
        .map { meta, file -> [ meta.findAll { key, value -> key != 'model' }, [ meta.model, file ] ] }
        .groupTuple()
        .map { meta, pairs -> [ meta, pairs.findAll { pair -> pair[0] > 0 }.sort { pair -> pair[0] }.collect { pair -> pair[1] } ] }
}

// [ meta + [model: k], file ] of every replicate -> [ meta, file ] of model 0
def firstModel(ch) {
    return ch
        .filter { meta, file -> meta.model == 0 }
        .map { meta, file -> [ meta.findAll { key, value -> key != 'model' }, file ] }
}
