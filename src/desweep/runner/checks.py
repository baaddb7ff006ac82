"""Checks of a whole ``desweep run`` before its first step: one writer per folder, inputs outside the outputs, the design."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

from desweep import keys
from desweep.errors import DesweepInputError
from desweep.runner.config import ResolvedStep, RunConfig
from desweep.runner import steps as pipeline


#: output folders whose lock this process holds (the steps of `desweep run` run in its process)
_HELD: set[Path] = set()


@contextlib.contextmanager
def step_lock(step_outdir: Path, command: str) -> Iterator[None]:
    """Hold the lock of the run folder around a step command that writes a step folder of it.

    A run folder is one holding :data:`desweep.keys.RUN_LOCK` (``desweep run``
    made it): ``desweep de -o results/de`` then waits for no one but refuses,
    in one line, while a run writes ``results``, and a run refuses to start
    while the step writes. Elsewhere (a Nextflow work folder, a fresh folder)
    nothing is locked; within ``desweep run`` its own lock already covers the step.
    """
    run_dir = Path(step_outdir).absolute().parent
    if not (run_dir / keys.RUN_LOCK).is_file() or run_dir.resolve() in _HELD:
        yield
        return
    with output_lock(run_dir, command):
        yield


@contextlib.contextmanager
def output_lock(outdir: Path, command: str = "desweep run") -> Iterator[None]:
    """Hold ``OUTDIR/.desweep_run.lock`` for the block; a one-line error naming the holder when another run has it.

    The lock is an exclusive ``flock`` on an open file: the system releases it
    when the holding process ends, however it ends, so a crashed run never
    blocks the next one. (``flock`` works on local file systems and NFSv4;
    some network file systems ignore it.)
    """
    import fcntl
    import socket

    path = outdir / keys.RUN_LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "a process that has not said which"
            raise DesweepInputError(outdir, "--outdir", f"another desweep run is writing this folder ({holder}); "
                                    "wait for it to end, or choose another --outdir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}: {command}\n"
                  .encode(), 0)
        _HELD.add(outdir.resolve())
        try:
            yield
        finally:
            _HELD.discard(outdir.resolve())
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)


def check_inputs_outside_outputs(config: RunConfig, resolved: dict[str, ResolvedStep]) -> None:
    """Refuse any file a step reads from the user (the input, its samplesheet members, a grid, ...) that a step folder holds.

    Such a file would be overwritten or deleted by the run that reads it.
    """
    from desweep.validate import input_files

    outdir = config.outdir.resolve()
    # each folder resolved on its own: a step folder may be a symlink out of OUTDIR, into the input's own folder
    written = {(outdir / folder).resolve() for folder in [*(step.folder for step in pipeline.available_steps()), keys.PIPELINE_INFO]}
    candidates = [(p, "input", ("desweep run", "--input")) for p in input_files(config.values["input"])]
    for item in resolved.values():
        for param, value in item.user.items():
            for path in (value if isinstance(value, list | tuple) else [value]):
                if isinstance(path, Path):
                    candidates.append((path, param, config.origin(f"{item.step.command_name}.{param}",
                                                                  f"steps.{item.step.command_name}.{param}")))
    for path, what, _origin in candidates:
        real = Path(path).resolve()
        inside = next((folder for folder in written if real == folder or folder in real.parents), None)
        if inside is not None:
            raise DesweepInputError(path, what, f"lies inside {inside}, a folder this run writes (it would be overwritten): "
                                    "copy it elsewhere or choose another --outdir")


def check_design(config: RunConfig, resolved: dict[str, ResolvedStep]) -> None:
    """With labels, build the comparisons and the plan from the validated cells, before training.

    Runs the functions of ``desweep composition`` and ``desweep plan`` with
    their resolved options on ``validate/validated.h5ad`` (the groups are the
    labels, so they are known before clustering): nothing to compare, a group
    too small or a plan over ``--max-combinations`` fails here, not after integrate.
    """
    from desweep import composition as comp
    from desweep.datakeys import get_keys
    from desweep.io import read_h5ad
    from desweep.plan import check_plan_size, make_plan

    if "composition" not in resolved:
        return
    validated = config.outdir / keys.STEP_VALIDATE / keys.VALIDATED_H5AD
    adata = read_h5ad(validated, backed=True)
    try:
        data_keys, obs = get_keys(adata, validated), adata.obs.copy()
    finally:
        adata.file.close()
    if not data_keys.labels_key:
        return  # Leiden groups exist only after cluster
    p = resolved["composition"].params
    counts, _, table = comp.compose(
        obs, group_key=data_keys.labels_key, batch_key=data_keys.batch_key, comparisons=p["comparisons"],
        max_comparisons=p["max_comparisons"], rule=comp.PresenceRule(min_cells=p["min_cells_present"], min_enrichment=p["min_enrichment"]),
        min_cells_per_group=p["min_cells_per_group"], source=str(validated))
    if "plan" in resolved:
        from desweep.plan.grid import read_grid

        p = resolved["plan"].params
        plan, _ = make_plan(table, read_grid(p["grid_path"]), batches=[str(c) for c in counts.columns], models=p["models"],
                            source=str(validated))
        check_plan_size(plan, max_combinations=p["max_combinations"], source=validated)


def check_batches(config: RunConfig, resolved: dict[str, ResolvedStep]) -> None:
    """Batch names given to a step (``normalize --batches``) that the input does not have, refused before the first step.

    Needs only the input's batch column (:func:`desweep.validate.input_batches`);
    when that cannot be read, validate reports the input's problem instead.
    """
    from desweep.validate import input_batches

    item = resolved.get("normalize")
    wanted = item.user.get("batches") if item is not None else None
    if not wanted:
        return
    have = input_batches(config.values["input"], str(config.values["batch_key"]))
    unknown = [b for b in wanted if have is not None and b not in have]
    if unknown:
        source, where = config.origin("normalize.batches", "steps.normalize.batches")
        raise DesweepInputError(source, where or "--batches", f"{unknown[0]!r} is not a batch of the input "
                                f"(obs['{config.values['batch_key']}']: {', '.join(have or [])})")
