"""``desweep run``: the embedded single-machine runner that chains every step.

The runner builds each step's command line from one configuration and invokes
the same Click command that ``desweep <step>`` and the Nextflow modules run, so
the option list of every step has one source of truth. A step is skipped when
its outputs exist and its *stamp* (a hash of its arguments, of the input file
and of the stamps of the steps it depends on) is unchanged; ``force`` reruns all.

Configuration (YAML or flags)::

    input: data.h5ad          # or a samplesheet CSV
    outdir: results
    batch_key: batch
    labels_key: cell_type     # optional: Leiden clusters otherwise
    seed: 0                   # passed to every step that has --seed
    threads: 2                # passed to every step that has --threads
    steps:                    # per-step options, named as the step's CLI options
      integrate: {max_epochs: 100}
      composition: {comparisons: "A:B"}
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from desweep import keys
from desweep.errors import DesweepInputError

logger = logging.getLogger(__name__)

TOP_LEVEL_KEYS = ("input", "outdir", "batch_key", "labels_key", "layer", "seed", "threads", "accelerator", "steps")
#: options passed from the top level to every step whose command has them
SHARED_OPTIONS = ("seed", "threads", "accelerator")


@dataclass(frozen=True)
class Step:
    """One pipeline step: its command, folder, inputs and expected outputs."""

    name: str
    folder: str
    outputs: tuple[str, ...]
    depends: tuple[str, ...]
    arguments: Callable[[dict[str, Any], Path], list[str]]


def _path(outdir: Path, *parts: str) -> str:
    return str(outdir.joinpath(*parts))


def _diagnose_top_n(config: dict[str, Any]) -> list[str]:
    """``--top-n`` of diagnose, when the config sets it (a step's own options come later and win)."""
    options = config["steps"].get("diagnose", {})
    value = options.get("top_n", options.get("top-n"))
    return [] if value is None else ["--top-n", str(value)]


STEPS: tuple[Step, ...] = (
    Step("validate", keys.STEP_VALIDATE, (keys.VALIDATED_H5AD,), (),
         lambda c, o: ["-i", str(c["input"]), "--batch-key", c["batch_key"]]
         + (["--labels-key", c["labels_key"]] if c.get("labels_key") else [])
         + (["--layer", c["layer"]] if c.get("layer") else [])),
    Step("integrate", keys.STEP_INTEGRATE, (keys.MODEL_DIR, keys.INTEGRATED_H5AD, keys.HISTORY_CSV, keys.METRICS_CSV), ("validate",),
         lambda c, o: ["-i", _path(o, keys.STEP_VALIDATE, keys.VALIDATED_H5AD)]),
    Step("cluster", keys.STEP_CLUSTER, (keys.CLUSTERED_H5AD,), ("integrate",),
         lambda c, o: ["-i", _path(o, keys.STEP_INTEGRATE, keys.INTEGRATED_H5AD)]),
    Step("composition", keys.STEP_COMPOSITION, (keys.CLUSTER_BATCH_COUNTS_CSV, keys.COMPARISONS_CSV), ("cluster",),
         lambda c, o: ["-i", _path(o, keys.STEP_CLUSTER, keys.CLUSTERED_H5AD)]),
    Step("plan", keys.STEP_DE, (keys.PLAN_CSV, keys.PLAN_SKIPPED_CSV), ("composition",),
         lambda c, o: ["--comparisons", _path(o, keys.STEP_COMPOSITION, keys.COMPARISONS_CSV),
                       "--batch-counts", _path(o, keys.STEP_COMPOSITION, keys.CLUSTER_BATCH_COUNTS_CSV)]),
    Step("de", keys.STEP_DE, (keys.DE_TABLES_DIR, keys.DE_SUMMARY_CSV, keys.DE_STABILITY_CSV), ("plan", "integrate", "cluster"),
         lambda c, o: ["--plan", _path(o, keys.STEP_DE, keys.PLAN_CSV), "--adata", _path(o, keys.STEP_CLUSTER, keys.CLUSTERED_H5AD),
                       "--model", _path(o, keys.STEP_INTEGRATE, keys.MODEL_DIR), "--all"]),
    # normalize keeps layers for the DE tables' top genes: those diagnose classifies (its --top-n)
    Step("normalize", keys.STEP_NORMALIZE, (keys.NORMALIZED_H5AD, keys.CLUSTER_BATCH_MEANS_CSV, keys.LAYER_GENES_CSV),
         ("integrate", "cluster", "de"),
         lambda c, o: ["--adata", _path(o, keys.STEP_CLUSTER, keys.CLUSTERED_H5AD), "--model", _path(o, keys.STEP_INTEGRATE, keys.MODEL_DIR),
                       "--plan", _path(o, keys.STEP_DE, keys.PLAN_CSV), "--tables", _path(o, keys.STEP_DE, keys.DE_TABLES_DIR)]
         + _diagnose_top_n(c)),
    Step("diagnose", keys.STEP_DIAGNOSE, (keys.GENE_PATTERNS_CSV, keys.SETTING_SCORES_CSV, keys.CONCORDANCE_CSV), ("de", "normalize"),
         lambda c, o: ["--adata", _path(o, keys.STEP_CLUSTER, keys.CLUSTERED_H5AD), "--plan", _path(o, keys.STEP_DE, keys.PLAN_CSV),
                       "--tables", _path(o, keys.STEP_DE, keys.DE_TABLES_DIR),
                       "--comparisons", _path(o, keys.STEP_COMPOSITION, keys.COMPARISONS_CSV),
                       "--means", _path(o, keys.STEP_NORMALIZE, keys.CLUSTER_BATCH_MEANS_CSV),
                       "--history", _path(o, keys.STEP_INTEGRATE, keys.HISTORY_CSV),
                       "--counts", _path(o, keys.STEP_COMPOSITION, keys.CLUSTER_BATCH_COUNTS_CSV)]),
    Step("baselines", keys.STEP_BASELINES, (keys.WILCOXON_CSV, keys.PSEUDOBULK_CSV), ("composition", "normalize"),
         lambda c, o: ["--adata", _path(o, keys.STEP_CLUSTER, keys.CLUSTERED_H5AD),
                       "--comparisons", _path(o, keys.STEP_COMPOSITION, keys.COMPARISONS_CSV),
                       "--means", _path(o, keys.STEP_NORMALIZE, keys.CLUSTER_BATCH_MEANS_CSV)]),
    Step("report", keys.STEP_REPORT, (keys.MULTIQC_REPORT,), ("validate", "integrate", "composition", "de", "normalize", "diagnose", "baselines"),
         lambda c, o: ["--results", str(o)]),
)


def load_config(config_path: Path | None, overrides: dict[str, Any]) -> dict[str, Any]:
    """Merge a YAML config with command-line values (which win) and check its keys."""
    from desweep.io import read_yaml

    config: dict[str, Any] = {"batch_key": "batch", "outdir": "results", "steps": {}}
    source = str(config_path) if config_path else "desweep run"
    if config_path is not None:
        loaded = read_yaml(config_path, what="config")
        if not isinstance(loaded, dict):
            raise DesweepInputError(source, "config", "must be a mapping of keys to values")
        config.update(loaded)
    if config_path is not None:  # paths in a config file are relative to that file
        for key in ("input", "outdir"):
            if config.get(key) and not Path(str(config[key])).is_absolute():
                config[key] = str((Path(config_path).parent / str(config[key])).resolve())
    config.update({k: v for k, v in overrides.items() if v is not None})
    unknown = sorted(set(config) - set(TOP_LEVEL_KEYS))
    if unknown:
        raise DesweepInputError(source, unknown[0], f"unknown key (allowed: {', '.join(TOP_LEVEL_KEYS)})")
    if not config.get("input"):
        raise DesweepInputError(source, "input", "missing: give --input or `input:` in the config")
    steps = config.get("steps") or {}
    if not isinstance(steps, dict):
        raise DesweepInputError(source, "steps", "must map step names to option mappings")
    names = [s.name for s in available_steps()]
    for name, options in steps.items():
        if name not in names:
            raise DesweepInputError(source, f"steps.{name}", f"unknown step (steps: {', '.join(names)})")
        if options is not None and not isinstance(options, dict):
            raise DesweepInputError(source, f"steps.{name}", "must be a mapping of option names to values")
    config["steps"] = {k: dict(v or {}) for k, v in steps.items()}
    return config


def available_steps() -> list[Step]:
    """The steps whose commands this installation provides, in pipeline order."""
    from desweep.cli import COMMANDS

    return [step for step in STEPS if step.name in COMMANDS]


def step_arguments(step: Step, config: dict[str, Any], outdir: Path, source: str = "config") -> list[str]:
    """The full command line of ``step``: fixed inputs, shared options, the step's own options."""
    command = _command(step.name)
    params = _options_by_name(command)
    args = step.arguments(config, outdir)
    options = {k: config[k] for k in SHARED_OPTIONS if k in params and config.get(k) is not None}
    options.update(config["steps"].get(step.name, {}))
    for name, value in options.items():
        param = params.get(name.replace("-", "_"))
        if param is None:
            allowed = ", ".join(sorted(set(params) - {"outdir", "debug", "verbose", "input", "help"}))
            raise DesweepInputError(source, f"steps.{step.name}.{name}", f"unknown option of `desweep {step.name}` (have: {allowed})")
        args += _option_args(param, value)
    return args + ["--outdir", _path(outdir, step.folder)]


def run_pipeline(config: dict[str, Any], *, force: bool = False, source: str = "config") -> dict[str, str]:
    """Run every available step in order, skipping those whose stamp is unchanged.

    Returns
    -------
    Step name -> ``"ran"`` or ``"skipped"``.
    """
    from desweep.io import file_checksum, write_text, write_yaml
    from desweep.provenance import software_versions

    outdir = Path(config["outdir"])
    steps = available_steps()
    input_checksum = file_checksum(config["input"]) if Path(str(config["input"])).exists() else "missing"
    info = outdir / keys.PIPELINE_INFO
    arguments = {step.name: step_arguments(step, config, outdir, source) for step in steps}  # check all before running
    write_yaml(config | {"input_sha256": input_checksum}, info / keys.PARAMS_YAML)
    write_yaml(software_versions(), info / keys.SOFTWARE_VERSIONS_YML)
    stamps: dict[str, str] = {}
    status: dict[str, str] = {}
    for i, step in enumerate(steps, start=1):
        upstream = [stamps[d] for d in step.depends if d in stamps]
        stamp = _stamp(step.name, arguments[step.name], upstream, input_checksum if not step.depends else "")
        stamps[step.name] = stamp
        folder = outdir / step.folder
        if not force and _is_current(folder, step, stamp):
            logger.info("[%d/%d] %s: unchanged, skipped", i, len(steps), step.name)
            status[step.name] = "skipped"
            continue
        logger.info("[%d/%d] %s: desweep %s %s", i, len(steps), step.name, step.name, " ".join(arguments[step.name]))
        start = time.perf_counter()
        (folder / keys.step_stamp(step.name)).unlink(missing_ok=True)
        _command(step.name).main(arguments[step.name], prog_name=f"desweep {step.name}", standalone_mode=False)
        write_text(json.dumps({"step": step.name, "stamp": stamp, "args": arguments[step.name]}, indent=1) + "\n",
                   folder / keys.step_stamp(step.name))
        logger.info("[%d/%d] %s: done in %.1f s", i, len(steps), step.name, time.perf_counter() - start)
        status[step.name] = "ran"
    return status


def _command(name: str) -> click.Command:
    from desweep.cli import cli

    command = cli.get_command(click.Context(cli), name)
    assert command is not None, name
    return command


def _options_by_name(command: click.Command) -> dict[str, click.Option]:
    """A command's options by the names a config uses: each long flag without dashes (``--grid`` ->
    ``grid``, ``--no-plots`` -> ``plots``) and the Python parameter name."""
    names: dict[str, click.Option] = {}
    for param in command.params:
        if isinstance(param, click.Option):
            names[param.name] = param
            for flag in param.opts:
                if flag.startswith("--"):
                    names[flag[2:].replace("-", "_")] = param
    return names


def _option_args(param: click.Option, value: Any) -> list[str]:
    flag = param.opts[-1] if param.opts[-1].startswith("--") else param.opts[0]
    if param.is_flag:
        if param.secondary_opts:  # --x/--no-x
            return [param.opts[-1] if value else param.secondary_opts[-1]]
        return [flag] if value else []
    if isinstance(value, list | tuple):
        value = ",".join(map(str, value))
    return [flag, str(value)]


def _stamp(name: str, args: list[str], upstream: list[str], input_checksum: str) -> str:
    payload = json.dumps({"step": name, "args": args, "upstream": upstream, "input": input_checksum}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def _is_current(folder: Path, step: Step, stamp: str) -> bool:
    stamp_file = folder / keys.step_stamp(step.name)
    if not stamp_file.exists() or not all((folder / out).exists() for out in step.outputs):
        return False
    try:
        return json.loads(stamp_file.read_text()).get("stamp") == stamp
    except json.JSONDecodeError:
        return False
