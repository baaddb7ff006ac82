#!/usr/bin/env nextflow
/*
 * Smoke-test pipeline for the Maven-Central-assembled Nextflow engine
 * (scripts/nextflow). Classic DSL2, two processes, local executor, no plugins.
 *
 *   scripts/nextflow run tests/nextflow/hello/main.nf --outdir results
 *
 * WRITE_GREETING writes greeting.txt; SHOUT reads it and writes result.txt
 * (upper-cased greeting plus its line count) into params.outdir.
 */
params.greeting = 'Hello desweep'
params.outdir   = 'results'

process WRITE_GREETING {
    input:
    val greeting

    output:
    path 'greeting.txt'

    script:
    """
    printf '%s\\n' '${greeting}' > greeting.txt
    """
}

process SHOUT {
    publishDir params.outdir, mode: 'copy'

    input:
    path greeting_file

    output:
    path 'result.txt'

    script:
    """
    tr '[:lower:]' '[:upper:]' < ${greeting_file} > result.txt
    echo "lines=\$(wc -l < ${greeting_file} | tr -d ' ')" >> result.txt
    """
}

workflow {
    WRITE_GREETING(Channel.of(params.greeting))
    SHOUT(WRITE_GREETING.out)
}
