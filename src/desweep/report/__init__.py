"""One self-contained MultiQC report of a desweep run, opening with the verdict.

Three layers, each in its own module:

* :mod:`desweep.report.load`: :func:`load_results` reads ``OUTDIR`` once into
  :class:`ReportInputs` (tables; the only file I/O of the sections' inputs);
* section builders (:mod:`~desweep.report.verdict`, :mod:`~desweep.report.evidence`,
  :mod:`~desweep.report.runqc`) turn those tables into MultiQC custom-content
  items (:class:`Item`), without reading files;
* :mod:`desweep.report.multiqc` writes the items as ``*_mqc.yaml`` and runs
  MultiQC offline (no version check, no AI summary).

:func:`build_report` chains them: ``OUTDIR/multiqc/multiqc_report.html``.
Every top-level section is a custom-content *module* whose anchor is a stable
id (:data:`SECTION_IDS`, in report order, the verdict first); its parts are
sub-sections with ids ``<section>_<part>``. An input that is missing gives a
short "not available" note in its section instead of an error.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path

from desweep import keys
from desweep.report import evidence, runqc, verdict
from desweep.report.items import SECTION_IDS, SECTIONS, Item, missing, text
from desweep.report.load import ReportInputs, load_results
from desweep.report.multiqc import DEFAULT_CONFIG, run_multiqc, write_config, write_custom_content

__all__ = ["DEFAULT_CONFIG", "SECTIONS", "SECTION_IDS", "Item", "ReportInputs", "build_report", "custom_content", "load_results",
           "write_config", "write_custom_content"]

logger = logging.getLogger(__name__)

BUILDERS: dict[str, Callable[[ReportInputs], list[Item]]] = {
    "desweep_verdict": verdict.verdict_section,
    "desweep_markers": verdict.markers_section,
    "desweep_top_genes": evidence.top_genes_section,
    "desweep_scores": evidence.scores_section,
    "desweep_concordance": evidence.concordance_section,
    "desweep_baselines": runqc.baselines_section,
    "desweep_sweep": evidence.sweep_section,
    "desweep_composition": runqc.composition_section,
    "desweep_input": runqc.input_section,
    "desweep_integration": runqc.integration_section,
    "desweep_normalized": runqc.normalized_section,
    "desweep_provenance": runqc.provenance_section,
}


def custom_content(inputs: ReportInputs) -> list[Item]:
    """Every custom-content item of the report, section by section, in report order (no files read or written).

    A section that fails to build (an unexpected input) becomes a note, so one
    bad file never costs the whole report.
    """
    items: list[Item] = []
    for section in SECTION_IDS:
        try:
            built = BUILDERS[section](inputs)
        except Exception as err:  # noqa: BLE001 - report what broke, keep the rest
            logger.warning("section %s: %s: %s", section, type(err).__name__, err)
            built = [Item(section, "error", "Section could not be built", "html",
                          f"<p><em>Not available:</em> {text(type(err).__name__)}: {text(str(err))}</p>")]
        items += built or [missing(section, "inputs", "OUTDIR")]
    return items


def build_report(results_dir: str | Path, outdir: str | Path, *, config: str | Path | None = None, title: str | None = None,
                 timeout: int = 600) -> Path:
    """Build ``<outdir>/multiqc_report.html`` from a desweep ``OUTDIR``.

    Parameters
    ----------
    results_dir
        The pipeline's OUTDIR (validate/, integrate/, ..., pipeline_info/).
    outdir
        Report folder (``OUTDIR/multiqc``): gets ``multiqc_report.html``,
        ``multiqc_data/`` and the ``custom_content/`` it was built from.
    config
        A MultiQC config file used instead of the shipped one
        (``assets/multiqc_config.yml`` = :data:`DEFAULT_CONFIG`).
    title
        Report title (default: the config's).

    Returns
    -------
    The report's path.
    """
    from desweep.errors import DesweepInputError

    results = Path(results_dir)
    if not results.is_dir():
        raise DesweepInputError(results, "--results", "folder does not exist")
    if config is not None and not Path(config).is_file():
        raise DesweepInputError(config, "--config", "does not exist")
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    items = custom_content(load_results(results))
    content = outdir / keys.MULTIQC_CUSTOM_CONTENT_DIR
    if content.exists():
        shutil.rmtree(content)
    write_custom_content(items, content)
    logger.info("running MultiQC on %d custom-content items", len(items))
    report = run_multiqc(content, outdir, config=Path(config) if config else None, title=title, timeout=timeout, items=items)
    logger.info("wrote %s", report)
    return report
