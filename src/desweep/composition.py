"""Composition: which clusters are batch-specific, and what kind each comparison is.

Presence rule
-------------
A cluster is *present* in a batch when it has at least ``min_cells`` cells there
**and** its share of that batch is at least ``min_enrichment`` times its share
of the whole dataset. The second condition keeps a handful of stray cells (a
doublet, a mis-assigned cell) from making a batch-specific cluster look shared,
whatever the batch sizes. A cluster present in exactly one batch is
``specific``; in every batch ``shared``; otherwise ``partial``.

Design classes of a comparison ``group1`` vs ``group2``
-------------------------------------------------------
``shared``
    Both groups share at least two batches: batch effects are estimable
    within the comparison.
``partially_shared``
    They share exactly one batch, and neither group is batch-specific.
``one_specific``
    One group is specific to a batch the other group also occurs in.
``confounded``
    The groups share no batch (e.g. each is specific to a different batch):
    group and batch are fully confounded.
``single_batch``
    Both groups occur in one and the same single batch.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from typing import Literal

import pandas as pd

from desweep.errors import DesweepInputError
from desweep.names import NAME_SEPARATOR, encode_name, join_names, parse_pairs, quote_name, split_names

logger = logging.getLogger(__name__)

Design = Literal["shared", "partially_shared", "one_specific", "confounded", "single_batch"]
DESIGN_PRIORITY: dict[str, int] = {"confounded": 0, "one_specific": 1, "single_batch": 2, "partially_shared": 3, "shared": 4}
COMPARISON_COLUMNS = [
    "comparison_id", "group1", "group2", "design", "recommended_batch_correction", "reason",
    "group1_batches", "group2_batches", "shared_batches", "n_cells_group1", "n_cells_group2",
]


@dataclass(frozen=True)
class PresenceRule:
    """Thresholds of the presence rule (module docstring)."""

    min_cells: int = 10
    min_enrichment: float = 0.1


def cluster_batch_counts(obs: pd.DataFrame, *, group_key: str, batch_key: str) -> pd.DataFrame:
    """Cells per group (rows) and batch (columns)."""
    table = pd.crosstab(obs[group_key].astype(str), obs[batch_key].astype(str))
    table.index.name, table.columns.name = "cluster", None
    return table


def cluster_status(counts: pd.DataFrame, rule: PresenceRule = PresenceRule()) -> pd.DataFrame:
    """Per cluster: the batches it is present in and ``shared``/``partial``/``specific``.

    Returns
    -------
    Table indexed by cluster with ``n_cells``, ``batches`` (:func:`desweep.names.join_names`),
    ``n_batches``, ``status`` and ``specific_to`` (the batch, or ``""``).
    """
    total = counts.to_numpy().sum()
    batch_sizes = counts.sum(axis=0)
    rows = []
    for cluster, row in counts.iterrows():
        expected_share = row.sum() / total
        share = row / batch_sizes
        present = [b for b in counts.columns if row[b] >= rule.min_cells and share[b] >= rule.min_enrichment * expected_share]
        status = "specific" if len(present) == 1 else "shared" if len(present) == counts.shape[1] else "partial"
        rows.append({
            "cluster": cluster, "n_cells": int(row.sum()), "batches": join_names(present), "n_batches": len(present),
            "status": status if present else "absent", "specific_to": present[0] if len(present) == 1 else "",
        })
    return pd.DataFrame(rows).set_index("cluster")


def classify(batches1: set[str], batches2: set[str]) -> Design:
    """Design class of a comparison from the batches each group is present in."""
    common = batches1 & batches2
    if not common:
        return "confounded"
    if len(batches1) == 1 and batches1 == batches2:
        return "single_batch"
    if len(batches1) == 1 or len(batches2) == 1:
        return "one_specific"
    return "shared" if len(common) >= 2 else "partially_shared"


def recommendation(design: Design, *, any_shared_cluster: bool) -> tuple[str, str]:
    """The recommended ``batch_correction`` for a design class, with a one-sentence reason."""
    if design == "single_batch":
        return "False", "Both groups come from the same single batch, so decoding each cell in its own batch is already a within-batch comparison."
    if design == "confounded" and not any_shared_cluster:
        return "none", "No cluster occurs in two batches, so batch effects cannot be told apart from group differences; no setting can be trusted."
    if design == "confounded":
        return "True", ("Group and batch are fully confounded: without batch correction batch-wide genes rank as DE, "
                        "so decode both groups in common batches (learned from the shared clusters) and check top genes in the diagnostics.")
    if design == "one_specific":
        return "True", ("One group exists in one batch only: decoding both groups in the same batch(es) removes batch-wide differences, "
                        "and decoding both in the specific group's own batch keeps that group in distribution.")
    return "True", "Both groups occur in common batches, so batch-corrected decoding compares them free of batch effects with all cells in distribution."


def parse_comparisons(text: str, *, option: str = "--comparisons") -> list[tuple[str, str]]:
    """Parse ``'A:B;C:D'`` into pairs (a name holding ``:``, ``;`` or ``"`` is written ``"in quotes"``).

    Raises
    ------
    DesweepInputError
        A malformed string, an empty name, a group compared with itself, or a pair given twice.
    """
    try:
        items = parse_pairs(text)
    except ValueError as err:
        raise DesweepInputError(option, "comparisons", f"{err}; write a name holding ':', ';' or '\"' in double quotes") from None
    pairs = []
    for names in items:
        if len(names) != 2 or not all(names):
            written = NAME_SEPARATOR.join(quote_name(n) for n in names)
            raise DesweepInputError(option, "comparisons", f"'{written}' is not of the form group1:group2 (pairs separated by ';', "
                                    "names holding ':' or ';' in double quotes)")
        pairs.append((names[0], names[1]))
    return check_pairs(pairs, source=option)


def check_pairs(pairs: list[tuple[str, str]], *, source: str = "--comparisons") -> list[tuple[str, str]]:
    """Refuse an empty list, an empty name, a group compared with itself and a pair given twice."""
    if not pairs:
        raise DesweepInputError(source, "comparisons", "no comparison given")
    seen: set[tuple[str, str]] = set()
    for g1, g2 in pairs:
        written = f"{quote_name(g1)}{NAME_SEPARATOR}{quote_name(g2)}"
        if not g1 or not g2:
            raise DesweepInputError(source, "comparisons", f"'{written}' has an empty group name")
        if g1 == g2:
            raise DesweepInputError(source, "comparisons", f"'{written}' compares a group with itself")
        if (g1, g2) in seen:
            raise DesweepInputError(source, "comparisons", f"'{written}' is given twice")
        seen.add((g1, g2))
    return list(pairs)


def default_comparisons(status: pd.DataFrame, *, max_comparisons: int, source: str = "groups",
                        group_key: str = "group") -> list[tuple[str, str]]:
    """Every pair with at least one batch-specific cluster, most confounded first, capped.

    Raises
    ------
    DesweepInputError
        Fewer than two groups, or no batch-specific group: the message says what can work.
    """
    present = sorted(status.index[status["status"] != "absent"], key=str)
    if len(present) < 2:
        raise DesweepInputError(source, f"obs['{group_key}']", f"{len(present)} group(s) present ({', '.join(map(str, present)) or 'none'}): "
                                "desweep compares two groups; give more labels, or cluster at a higher resolution "
                                "(--set cluster.resolution=...)")
    specific = set(status.index[status["status"] == "specific"])
    pairs = []
    for g1, g2 in itertools.combinations(present, 2):
        if g1 in specific or g2 in specific:
            if g2 in specific and g1 not in specific:
                g1, g2 = g2, g1  # the batch-specific group first
            design = classify(_batches(status, g1), _batches(status, g2))
            pairs.append((DESIGN_PRIORITY[design], str(g1), str(g2)))
    if not pairs:
        example = f"{quote_name(present[0])}{NAME_SEPARATOR}{quote_name(present[1])}"
        raise DesweepInputError(source, f"obs['{group_key}']", f"no group is specific to one batch ({len(present)} groups): "
                                f"name the pairs to compare with --comparisons (desweep run: --set composition.comparisons=...), e.g. '{example}'")
    pairs.sort()
    if len(pairs) > max_comparisons:
        logger.warning("%d candidate comparisons, keeping the first %d (--max-comparisons)", len(pairs), max_comparisons)
    return [(g1, g2) for _, g1, g2 in pairs[:max_comparisons]]


def comparison_table(
    status: pd.DataFrame, pairs: list[tuple[str, str]], *, source: str = "groups", min_cells_per_group: int = 10
) -> pd.DataFrame:
    """Classify each comparison and recommend a ``batch_correction`` setting.

    Raises
    ------
    DesweepInputError
        A group that does not exist or has fewer than ``min_cells_per_group`` cells.
    """
    any_shared = bool((status["n_batches"] >= 2).any())
    rows = []
    for g1, g2 in pairs:
        for group in (g1, g2):
            if group not in status.index:
                raise DesweepInputError(source, "comparisons", f"group '{group}' does not exist (have: {', '.join(map(str, status.index))})")
            if status.loc[group, "n_cells"] < min_cells_per_group:
                raise DesweepInputError(source, "comparisons",
                                        f"group '{group}' has {status.loc[group, 'n_cells']} cells, fewer than --min-cells-per-group {min_cells_per_group}")
        b1, b2 = _batches(status, g1), _batches(status, g2)
        design = classify(b1, b2)
        setting, reason = recommendation(design, any_shared_cluster=any_shared)
        rows.append({
            "comparison_id": comparison_id(g1, g2), "group1": g1, "group2": g2, "design": design,
            "recommended_batch_correction": setting, "reason": reason,
            "group1_batches": join_names(sorted(b1)), "group2_batches": join_names(sorted(b2)),
            "shared_batches": join_names(sorted(b1 & b2)),
            "n_cells_group1": int(status.loc[g1, "n_cells"]), "n_cells_group2": int(status.loc[g2, "n_cells"]),
        })
    return pd.DataFrame(rows, columns=COMPARISON_COLUMNS)


def compose(
    obs: pd.DataFrame, *, group_key: str, batch_key: str, comparisons: list[tuple[str, str]] | None = None,
    max_comparisons: int = 10, rule: PresenceRule = PresenceRule(), min_cells_per_group: int = 10, source: str = "groups",
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Counts, cluster status and the comparisons table of ``desweep composition``.

    Parameters
    ----------
    obs
        Cell metadata with ``group_key`` and ``batch_key``.
    comparisons
        The pairs to compare; ``None``: :func:`default_comparisons`.

    Returns
    -------
    ``(cluster_batch_counts, clusters, comparisons)``: the three tables of the step.
    """
    counts = cluster_batch_counts(obs, group_key=group_key, batch_key=batch_key)
    status = cluster_status(counts, rule)
    pairs = comparisons or default_comparisons(status, max_comparisons=max_comparisons, source=source, group_key=group_key)
    return counts, status, comparison_table(status, pairs, source=source, min_cells_per_group=min_cells_per_group)


def comparison_id(group1: str, group2: str) -> str:
    """A stable, file-name-safe id, one-to-one: ``<group1>_vs_<group2>`` (:func:`desweep.names.encode_name`)."""
    return f"{encode_name(group1)}_vs_{encode_name(group2)}"


def _batches(status: pd.DataFrame, group: str) -> set[str]:
    return set(split_names(status.loc[group, "batches"]))


def read_comparisons(value: str) -> list[tuple[str, str]]:
    """Comparisons written ``'A:B;C:D'``, or a CSV/TSV file with ``group1`` and ``group2`` columns."""
    from pathlib import Path

    from desweep.io import read_csv

    from desweep.names import NAME_SEPARATOR

    path = Path(value)
    # a file when one is there, or a .csv/.tsv name without a pair in it: "A:B.csv" compares A with a group "B.csv"
    if _is_file(path) or (NAME_SEPARATOR not in value and path.suffix.lower() in (".csv", ".tsv")):
        table = read_csv(path, required=("group1", "group2"), what="--comparisons")
        return check_pairs(list(zip(table["group1"], table["group2"], strict=True)), source=str(path))
    return parse_comparisons(value)


def _is_file(path) -> bool:
    try:
        return path.is_file()
    except OSError:  # longer than a file name may be (255 bytes): pairs written out
        return False
