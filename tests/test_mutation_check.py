"""scripts/mutation_check.py: its mutations still apply, it restores what it mutates, and it catches a known mutation."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "mutation_check.py"


def load_script():
    spec = importlib.util.spec_from_file_location("mutation_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


mc = load_script()


def test_every_mutation_still_applies_and_names_existing_tests():
    """A failure here means the code a mutation targets has moved: update MUTATIONS in the script."""
    assert len(mc.MUTATIONS) >= 30
    assert mc.stale(mc.MUTATIONS, REPO) == []
    moved = dataclasses.replace(mc.MUTATIONS[0], old="text the code no longer holds")
    assert mc.stale((moved,), REPO) == [f"{moved.id}: {moved.file} holds the text 0 times"]
    ids = [m.id for m in mc.MUTATIONS]
    assert len(ids) == len(set(ids))
    for m in mc.MUTATIONS:
        assert m.tests, m.id
        for test in m.tests:
            path, _, rest = test.partition("::")
            assert (REPO / path).is_file(), f"{m.id}: {path}"
            name = re.sub(r"\[.*\]$", "", rest)
            if name:
                assert re.search(rf"^def {re.escape(name)}\(", (REPO / path).read_text(), re.M), f"{m.id}: {test}"
    named = {m.id for m in mc.MUTATIONS if m.origin == "#19"}
    assert {"de-filter-ignored", "de-importance-uniform", "de-own-batch-gather", "de-hash-seed", "run-stamp-no-input"} <= named
    diagnose = [m for m in mc.MUTATIONS if m.origin == "#13"]  # docs/diagnostics.md "How the rules are tested"
    assert len(diagnose) == 19 and {m.file for m in diagnose} == {"src/desweep/diagnose/classify.py", "src/desweep/diagnose/rank.py"}


def test_mutated_restores_bytes_and_mtime_even_when_the_body_fails(tmp_path):
    path = tmp_path / "code.py"
    path.write_bytes(b"x = 1\nif x > 0:\n    y = 2\n")
    os.utime(path, ns=(1_000_000_000, 2_000_000_000))
    before = path.read_bytes()
    with pytest.raises(RuntimeError), mc.mutated(path, "x > 0", "x < 0"):
        assert path.read_bytes() == b"x = 1\nif x < 0:\n    y = 2\n"
        raise RuntimeError("the tests crashed")
    assert path.read_bytes() == before and path.stat().st_mtime_ns == 2_000_000_000
    with pytest.raises(ValueError, match="occurs 0 times"), mc.mutated(path, "z = 3", "z = 4"):
        pass
    with pytest.raises(ValueError, match="occurs 2 times"), mc.mutated(path, "= ", "== "):
        pass
    assert path.read_bytes() == before


@pytest.mark.slow
def test_a_known_mutation_is_caught_in_a_copy_and_the_tree_is_untouched(tmp_path):
    target = REPO / "src" / "desweep" / "composition.py"
    before = target.read_bytes()
    out = tmp_path / "result.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--only", "comp-stray-cells", "--timeout", "300",
                           "--workdir", str(tmp_path / "work"), "--json", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [result] = json.loads(out.read_text())
    assert result["id"] == "comp-stray-cells"
    assert result["result"].startswith("caught by `test_composition.py::test_fewer_than_min_cells_never_make_a_cluster_present")
    assert target.read_bytes() == before
    assert (tmp_path / "work" / "repo" / "src" / "desweep" / "composition.py").read_bytes() == before  # the copy restored too
