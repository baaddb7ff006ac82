"""Atomic outputs, resume of `desweep run`, and determinism of the tables."""

from __future__ import annotations

import filecmp
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from desweep import keys
from desweep.cli import cli
from desweep.io import atomic_path, write_csv

pytestmark = pytest.mark.slow

TINY_SIM = ["--n-cells", "600", "--n-genes", "400", "--seed", "3"]
GRID = Path(__file__).parent / "data" / "grid_test.yaml"
FAST_STEPS = ["--threads", "1", "--set", "integrate.max_epochs=3", "--set", "integrate.n_top_genes=0",
              "--set", "composition.comparisons=only_batch0:only_batch1", "--set", f"plan.grid={GRID}"]


def test_atomic_path_keeps_previous_file_when_the_writer_fails(tmp_path: Path):
    import pandas as pd

    target = tmp_path / "table.csv"
    write_csv(pd.DataFrame({"a": [1]}), target)
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert target.read_text() == "a\n1\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.csv"]


def test_terminated_step_leaves_no_output(tmp_path: Path):
    """SIGTERM while the simulator writes 100,000 cells: no output file, no temporary file."""
    out = tmp_path / "sim.h5ad"
    env = os.environ | {"PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "desweep.cli", "simulate", "-o", str(out), "--n-cells", "100000"],
                            env=env, stderr=subprocess.PIPE, stdout=subprocess.PIPE)
    deadline = time.time() + 300
    while time.time() < deadline and not list(tmp_path.glob(".sim.h5ad.tmp-*")) and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "the writer finished before it could be interrupted"
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=120)
    assert proc.returncode != 0
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def tiny_input(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tiny") / "tiny.h5ad"
    result = CliRunner().invoke(cli, ["simulate", "-o", str(path), *TINY_SIM])
    assert result.exit_code == 0, result.output
    return path


def run_pipeline(input_path: Path, outdir: Path, *extra: str) -> str:
    result = CliRunner().invoke(cli, ["run", "-i", str(input_path), "--labels-key", "cell_type", "-o", str(outdir), *FAST_STEPS, *extra],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output.strip().splitlines()[-1]


def step_states(line: str) -> dict[str, str]:
    return dict(item.split(": ") for item in line.split("; "))


def test_run_resumes_reruns_changed_steps_and_forces(tiny_input: Path, tmp_path: Path):
    outdir = tmp_path / "out"
    first = step_states(run_pipeline(tiny_input, outdir))
    assert set(first.values()) == {"ran"}
    assert step_states(run_pipeline(tiny_input, outdir)) == {name: "skipped" for name in first}
    changed = step_states(run_pipeline(tiny_input, outdir, "--set", "cluster.resolution=0.5"))
    assert changed["validate"] == changed["integrate"] == "skipped"
    assert changed["cluster"] == changed["composition"] == "ran"
    assert all(changed[name] == "ran" for name in list(first)[list(first).index("cluster"):])
    forced = step_states(run_pipeline(tiny_input, outdir, "--set", "cluster.resolution=0.5", "--force"))
    assert set(forced.values()) == {"ran"}
    stamp = json.loads((outdir / keys.STEP_VALIDATE / keys.step_stamp("validate")).read_text())
    assert stamp["step"] == "validate" and len(stamp["stamp"]) == 64
    params = (outdir / keys.PIPELINE_INFO / keys.PARAMS_YAML).read_text()
    assert "input_sha256:" in params and "resolution: 0.5" in params
    assert "scvi-tools:" in (outdir / keys.PIPELINE_INFO / keys.SOFTWARE_VERSIONS_YML).read_text()


def test_same_inputs_and_seed_give_byte_identical_tables(tiny_input: Path, tmp_path: Path):
    run_pipeline(tiny_input, tmp_path / "a")
    run_pipeline(tiny_input, tmp_path / "b")
    tables = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.csv"))
    assert len(tables) >= 5
    different = [str(t) for t in tables if not filecmp.cmp(tmp_path / "a" / t, tmp_path / "b" / t, shallow=False)]
    assert different == []


def test_normalize_runs_after_the_sweep_with_diagnose_top_n(tmp_path: Path):
    """normalize reads the DE tables (their top genes, diagnose's --top-n); its own option still wins."""
    from desweep.runner import available_steps, load_config, step_arguments

    steps = {step.name: step for step in available_steps()}
    assert list(steps).index("de") < list(steps).index("normalize") and "de" in steps["normalize"].depends
    config = load_config(None, {"input": str(tmp_path / "x.h5ad"), "outdir": str(tmp_path), "steps": {"diagnose": {"top_n": 20}}})
    args = step_arguments(steps["normalize"], config, tmp_path)
    assert args[args.index("--plan") + 1] == str(tmp_path / keys.STEP_DE / keys.PLAN_CSV)
    assert args[args.index("--tables") + 1] == str(tmp_path / keys.STEP_DE / keys.DE_TABLES_DIR)
    assert args[args.index("--top-n") + 1] == "20"
    config["steps"]["normalize"] = {"top_n": 7}
    args = step_arguments(steps["normalize"], config, tmp_path)
    assert [args[i + 1] for i, a in enumerate(args) if a == "--top-n"][-1] == "7"
