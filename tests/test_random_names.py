"""Property test: random batch, label and gene names survive the whole pipeline.

Each seeded name set mixes digits with leading zeros, missing-value words, the
characters ``; : , / + - " \\``, unicode, spaces and 200-character names. A
small data set carrying them runs through ``desweep run`` end to end
(in-process, one training epoch, a tiny grid), and every name column of every
output table must hold exactly the input names.

Cost: the plots, pseudobulk DESeq2 and the MultiQC report take most of a run's
time and hold few names, so every :data:`FULL_EVERY`-th set runs them all
(``report`` included) and the others run every other step with plots off and
Wilcoxon baselines only.

Whole missing-value words (``NA``, ``None``, ...) are gene names here; as batch
or label values validate refuses them by design (a test in test_bad_inputs.py),
so batch and label names carry them only inside longer names.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from click.testing import CliRunner

from desweep import keys
from desweep.cli import cli
from desweep.io import read_csv
from desweep.names import NA_LIKE, is_na_like, quote_name, split_names

pytestmark = pytest.mark.slow

N_NAME_SETS = 20
FULL_EVERY = 5
PIECES = ["01", "007", "0", "1.0", "1e5", "NA", "N/A", "None", "nan", "null", "TRUE", ";", ":", ",", "/", "+", "-", '"', "\\",
          " ", "_vs_", "__", "β", "細胞", "naïve", "CD4+", "CD4-", "T cells", "x", "y", "é", "a.b"]
GRID = "batch_correction: [false, true]\nmode: [vanilla]\nbatchids: [all, each, own]\nweights: [uniform]\nseeds: [0]\nfdr_target: [0.05]\n"
#: name columns of the output tables, by the kind of name they hold (``;``-joined lists: split_names)
COLUMNS = {
    "gene": "genes", "top_genes": "genes",
    "cluster": "labels", "group1": "labels", "group2": "labels", "high_group": "labels",
    "batch": "batches", "batchid1": "batches", "batchid2": "batches", "group1_batches": "batches", "group2_batches": "batches",
    "shared_batches": "batches", "batches": "batches", "specific_to": "batches",
}
LISTS = {"top_genes", "batchid1", "batchid2", "group1_batches", "group2_batches", "shared_batches", "batches"}


def random_names(rng: random.Random, n: int, *, whole_na: bool) -> list[str]:
    """``n`` distinct awkward names; ``whole_na``: missing-value words may be whole names."""
    names: list[str] = []
    while len(names) < n:
        kind = rng.random()
        if kind < 0.15:
            name = rng.choice(["01", "001", "0010", "1", "1.0"])
        elif kind < 0.3 and whole_na:
            name = rng.choice(sorted(NA_LIKE - {""}))
        elif kind < 0.4:
            name = "".join(rng.choice(PIECES) for _ in range(40))[:200].strip() or "long"
            name = (name * 8)[:200]
        else:
            name = "".join(rng.choice(PIECES) for _ in range(rng.randint(1, 4)))
        if not whole_na and is_na_like(name):
            continue
        if name.strip() != name or not name or name in names:
            continue
        names.append(name)
    return names


def name_set(seed: int) -> dict[str, list[str]]:
    rng = random.Random(seed)
    return {"batches": random_names(rng, 3, whole_na=False), "labels": random_names(rng, 3, whole_na=False),
            "genes": random_names(rng, 60, whole_na=True)}


def make_data(names: dict[str, list[str]], seed: int) -> ad.AnnData:
    """240 cells: labels[0] only in batches[0], labels[1] only in batches[1], labels[2] in every batch."""
    rng = np.random.default_rng(seed)
    b, lab, genes = names["batches"], names["labels"], names["genes"]
    design = [(lab[0], b[0], 60), (lab[1], b[1], 60)] + [(lab[2], batch, 40) for batch in b]
    labels = np.concatenate([[label] * n for label, _, n in design])
    batches = np.concatenate([[batch] * n for _, batch, n in design])
    rate = rng.gamma(2.0, 1.0, size=(len(design), len(genes)))
    counts = np.vstack([rng.poisson(rate[i] * 3, size=(n, len(genes))) for i, (_, _, n) in enumerate(design)]).astype(np.float32)
    counts[0, :] += 1  # every gene has a count
    obs = pd.DataFrame({"batch": pd.Categorical(batches), "cell_type": pd.Categorical(labels)},
                       index=[f"cell{i}" for i in range(len(labels))])
    return ad.AnnData(sp.csr_matrix(counts), obs=obs, var=pd.DataFrame(index=genes))


def run_names(names: dict[str, list[str]], seed: int, tmp: Path, *, full: bool = True) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    make_data(names, seed).write_h5ad(tmp / "in.h5ad")
    (tmp / "grid.yaml").write_text(GRID)
    lab = names["labels"]
    pairs = ";".join(f"{quote_name(a)}:{quote_name(b)}" for a, b in ((lab[0], lab[1]), (lab[0], lab[2])))
    out = tmp / "out"
    args = ["run", "-i", str(tmp / "in.h5ad"), "--labels-key", "cell_type", "-o", str(out), "--threads", "1",
            "--set", "integrate.max_epochs=1", "--set", "integrate.n_top_genes=0", "--set", f"composition.comparisons={pairs}",
            "--set", "composition.min_cells_present=5", "--set", f"plan.grid={tmp / 'grid.yaml'}", "--set", "de.n_samples=50",
            "--set", "diagnose.top_n=10", "--set", "baselines.top_n=10", "--set", "baselines.pseudo_replicates=2",
            "--set", "cluster.n_neighbors=5"]
    if not full:
        args += ["--set", "diagnose.plots=false", "--set", "baselines.methods=wilcoxon"]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, f"seed {seed}: {result.output[-2000:]}"
    return out


def check_tables(out: Path, names: dict[str, list[str]], *, full: bool = True) -> int:
    """Every name column of every table holds input names only; the main tables hold all of them. Returns the columns checked."""
    wanted = {kind: set(values) for kind, values in names.items()}
    checked = 0
    for path in sorted(out.rglob("*.csv")):
        if "multiqc" in path.parts:
            continue
        table = read_csv(path)
        for column in set(table.columns) & set(COLUMNS):
            values = [v for cell in table[column] for v in (split_names(cell) if column in LISTS else [cell]) if v != ""]
            unknown = set(values) - wanted[COLUMNS[column]]
            assert not unknown, f"{path.relative_to(out)}: {column}: {sorted(unknown)[:3]}"
            checked += 1
    counts = read_csv(out / keys.STEP_COMPOSITION / keys.CLUSTER_BATCH_COUNTS_CSV, index_col=0)
    assert set(counts.index) == wanted["labels"] and set(counts.columns) == wanted["batches"]
    de_tables = sorted((out / keys.STEP_DE / keys.DE_TABLES_DIR).glob("*.csv"))
    assert de_tables and all(set(read_csv(t)["gene"]) == wanted["genes"] for t in de_tables)
    plan = read_csv(out / keys.STEP_DE / keys.PLAN_CSV)
    assert {b for cell in plan["batchid1"] for b in split_names(cell)} == wanted["batches"]  # bc-in-<batch> for each batch
    assert set(plan["combination_id"] + ".csv") == {t.name for t in de_tables}
    means = read_csv(out / keys.STEP_NORMALIZE / keys.CLUSTER_BATCH_MEANS_CSV)
    assert set(means["gene"]) == wanted["genes"] and set(means["batch"]) == wanted["batches"]
    # every batch of make_data's design holds labels[2] and one other label, so each gene's group and within-batch
    # differences are defined; an empty one means a name was lost between tables (e.g. a means table read with
    # type inference: batch "01" became 1, gene "NA" became missing)
    patterns = read_csv(out / keys.STEP_DIAGNOSE / keys.GENE_PATTERNS_CSV)
    measures = [c for c in patterns.columns if c.startswith(("group_lfc", "within_lfc"))]
    assert len(patterns) and measures and not patterns[measures].isna().any().any(), "gene_patterns: a difference is missing"
    validation = json.loads((out / keys.STEP_VALIDATE / keys.VALIDATION_REPORT).read_text())
    assert set(validation["cells_per_batch"]) == wanted["batches"]
    if full:
        assert (out / keys.STEP_REPORT / keys.MULTIQC_REPORT).is_file()
        assert len(list((out / keys.STEP_DIAGNOSE / keys.PLOTS_DIR).rglob("*.png"))) >= len(de_tables)
    return checked


def test_random_names_survive_every_output_table(tmp_path: Path, monkeypatch):
    from desweep.runner import steps

    every_step = steps.available_steps()
    for seed in range(N_NAME_SETS):
        full = seed % FULL_EVERY == 0
        monkeypatch.setattr(steps, "available_steps", lambda full=full: [s for s in every_step if full or s.name != "report"])
        names = name_set(seed)
        out = run_names(names, seed, tmp_path / f"set{seed}", full=full)
        assert check_tables(out, names, full=full) >= 20, seed


def test_name_sets_are_awkward():
    """The generator really produces the kinds of names the issue lists (so the property test tests them)."""
    sets = [name_set(seed) for seed in range(N_NAME_SETS)]
    every = [n for s in sets for kind in s.values() for n in kind]
    assert any(n.startswith("0") and len(n) > 1 and n.isdigit() for n in every)
    assert any(n in NA_LIKE for s in sets for n in s["genes"])
    assert any(any(w in n for w in ("NA", "None", "nan")) for s in sets for n in s["batches"] + s["labels"])
    for char in ";:,/+-\"\\":
        assert any(char in n for s in sets for n in s["batches"]), char
        assert any(char in n for s in sets for n in s["labels"]), char
    assert any(not n.isascii() for n in every) and any(len(n) == 200 for n in every)
