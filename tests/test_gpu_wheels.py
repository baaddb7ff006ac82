"""benchmarks/gpu_wheels.py: the checks on the wheel set that travels to the GPU machine (offline, fake wheels)."""

from __future__ import annotations

import importlib.util
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gw():
    spec = importlib.util.spec_from_file_location("gpu_wheels", REPO / "benchmarks" / "gpu_wheels.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_wheels"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def fake_wheel(folder: Path, filename: str, *, requires: tuple[str, ...] = (), python: str = ">=3.10", top: str | None = None) -> Path:
    name, version = filename.split("-")[:2]
    path = folder / filename
    meta = "\n".join(["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}", f"Requires-Python: {python}",
                      *(f"Requires-Dist: {r}" for r in requires)]) + "\n"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{name}-{version}.dist-info/METADATA", meta)
        zf.writestr(f"{top or name}/__init__.py", "")
    return path


def good_set(folder: Path) -> None:
    fake_wheel(folder, "alpha-1.0-py3-none-any.whl", requires=("beta>=2", "numpy>=1.26", "gamma; python_version < '3.9'"))
    fake_wheel(folder, "beta-2.1-cp312-cp312-manylinux_2_17_x86_64.whl", requires=("extra-dep; extra == 'docs'",))
    fake_wheel(folder, "desweep-0.1.0-py3-none-any.whl", requires=("alpha", "pydeseq2>=0.4"))


def source(folder: Path, text: str) -> Path:
    (folder / "src").mkdir(exist_ok=True)
    (folder / "src" / "mod.py").write_text(text)
    return folder / "src"


def test_a_complete_set_has_no_problem(gw, tmp_path):
    good_set(tmp_path)
    src = source(tmp_path, "import os\nimport numpy as np\nfrom alpha import x\nimport sklearn\nfrom desweep import keys\n")
    problems = gw.check(tmp_path, pins={"alpha": "1.0", "beta": None}, machine={"numpy": "2.5.2", "scikit-learn": None}, source=src)
    assert problems == []


@pytest.mark.parametrize(("break_it", "expected"), [
    (lambda d: fake_wheel(d, "delta-1.0-cp311-cp311-manylinux_2_17_x86_64.whl"), "no tag for CPython 3.12"),
    (lambda d: fake_wheel(d, "delta-1.0-cp312-cp312-macosx_11_0_arm64.whl"), "no tag for CPython 3.12"),
    (lambda d: fake_wheel(d, "delta-1.0-py3-none-any.whl", python=">=3.13"), "requires Python >=3.13"),
    (lambda d: fake_wheel(d, "beta-2.2-py3-none-any.whl"), "beta: 2 versions"),
    (lambda d: fake_wheel(d, "delta-1.0-py3-none-any.whl", requires=("missing-lib",)), "needs missing-lib: neither a wheel nor on the machine"),
    (lambda d: fake_wheel(d, "delta-1.0-py3-none-any.whl", requires=("beta>=3",)), "needs beta>=3, the set has beta 2.1"),
    (lambda d: fake_wheel(d, "delta-1.0-py3-none-any.whl", requires=("numpy<2",)), "needs numpy<2, the machine has numpy 2.5.2"),
    (lambda d: (d / "alpha-1.0-py3-none-any.whl").unlink(), "alpha: no wheel"),
])
def test_each_problem_is_named(gw, tmp_path, break_it, expected):
    good_set(tmp_path)
    break_it(tmp_path)
    src = source(tmp_path, "import numpy\n")
    problems = gw.check(tmp_path, pins={"alpha": "1.0", "beta": None}, machine={"numpy": "2.5.2"}, source=src)
    assert any(expected in p for p in problems), problems


def test_an_import_nobody_provides_is_named(gw, tmp_path):
    good_set(tmp_path)
    src = source(tmp_path, "import numpy\nimport igraph\nfrom multiqc import run\n")  # multiqc: a step the GPU run skips
    problems = gw.check(tmp_path, pins={}, machine={"numpy": None}, source=src)
    assert problems == ["desweep imports igraph (mod.py): neither a wheel nor on the machine"]


def test_the_committed_lists_cover_desweep(gw):
    """Every third-party import of desweep is pinned, on the machine, or of a step the GPU run skips."""
    pins, machine = gw.read_pins(gw.WHEELS_TXT), gw.read_pins(gw.MACHINE_TXT)
    module_of = {"scvi-tools": "scvi", "umap-learn": "umap", "scikit-misc": "skmisc"}
    provided = {module_of.get(name, name.replace("-", "_")) for name in pins}
    for module, where in gw.third_party_imports(REPO / "src").items():
        dist = gw.MODULE_DIST.get(module, module).replace("_", "-")
        assert module in provided or dist in machine or module in gw.NOT_NEEDED, f"{module} ({where})"
    assert pins["scvi-tools"] == "1.5.1" and machine["torch"] == "2.11.0"
