"""The bad-input matrix: every case exits non-zero with one line naming the file and
the field, prints no traceback, and leaves no output file of that step behind.

Cases are table-driven: each builds its inputs in a temporary folder and returns
the command line, the text the error must contain, and the step folder that must
stay empty.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from click.testing import CliRunner

from desweep import keys
from desweep.cli import cli


def small_adata(n_cells: int = 120, n_genes: int = 40, seed: int = 0) -> ad.AnnData:
    """Valid raw counts: 2 batches, 2 labels."""
    rng = np.random.default_rng(seed)
    counts = rng.poisson(2.0, size=(n_cells, n_genes)).astype(np.float32)
    obs = pd.DataFrame(
        {"batch": np.repeat(["b1", "b2"], n_cells // 2), "cell_type": np.tile(["T", "B"], n_cells // 2)},
        index=[f"c{i}" for i in range(n_cells)],
    )
    return ad.AnnData(sp.csr_matrix(counts), obs=obs, var=pd.DataFrame(index=[f"g{j}" for j in range(n_genes)]))


def file_with(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


def write(adata: ad.AnnData, path: Path) -> Path:
    adata.write_h5ad(path)
    return path


@dataclass
class Case:
    """``build(tmp) -> (args, expected text, step folder that must not be written)``."""

    name: str
    build: Callable[[Path], tuple[list[str], str, Path]]


def validate_case(name: str, mutate: Callable[[ad.AnnData, Path], Path], expected: str, *extra: str) -> Case:
    def build(tmp: Path) -> tuple[list[str], str, Path]:
        path = mutate(small_adata(), tmp)
        out = tmp / "out" / "validate"
        return ["validate", "-i", str(path), "--batch-key", "batch", "-o", str(out), *extra], expected, out

    return Case(name, build)


def _h5ad(a: ad.AnnData, tmp: Path) -> Path:
    return write(a, tmp / "in.h5ad")


def _with(transform: Callable[[ad.AnnData], ad.AnnData]) -> Callable[[ad.AnnData, Path], Path]:
    return lambda a, tmp: _h5ad(transform(a), tmp)


def _log_normalized(a: ad.AnnData) -> ad.AnnData:
    x = a.X.toarray()
    a.X = sp.csr_matrix(np.log1p(x / x.sum(1, keepdims=True) * 1e4).astype(np.float32))
    return a


def _set_x(values: Callable[[np.ndarray], np.ndarray]) -> Callable[[ad.AnnData], ad.AnnData]:
    def transform(a: ad.AnnData) -> ad.AnnData:
        a.X = values(a.X.toarray().astype(np.float32))
        return a

    return transform


def _first(value: float) -> Callable[[np.ndarray], np.ndarray]:
    def put(x: np.ndarray) -> np.ndarray:
        x[0, 0] = value
        return x

    return put


def _rename(attr: str) -> Callable[[ad.AnnData], ad.AnnData]:
    def transform(a: ad.AnnData) -> ad.AnnData:
        index = list(getattr(a, attr))
        index[1] = index[0]
        setattr(a, attr, index)
        return a

    return transform


def _obs(column: str, values) -> Callable[[ad.AnnData], ad.AnnData]:
    def transform(a: ad.AnnData) -> ad.AnnData:
        a.obs[column] = values(a) if callable(values) else values
        return a

    return transform


def _tiny_batch(a: ad.AnnData) -> ad.AnnData:
    keep = np.r_[np.arange(60), np.arange(60, 65)]
    return a[keep].copy()


def _truncated(a: ad.AnnData, tmp: Path) -> Path:
    path = _h5ad(a, tmp)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    return path


def samplesheet_case(name: str, header: str, rows: list[str], expected: str, files: dict[str, ad.AnnData] | None = None) -> Case:
    def build(tmp: Path) -> tuple[list[str], str, Path]:
        for fname, adata in (files if files is not None else {"s1.h5ad": small_adata(seed=1), "s2.h5ad": small_adata(seed=2)}).items():
            write(adata, tmp / fname)
        sheet = tmp / "samples.csv"
        sheet.write_text("\n".join([header, *rows]) + "\n")
        out = tmp / "out" / "validate"
        return ["validate", "-i", str(sheet), "-o", str(out)], expected, out

    return Case(name, build)


def copied_member_case(tmp: Path) -> tuple[list[str], str, Path]:
    """The same cells twice under two batches: a byte copy under another name."""
    import shutil

    write(small_adata(seed=1), tmp / "s1.h5ad")
    shutil.copy(tmp / "s1.h5ad", tmp / "s1_copy.h5ad")
    sheet = tmp / "samples.csv"
    sheet.write_text("sample,batch,path\ns1,b1,s1.h5ad\ns2,b2,s2.h5ad\ns3,b3,s1_copy.h5ad\n")
    write(small_adata(seed=2), tmp / "s2.h5ad")
    out = tmp / "out" / "validate"
    return (["validate", "-i", str(sheet), "-o", str(out)],
            f"samples.csv: path: rows 2 and 4 name files with the same content ({tmp / 's1.h5ad'}, {tmp / 's1_copy.h5ad'})", out)


def linked_member_case(tmp: Path) -> tuple[list[str], str, Path]:
    """The same file under two batches, once through a symlink in another folder."""
    args, _, out = samplesheet_case("", "sample,batch,path", ["s1,b1,s1.h5ad", "s2,b2,links/s1.h5ad"], "").build(tmp)
    (tmp / "links").mkdir()
    (tmp / "links" / "s1.h5ad").symlink_to(tmp / "s1.h5ad")
    return args, "samples.csv: path: rows 2 and 3 name the same file", out


def sample_as_batch_key_case(tmp: Path) -> tuple[list[str], str, Path]:
    args, _, out = samplesheet_case("", "sample,batch,path", ["s1,b1,s1.h5ad", "s2,b1,s2.h5ad"], "").build(tmp)
    return [*args, "--batch-key", "sample"], "samples.csv: --batch-key: 'sample' is where a samplesheet's sample column goes", out


def _renamed_genes(seed: int) -> ad.AnnData:
    a = small_adata(seed=seed)
    a.var_names = [f"other{j}" for j in range(a.n_vars)]
    return a


def composition_case(name: str, comparisons: str, expected: str) -> Case:
    def build(tmp: Path) -> tuple[list[str], str, Path]:
        a = small_adata()
        a.obs["leiden"] = a.obs["cell_type"]
        a.uns["desweep"] = {"batch_key": "batch", "labels_key": "cell_type", "group_key": "cell_type"}
        path = write(a, tmp / "clustered.h5ad")
        out = tmp / "out" / "composition"
        return ["composition", "-i", str(path), "--comparisons", comparisons, "-o", str(out)], expected, out

    return Case(name, build)


def clustered_small(tmp: Path) -> Path:
    a = small_adata()
    a.uns["desweep"] = {"batch_key": "batch", "labels_key": "cell_type", "group_key": "cell_type"}
    return write(a, tmp / "clustered.h5ad")


def comparisons_small(tmp: Path) -> Path:
    """A valid composition/ folder for the small data (T vs B, both shared)."""
    out = tmp / "composition"
    result = CliRunner().invoke(cli, ["composition", "-i", str(clustered_small(tmp)), "--comparisons", "T:B", "-o", str(out)])
    assert result.exit_code == 0, result.output
    return out / "comparisons.csv"


def grid_case(name: str, grid_text: str, expected: str) -> Case:
    def build(tmp: Path) -> tuple[list[str], str, Path]:
        grid = tmp / "grid.yaml"
        grid.write_text(grid_text)
        out = tmp / "out" / "de"
        return ["plan", "--comparisons", str(comparisons_small(tmp)), "--grid", str(grid), "-o", str(out)], expected, out

    return Case(name, build)


def _unknown_sampling_key(tmp: Path) -> tuple[list[str], str, Path]:
    planned = tmp / "planned"
    result = CliRunner().invoke(cli, ["plan", "--comparisons", str(comparisons_small(tmp)), "-o", str(planned)])
    assert result.exit_code == 0, result.output
    out = tmp / "out" / "de"
    args = ["de", "--plan", str(planned / "plan.csv"), "--input", str(tmp / "clustered.h5ad"), "--model", str(tmp / "model"),
            "--sampling-key", "T_vs_B__edited-by-hand", "-o", str(out)]
    return args, "plan.csv: sampling_key: 'T_vs_B__edited-by-hand' is not in this plan", out


def run_case(name: str, config_text: str, expected: str) -> Case:
    def build(tmp: Path) -> tuple[list[str], str, Path]:
        write(small_adata(), tmp / "in.h5ad")
        config = tmp / "config.yaml"
        config.write_text(config_text)
        return ["run", "-c", str(config), "-o", str(tmp / "out")], expected, tmp / "out" / "validate"

    return Case(name, build)


def run_flags_case(name: str, flags: list[str], expected: str) -> Case:
    """``desweep run`` with command-line flags: the error comes before anything is written (no output folder at all)."""
    def build(tmp: Path) -> tuple[list[str], str, Path]:
        write(small_adata(), tmp / "in.h5ad")
        return ["run", "-i", str(tmp / "in.h5ad"), "--labels-key", "cell_type", "-o", str(tmp / "out"), *flags], expected, tmp / "out"

    return Case(name, build)


def run_design_case(name: str, flags: list[str], expected: str) -> Case:
    """``desweep run`` whose design fails right after validate: nothing is trained (integrate/ never written)."""
    def build(tmp: Path) -> tuple[list[str], str, Path]:
        write(small_adata(), tmp / "in.h5ad")
        return (["run", "-i", str(tmp / "in.h5ad"), "--labels-key", "cell_type", "-o", str(tmp / "out"), *flags], expected,
                tmp / "out" / "integrate")

    return Case(name, build)


def extra_genes_case(tmp: Path) -> tuple[list[str], str, Path]:
    result = CliRunner().invoke(cli, ["validate", "-i", str(write(small_adata(), tmp / "in.h5ad")), "-o", str(tmp / "v")])
    assert result.exit_code == 0, result.output
    out = tmp / "out" / "integrate"
    return (["integrate", "-i", str(tmp / "v" / "validated.h5ad"), "--extra-genes", "g1,CD3E", "--max-epochs", "1", "-o", str(out)],
            "--extra-genes: CD3E: not a gene of the data (1 of 2 absent", out)


def many_pairs_case(tmp: Path) -> tuple[list[str], str, Path]:
    pairs = tmp / "pairs.csv"
    pairs.write_text("group1,group2\n" + "".join("T,B\nB,T\n" for _ in range(1)))
    out = tmp / "composition"
    result = CliRunner().invoke(cli, ["composition", "-i", str(clustered_small(tmp)), "--comparisons", str(pairs), "-o", str(out)])
    assert result.exit_code == 0, result.output
    planned = tmp / "out" / "de"
    return (["plan", "--comparisons", str(out / "comparisons.csv"), "--max-combinations", "5", "-o", str(planned)],
            "--max-combinations: the plan has", planned)


CASES: list[Case] = [
    Case("missing file", lambda tmp: (["validate", "-i", str(tmp / "nope.h5ad"), "-o", str(tmp / "v")], "nope.h5ad: input: does not exist", tmp / "v")),
    Case("empty file", lambda tmp: (["validate", "-i", str(file_with(tmp / "e.h5ad", b"")), "-o", str(tmp / "v")], "e.h5ad: input: is empty", tmp / "v")),
    validate_case("truncated h5ad", _truncated, "cannot be read (truncated or corrupt?)"),
    Case("csv given as h5ad", lambda tmp: (["validate", "-i", str(file_with(tmp / "x.h5ad", b"a,b\n1,2\n")), "-o", str(tmp / "v")], "x.h5ad: h5ad: is a text/CSV file", tmp / "v")),
    validate_case("log-normalized values", _with(_log_normalized), "X: has non-integer values"),
    validate_case("negative counts", _with(_set_x(_first(-3.0))), "X: has negative values"),
    validate_case("NaN counts", _with(_set_x(_first(np.nan))), "X: has 1 NaN or infinite values"),
    validate_case("inf counts", _with(_set_x(_first(np.inf))), "X: has 1 NaN or infinite values"),
    validate_case("missing counts layer", _h5ad, "layers['counts']: missing", "--layer", "counts"),
    validate_case("batch key absent", _h5ad, "obs['donor']: missing (--batch-key", "--batch-key", "donor"),
    validate_case("batch key with one level", _with(_obs("batch", "b1")), "obs['batch']: has one level only (b1)"),
    validate_case("batch with too few cells", _with(_tiny_batch), "batch 'b2' has 5 cells, fewer than --min-cells-per-batch 20"),
    validate_case("batch key with missing values", _with(_obs("batch", lambda a: a.obs["batch"].where(np.arange(a.n_obs) > 0))), "obs['batch']: 1 cells have no value"),
    validate_case("labels key absent", _h5ad, "obs['celltype']: missing (--labels-key", "--labels-key", "celltype"),
    validate_case("duplicate cell names", _with(_rename("obs_names")), "obs_names: cell names repeat"),
    validate_case("duplicate gene names", _with(_rename("var_names")), "var_names: gene names repeat"),
    samplesheet_case("samplesheet missing column", "sample,path", ["s1,s1.h5ad"], "samples.csv: batch: column missing"),
    samplesheet_case("samplesheet bad path", "sample,batch,path", ["s1,b1,s1.h5ad", "s2,b2,missing.h5ad"], "samples.csv: path: "),
    samplesheet_case("samplesheet duplicate sample", "sample,batch,path", ["s1,b1,s1.h5ad", "s1,b2,s2.h5ad"], "samples.csv: sample: sample name 's1' is used more than once"),
    samplesheet_case("samplesheet sample with spaces", "sample,batch,path", ["s 1,b1,s1.h5ad", "s2,b2,s2.h5ad"], "row 2 column 'sample': sample name must be given, with letters, digits, dots, dashes or underscores only"),
    samplesheet_case("samplesheet no shared genes", "sample,batch,path", ["s1,b1,s1.h5ad", "s2,b2,s2.h5ad"], "samples.csv: path: the samples share no gene names",
                     files={"s1.h5ad": small_adata(seed=1), "s2.h5ad": _renamed_genes(2)}),
    samplesheet_case("samplesheet lists a file twice", "sample,batch,path", ["s1,b1,s1.h5ad", "s2,b2,s2.h5ad", "s3,b1,s1.h5ad"],
                     "samples.csv: path: rows 2 and 4 name the same file"),
    Case("samplesheet lists a file and a link to it", linked_member_case),
    Case("samplesheet lists a copy of a file", copied_member_case),
    Case("samplesheet with --batch-key sample", sample_as_batch_key_case),
    Case("counts table given as the input", lambda tmp: (
        ["validate", "-i", str(file_with(tmp / "counts.csv", b",g1,g2,g3,g4,g5\nc1,1,0,2,0,1\nc2,0,3,1,1,0\n")), "-o", str(tmp / "v")],
        "counts.csv: input: a table of 6 columns without sample, batch, path: a counts matrix? Give counts as an .h5ad", tmp / "v")),
    samplesheet_case("samplesheet with no rows", "sample,batch,path", [], "samples.csv: samplesheet: has no rows"),
    composition_case("comparison malformed", "T-B", "comparisons: 'T-B' is not of the form group1:group2"),
    composition_case("group1 equals group2", "T:T", "comparisons: 'T:T' compares a group with itself"),
    composition_case("group absent", "T:NK", "comparisons: group 'NK' does not exist (have: B, T)"),
    Case("group smaller than the minimum", lambda tmp: (
        ["composition", "-i", str(clustered_small(tmp)), "--comparisons", "T:B", "--min-cells-per-group", "100", "-o", str(tmp / "c")],
        "comparisons: group 'T' has 60 cells, fewer than --min-cells-per-group 100", tmp / "c")),
    grid_case("grid unknown key", "batch_corection: [true]\n", "grid.yaml: batch_corection: unknown grid key"),
    grid_case("grid wrong type", "seeds: [zero]\n", "grid.yaml: seeds: "),
    grid_case("grid empty", "# nothing here\n", "grid.yaml: grid: is empty"),
    Case("plan edited with an unknown sampling key", _unknown_sampling_key),
    run_case("config unknown key", "input: in.h5ad\nbatchkey: batch\n", "config.yaml: batchkey: unknown key"),
    run_case("config unknown step option", "input: in.h5ad\nsteps:\n  integrate:\n    epochs: 3\n", "steps.integrate.epochs: unknown option of `desweep integrate`"),
    run_case("config not YAML", "input: [in.h5ad\n", "config.yaml: config: is not valid YAML"),
    # names are data
    samplesheet_case("samplesheet empty batch", "sample,batch,path", ["s1,b1,s1.h5ad", "s2,,s2.h5ad"],
                     "samples.csv: row 3 column 'batch': '' is empty or reads as a missing value"),
    samplesheet_case("samplesheet NA batch", "sample,batch,path", ["s1,NA,s1.h5ad", "s2,N/A,s2.h5ad"],
                     "samples.csv: row 2 column 'batch': 'NA' is empty or reads as a missing value"),
    samplesheet_case("samplesheet None sample", "sample,batch,path", ["None,b1,s1.h5ad", "s2,b2,s2.h5ad"],
                     "samples.csv: row 2 column 'sample': 'None' is empty or reads as a missing value"),
    validate_case("label NA", _with(_obs("cell_type", lambda a: np.where(np.arange(a.n_obs) % 3 == 0, "NA", a.obs["cell_type"]))),
                  "obs['cell_type']: 40 cells have the value 'NA', which is empty or reads as a missing value", "--labels-key", "cell_type"),
    validate_case("batch None", _with(_obs("batch", lambda a: np.where(np.arange(a.n_obs) < 60, "None", "b2"))),
                  "obs['batch']: 60 cells have the value 'None'"),
    validate_case("empty label", _with(_obs("cell_type", lambda a: np.where(np.arange(a.n_obs) == 0, "", a.obs["cell_type"]))),
                  "obs['cell_type']: 1 cells have the value ''", "--labels-key", "cell_type"),
    validate_case("one label only", _with(_obs("cell_type", "T")), "obs['cell_type']: has one label only (T): desweep compares two groups",
                  "--labels-key", "cell_type"),
    validate_case("labels key desweep writes", _with(_obs("desweep_leiden", "T")), "--labels-key: 'desweep_leiden' is a column desweep",
                  "--labels-key", "desweep_leiden"),
    validate_case("labels key is the batch key", _h5ad, "--labels-key: 'batch' is also the batch key", "--labels-key", "batch"),
    composition_case("comparison given twice", "T:B;B:T;T:B", "comparisons: 'T:B' is given twice"),
    composition_case("comparison with an unterminated quote", '"T:B', "unterminated quote"),
    Case("comparisons file without group2", lambda tmp: (
        ["composition", "-i", str(clustered_small(tmp)), "--comparisons", str(file_with(tmp / "pairs.csv", b"group1,g2\nT,B\n")),
         "-o", str(tmp / "c")], "pairs.csv: group2: column missing", tmp / "c")),
    Case("extra gene absent", extra_genes_case),
    Case("plan over --max-combinations", many_pairs_case),
    # every option of a run checked before the first step, named by its --set item
    run_flags_case("set value out of range", ["--set", "diagnose.top_n=0"], "--set diagnose.top_n=0: --top-n: 0 is not in the range x>=1"),
    run_flags_case("set empty integer", ["--set", "integrate.max_epochs="], "--set integrate.max_epochs=: --max-epochs: '' is not a valid integer"),
    run_flags_case("set unparsable list", ["--set", "integrate.max_epochs=[1,2"], "--set integrate.max_epochs=[1,2: --max-epochs: '[1,2'"),
    run_flags_case("set bad boolean", ["--set", "integrate.early_stopping=maybe"], "--set integrate.early_stopping=maybe: --early-stopping:"),
    run_flags_case("set bad choice", ["--set", "normalize.choices=own,each"], "--set normalize.choices=own,each: --choices: unknown choice"),
    run_flags_case("set bad comparisons", ["--set", "composition.comparisons=T-B"], "--set composition.comparisons=T-B: --comparisons: 'T-B' is not of the form"),
    run_flags_case("set negative resolution", ["--set", "cluster.resolution=-1"], "--set cluster.resolution=-1: --resolution: -1.0 is not in the range x>0"),
    run_flags_case("set option the runner sets", ["--set", "validate.input=other.h5ad"], "--set validate.input=other.h5ad: --input: `desweep run` sets --input"),
    run_flags_case("set unknown step", ["--set", "integrat.max_epochs=3"], "--set integrat.max_epochs=3: integrat: unknown step"),
    run_flags_case("set unknown option", ["--set", "integrate.epochs=3"], "--set integrate.epochs=3: epochs: unknown option of `desweep integrate`"),
    run_flags_case("set missing report config", ["--set", "report.config=/nonexistent/mqc.yml"],
                   "--set report.config=/nonexistent/mqc.yml: --config: does not exist"),
    run_flags_case("set unknown normalize batch", ["--set", "normalize.batches=b1,nope"],
                   "--set normalize.batches=b1,nope: --batches: 'nope' is not a batch of the input (obs['batch']: b1, b2)"),
    validate_case("labels differing by outer spaces", _with(_obs("cell_type", lambda a: np.where(np.arange(a.n_obs) < 30, " T",
                                                                                                 a.obs["cell_type"]))),
                  "obs['cell_type']: labels ' T' and 'T' differ only by spaces at their ends", "--labels-key", "cell_type"),
    Case("run with a binary grid file", lambda tmp: (
        ["run", "-i", str(write(small_adata(), tmp / "in.h5ad")), "--labels-key", "cell_type", "-o", str(tmp / "out"),
         "--set", f"plan.grid={file_with(tmp / 'grid.yaml', bytes(range(256)))}"],
        "grid.yaml: grid: is not a YAML text file (byte 128 is not UTF-8 text; binary?)", tmp / "out")),
    run_flags_case("negative seed", ["--seed", "-1"], "-1 is not in the range 0<=x<=4294967295"),
    run_case("config value of the wrong type", "input: in.h5ad\nsteps:\n  integrate:\n    max_epochs: many\n",
             "config.yaml: steps.integrate.max_epochs: 'many' is not a valid integer"),
    run_design_case("run with no comparison possible", [], "validated.h5ad: obs['cell_type']: no group is "
                    "specific to one batch (2 groups): name the pairs to compare with --comparisons (desweep run: --set "
                    "composition.comparisons=...), e.g. 'B:T'"),
    run_design_case("run with an absent group", ["--set", "composition.comparisons=T:NK"], "comparisons: group 'NK' does not exist"),
    run_design_case("run with too large a plan", ["--set", "composition.comparisons=T:B;B:T", "--set", "plan.max_combinations=3"],
                    "--max-combinations: the plan has"),
    Case("run input is a folder", lambda tmp: (["run", "-i", str(tmp), "-o", str(tmp / "out")], ": input: is a folder, expected a file", tmp / "out")),
    Case("run outdir cannot be created", lambda tmp: (["run", "-i", str(write(small_adata(), tmp / "in.h5ad")), "-o", "/proc/desweep-test"],
                                                    "/proc/desweep-test: --outdir: cannot be created", tmp / "none")),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_fails_in_one_line_and_writes_nothing(case: Case, tmp_path: Path):
    args, expected, step_dir = case.build(tmp_path)
    result = CliRunner().invoke(cli, args)
    assert result.exit_code != 0
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    assert expected in errors[0], f"expected {expected!r} in {errors[0]!r}"
    assert "Traceback" not in result.output
    leftovers = [p for p in step_dir.rglob("*") if p.is_file()] if step_dir.exists() else []
    assert leftovers == [], leftovers


def test_outdir_that_is_a_file(tmp_path: Path):
    path = write(small_adata(), tmp_path / "in.h5ad")
    blocker = tmp_path / "out"
    blocker.write_text("I am a file")
    result = CliRunner().invoke(cli, ["validate", "-i", str(path), "-o", str(blocker)])
    assert result.exit_code == 1
    assert "out: --outdir: exists and is a file, not a folder" in result.output
    assert blocker.read_text() == "I am a file"


def test_genes_and_cells_without_counts_are_dropped_with_a_note(tmp_path: Path):
    a = small_adata()
    x = a.X.toarray()
    x[:, 3] = 0
    x[5, :] = 0
    a.X = sp.csr_matrix(x)
    result = CliRunner().invoke(cli, ["validate", "-i", str(write(a, tmp_path / "in.h5ad")), "-o", str(tmp_path / "v")])
    assert result.exit_code == 0, result.output
    out = ad.read_h5ad(tmp_path / "v" / "validated.h5ad")
    assert out.shape == (a.n_obs - 1, a.n_vars - 1)
    import json

    report = json.loads((tmp_path / "v" / "validation.json").read_text())
    assert report["dropped_genes_no_counts"] == 1 and report["dropped_cells_no_counts"] == 1
    assert report["notes"] == ["dropped 1 genes and 1 cells with no counts"]


def test_make_genes_unique_repairs_repeated_genes(tmp_path: Path):
    a = _rename("var_names")(small_adata())
    result = CliRunner().invoke(cli, ["validate", "-i", str(write(a, tmp_path / "in.h5ad")), "--make-genes-unique", "-o", str(tmp_path / "v")])
    assert result.exit_code == 0, result.output
    assert ad.read_h5ad(tmp_path / "v" / "validated.h5ad").var_names.is_unique


def test_samplesheet_prefixes_barcodes_and_intersects_genes(tmp_path: Path):
    s1, s2 = small_adata(seed=1), small_adata(n_genes=50, seed=2)
    write(s1, tmp_path / "s1.h5ad")
    write(s2, tmp_path / "s2.h5ad")
    (tmp_path / "samples.csv").write_text("sample,batch,path\nA,b1,s1.h5ad\nB,b2,s2.h5ad\n")
    result = CliRunner().invoke(cli, ["validate", "-i", str(tmp_path / "samples.csv"), "-o", str(tmp_path / "v")])
    assert result.exit_code == 0, result.output
    out = ad.read_h5ad(tmp_path / "v" / "validated.h5ad")
    assert out.n_obs == s1.n_obs + s2.n_obs and out.n_vars == 40
    assert out.obs_names[0] == "A_c0" and set(out.obs["batch"]) == {"b1", "b2"}
    assert out.uns["desweep"]["batch_key"] == "batch"


def test_samplesheet_names_stay_as_written_and_tsv_is_read_as_tsv(tmp_path: Path):
    """Batches "1" and "1.0" stay two batches, "01" stays "01"; a .tsv sheet is tab-separated."""
    for name, seed in (("s1.h5ad", 1), ("s2.h5ad", 2), ("s3.h5ad", 3)):
        write(small_adata(seed=seed), tmp_path / name)
    (tmp_path / "samples.tsv").write_text("sample\tbatch\tpath\nA_1\t1\ts1.h5ad\nB\t1.0\ts2.h5ad\nC\t01\ts3.h5ad\n")
    result = CliRunner().invoke(cli, ["validate", "-i", str(tmp_path / "samples.tsv"), "-o", str(tmp_path / "v")])
    assert result.exit_code == 0, result.output
    out = ad.read_h5ad(tmp_path / "v" / "validated.h5ad")
    assert sorted(out.obs["batch"].unique()) == ["01", "1", "1.0"]
    assert set(out.obs["sample"]) == {"A_1", "B", "C"}


@pytest.mark.slow
def test_users_leiden_column_is_kept_as_labels(tmp_path: Path):
    """--labels-key leiden compared desweep's own Leiden clusters, silently: desweep writes desweep_leiden."""
    a = small_adata()
    a.obs["leiden"] = pd.Categorical(np.where(np.arange(a.n_obs) % 3 == 0, "0", "1"))
    a.obsm["X_scVI"] = np.random.default_rng(0).normal(size=(a.n_obs, 4)).astype(np.float32)
    a.uns["desweep"] = {"batch_key": "batch", "labels_key": "leiden", "group_key": ""}
    result = CliRunner().invoke(cli, ["cluster", "-i", str(write(a, tmp_path / "integrated.h5ad")), "-o", str(tmp_path / "c")])
    assert result.exit_code == 0, result.output
    out = ad.read_h5ad(tmp_path / "c" / "clustered.h5ad")
    assert out.uns["desweep"]["group_key"] == "leiden"
    assert list(out.obs["leiden"]) == list(a.obs["leiden"]) and "desweep_leiden" in out.obs


