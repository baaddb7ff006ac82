#!/usr/bin/env python3
"""Wheels for the GPU machine's Python 3.12: gather them here, and check the set before it travels.

The GPU machine has no internet and Python 3.12 with torch, lightning, numpy,
pandas, scipy, scikit-learn, jax, ... (``benchmarks/gpu/machine_packages.txt``);
``benchmarks/gpu/wheels.txt`` pins what it lacks. ``download`` fetches those
wheels for CPython 3.12 / manylinux x86_64, builds docrep's from its sdist and
desweep's from this checkout. ``check`` proves, without Python 3.12, what can be
proved here:

- every wheel's tags install on CPython 3.12, Linux x86_64 (``py3``/``cp312``/
  ``abi3``; ``any``/``manylinux*_x86_64``), and there is one version of each;
- every pin of ``wheels.txt`` and desweep itself are there;
- every requirement of every wheel (markers evaluated for Python 3.12 on
  Linux) is met by another wheel (at a version its specifier allows) or by a
  package of the machine (at its version, where known);
- every third-party module desweep's source imports comes from a wheel or the
  machine, except those of steps ``benchmarks/gpu.py`` does not run;
- every wheel's Requires-Python admits 3.12;
- ``pip install --no-deps --no-index`` of the whole set into an empty target,
  for CPython 3.12 on manylinux x86_64, succeeds (``install-test``).

    python benchmarks/gpu_wheels.py download .whl
    python benchmarks/gpu_wheels.py check .whl
    python benchmarks/gpu_wheels.py install-test .whl
"""

from __future__ import annotations

import argparse
import ast
import re
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import Version

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
WHEELS_TXT = HERE / "gpu" / "wheels.txt"
MACHINE_TXT = HERE / "gpu" / "machine_packages.txt"
#: built from source here rather than downloaded (docrep has no wheel on PyPI)
BUILT_FROM_SDIST = ("docrep",)
#: the target: what pip and markers are told
PYTHON = "3.12"
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64")
MARKER_ENV = {
    "python_version": PYTHON, "python_full_version": f"{PYTHON}.3", "sys_platform": "linux", "platform_system": "Linux",
    "platform_machine": "x86_64", "os_name": "posix", "implementation_name": "cpython",
    "platform_python_implementation": "CPython", "extra": "",
}
#: desweep's dependencies (distribution = module name) used only by steps benchmarks/gpu.py does not run
NOT_NEEDED = {"pydeseq2": "baselines", "multiqc": "report", "jsonschema": "samplesheet validation"}
#: import name -> distribution, where they differ (machine packages; wheels give their own top-level names)
MODULE_DIST = {"sklearn": "scikit-learn", "yaml": "pyyaml", "skimage": "scikit-image", "cv2": "opencv-python-headless"}


@dataclass(frozen=True)
class Wheel:
    path: Path
    name: str
    version: Version

    def metadata(self) -> str:
        with zipfile.ZipFile(self.path) as zf:
            member = next(n for n in zf.namelist() if re.fullmatch(r"[^/]+\.dist-info/METADATA", n))
            return zf.read(member).decode()

    def requires_python(self) -> SpecifierSet:
        lines = [line.split(":", 1)[1].strip() for line in self.metadata().splitlines() if line.startswith("Requires-Python:")]
        return SpecifierSet(lines[0] if lines else "")

    def requirements(self) -> list[Requirement]:
        return [Requirement(line.split(":", 1)[1].strip()) for line in self.metadata().splitlines()
                if line.startswith("Requires-Dist:")]

    def top_level_modules(self) -> set[str]:
        with zipfile.ZipFile(self.path) as zf:
            names = zf.namelist()
        tops = set()
        for name in names:
            head = name.split("/", 1)[0]
            if head.endswith((".dist-info", ".data")) or head.startswith("__"):
                continue
            tops.add(head[:-3] if head.endswith(".py") else head.split(".", 1)[0])
        return tops


def read_pins(path: Path) -> dict[str, str | None]:
    """``name==version`` (or a bare name) per line, ``#`` comments skipped; names canonical."""
    pins: dict[str, str | None] = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = version.strip() or None
    return pins


def wheels_in(folder: Path) -> list[Wheel]:
    out = []
    for path in sorted(folder.glob("*.whl")):
        name, version, _, _ = parse_wheel_filename(path.name)
        out.append(Wheel(path, canonicalize_name(name), version))
    return out


def tag_problem(filename: str) -> str | None:
    """Why a wheel cannot install on CPython 3.12, Linux x86_64 (``None`` when it can)."""
    _, _, _, tags = parse_wheel_filename(filename)
    for tag in tags:
        interpreter_ok = tag.interpreter in ("py3", "cp312") or (tag.abi == "abi3" and tag.interpreter.startswith("cp3")
                                                                  and int(tag.interpreter[3:]) <= 312)
        abi_ok = tag.abi in ("none", "abi3", "cp312")
        platform_ok = tag.platform == "any" or (tag.platform.startswith("manylinux") and tag.platform.endswith("_x86_64"))
        if interpreter_ok and abi_ok and platform_ok:
            return None
    return f"{filename}: no tag for CPython {PYTHON} on manylinux x86_64 ({', '.join(sorted(str(t) for t in tags))})"


