#!/usr/bin/env nextflow
/*
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
    desweep
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
    Batch-aware differential expression sweeps for scVI.
    Docs: docs/usage.md (running), docs/architecture.md (output contract)

        nextflow run . -profile docker --input data.h5ad --batch_key batch --outdir results
----------------------------------------------------------------------------------------
*/

include { PIPELINE_INITIALISATION } from './subworkflows/local/utils_desweep_pipeline'
include { PIPELINE_COMPLETION     } from './subworkflows/local/utils_desweep_pipeline'
include { INPUT_CHECK             } from './subworkflows/local/input_check'
include { DESWEEP                 } from './workflows/desweep'

workflow {

    main:
    PIPELINE_INITIALISATION(params, "${projectDir}/nextflow_schema.json")

    INPUT_CHECK(params.input, params.simulate_cells, "${projectDir}/assets/schema_input.json")

    DESWEEP(
        INPUT_CHECK.out.input,
        params.models,
        params.grid ? file(params.grid, checkIfExists: true) : [],
        params.de_split,
        params.multiqc_config ? file(params.multiqc_config, checkIfExists: true) : [],
        PIPELINE_INITIALISATION.out.params_yaml,
        params.outdir,
        INPUT_CHECK.out.versions
    )

    PIPELINE_COMPLETION(params.outdir)
}
