#!/usr/bin/env bash
# Copy the guide's figures out of a finished `desweep run` into docs/guide/ (PNG, relative links).
#
#   scripts/guide_figures.sh results/guide docs/guide "B-cells_vs_Monocytes"
set -euo pipefail
results=${1:?usage: guide_figures.sh RESULTS DOCS_DIR COMPARISON_ID}
docs=${2:?usage: guide_figures.sh RESULTS DOCS_DIR COMPARISON_ID}
comparison=${3:?usage: guide_figures.sh RESULTS DOCS_DIR COMPARISON_ID}
plots="$results/diagnostics/plots"
mkdir -p "$docs"
cp "$plots/umap.png" "$docs/umap.png"
cp "$plots/composition.png" "$docs/composition.png"
cp "$plots/training_curves.png" "$docs/training_curves.png"
cp "$plots/setting_scores/$comparison.png" "$docs/setting_scores.png"
cp "$plots/concordance/$comparison.png" "$docs/concordance.png"
for setting in nobc__vanilla bc-all__vanilla; do
    cp "$plots/top_genes/${comparison}__${setting}__uniform__fdr0.05__seed0.png" "$docs/top_genes_${setting%%__*}.png"
    cp "$plots/volcano/${comparison}__${setting}__uniform__fdr0.05__seed0.png" "$docs/volcano_${setting%%__*}.png"
done
here=$(cd "$(dirname "$0")" && pwd)
"${DESWEEP_PYTHON:-$here/../.venv/bin/python}" "$here/guide_dotplot.py" "$results/diagnostics/markers.h5ad" "$comparison" "$docs/markers_dotplot.png"
"$here/render_report.sh" "$results/multiqc/multiqc_report.html" "$docs/report_scores.png" 1400 1600 desweep_scores
"$here/render_report.sh" "$results/multiqc/multiqc_report.html" "$docs/report_normalized.png" 1400 1400 desweep_normalized
ls -1 "$docs"
