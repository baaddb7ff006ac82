"""The MultiQC side: the shipped config, the custom-content files, and the (offline) MultiQC run."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from desweep import keys
from desweep.errors import DesweepInputError
from desweep.report.items import SECTION_IDS, Item, text

logger = logging.getLogger(__name__)

SECTION_ORDER_YML = "section_order.yml"

#: the MultiQC configuration shipped with desweep (also ``assets/multiqc_config.yml``)
DEFAULT_CONFIG: dict[str, Any] = {
    "title": "desweep report",
    "subtitle": "Which genes really differ between batch-specific clusters",
    "intro_text": "The verdict first; then the evidence and the run's QC. Tables are sortable; plots are interactive.",
    "no_version_check": True,
    "no_ai": True,
    "show_analysis_paths": False,
    "show_analysis_time": False,
    "skip_generalstats": True,
    "skip_versions_section": True,
    "disable_version_detection": True,
    "run_modules": ["custom_content"],
    "custom_content": {"order": list(SECTION_IDS)},
    "max_table_rows": 20000,
    "collapse_tables": True,  # long tables (markers, runs) scroll within 500 px, with "Expand table"
    "plots_force_interactive": True,
    "plots_defer_loading_numseries": 20000,
    "num_datasets_plot_limit": 20000,
    "make_data_dir": True,
    "data_format": "tsv",
    "fn_clean_sample_names": False,
}


def write_custom_content(items: list[Item], folder: str | Path) -> list[Path]:
    """Write ``items`` as ``NNN_<id>_mqc.yaml`` files, plus the section-order config :data:`SECTION_ORDER_YML`."""
    import yaml

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, item in enumerate(items):
        path = folder / f"{i:03d}_{item.id}_mqc.yaml"
        path.write_text(yaml.safe_dump(item.document(), sort_keys=False, allow_unicode=True))
        paths.append(path)
    # within a module MultiQC puts sections in ascending order
    order = {"report_section_order": {item.id: {"order": 10 * (i + 1)} for i, item in enumerate(items)}}
    (folder / SECTION_ORDER_YML).write_text(yaml.safe_dump(order, sort_keys=False))
    return paths


def write_config(path: str | Path, config: dict[str, Any] | None = None) -> Path:
    """Write the MultiQC config (default: :data:`DEFAULT_CONFIG`) as YAML."""
    import yaml

    path = Path(path)
    path.write_text(yaml.safe_dump(config or DEFAULT_CONFIG, sort_keys=False))
    return path


def escape_navigation(page: str, items: list[Item]) -> str:
    """``page`` with each item's name escaped in MultiQC's navigation too.

    The navigation shows a section name through Jinja's ``striptags``, which
    unescapes what :func:`text` escaped, so a label such as ``<img onerror=...>``
    would come back as markup there: each such link gets the escaped name back.
    Raises ``RuntimeError`` when a link is not where MultiQC's template puts it
    (an unsafe page is never written).
    """
    from markupsafe import Markup

    for item in items:
        safe = text(item.name)
        shown = Markup(safe).striptags()
        if shown == safe:
            continue
        link = f'<a href="#{item.id}" class="nav-l2">'
        page = page.replace(f"{link}{shown}</a>", f"{link}{safe}</a>")
        if "<" in shown and shown in page:  # markup from a name anywhere else: refuse the page
            raise RuntimeError(f"MultiQC wrote the name of section {item.id} unescaped outside its navigation link")
    return page


def run_multiqc(content: Path, outdir: Path, *, config: Path | None = None, title: str | None = None, timeout: int = 600,
                items: list[Item] | None = None) -> Path:
    """Run MultiQC (a subprocess, offline) on the custom-content folder ``content``.

    Writes ``outdir/multiqc_report.html`` and ``outdir/multiqc_data/``, each
    moved into place only once MultiQC succeeded. ``items``: the sections written
    to ``content``, whose names :func:`escape_navigation` puts back escaped.
    """
    work = Path(tempfile.mkdtemp(prefix=".multiqc.tmp-", dir=outdir))
    try:
        config_path = config if config else write_config(work / keys.MULTIQC_CONFIG)
        if not config_path.is_file():
            raise DesweepInputError(config_path, "--config", "does not exist")
        command = [sys.executable, "-m", "multiqc", str(content), "--outdir", str(work / "out"),
                   "--filename", keys.MULTIQC_REPORT, "--force", "--no-version-check", "--no-ai",
                   "--config", str(config_path), "--config", str(content / SECTION_ORDER_YML)]
        if title:
            command += ["--title", text(title)]  # MultiQC writes the title into the page as given
        env = dict(os.environ, MULTIQC_NO_VERSION_CHECK="1")
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, check=False)
        report = work / "out" / keys.MULTIQC_REPORT
        if proc.returncode != 0 or not report.is_file():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
            raise RuntimeError("MultiQC failed: " + " | ".join(tail))
        report.write_text(escape_navigation(report.read_text(encoding="utf-8"), items or []), encoding="utf-8")
        data_dirs = [p for p in (work / "out").iterdir() if p.is_dir() and p.name.endswith("_data")]
        if data_dirs:
            target = outdir / "multiqc_data"
            if target.exists():
                shutil.rmtree(target)
            os.replace(data_dirs[0], target)
        os.replace(report, outdir / keys.MULTIQC_REPORT)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return outdir / keys.MULTIQC_REPORT
