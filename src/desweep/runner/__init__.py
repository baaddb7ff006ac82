"""``desweep run``: the embedded single-machine runner that chains every step.

The runner builds each step's command line from one configuration and invokes
the same Click command that ``desweep <step>`` and the Nextflow modules run, so
the option list of every step has one source of truth.

Before the first step runs, the whole run is checked
----------------------------------------------------
- one writer per output folder: a lock (``OUTDIR/.desweep_run.lock``, held for the
  whole run and released by the system when the process ends, even on
  ``kill -9``) refuses a second run naming the first;
- no input may lie inside the step folders the run writes;
- every step's command line is resolved by Click with its real option types and
  checks (:func:`resolve_steps`), so a bad value fails at once, in a message that
  names the ``--set`` item or the config key it came from; options the runner
  sets itself (``validate.input``, ``de.plan``, ...) cannot be set per step;
- only then are ``pipeline_info/params.yaml`` (every option as resolved) and
  the software versions written;
- with a labels column, right after validate, the comparisons and the plan are
  built from the validated cells (:func:`check_design`): a design with nothing to
  compare, or a plan over ``--max-combinations``, fails before training.

Resume
------
A step is skipped when its *stamp* and its outputs are unchanged. The stamp
hashes everything the step reads: its options as Click resolved them (so
``--threads`` and the spelling of a path do not count; a path counts as
resolved), the content of every file it reads from outside the output folder
(the input, every member of a samplesheet, the grid, a comparisons or gene
file) and the *run id* of each step whose outputs it reads. A run id changes
whenever a step writes its outputs, so a step that reruns reruns every step
after it; a step whose recorded outputs are gone or changed reruns. The stamp
file of a step (``.desweep_<step>.json``) records its outputs; after a rerun,
those of the previous run it did not write again are deleted, so a step's
folder holds only outputs of its latest run.

Configuration (YAML or flags)::

    input: data.h5ad          # or a samplesheet CSV/TSV
    outdir: results
    batch_key: batch
    labels_key: cell_type     # optional: Leiden clusters otherwise
    seed: 0                   # passed to every step that has --seed
    threads: 2                # passed to every step that has --threads
    models: 1                 # scVI models trained (replicates; model k with seed + k)
    steps:                    # per-step options, named as the step's CLI options
      integrate: {max_epochs: 100}
      composition: {comparisons: "A:B"}     # or a list of pairs: [[A, B]]

Values are read as text and converted by the step's option (``01`` stays
``01``); a list becomes a comma-separated option value, a list of pairs a
``--comparisons`` value.
"""

from __future__ import annotations

from desweep.runner.checks import check_design, check_inputs_outside_outputs, output_lock
from desweep.runner.config import ResolvedStep, RunConfig, list_options, load_config, resolve_steps
from desweep.runner.pipeline import run_pipeline
from desweep.runner.resume import _stamp
from desweep.runner.steps import STEPS, Step, available_steps, model_dirs, n_models, replicate_steps

__all__ = ["STEPS", "ResolvedStep", "RunConfig", "Step", "_stamp", "available_steps", "check_design", "check_inputs_outside_outputs",
           "list_options", "load_config", "model_dirs", "n_models", "output_lock", "replicate_steps", "resolve_steps", "run_pipeline"]