def test_step_folder_linked_into_the_input_folder_cannot_overwrite_the_input(tmp_path: Path):
    """OUTDIR/validate is a symlink to the folder holding the input, which has validate's output name."""
    data = tmp_path / "data"
    data.mkdir()
    path = write(small_adata(), data / "validated.h5ad")
    before = path.read_bytes()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "validate").symlink_to(data)
    result = CliRunner().invoke(cli, ["run", "-i", str(path), "-o", str(tmp_path / "out"), "--threads", "1"])
    assert result.exit_code == 1
    assert [line for line in result.output.splitlines() if line.startswith("Error:")] == [
        f"Error: {path}: input: lies inside {data.resolve()}, a folder this run writes (it would be overwritten): "
        "copy it elsewhere or choose another --outdir"], result.output
    assert path.read_bytes() == before and sorted(p.name for p in data.iterdir()) == ["validated.h5ad"]


def test_rounded_normalized_values_get_a_note(tmp_path: Path):
    """CP10k values rounded to integers pass the integer check; every cell's total near 10,000 says what they are."""
    import json

    a = small_adata()
    x = a.X.toarray()
    a.X = sp.csr_matrix(np.round(x / x.sum(axis=1, keepdims=True) * 1e4))
    result = CliRunner().invoke(cli, ["validate", "-i", str(write(a, tmp_path / "in.h5ad")), "-o", str(tmp_path / "v")])
    assert result.exit_code == 0, result.output
    notes = json.loads((tmp_path / "v" / "validation.json").read_text())["notes"]
    assert [n for n in notes if "look like normalized values rounded to integers" in n], notes
    raw = CliRunner().invoke(cli, ["validate", "-i", str(write(small_adata(), tmp_path / "raw.h5ad")), "-o", str(tmp_path / "r")])
    assert raw.exit_code == 0 and json.loads((tmp_path / "r" / "validation.json").read_text())["notes"] == []


