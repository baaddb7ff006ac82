"""Smoke tests for the Maven-Central-assembled Nextflow engine (scripts/nextflow).

The first call of the wrapper resolves the pinned engine from Maven Central into
``$HOME/.cache/desweep/nextflow/<version>`` (or ``$DESWEEP_NXF_CACHE``); later calls
start from that cache. If resolution fails the wrapper's error names the missing
artifact and these tests fail with it (no fake engine, no skip).
"""

from __future__ import annotations

import csv
import os
import re
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.nextflow

REPO = Path(__file__).resolve().parents[1]
WRAPPER = REPO / "scripts" / "nextflow"
HELLO = REPO / "tests" / "nextflow" / "hello" / "main.nf"
ENGINE_POM = REPO / "scripts" / "nextflow-engine" / "pom.xml"
TIMEOUT = 900  # the very first call may resolve ~40 MB of jars from Maven Central


def pinned_version() -> str:
    m = re.search(r"^NXF_ENGINE_VERSION=(\S+)\s*$", WRAPPER.read_text(), re.M)
    assert m, "scripts/nextflow does not pin NXF_ENGINE_VERSION"
    return m.group(1)


def nextflow(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, NXF_ANSI_LOG="false")
    # C1-only JIT (what the official launcher uses for every command but `run`):
    # halves the start-up of this tiny pipeline on a small, busy CI machine.
    env.setdefault("NXF_OPTS", "-XX:+TieredCompilation -XX:TieredStopAtLevel=1")
    proc = subprocess.run(
        [str(WRAPPER), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT
    )
    assert proc.returncode == 0, (
        f"scripts/nextflow {' '.join(args)} exited {proc.returncode}\n"
        f"--- stderr ---\n{proc.stderr}\n--- stdout ---\n{proc.stdout}"
    )
    return proc


def read_trace(path: Path) -> list[dict[str, str]]:
    assert path.is_file(), f"trace file {path} was not written"
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def test_version_is_pinned(tmp_path: Path) -> None:
    version = pinned_version()
    pom_default = re.search(r"<nextflow\.version>([^<]+)</nextflow\.version>", ENGINE_POM.read_text())
    assert pom_default and pom_default.group(1) == version, "pom.xml and scripts/nextflow pin different versions"
    proc = nextflow("-version", cwd=tmp_path)
    assert re.search(rf"version {re.escape(version)}\b", proc.stdout), proc.stdout


def test_hello_pipeline_runs_and_resumes(tmp_path: Path) -> None:
    outdir = tmp_path / "out"
    first = nextflow(
        "run", str(HELLO), "--outdir", str(outdir), "-with-trace", "trace1.txt", cwd=tmp_path
    )
    result = outdir / "result.txt"
    assert result.is_file(), f"no published result\n{first.stdout}"
    assert result.read_text() == "HELLO DESWEEP\nlines=1\n"

    rows = read_trace(tmp_path / "trace1.txt")
    assert sorted(r["status"] for r in rows) == ["COMPLETED", "COMPLETED"], rows

    log = (tmp_path / ".nextflow.log").read_text()
    assert "Downloading plugin" not in log, "the engine tried to fetch a plugin at run time"

    second = nextflow(
        "run", str(HELLO), "--outdir", str(outdir), "-resume", "-with-trace", "trace2.txt", cwd=tmp_path
    )
    rows = read_trace(tmp_path / "trace2.txt")
    names = sorted(r["name"].split(" ")[0] for r in rows)
    assert names == ["SHOUT", "WRITE_GREETING"], rows
    assert all(r["status"] == "CACHED" for r in rows), rows
    assert second.stdout.count("Cached process") == 2, second.stdout
    assert result.read_text() == "HELLO DESWEEP\nlines=1\n"
