"""Which obs columns hold the batch and the groups: recorded once in ``uns``.

``desweep validate`` records the user's batch (and labels) column in
``adata.uns['desweep']``; ``desweep cluster`` adds the group column (the labels,
or Leiden clusters when no labels were given). Every later step reads them here
instead of taking the same options again.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from desweep import keys
from desweep.errors import DesweepInputError

if TYPE_CHECKING:
    from anndata import AnnData


@dataclass(frozen=True)
class DataKeys:
    """The obs columns desweep works with.

    Attributes
    ----------
    batch_key
        Column with the batch of each cell.
    labels_key
        Column with user-given cell labels, or ``None``.
    group_key
        Column whose categories are compared (labels, or ``leiden``); ``None``
        until ``desweep cluster`` ran.
    """

    batch_key: str
    labels_key: str | None = None
    group_key: str | None = None

    @property
    def groups(self) -> str:
        """``group_key`` where it must be set (``get_keys(..., need_groups=True)`` checked that it is)."""
        if self.group_key is None:
            raise ValueError("group_key is not set: run `desweep cluster` first")
        return self.group_key


def set_keys(adata: AnnData, data_keys: DataKeys) -> None:
    """Record ``data_keys`` in ``adata.uns['desweep']`` (other entries are kept)."""
    info = dict(adata.uns.get(keys.UNS_DESWEEP, {}))
    info.update({k: ("" if v is None else v) for k, v in asdict(data_keys).items()})
    adata.uns[keys.UNS_DESWEEP] = info


def get_keys(adata: AnnData, source: str | Path, *, need_groups: bool = False) -> DataKeys:
    """Read the recorded keys, checking that the columns exist.

    Raises
    ------
    DesweepInputError
        When the file was not produced by ``desweep validate`` (no record), a
        recorded column is gone, or groups are needed but ``desweep cluster``
        has not run.
    """
    info = adata.uns.get(keys.UNS_DESWEEP)
    if info is None or "batch_key" not in info:
        raise DesweepInputError(source, f"uns['{keys.UNS_DESWEEP}']", "missing: run `desweep validate` on this file first")
    data_keys = DataKeys(
        batch_key=str(info["batch_key"]),
        labels_key=str(info.get("labels_key") or "") or None,
        group_key=str(info.get("group_key") or "") or None,
    )
    for column in (data_keys.batch_key, data_keys.group_key):
        if column and column not in adata.obs:
            raise DesweepInputError(source, f"obs['{column}']", "recorded in uns['desweep'] but missing from obs")
    if need_groups and not data_keys.group_key:
        raise DesweepInputError(source, "group_key", "no groups recorded: run `desweep cluster` first")
    return data_keys
