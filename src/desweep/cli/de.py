"""``desweep de``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from desweep import keys, params
from desweep.cli._common import input_option, options_from, outdir_option, prepare_outdir, step_command

if TYPE_CHECKING:
    from desweep.compute import Accelerator
    from desweep.de.sampling import Sampling


@click.command(name="de")
@click.option("--plan", "plan_path", type=click.Path(path_type=Path), required=True,
              help=f"The plan ({keys.STEP_DE}/{keys.PLAN_CSV}).")
@input_option(f"The clustered .h5ad ({keys.STEP_CLUSTER}/{keys.CLUSTERED_H5AD}); not needed with --merge.", dest="adata_path", required=False)
@click.option("--model", "model_dirs", type=click.Path(path_type=Path), multiple=True,
              help=f"The scVI model folder ({keys.STEP_INTEGRATE}/{keys.MODEL_DIR}); with model replicates one per model the "
                   f"rows run use, in model order ({keys.STEP_INTEGRATE}/{keys.replicate_dir(1)}/{keys.MODEL_DIR}, ...). "
                   "Not needed with --merge.")
@click.option("--sampling-key", "sampling_keys", multiple=True,
              help=f"Run the combinations of this sampling key (repeatable): writes {keys.DE_TABLES_DIR}/<combination_id>.csv "
                   f"and {keys.DE_PARTIAL_SUMMARY_DIR}/<sampling_key>.csv. What one Nextflow task runs.")
@click.option("--all", "run_all", is_flag=True, help=f"Run every sampling key, then merge ({keys.DE_SUMMARY_CSV}, {keys.DE_STABILITY_CSV}).")
@click.option("--merge", is_flag=True,
              help=f"Only merge the per-key summaries and tables of earlier --sampling-key runs into {keys.DE_SUMMARY_CSV} and {keys.DE_STABILITY_CSV}.")
@options_from(params.DE)
@click.option("--partials", "partials_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help=f"With --merge: folder of the per-key summaries (default: OUTDIR/{keys.DE_PARTIAL_SUMMARY_DIR}).")
@click.option("--tables", "tables_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help=f"With --merge: folder of the tables (default: OUTDIR/{keys.DE_TABLES_DIR}).")
@outdir_option(keys.outdir_help("de"))
@step_command
def de(plan_path: Path, adata_path: Path | None, model_dirs: tuple[Path, ...], sampling_keys: tuple[str, ...], run_all: bool,
       merge: bool, n_samples: int, batch_size: int | None, sampling: Sampling, stability_top_n: int, partials_dir: Path | None,
       tables_dir: Path | None, accelerator: Accelerator, threads: int | None, outdir: Path) -> None:
    """Run the DE sweep of a plan: one table per combination, a summary and replicate stability.

    One sampling key per Nextflow task, then a merge:

    \b
        desweep de --plan results/de/plan.csv -i results/cluster/clustered.h5ad \\
            --model results/integrate/model --sampling-key KEY -o results/de
        desweep de --plan results/de/plan.csv --merge -o results/de

    or everything in one process: replace --sampling-key with --all.
    """
    from desweep import de as sweep
    from desweep.errors import DesweepInputError
    from desweep.io import read_csv

    chosen = [name for name, on in (("--sampling-key", bool(sampling_keys)), ("--all", run_all), ("--merge", merge)) if on]
    if len(chosen) != 1:
        raise DesweepInputError("desweep de", "--sampling-key/--all/--merge", f"give exactly one of them (got {', '.join(chosen) or 'none'})")
    plan = sweep.check_plan(read_csv(plan_path, what="plan", all_text=True), source=str(plan_path))
    tables_dir = tables_dir or outdir / keys.DE_TABLES_DIR
    partials_dir = partials_dir or outdir / keys.DE_PARTIAL_SUMMARY_DIR

    if not merge:
        known = set(plan["sampling_key"])
        for key in sampling_keys:
            if key not in known:
                example = next(iter(plan["sampling_key"]))
                raise DesweepInputError(plan_path, "sampling_key", f"'{key}' is not in this plan ({len(known)} keys, e.g. '{example}')")
        for option, value in (("--input", adata_path), ("--model", model_dirs)):
            if not value:
                raise DesweepInputError("desweep de", option, "required unless --merge")
        assert adata_path is not None  # checked just above
        _sweep(plan, adata_path=adata_path, model_dirs=model_dirs, keys_to_run=list(sampling_keys) or None, merge=run_all,
               n_samples=n_samples, batch_size=batch_size, sampling=sampling, top_n=stability_top_n, accelerator=accelerator,
               threads=threads, outdir=outdir)
        return

    summary, stability = _merge(plan, partials_dir=partials_dir, tables_dir=tables_dir, top_n=stability_top_n)
    _write_merged(summary, stability, outdir)


def _write_merged(summary, stability, outdir: Path) -> None:
    from desweep.io import write_csv

    prepare_outdir(outdir)
    write_csv(summary, outdir / keys.DE_SUMMARY_CSV)
    write_csv(stability, outdir / keys.DE_STABILITY_CSV)
    n_ood = int((summary["out_of_distribution"].astype(str) == "True").sum())
    click.echo(f"{len(summary)} combinations: {outdir / keys.DE_SUMMARY_CSV} ({n_ood} decode a group out of distribution), "
               f"{outdir / keys.DE_STABILITY_CSV}")


def _load(plan, *, adata_path: Path, model_dirs: tuple[Path, ...], accelerator: Accelerator, threads: int | None):
    """The data, its keys and ``{model index: model}`` for the rows of ``plan``, one --model per model they use."""
    from desweep import compute
    from desweep import de as sweep
    from desweep.datakeys import get_keys
    from desweep.errors import DesweepInputError
    from desweep.integrate import load_model
    from desweep.io import read_h5ad

    models = sweep.models_of(plan)
    if len(model_dirs) != len(models):
        raise DesweepInputError("desweep de", "--model", f"give one --model per model the rows run use, in model order: "
                                f"{len(models)} (model {', '.join(map(str, models))}), got {len(model_dirs)}")
    compute.configure(threads=threads)
    device = compute.resolve_accelerator(accelerator)
    adata = read_h5ad(adata_path)
    data_keys = get_keys(adata, adata_path, need_groups=True)
    loaded = {index: load_model(str(model_dir), adata, accelerator=device, source=str(adata_path))
              for index, model_dir in zip(models, model_dirs, strict=True)}
    return adata, data_keys, loaded


def _sweep(plan, *, adata_path: Path, model_dirs: tuple[Path, ...], keys_to_run: list[str] | None, merge: bool, n_samples: int,
           batch_size: int | None, sampling: Sampling, top_n: int, accelerator: Accelerator, threads: int | None,
           outdir: Path) -> None:
    """The library sweep (:func:`desweep.de.run_sweep`), writing each table and per-key summary as it comes.

    ``--all``: every key, then the merge; ``--sampling-key``: the given keys (one Nextflow task), no merge.
    """
    from desweep import de as sweep
    from desweep.io import write_csv

    subset = plan if keys_to_run is None else plan[plan["sampling_key"].isin(keys_to_run)]
    adata, data_keys, models = _load(subset, adata_path=adata_path, model_dirs=model_dirs, accelerator=accelerator,
                                     threads=threads)
    for index, model in models.items():  # before anything is written
        sweep.check_inputs(adata, model, subset[subset["model"] == index], group_key=data_keys.groups, source=str(adata_path))
    prepare_outdir(outdir)
    result = sweep.run_sweep(
        adata, models, plan, group_key=data_keys.groups, n_samples=n_samples, batch_size=batch_size, sampling=sampling,
        top_n=top_n, keys=keys_to_run, merge=merge, source=str(adata_path),
        on_table=lambda cid, table: write_csv(table, outdir / keys.DE_TABLES_DIR / f"{cid}.csv"),
        on_group=lambda key, summary: write_csv(summary, outdir / keys.DE_PARTIAL_SUMMARY_DIR / f"{key}.csv"),
    )
    n_keys = len(keys_to_run) if keys_to_run is not None else len(sweep.sampling_keys(plan))
    click.echo(f"{n_keys} sampling keys in {result.seconds:.1f} s "
               f"(decoding {result.decode_seconds:.1f} s in {result.decode_passes} passes, {sampling} sampling)")
    if merge:
        _write_merged(result.summary, result.stability, outdir)


def _merge(plan, *, partials_dir: Path, tables_dir: Path, top_n: int):
    from desweep import de as sweep
    from desweep.errors import DesweepInputError
    from desweep.io import read_csv

    partials, missing = [], []
    for key in sweep.sampling_keys(plan):
        path = partials_dir / f"{key}.csv"
        if path.is_file():
            partials.append(read_csv(path, what="summary", all_text=True))
        else:
            missing.append(key)
    if missing:
        raise DesweepInputError(partials_dir, "sampling_key", f"no summary for {len(missing)} of {len(missing) + len(partials)} "
                                f"sampling keys, e.g. '{missing[0]}.csv': run `desweep de --sampling-key` for them first")
    summary = sweep.merge_summaries(partials, plan, source=str(partials_dir))
    tables = {}
    for cid in plan["combination_id"]:
        path = tables_dir / f"{cid}.csv"
        if not path.is_file():
            raise DesweepInputError(tables_dir, "combination_id", f"table '{cid}.csv' is missing")
        tables[cid] = read_csv(path, required=("gene", "rank", "is_de_fdr"), what="DE table")[["gene", "rank", "is_de_fdr"]]
    return summary, sweep.stability(tables, plan, top_n=top_n)
