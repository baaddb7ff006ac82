"""The pipeline's steps for ``desweep run``: command, folder, inputs from earlier steps and outputs, in order."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from desweep import keys, params

#: options passed from the top level to every step whose command has them (top_n: normalize, diagnose, baselines)
SHARED_OPTIONS = tuple(p.name for p in params.RUN_SHARED)
TOP_LEVEL_KEYS = ("input", "outdir", *(p.name for p in params.RUN_KEYS), *SHARED_OPTIONS, "models", "steps")
#: resolved options that do not change a step's outputs, left out of its stamp
UNSTAMPED = frozenset({"threads", "outdir", "debug", "verbose"})


@dataclass(frozen=True)
class Step:
    """One pipeline step: its command, folder, inputs and expected outputs.

    ``arguments`` builds the options the runner sets itself (inputs from earlier
    steps, the user's input and keys); ``input_option`` names the option that
    reads the run's input (its content, samplesheet members included, is hashed).
    ``command`` (default: ``name``) is the ``desweep`` command it runs, whose
    options under ``steps:`` apply; ``seed_offset`` is added to its seed (model replicates);
    ``inherits`` lists ``(option, step)``: the option takes that step's value unless set for this step.
    """

    name: str
    folder: str
    outputs: tuple[str, ...]
    depends: tuple[str, ...]
    arguments: Callable[[dict[str, Any], Path], list[str]]
    input_option: str = ""
    command: str = ""
    seed_offset: int = 0
    inherits: tuple[tuple[str, str], ...] = ()

    @property
    def command_name(self) -> str:
        return self.command or self.name


def _path(outdir: Path, *parts: str) -> str:
    return str(outdir.joinpath(*parts))


def n_models(config: dict[str, Any]) -> int:
    """The scVI models the run trains (``models:``, default 1)."""
    return int(config.get("models") or 1)


def model_dirs(config: dict[str, Any], outdir: Path) -> list[str]:
    """The model folders in model order: ``integrate/model``, then ``integrate/replicate<k>/model``."""
    return [_path(outdir, keys.STEP_INTEGRATE, keys.MODEL_DIR)] + [
        _path(outdir, keys.STEP_INTEGRATE, keys.replicate_dir(k), keys.MODEL_DIR) for k in range(1, n_models(config))]


def _model_options(config: dict[str, Any], outdir: Path) -> list[str]:
    return [arg for path in model_dirs(config, outdir) for arg in ("--model", path)]


STEPS: tuple[Step, ...] = (
    Step("validate", keys.STEP_VALIDATE, keys.required_outputs("validate"), (),
         lambda c, o: ["-i", str(c["input"]), "--batch-key", c["batch_key"]]
         + (["--labels-key", c["labels_key"]] if c.get("labels_key") else [])
         + (["--layer", c["layer"]] if c.get("layer") else []),
         input_option="input_path"),
    Step("integrate", keys.STEP_INTEGRATE, keys.required_outputs("integrate"), ("validate",),
         lambda c, o: ["-i", _path(o, keys.STEP_VALIDATE, keys.VALIDATED_H5AD)]),
    Step("cluster", keys.STEP_CLUSTER, keys.required_outputs("cluster"), ("integrate",),
         lambda c, o: ["-i", _path(o, keys.STEP_INTEGRATE, keys.INTEGRATED_H5AD)]),
    Step("composition", keys.STEP_COMPOSITION, keys.required_outputs("composition"), ("cluster",),
         lambda c, o: ["-i", _path(o, keys.STEP_CLUSTER, keys.CLUSTERED_H5AD)]),
    Step("plan", keys.STEP_DE, keys.required_outputs("plan"), ("composition",),
         lambda c, o: ["--comparisons", _path(o, keys.STEP_COMPOSITION, keys.COMPARISONS_CSV),
                       "--batch-counts", _path(o, keys.STEP_COMPOSITION, keys.CLUSTER_BATCH_COUNTS_CSV)]
         + (["--models", str(n_models(c))] if n_models(c) > 1 else [])),
    Step("de", keys.STEP_DE, keys.required_outputs("de"), ("plan", "integrate", "cluster"),
         lambda c, o: ["--plan", _path(o, keys.STEP_DE, keys.PLAN_CSV), "-i", _path(o, keys.STEP_CLUSTER, keys.CLUSTERED_H5AD),
                       *_model_options(c, o), "--all"]),
    # after the sweep: normalize keeps layers for every DE table's top genes (every model's), those diagnose classifies
    Step("normalize", keys.STEP_NORMALIZE, keys.required_outputs("normalize"),
         ("integrate", "cluster", "plan", "de"),
         lambda c, o: ["-i", _path(o, keys.STEP_CLUSTER, keys.CLUSTERED_H5AD), "--model", _path(o, keys.STEP_INTEGRATE, keys.MODEL_DIR),
                       "--plan", _path(o, keys.STEP_DE, keys.PLAN_CSV), "--tables", _path(o, keys.STEP_DE, keys.DE_TABLES_DIR)],
         inherits=(("top_n", "diagnose"),)),
    Step("diagnose", keys.STEP_DIAGNOSE, keys.required_outputs("diagnose"),
         ("de", "normalize", "composition", "cluster", "integrate"),
         lambda c, o: ["-i", _path(o, keys.STEP_CLUSTER, keys.CLUSTERED_H5AD), "--plan", _path(o, keys.STEP_DE, keys.PLAN_CSV),
                       "--tables", _path(o, keys.STEP_DE, keys.DE_TABLES_DIR),
                       "--comparisons", _path(o, keys.STEP_COMPOSITION, keys.COMPARISONS_CSV),
                       "--means", _path(o, keys.STEP_NORMALIZE, keys.CLUSTER_BATCH_MEANS_CSV),
                       "--normalized", _path(o, keys.STEP_NORMALIZE, keys.NORMALIZED_H5AD),
                       "--history", _path(o, keys.STEP_INTEGRATE, keys.HISTORY_CSV),
                       "--counts", _path(o, keys.STEP_COMPOSITION, keys.CLUSTER_BATCH_COUNTS_CSV)]),
    Step("baselines", keys.STEP_BASELINES, keys.required_outputs("baselines"), ("composition", "normalize", "cluster"),
         lambda c, o: ["-i", _path(o, keys.STEP_CLUSTER, keys.CLUSTERED_H5AD),
                       "--comparisons", _path(o, keys.STEP_COMPOSITION, keys.COMPARISONS_CSV),
                       "--means", _path(o, keys.STEP_NORMALIZE, keys.CLUSTER_BATCH_MEANS_CSV)],
         inherits=(("top_n", "diagnose"),)),
    Step("report", keys.STEP_REPORT, keys.required_outputs("report"), ("validate", "integrate", "cluster", "composition", "plan", "de",
                                                               "normalize", "diagnose", "baselines"),
         lambda c, o: ["--results", str(o)]),
)


def replicate_steps(config: dict[str, Any]) -> list[Step]:
    """One ``integrate`` per further model replicate ``k``: seed + k, into ``integrate/replicate<k>``."""
    integrate = next(step for step in STEPS if step.name == "integrate")
    return [Step(f"integrate_{keys.replicate_dir(k)}", f"{keys.STEP_INTEGRATE}/{keys.replicate_dir(k)}", integrate.outputs,
                 integrate.depends, integrate.arguments, command="integrate", seed_offset=k) for k in range(1, n_models(config))]


def available_steps(config: dict[str, Any] | None = None) -> list[Step]:
    """The steps whose commands this installation provides, in pipeline order (with the model replicates of ``config``)."""
    from desweep.cli import COMMANDS

    steps = []
    for step in STEPS:
        if step.name not in COMMANDS:
            continue
        if step.name == "de" and config is not None:
            step = replace(step, depends=step.depends + tuple(r.name for r in replicate_steps(config)))
        steps.append(step)
        if step.name == "integrate" and config is not None:
            steps += replicate_steps(config)
    return steps
