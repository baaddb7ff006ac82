/*
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
    DESWEEP: validate -> integrate -> cluster -> composition -> plan + DE sweep ->
             normalize -> diagnose -> baselines -> report
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
    Every step is one `desweep-<step>` command (bin/); its options come from
    conf/modules.config (ext.args). This workflow only wires files between steps.
----------------------------------------------------------------------------------------
*/

include { VALIDATE    } from '../modules/local/validate/main'
include { INTEGRATE   } from '../modules/local/integrate/main'
include { CLUSTER     } from '../modules/local/cluster/main'
include { COMPOSITION } from '../modules/local/composition/main'
include { NORMALIZE   } from '../modules/local/normalize/main'
include { BASELINES   } from '../modules/local/baselines/main'

workflow DESWEEP {

    take:
    ch_input  // channel: [ val(meta), path(input), path(samples) ]
    grid      // path: grid.yaml for the DE sweep, or [] for the default grid

    main:
    ch_versions = Channel.empty()

    VALIDATE(ch_input)
    ch_versions = ch_versions.mix(VALIDATE.out.versions)

    INTEGRATE(VALIDATE.out.h5ad)
    ch_versions = ch_versions.mix(INTEGRATE.out.versions)

    CLUSTER(INTEGRATE.out.h5ad)
    ch_versions = ch_versions.mix(CLUSTER.out.versions)

    COMPOSITION(CLUSTER.out.h5ad)
    ch_versions = ch_versions.mix(COMPOSITION.out.versions)

    NORMALIZE(CLUSTER.out.h5ad.join(INTEGRATE.out.model))
    ch_versions = ch_versions.mix(NORMALIZE.out.versions)

    BASELINES(
        CLUSTER.out.h5ad
            .join(COMPOSITION.out.comparisons)
            .join(NORMALIZE.out.means)
    )
    ch_versions = ch_versions.mix(BASELINES.out.versions)

    emit:
    clustered   = CLUSTER.out.h5ad              // channel: [ val(meta), path(clustered.h5ad) ]
    model       = INTEGRATE.out.model           // channel: [ val(meta), path(model) ]
    comparisons = COMPOSITION.out.comparisons   // channel: [ val(meta), path(comparisons.csv) ]
    versions    = ch_versions                   // channel: [ path(versions.yml) ]
}
