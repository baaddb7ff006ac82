process DIAGNOSE {
    tag "${meta.id}"
    label 'process_low'

    conda "${moduleDir}/environment.yml"

    input:
    // tables: every DE task's tables, staged together as tables/<combination_id>.csv
    tuple val(meta), path(h5ad), path(plan), path(tables, stageAs: 'tables/*'), path(comparisons), path(means), path(history), path(counts)

    output:
    tuple val(meta), path('diagnostics/gene_patterns.csv')       , emit: gene_patterns
    tuple val(meta), path('diagnostics/setting_scores.csv')      , emit: setting_scores
    tuple val(meta), path('diagnostics/concordance.csv')         , emit: concordance
    tuple val(meta), path('diagnostics/recommendations.csv')     , emit: recommendations
    tuple val(meta), path('diagnostics/thresholds.csv')          , emit: thresholds
    tuple val(meta), path('diagnostics/top_gene_expression.csv') , emit: top_gene_expression
    tuple val(meta), path('diagnostics/plots')                   , emit: plots, optional: true
    path 'versions.yml'                                          , emit: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    """
    desweep-diagnose \\
        --adata ${h5ad} \\
        --plan ${plan} \\
        --tables tables \\
        --comparisons ${comparisons} \\
        --means ${means} \\
        --history ${history} \\
        --counts ${counts} \\
        ${args} \\
        --outdir diagnostics

    desweep_version=\$(python3 -c "from importlib.metadata import version; print(version('desweep'))")
    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        desweep: \${desweep_version}
        matplotlib: \$(python3 -c "from importlib.metadata import version; print(version('matplotlib'))")
    END_VERSIONS
    """

    stub:
    """
    mkdir -p diagnostics/plots
    touch diagnostics/gene_patterns.csv
    touch diagnostics/setting_scores.csv
    touch diagnostics/concordance.csv
    touch diagnostics/recommendations.csv
    touch diagnostics/thresholds.csv
    touch diagnostics/top_gene_expression.csv
    touch diagnostics/plots/umap.png

    desweep_version=\$(python3 -c "from importlib.metadata import version; print(version('desweep'))")
    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        desweep: \${desweep_version}
        matplotlib: \$(python3 -c "from importlib.metadata import version; print(version('matplotlib'))")
    END_VERSIONS
    """
}
