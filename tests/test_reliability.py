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

import anndata as ad
import pytest
import yaml
from click.testing import CliRunner

from desweep import keys
from desweep.cli import cli
from desweep.errors import DesweepInputError
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
    return status_line(result.output)


def status_line(output: str) -> str:
    """The run's closing ``validate: ran; integrate: skipped; ...`` line (a library warning may follow it on stderr)."""
    lines = [line for line in output.splitlines() if line.startswith("validate: ")]
    assert lines, output[-2000:]
    return lines[-1]


def step_states(line: str) -> dict[str, str]:
    return dict(item.split(": ") for item in line.split("; "))


STEP_NAMES = ("validate", "integrate", "cluster", "composition", "plan", "de", "normalize", "diagnose", "baselines", "report")
#: each step and every step after it that reads its outputs, directly or not
DESCENDANTS = {
    "validate": set(STEP_NAMES),
    "cluster": set(STEP_NAMES) - {"validate", "integrate"},
    "plan": {"plan", "de", "normalize", "diagnose", "baselines", "report"},  # normalize reads the DE tables
    "normalize": {"normalize", "diagnose", "baselines", "report"},
}
QUICK = ["--set", "diagnose.plots=false", "--set", "baselines.methods=wilcoxon", "--set", "de.n_samples=200"]


def ran(line: str) -> set[str]:
    return {name for name, state in step_states(line).items() if state == "ran"}


