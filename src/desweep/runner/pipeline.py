"""Run every step of a checked ``desweep run`` in order, skipping those that are current."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from desweep import keys
from desweep.runner.checks import check_batches, check_design, check_inputs_outside_outputs, output_lock
from desweep.runner.config import ResolvedStep, RunConfig, _command, resolve_steps
from desweep.runner.resume import _is_current, _listing, _params_record, _read_record, _remove_empty_folders, _stamp

logger = logging.getLogger("desweep.runner")


def run_pipeline(config: RunConfig, *, force: bool = False, on_locked: Callable[[], None] | None = None) -> dict[str, str]:
    """Check the whole run, then run every available step in order, skipping those that are current.

    Parameters
    ----------
    on_locked
        Called once the output lock is held (``desweep run`` starts its log file there).

    Returns
    -------
    Step name -> ``"ran"`` or ``"skipped"``.
    """
    from desweep.io import prepare_outdir
    from desweep.io import write_yaml
    from desweep.provenance import software_versions
    from desweep.validate import input_checksum

    resolved = resolve_steps(config)
    check_inputs_outside_outputs(config, resolved)
    check_batches(config, resolved)
    outdir = prepare_outdir(config.outdir)
    with output_lock(outdir):
        if on_locked is not None:
            on_locked()
        checksum = input_checksum(config.values["input"])
        info = outdir / keys.PIPELINE_INFO
        write_yaml(_params_record(config, resolved, checksum), info / keys.PARAMS_YAML)
        write_yaml(software_versions(), info / keys.SOFTWARE_VERSIONS_YML)
        runs: dict[str, str] = {}
        status: dict[str, str] = {}
        for i, item in enumerate(resolved.values(), start=1):
            step = item.step
            upstream = {d: runs[d] for d in step.depends if d in runs}
            stamp = _stamp(item, outdir, upstream, checksum)
            folder = outdir / step.folder
            record = _read_record(folder, step)
            if not force and _is_current(folder, step, stamp, record):
                logger.info("[%d/%d] %s: unchanged, skipped", i, len(resolved), step.name)
                status[step.name], runs[step.name] = "skipped", record["run"]
            else:
                runs[step.name] = _run_step(item, folder, stamp, record, f"[{i}/{len(resolved)}]")
                status[step.name] = "ran"
            if step.name == "validate":
                check_design(config, resolved)
    return status


def _run_step(item: ResolvedStep, folder: Path, stamp: str, previous: dict[str, Any], counter: str) -> str:
    """Run one step, record what it wrote, delete what its previous run wrote and this one did not; return its run id."""
    step = item.step
    logger.info("%s %s: desweep %s %s", counter, step.name, step.command_name, " ".join(item.args))
    start = time.perf_counter()
    (folder / keys.step_stamp(step.name)).unlink(missing_ok=True)
    before = _listing(folder)
    _command(step.command_name).main(list(item.args), prog_name=f"desweep {step.command_name}", standalone_mode=False)
    after = _listing(folder)
    written = {rel: [info[0], info[1]] for rel, info in after.items() if before.get(rel) != info}
    for rel in previous.get("outputs", {}):
        if rel not in written and (folder / rel).is_file():
            (folder / rel).unlink()
            logger.info("%s: removed %s, written by its previous run only", step.name, folder / rel)
    _remove_empty_folders(folder)
    run = hashlib.sha256(json.dumps([stamp, sorted(written.items())]).encode()).hexdigest()
    record = {"step": step.name, "stamp": stamp, "run": run, "args": item.args, "outputs": dict(sorted(written.items()))}
    from desweep.io import write_text

    write_text(json.dumps(record, indent=1) + "\n", folder / keys.step_stamp(step.name))
    logger.info("%s %s: done in %.1f s", counter, step.name, time.perf_counter() - start)
    return run