def check(folder: Path, *, pins: dict[str, str | None], machine: dict[str, str | None], source: Path = REPO / "src") -> list[str]:
    """Every problem of the wheel set in ``folder`` (an empty list when it is ready to travel)."""
    wheels = wheels_in(folder)
    problems = [p for w in wheels if (p := tag_problem(w.path.name))]
    problems += [f"{w.path.name}: requires Python {w.requires_python()}" for w in wheels
                 if not w.requires_python().contains(MARKER_ENV["python_full_version"])]
    by_name: dict[str, list[Wheel]] = {}
    for wheel in wheels:
        by_name.setdefault(wheel.name, []).append(wheel)
    problems += [f"{name}: {len(found)} versions ({', '.join(str(w.version) for w in found)}): keep one"
                 for name, found in by_name.items() if len(found) > 1]
    for name, version in {**pins, "desweep": None}.items():
        found = by_name.get(name)
        if not found:
            problems.append(f"{name}: no wheel")
        elif version and all(w.version != Version(version) for w in found):
            problems.append(f"{name}: wheel {found[0].version}, pinned {version}")
    available = {name: found[0].version for name, found in by_name.items()}
    for wheel in wheels:
        for req in wheel.requirements():
            if req.marker is not None and not req.marker.evaluate(MARKER_ENV):
                continue
            name = canonicalize_name(req.name)
            if wheel.name == "desweep" and name in NOT_NEEDED:
                continue
            if name in available:
                if not req.specifier.contains(available[name], prereleases=True):
                    problems.append(f"{wheel.name} needs {req}, the set has {name} {available[name]}")
            elif name in machine:
                known = machine[name]
                if known and not req.specifier.contains(Version(known), prereleases=True):
                    problems.append(f"{wheel.name} needs {req}, the machine has {name} {known}")
            else:
                problems.append(f"{wheel.name} needs {req}: neither a wheel nor on the machine")
    modules = {m for wheel in wheels for m in wheel.top_level_modules()}
    for module, where in sorted(third_party_imports(source).items()):
        if module in modules or canonicalize_name(MODULE_DIST.get(module, module)) in machine or module in NOT_NEEDED:
            continue
        problems.append(f"desweep imports {module} ({where}): neither a wheel nor on the machine")
    return problems


def third_party_imports(source: Path) -> dict[str, str]:
    """Top-level modules imported by the Python files under ``source`` (not stdlib, not desweep) -> a file importing it."""
    found: dict[str, str] = {}
    for path in sorted(source.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in ("desweep", "__future__"):
                    found.setdefault(top, str(path.relative_to(source)))
    return found


def download(folder: Path, pins: dict[str, str | None]) -> None:
    """pip-download every pin for CPython 3.12 manylinux x86_64, build the sdist-only ones and desweep."""
    folder.mkdir(parents=True, exist_ok=True)
    binary = [f"{name}=={version}" for name, version in pins.items() if name not in BUILT_FROM_SDIST]
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    pip = [sys.executable, "-m", "pip"]
    subprocess.run([*pip, "download", "--no-deps", "--only-binary=:all:", "--python-version", PYTHON, "--implementation", "cp",
                    *platforms, "-d", str(folder), *binary], check=True)
    for name in BUILT_FROM_SDIST:
        subprocess.run([*pip, "wheel", "--no-deps", "--no-binary=:all:", "-w", str(folder), f"{name}=={pins[name]}"], check=True)
    subprocess.run([*pip, "wheel", "--no-deps", "-w", str(folder), str(REPO)], check=True)


def install_test(folder: Path) -> None:
    """``pip install --no-deps --no-index`` of every wheel into an empty target, as CPython 3.12 on Linux x86_64."""
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    with tempfile.TemporaryDirectory(prefix="desweep-gpu-site-") as target:
        # Requires-Python is checked by `check` (pip compares it with the running interpreter, 3.11 here)
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--no-compile",
                        "--ignore-requires-python", "--only-binary=:all:", "--python-version", PYTHON, "--implementation", "cp", "--abi", "cp312",
                        *platforms, "--target", target, *map(str, sorted(folder.glob("*.whl")))], check=True)
        installed = sorted(p.name for p in Path(target).glob("*.dist-info"))
        print(f"install-test: {len(installed)} distributions installed into an empty CPython {PYTHON} target")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["download", "check", "install-test"])
    parser.add_argument("folder", type=Path)
    args = parser.parse_args()
    pins = read_pins(WHEELS_TXT)
    if args.action == "download":
        download(args.folder, pins)
    elif args.action == "install-test":
        install_test(args.folder)
    else:
        problems = check(args.folder, pins=pins, machine=read_pins(MACHINE_TXT))
        wheels = wheels_in(args.folder)
        size = sum(w.path.stat().st_size for w in wheels) / 2**20
        for problem in problems:
            print(f"problem: {problem}")
        print(f"check: {len(wheels)} wheels, {size:.1f} MiB, {len(problems)} problems")
        sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
