"""The files `nf-core pipelines lint` requires, checked offline (lint itself needs the network; docs/usage.md)."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml
from nextflow_runs import CONTRACT_FILES

import desweep

REPO = Path(__file__).resolve().parent.parent


def test_license_is_the_mit_license_pyproject_declares() -> None:
    license_text = (REPO / "LICENSE").read_text()
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["license"] == "MIT" and project["license-files"] == ["LICENSE"]
    assert license_text.startswith("MIT License\n") and "Permission is hereby granted, free of charge" in license_text


def test_changelog_has_a_section_for_the_current_version() -> None:
    headings = re.findall(r"^## v(\S+)", (REPO / "CHANGELOG.md").read_text(), flags=re.MULTILINE)
    assert headings and headings[0] == desweep.__version__, headings


def test_citations_give_a_doi_link_for_each_quoted_reference() -> None:
    text = (REPO / "CITATIONS.md").read_text()
    references = [line for line in text.splitlines() if line.startswith("  > ")]
    assert len(references) >= 10
    for line in references:
        doi = re.search(r"doi: (10\.\d{4,}/\S+)$", line)
        assert doi, line
        assert f"(https://doi.org/{doi.group(1)})" in text, f"no link to the DOI of: {line}"


@pytest.mark.parametrize(("folder", "name"), CONTRACT_FILES, ids=["/".join(item) for item in CONTRACT_FILES])
def test_output_doc_describes_every_contract_file(folder: str, name: str) -> None:
    """docs/output.md lists each published file under its step folder's bullet."""
    text = (REPO / "docs" / "output.md").read_text()
    sections = re.split(r"^- `([^`]+)/`$", text, flags=re.MULTILINE)
    files = dict(zip(sections[1::2], sections[2::2], strict=True))
    assert folder in files, f"docs/output.md has no '- `{folder}/`' bullet"
    assert re.search(rf"`{re.escape(name)}[`/<]", files[folder]), f"docs/output.md does not list {folder}/{name}"


def test_nf_core_settings_skip_only_network_and_false_positive_checks() -> None:
    """.nf-core.yml turns off what needs the network or cannot apply; docs/usage.md lists the rest."""
    settings = yaml.safe_load((REPO / ".nf-core.yml").read_text())
    assert settings["repository_type"] == "pipeline"
    assert settings["lint"] == {"nfcore_components": False, "actions_schema_validation": False,
                                "template_strings": ["scripts/build_images"]}


#: what ``nf-core pipelines lint``'s ``template_strings`` takes for a Jinja placeholder left from its template
JINJA_PLACEHOLDER = re.compile(r"[^$]" + "{" * 2 + r"[^:}]*" + "}" * 2)  # written in parts: lint reads this file too


def test_no_jinja_placeholder_outside_the_files_lint_is_told_to_skip() -> None:
    """lint reads every tracked file for double-brace placeholders; a Go template or an example in the docs counts too."""
    skipped = set(yaml.safe_load((REPO / ".nf-core.yml").read_text())["lint"]["template_strings"])
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout.decode().split("\0")
    found = []
    for name in filter(None, tracked):
        path = REPO / name
        if name in skipped or not path.is_file() or b"\0" in path.read_bytes()[:8192]:
            continue
        found += [f"{name}:{number}" for number, line in enumerate(path.read_text(encoding="latin1").splitlines(), 1)
                  if JINJA_PLACEHOLDER.search(line)]
    assert not found, f"nf-core lint's template_strings would fail on: {found}"