def test_resume_reruns_the_changed_step_and_only_its_descendants(tiny_input: Path, tmp_path: Path, monkeypatch):
    """One outdir, one change at a time: threads and path spelling, the grid file's
    content, a config value, a deleted output, new content at the input's path; then --force."""
    import shutil

    import numpy as np
    import pandas as pd

    data = tmp_path / "data.h5ad"
    shutil.copy(tiny_input, data)
    grid = tmp_path / "grid.yaml"
    grid.write_text(GRID.read_text())  # seeds [0, 1]
    config = tmp_path / "run.yaml"

    def write_config(resolution: str) -> None:
        config.write_text(f"input: {data}\noutdir: out\nlabels_key: cell_type\nthreads: 1\nsteps:\n"
                          f"  integrate: {{max_epochs: 3, n_top_genes: 0}}\n  cluster: {{resolution: {resolution}}}\n"
                          f"  composition: {{comparisons: 'only_batch0:only_batch1'}}\n  plan: {{grid: {grid}}}\n")

    def run(*extra: str) -> str:
        result = CliRunner().invoke(cli, ["run", "-c", str(config), *QUICK, *extra], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return status_line(result.output)

    outdir = tmp_path / "out"
    write_config("1.0")
    assert ran(run()) == set(STEP_NAMES)
    monkeypatch.chdir(tmp_path)  # the same input spelled relative, other threads: nothing it reads changed
    assert ran(run("-i", "data.h5ad", "--threads", "2")) == set()

    grid.write_text(GRID.read_text().replace("seeds: [0, 1]", "seeds: [0, 2]"))
    assert ran(run()) == DESCENDANTS["plan"]
    plan = pd.read_csv(outdir / keys.STEP_DE / keys.PLAN_CSV)
    assert set(plan["seed"]) == {0, 2}
    tables = {p.stem for p in (outdir / keys.STEP_DE / keys.DE_TABLES_DIR).glob("*.csv")}
    assert tables == set(plan["combination_id"]), "tables of the earlier grid stay beside the new ones"
    partials = {p.stem for p in (outdir / keys.STEP_DE / keys.DE_PARTIAL_SUMMARY_DIR).glob("*.csv")}
    assert partials == set(plan["sampling_key"])

    write_config("0.8")
    assert ran(run()) == DESCENDANTS["cluster"]

    (outdir / keys.STEP_NORMALIZE / keys.CLUSTER_BATCH_MEANS_CSV).unlink()
    assert ran(run()) == DESCENDANTS["normalize"]

    adata = ad.read_h5ad(data)  # new content at the same path
    adata.X = adata.X.copy()
    adata.X.data[: 50] += 1
    adata.write_h5ad(data)
    assert ran(run()) == DESCENDANTS["validate"]
    assert ran(run()) == set()

    params_before = (outdir / keys.PIPELINE_INFO / keys.PARAMS_YAML).read_bytes()
    stamps_before = {p: p.stat().st_mtime_ns for p in outdir.rglob(".desweep_*.json")}
    bad = CliRunner().invoke(cli, ["run", "-c", str(config), "--set", "diagnose.top_n=0"])
    assert bad.exit_code == 1 and "--set diagnose.top_n=0: --top-n" in bad.output
    assert (outdir / keys.PIPELINE_INFO / keys.PARAMS_YAML).read_bytes() == params_before
    assert {p: p.stat().st_mtime_ns for p in outdir.rglob(".desweep_*.json")} == stamps_before

    assert ran(run("--force")) == set(STEP_NAMES)
    stamp = json.loads((outdir / keys.STEP_VALIDATE / keys.step_stamp("validate")).read_text())
    assert stamp["step"] == "validate" and len(stamp["stamp"]) == 64 and stamp["outputs"]
    params = yaml.safe_load(params_before)
    assert params["input_sha256"] and params["steps"]["cluster"]["resolution"] == 0.8
    assert params["resolved"]["diagnose"]["top_n"] == 50 and "threads" not in params["resolved"]["integrate"]
    assert "scvi-tools:" in (outdir / keys.PIPELINE_INFO / keys.SOFTWARE_VERSIONS_YML).read_text()
    np.testing.assert_array_equal(ad.read_h5ad(outdir / keys.STEP_VALIDATE / keys.VALIDATED_H5AD).X.sum(), adata.X.sum())


@pytest.mark.parametrize("step_name, inside", [("de", f"{keys.DE_TABLES_DIR}/T_vs_B__nobc.csv"),
                                                ("integrate", f"{keys.MODEL_DIR}/model.pt")], ids=["de-table", "model-pt"])
def test_a_file_deleted_inside_a_declared_output_folder_reruns_the_step(tmp_path: Path, step_name: str, inside: str):
    """The declared outputs (a folder) still exist; the record of what the step wrote names the missing file."""
    from desweep.runner.resume import _is_current, _listing
    from desweep.runner.steps import STEPS

    step = next(s for s in STEPS if s.name == step_name)
    folder = tmp_path / step.folder
    for output in step.outputs:
        (folder / output).parent.mkdir(parents=True, exist_ok=True)
        if output == Path(inside).parts[0]:
            (folder / output).mkdir()
        else:
            (folder / output).write_text("x")
    (folder / inside).write_text("written by the step")
    record = {"stamp": "s", "run": "r", "outputs": {rel: [size, mtime] for rel, (size, mtime, _) in _listing(folder).items()}}
    assert _is_current(folder, step, "s", record)
    (folder / inside).unlink()
    assert all((folder / output).exists() for output in step.outputs)
    assert not _is_current(folder, step, "s", record)


def first_steps(monkeypatch, names: tuple[str, ...]) -> None:
    """Run only the first steps (enough for changes every step depends on)."""
    from desweep.runner import steps

    every = steps.available_steps
    monkeypatch.setattr(steps, "available_steps", lambda config=None: [s for s in every(config) if s.name in names])


def test_changed_samplesheet_member_reruns_everything(tmp_path: Path, monkeypatch):
    """Only the sheet's bytes were hashed: a member shrunk in place left every step skipped."""
    import shutil

    first_steps(monkeypatch, ("validate", "integrate"))
    sheet_dir = tmp_path / "sheet"
    shutil.copytree(Path(__file__).parent / "data" / "samplesheet", sheet_dir)
    args = ["run", "-i", str(sheet_dir / "samplesheet.csv"), "-o", str(tmp_path / "out"), "--threads", "1",
            "--set", "integrate.max_epochs=2"]

    def run() -> set[str]:
        result = CliRunner().invoke(cli, args, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return ran(status_line(result.output))

    assert run() == {"validate", "integrate"}
    assert run() == set()
    member = ad.read_h5ad(sheet_dir / "batch1.h5ad")
    n_before = ad.read_h5ad(tmp_path / "out" / keys.STEP_VALIDATE / keys.VALIDATED_H5AD).n_obs
    member[: member.n_obs - 30].copy().write_h5ad(sheet_dir / "batch1.h5ad")
    assert run() == {"validate", "integrate"}
    assert ad.read_h5ad(tmp_path / "out" / keys.STEP_VALIDATE / keys.VALIDATED_H5AD).n_obs == n_before - 30


def test_same_bytes_under_another_name_do_not_retrain(tiny_input: Path, tmp_path: Path, monkeypatch):
    """The input is known by its content: a copy, a symlink or a Nextflow-style stage folder of the same bytes reruns nothing."""
    import shutil

    first_steps(monkeypatch, ("validate", "integrate"))
    data = tmp_path / "data.h5ad"
    shutil.copy(tiny_input, data)
    (tmp_path / "copy.h5ad").write_bytes(data.read_bytes())
    (tmp_path / "link.h5ad").symlink_to(data)
    stage = tmp_path / "work" / "ab" / "cdef0123"
    stage.mkdir(parents=True)
    (stage / "input.h5ad").symlink_to(tmp_path / "copy.h5ad")

    def run(path: Path) -> set[str]:
        result = CliRunner().invoke(cli, ["run", "-i", str(path), "-o", str(tmp_path / "out"), "--threads", "1",
                                          "--set", "integrate.max_epochs=2"], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return ran(status_line(result.output))

    assert run(data) == {"validate", "integrate"}
    for other in (tmp_path / "copy.h5ad", tmp_path / "link.h5ad", stage / "input.h5ad"):
        assert run(other) == set(), other


def desweep_process(*args: str, **kwargs) -> subprocess.Popen:
    env = os.environ | {"PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "desweep.cli", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def endless_training_run(tiny_input: Path, out: Path) -> subprocess.Popen:
    """``desweep run`` whose training never ends by itself (for tests that interrupt it)."""
    return desweep_process("run", "-i", str(tiny_input), "--labels-key", "cell_type", "-o", str(out), "--threads", "1",
                           "--set", "integrate.max_epochs=100000", "--set", "integrate.no_early_stopping=true",
                           "--set", "composition.comparisons=only_batch0:only_batch1")


def wait_until_training(out: Path, proc: subprocess.Popen) -> None:
    """Until validate has finished and training has started."""
    wait_for(lambda: (out / keys.STEP_VALIDATE / keys.step_stamp("validate")).is_file(), proc)
    time.sleep(2)


def wait_for(condition, proc: subprocess.Popen, timeout: float = 600) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and not condition():
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    assert condition(), "timed out"


def test_one_writer_per_folder_input_guard_and_ctrl_c(tiny_input: Path, tmp_path: Path, monkeypatch):
    """Real processes: a second run into a busy folder is refused, naming the first; an input inside
    the folder a run writes is refused; Ctrl-C during training ends with one 'Aborted!' line and a folder that resumes."""
    out = tmp_path / "out"
    first = endless_training_run(tiny_input, out)
    try:
        wait_until_training(out, first)
        second = desweep_process("run", "-i", str(tiny_input), "-o", str(out), "--threads", "1",
                                 "--set", "integrate.max_epochs=1")  # short, should the lock fail to stop it
        _, err = second.communicate(timeout=300)
        assert second.returncode == 1
        assert f"--outdir: another desweep run is writing this folder (pid {first.pid} on " in err, err
        validated = out / keys.STEP_VALIDATE / keys.VALIDATED_H5AD
        before = validated.read_bytes()
        guard = desweep_process("run", "-i", str(validated), "-o", str(out), "--threads", "1")
        _, err = guard.communicate(timeout=300)
        assert guard.returncode == 1 and [line for line in err.splitlines() if line.startswith("Error:")] == [
            f"Error: {validated}: input: lies inside {out.resolve() / keys.STEP_VALIDATE}, a folder this run writes "
            "(it would be overwritten): copy it elsewhere or choose another --outdir"], err
        assert validated.read_bytes() == before
        assert first.poll() is None, "the first run ended before it could be interrupted"
        first.send_signal(signal.SIGINT)
        _, err = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 128 + signal.SIGINT
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[-1] == "Aborted!" and not [line for line in lines if line.startswith("Error:") or "Traceback" in line], err[-2000:]
    assert not list(out.rglob("*.tmp-*")), "partial outputs left"
    assert not (out / keys.STEP_INTEGRATE / keys.step_stamp("integrate")).exists()

    first_steps(monkeypatch, ("validate", "integrate"))
    result = CliRunner().invoke(cli, ["run", "-i", str(tiny_input), "--labels-key", "cell_type", "-o", str(out), "--threads", "1",
                                      "--set", "integrate.max_epochs=2", "--set", "integrate.no_early_stopping=true"],
                                     catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert step_states(status_line(result.output)) == {"validate": "skipped", "integrate": "ran"}


def test_sigterm_says_so_on_stderr_and_in_the_run_log(tiny_input: Path, tmp_path: Path):
    """A scheduler's SIGTERM during training: exit 143 with one line on stderr and the same line in the run log."""
    from desweep.cli._common import TERMINATED

    out = tmp_path / "out"
    proc = endless_training_run(tiny_input, out)
    try:
        wait_until_training(out, proc)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    line = TERMINATED.format(signal="SIGTERM")
    assert proc.returncode == 128 + signal.SIGTERM
    assert [x for x in err.splitlines() if x.strip()][-1] == line, err[-2000:]
    log = (out / keys.PIPELINE_INFO / "desweep_run.log").read_text()
    assert log.rstrip().endswith(f"ERROR desweep: {line}"), log[-500:]


def test_kill_9_leaves_temporary_files_the_next_step_removes(tmp_path: Path):
    """``kill -9`` cannot clean up: the next step writing that folder removes what a dead process left, never a live writer's."""
    from desweep.io import _HOST

    out = tmp_path / "validate"
    out.mkdir()
    proc = desweep_process("simulate", "-o", str(out / "sim.h5ad"), "--n-cells", "50000")
    try:
        wait_for(lambda: bool(list(out.glob(".sim.h5ad.tmp-*"))), proc, timeout=300)
    finally:
        proc.kill()
        proc.communicate()
    left = list(out.glob(".sim.h5ad.tmp-*"))
    assert left, "kill -9 left nothing to clean"
    live = out / f".other.csv.tmp-{_HOST}-{os.getpid()}-abcd1234.csv"  # a writer still running (this process)
    live.write_text("in progress")
    result = CliRunner().invoke(cli, ["validate", "-i", str(tiny_h5ad(tmp_path)), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert not any(p.exists() for p in left) and live.exists()


def tiny_h5ad(tmp_path: Path) -> Path:
    import numpy as np
    import pandas as pd

    path = tmp_path / "in.h5ad"
    counts = np.random.default_rng(0).poisson(2.0, size=(60, 20)).astype(np.float32)
    ad.AnnData(counts, obs=pd.DataFrame({"batch": ["b1", "b2"] * 30}, index=[f"c{i}" for i in range(60)])).write_h5ad(path)
    return path


def test_same_inputs_and_seed_give_byte_identical_tables(tiny_input: Path, tmp_path: Path):
    run_pipeline(tiny_input, tmp_path / "a")
    run_pipeline(tiny_input, tmp_path / "b")
    tables = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.csv"))
    assert len(tables) >= 5
    different = [str(t) for t in tables if not filecmp.cmp(tmp_path / "a" / t, tmp_path / "b" / t, shallow=False)]
    assert different == []


def test_normalize_runs_after_the_sweep_with_diagnose_top_n(tmp_path: Path):
    """normalize reads the DE plan and tables (their top genes, diagnose's --top-n); its own option still wins;
    its stamp covers them."""
    from desweep.runner import _stamp, load_config, resolve_steps

    def resolved(*items: str):
        return resolve_steps(load_config(None, {"input": str(tmp_path / "x.h5ad"), "outdir": str(tmp_path)}, items))

    steps = resolved("diagnose.top_n=20")
    names = list(steps)
    assert names.index("de") < names.index("normalize") and {"plan", "de"} <= set(steps["normalize"].step.depends)
    args = steps["normalize"].args
    assert args[args.index("--plan") + 1] == str(tmp_path / keys.STEP_DE / keys.PLAN_CSV)
    assert args[args.index("--tables") + 1] == str(tmp_path / keys.STEP_DE / keys.DE_TABLES_DIR)
    assert steps["normalize"].params["top_n"] == 20
    assert resolved("diagnose.top_n=20", "normalize.top_n=7")["normalize"].params["top_n"] == 7
    stamps = {n: _stamp(resolved(f"diagnose.top_n={n}")["normalize"], tmp_path, {}, "") for n in (20, 30)}
    assert stamps[20] != stamps[30]
    with pytest.raises(DesweepInputError, match=r"diagnose\.top_n"):
        resolved("diagnose.top_n=0")
