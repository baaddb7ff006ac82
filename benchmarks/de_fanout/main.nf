#!/usr/bin/env nextflow
/*
    The DE fan-out alone, for benchmarks/de_fanout.py: DE_SWEEP (PLAN, DE tasks, DE_MERGE)
    on inputs that earlier steps wrote, split by --de_split. No logic of its own.
*/

include { DE_SWEEP } from '../../subworkflows/local/de_sweep/main'

workflow {
    def meta = [ id: 'fanout' ]
    DE_SWEEP(
        Channel.of([ meta, file(params.comparisons_csv, checkIfExists: true), file(params.batch_counts, checkIfExists: true) ]),
        Channel.of([ meta, file(params.h5ad, checkIfExists: true) ]),
        Channel.of([ meta, 0, file(params.model, checkIfExists: true) ]),
        params.grid ? file(params.grid, checkIfExists: true) : [],
        params.de_split
    )
}