def test_many_models_and_labels_as_covariate_are_warned(caplog):
    from desweep.integrate import warn_labels_as_covariate
    from desweep.runner.config import MANY_MODELS, load_config

    with caplog.at_level("WARNING", logger="desweep"):
        assert load_config(None, {"input": "in.h5ad", "models": "1000"}).values["models"] == 1000
        assert load_config(None, {"input": "in.h5ad", "models": str(MANY_MODELS)}).values["models"] == MANY_MODELS
    assert [r.getMessage() for r in caplog.records] == [
        "desweep run: --models: 1000 scVI models are trained one after another, each as long as a single run, and the sweep "
        "runs on each; 3 to 5 show the spread between trainings"]
    caplog.clear()
    with caplog.at_level("WARNING", logger="desweep"):
        assert warn_labels_as_covariate("cell_type", ["donor", "cell_type"])
        assert not warn_labels_as_covariate("cell_type", ["donor"]) and not warn_labels_as_covariate(None, ["cell_type"])
    assert len(caplog.records) == 1 and "obs['cell_type'] is both the labels compared" in caplog.records[0].getMessage()


def test_step_command_takes_the_lock_of_the_run_folder(tmp_path: Path):
    """`desweep composition -o OUTDIR/composition` refuses while a run holds OUTDIR's lock, and runs once it is free."""
    import subprocess
    import sys

    clustered = clustered_small(tmp_path)
    outdir = tmp_path / "results"
    outdir.mkdir()
    lock = outdir / keys.RUN_LOCK
    lock.write_text("")
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR); "
                               "fcntl.flock(fd, fcntl.LOCK_EX); os.pwrite(fd, b'pid 1 on here: desweep run', 0); "
                               "print('locked', flush=True); time.sleep(60)", str(lock)], stdout=subprocess.PIPE, text=True)
    args = ["composition", "-i", str(clustered), "--comparisons", "T:B", "-o", str(outdir / "composition")]
    try:
        assert holder.stdout.readline().strip() == "locked"
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 1
        assert f"Error: {outdir}: --outdir: another desweep run is writing this folder (pid 1 on here: desweep run)" in result.output
        assert not (outdir / "composition").exists()
    finally:
        holder.kill()
        holder.wait()
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
