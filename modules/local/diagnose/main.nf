process DIAGNOSE {
    tag "${meta.id}"
    label 'process_low'

    conda "${moduleDir}/environment.yml"

    input:
    // tables: every DE task's tables, staged together as tables/<combination_id>.csv
    // normalized: normalized/normalized.h5ad, whose scvi_norm__ layers of the markers go into markers.h5ad
    tuple val(meta), path(h5ad), path(plan), path(tables, stageAs: 'tables/*'), path(comparisons), path(means), path(history), path(counts), path(normalized)

    output:
    tuple val(meta), path('diagnostics/markers.csv')                     , emit: markers
    tuple val(meta), path('diagnostics/rejected.csv')                    , emit: rejected
    tuple val(meta), path('diagnostics/markers.h5ad')                    , emit: markers_h5ad
    tuple val(meta), path('diagnostics/recommendations.csv')             , emit: recommendations
    tuple val(meta), path('diagnostics/recommended_settings.csv')        , emit: recommended_settings
    tuple val(meta), path('diagnostics/setting_scores.csv')              , emit: setting_scores
    tuple val(meta), path('diagnostics/setting_scores_by_replicate.csv') , emit: setting_scores_by_replicate
    tuple val(meta), path('diagnostics/gene_patterns.csv')               , emit: gene_patterns
    tuple val(meta), path('diagnostics/concordance.csv')                 , emit: concordance
    tuple val(meta), path('diagnostics/concordance_settings.csv')        , emit: concordance_settings
    tuple val(meta), path('diagnostics/thresholds.csv')                  , emit: thresholds
    tuple val(meta), path('diagnostics/top_gene_expression.csv')         , emit: top_gene_expression
    tuple val(meta), path('diagnostics/bridge.csv')                      , emit: bridge
    tuple val(meta), path('diagnostics/bridge_summary.csv')              , emit: bridge_summary
    tuple val(meta), path('diagnostics/plots')                           , emit: plots, optional: true
    tuple val("${task.process}"), val('desweep'), eval('desweep --version')                                                                      , emit: versions_desweep, topic: versions
    tuple val("${task.process}"), val('matplotlib'), eval("python3 -c 'from importlib.metadata import version; print(version(\"matplotlib\"))'") , emit: versions_matplotlib, topic: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    """
    desweep-diagnose \\
        --input ${h5ad} \\
        --plan ${plan} \\
        --tables tables \\
        --comparisons ${comparisons} \\
        --means ${means} \\
        --history ${history} \\
        --counts ${counts} \\
        --normalized ${normalized} \\
        --threads ${task.cpus} \\
        ${args} \\
        --outdir diagnostics
    """

    stub:
    """
    mkdir -p diagnostics/plots
    touch diagnostics/markers.csv
    touch diagnostics/rejected.csv
    touch diagnostics/markers.h5ad
    touch diagnostics/recommendations.csv
    touch diagnostics/recommended_settings.csv
    touch diagnostics/setting_scores.csv
    touch diagnostics/setting_scores_by_replicate.csv
    touch diagnostics/gene_patterns.csv
    touch diagnostics/concordance.csv
    touch diagnostics/concordance_settings.csv
    touch diagnostics/thresholds.csv
    touch diagnostics/top_gene_expression.csv
    touch diagnostics/bridge.csv
    touch diagnostics/bridge_summary.csv
    touch diagnostics/plots/umap.png
    """
}
