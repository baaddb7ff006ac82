"""Resume: a step's stamp (everything it reads), the record of what it wrote, and whether it is current."""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path
from typing import Any

import click

from desweep import keys
from desweep.runner.config import ResolvedStep, RunConfig, _command
from desweep.runner.steps import UNSTAMPED, Step


def _listing(folder: Path) -> dict[str, tuple[int, int, int]]:
    """``relative path -> (size, mtime_ns, inode)`` of every output file below ``folder`` (stamps and temporary files left out)."""
    out = {}
    if folder.is_dir():
        for path in folder.rglob("*"):
            if path.is_file() and not path.name.startswith(".desweep_") and ".tmp-" not in path.name:
                info = path.stat()
                out[str(path.relative_to(folder))] = (info.st_size, info.st_mtime_ns, info.st_ino)
    return out


def _remove_empty_folders(folder: Path) -> None:
    for path in sorted((p for p in folder.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            path.rmdir()  # only succeeds when empty


def _stamp(item: ResolvedStep, outdir: Path, upstream: dict[str, str], input_checksum: str) -> str:
    """Hash of everything a step reads: resolved options, content of files from outside ``outdir``, upstream run ids."""
    from desweep.io import file_checksum

    command = _command(item.step.command_name)
    path_params = {p.name for p in command.params if isinstance(p.type, click.Path)}
    params, files = {}, {}
    for name, value in sorted(item.params.items()):
        if name in UNSTAMPED:
            continue
        if name in path_params and value is not None:
            paths = [_stamp_path(Path(v), outdir) for v in (value if isinstance(value, list | tuple) else [value])]
            for i, path in enumerate(paths):
                if not path.startswith("OUTDIR/") and Path(path).exists():
                    key = name if len(paths) == 1 else f"{name}[{i}]"
                    files[key] = input_checksum if name == item.step.input_option else file_checksum(path)
                    # the content stands for the file: the same bytes through a link, a copy or a stage folder are the same input
                    paths[i] = f"content:{key}"
            value = paths[0] if not isinstance(value, list | tuple) else paths
        params[name] = value
    payload = {"step": item.step.name, "params": params, "files": files, "upstream": upstream}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=_plain).encode()).hexdigest()


def _stamp_path(path: Path, outdir: Path) -> str:
    """A path as the stamp sees it: ``OUTDIR/...`` inside the output folder, else absolute and resolved."""
    real, root = path.resolve(), outdir.resolve()
    if real == root or root in real.parents:
        return "OUTDIR/" + real.relative_to(root).as_posix()
    return str(real)


def _read_record(folder: Path, step: Step) -> dict[str, Any]:
    try:
        record = json.loads((folder / keys.step_stamp(step.name)).read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return record if isinstance(record, dict) else {}


def _is_current(folder: Path, step: Step, stamp: str, record: dict[str, Any]) -> bool:
    """Same stamp, every declared output present, and every recorded output as written (size and time)."""
    if record.get("stamp") != stamp or "run" not in record or not isinstance(record.get("outputs"), dict):
        return False
    if not all((folder / out).exists() for out in step.outputs):
        return False
    for rel, (size, mtime_ns) in record["outputs"].items():
        try:
            info = (folder / rel).stat()
        except OSError:
            return False
        if (info.st_size, info.st_mtime_ns) != (size, mtime_ns):
            return False
    return True


def _params_record(config: RunConfig, resolved: dict[str, ResolvedStep], checksum: str) -> dict[str, Any]:
    """``params.yaml``: the top-level values, the input's checksum and each step's options as resolved."""
    return {**{k: _plain(v) for k, v in config.values.items()}, "input_sha256": checksum,
            "steps": {name: {k: _plain(v) for k, v in item.user.items()} for name, item in resolved.items() if item.user},
            "resolved": {name: {k: _plain(v) for k, v in sorted(item.params.items()) if k not in UNSTAMPED | {"debug", "verbose"}}
                         for name, item in resolved.items()}}


def _plain(value: Any) -> Any:
    """A value YAML and JSON can write: paths as text, tuples as lists."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)
