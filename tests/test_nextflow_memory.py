"""Task memory follows the input (conf/memory.config): ``-stub`` runs of -profile test at two input sizes.

The steps that read counts ask for ``headroom x (fixed MiB + KiB per cell x cells)`` (at least a floor), cells
estimated from the input's size, capped by ``process.resourceLimits``: on the bundled 500-cell input and on a sparse
160 MB stand-in (about 98,000 cells by the estimate) every such task asks for what the formula gives,
read from the trace in bytes; the other steps keep their label's memory.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
from nextflow_runs import DATA, REPO, nextflow_run, read_trace

pytestmark = pytest.mark.nextflow

MEMORY_CONFIG = REPO / "conf" / "memory.config"
MIB = 1024**2
#: the cap the runs set (process.resourceLimits), below what the large input asks of some steps
LIMIT_MIB = 8192
LARGE_BYTES = 1_000_000_000


def memory_model() -> tuple[dict[str, tuple[float, float]], float, float, float]:
    """conf/memory.config's coefficients: step -> (fixed MiB, KiB per cell), the headroom, the input bytes per cell, the floor."""
    text = MEMORY_CONFIG.read_text()
    steps = {name: (float(fixed), float(per_cell)) for name, fixed, per_cell in
             re.findall(r"withName: '(\w+)'\s*\{\s*ext\.memory_model = \[fixed_mib:\s*([\d.]+), kib_per_cell:\s*([\d.]+)\]", text)}
    headroom = float(re.search(r"ext\.memory_headroom\s*=\s*([\d.]+)", text)[1])
    bytes_per_cell = float(re.search(r"ext\.memory_bytes_per_cell\s*=\s*([\d.]+)", text)[1])
    floor = float(re.search(r"ext\.memory_floor_mib\s*=\s*([\d.]+)", text)[1])
    return steps, headroom, bytes_per_cell, floor


def expected_mib(step: str, input_bytes: int) -> int:
    """What the formula asks for, before the cap."""
    steps, headroom, bytes_per_cell, floor = memory_model()
    fixed, per_cell = steps[step]
    return max(floor, math.ceil(headroom * (fixed + per_cell / 1024 * input_bytes / bytes_per_cell)))


def requested_mib(tmp_path_factory: pytest.TempPathFactory, name: str, input_path: Path) -> dict[str, set[float]]:
    """A -stub run on ``input_path``: each process's requested memory in MiB (every task of it)."""
    cwd = tmp_path_factory.mktemp(f"nf_memory_{name}")
    config = cwd / "limits.config"
    config.write_text(f"process.resourceLimits = [cpus: 1, memory: {LIMIT_MIB}.MB, time: 1.h]\ntrace.raw = true\n")
    nextflow_run(cwd, "-profile", "test", "-stub", "-c", str(config), "--input", str(input_path),
                 "--outdir", str(cwd / "results"), "--trace_report_suffix", name)
    requested: dict[str, set[float]] = {}
    for row in read_trace(cwd / "results", name):
        requested.setdefault(row["process"].split(":")[-1], set()).add(int(row["memory"]) / MIB)
    return requested


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[int, dict[str, set[float]]]]:
    small = DATA / "sim_500x300.h5ad"
    large = tmp_path_factory.mktemp("nf_memory_input") / "large.h5ad"
    with large.open("wb") as fh:  # a sparse file: its size, no data (a stub reads nothing)
        fh.truncate(LARGE_BYTES)
    return {"small": (small.stat().st_size, requested_mib(tmp_path_factory, "small", small)),
            "large": (LARGE_BYTES, requested_mib(tmp_path_factory, "large", large))}


def test_the_coefficients_cover_every_step_that_reads_counts() -> None:
    steps, headroom, bytes_per_cell, floor = memory_model()
    assert set(steps) == {"VALIDATE", "INTEGRATE", "CLUSTER", "DE", "NORMALIZE", "DIAGNOSE", "BASELINES"}
    assert headroom >= 1 and bytes_per_cell > 0 and 0 < floor < LIMIT_MIB
    assert f"withName: '{'|'.join(steps)}'" in MEMORY_CONFIG.read_text()


def test_memory_follows_the_input_size_capped_by_the_resource_limits(runs) -> None:
    steps, _, _, floor = memory_model()
    for size, requested in runs.values():
        for step in steps:
            assert requested[step] == {min(expected_mib(step, size), LIMIT_MIB)}, (size, step, requested[step])
    (small_size, small), large = runs["small"], runs["large"][1]
    assert small_size < 1_000_000 and all(max(small[step]) < LIMIT_MIB for step in steps)
    assert {step for step in steps if small[step] == {floor}} >= {"VALIDATE", "CLUSTER", "DIAGNOSE", "BASELINES"}
    # the large input asks for more in every step; some reach the cap, some stay below it
    assert all(min(large[step]) > max(small[step]) for step in steps)
    assert {step for step in steps if large[step] == {LIMIT_MIB}} >= {"INTEGRATE", "DE"}
    assert {step for step in steps if max(large[step]) < LIMIT_MIB} >= {"CLUSTER", "DIAGNOSE"}


def test_the_other_steps_keep_their_label_memory(runs) -> None:
    for _, requested in runs.values():
        for step in ("COMPOSITION", "PLAN", "DE_MERGE", "REPORT"):
            assert requested[step] == {6 * 1024}, step  # process_single's 6 GB, below the cap
