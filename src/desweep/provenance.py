"""Provenance: software versions and resolved parameters in ``OUTDIR/pipeline_info``."""

from __future__ import annotations

import platform
from importlib import metadata

PACKAGES = ("desweep", "scvi-tools", "torch", "anndata", "scanpy", "numpy", "pandas", "scipy", "lightning",
            "leidenalg", "pydeseq2", "multiqc", "click")


def software_versions() -> dict[str, str]:
    """Installed versions of desweep and the packages its results depend on."""
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions
