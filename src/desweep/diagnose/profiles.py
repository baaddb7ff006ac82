"""Expression of every gene in every present cluster x batch, with its sampling noise.

``raw`` (always): from the raw counts, each cell scaled to the median library
size; per present cluster x batch the mean of these depth-normalized counts
with a count-scale prior, and the squared *relative* standard error of that
mean, ``rel_var = var(mean) / (mean + eps)^2``: by the delta method the
variance of ``ln(mean + eps)``.

The prior: ``u`` is one count in depth-normalized units (the cells' mean scale
factor times the smallest positive count in the data, 1 for integer counts),
``T = mean n / u`` the counts behind a mean of ``n`` cells. The mean is the
posterior mean of a Poisson rate given ``T`` counts and a prior worth ``c0``
counts (:data:`DEFAULT_PRIOR_COUNT`), ``(T + c0) u / n``, and ``var(mean)`` is
the largest of three estimates, since each alone can be too small:

- the spread over the cells, ``var(x) / n``;
- the Poisson variance of that rate, ``(T + c0) u^2 / n^2``: an all-zero
  cluster x batch, or a few single counts, are never exact (without it, a
  gene seen three times in one group and never elsewhere has a difference with
  no error at all; with it, its error is that of three counts against none);
- with a sample column (``sample_key``, obs ``sample`` by default) and at least
  two samples in the cluster x batch: the spread of the samples' means over the
  number of samples, since cells of one donor are not independent replicates
  of the group.

With hundreds of cells the prior moves a mean by half a count over all of
them: it matters only where counts are few.

scVI choices (``cluster_batch_means.csv``): one further profile per choice. Its
means are scVI's; a choice has no per-cell spread of its own, so it borrows
the raw profile's relative standard errors (the same cells): a conservative
noise level, since scVI's means are smoother than raw ones.

``eps`` is one tenth of the profile's median gene mean, and the count unit is
measured in the data: multiplying every count by a constant changes no log
fold change and no relative error (scale-free).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from desweep import keys
from desweep.composition import PresenceRule, cluster_batch_counts, cluster_status
from desweep.errors import DesweepInputError
from desweep.names import split_names

if TYPE_CHECKING:
    from anndata import AnnData

logger = logging.getLogger(__name__)

RAW = "raw"
MEANS_REQUIRED = ("gene", "cluster", "batch", "choice", "mean")
DEFAULT_PSEUDOCOUNT_FRACTION = 0.1
#: prior count of the Poisson floor (module docstring): half a count per cluster x batch
DEFAULT_PRIOR_COUNT = 0.5


@dataclass
class ExpressionProfile:
    """Mean expression of every gene in every present cluster x batch.

    Attributes
    ----------
    name
        ``raw`` or the scVI normalized choice.
    means
        Genes x ``(cluster, batch)`` columns (linear scale); NaN where absent.
    n_cells
        Clusters x batches: cells counted (0 where the cluster is absent).
    eps
        Pseudocount of the log fold changes (default: :func:`pseudocount` of ``means``).
    rel_var
        Like ``means``: the variance of ``ln(mean + eps)`` (squared relative
        standard error of the mean); zeros when unknown.
    """

    name: str
    means: pd.DataFrame
    n_cells: pd.DataFrame
    eps: float = 0.0
    rel_var: pd.DataFrame | None = None

    def __post_init__(self) -> None:
        if not self.eps:
            self.eps = pseudocount(self.means, DEFAULT_PSEUDOCOUNT_FRACTION)
        if self.rel_var is None:
            self.rel_var = pd.DataFrame(0.0, index=self.means.index, columns=self.means.columns)
        # numpy views for the scores (many small lookups)
        self._means = np.clip(self.means.to_numpy(dtype=float), 0, None)
        self._rel = self.rel_var.reindex(index=self.means.index, columns=self.means.columns).fillna(0.0).to_numpy(dtype=float)
        self._column = {(str(c), str(b)): j for j, (c, b) in enumerate(self.means.columns)}

    def rows(self, genes: pd.Index) -> np.ndarray:
        """Row of each gene in the profile (-1: not in it)."""
        return self.means.index.get_indexer(genes)

    def batches_of(self, cluster: str) -> list[str]:
        """The batches ``cluster`` is present in."""
        if cluster not in self.n_cells.index:
            return []
        row = self.n_cells.loc[cluster]
        return [str(b) for b in row.index if row[b] > 0]

    @property
    def clusters(self) -> list[str]:
        return [str(c) for c in self.n_cells.index]

    def cells(self, cluster: str, batch: str) -> float:
        """Cells of ``cluster`` counted in ``batch`` (0 when absent from the profile)."""
        if (cluster, batch) not in self._column or cluster not in self.n_cells.index or batch not in self.n_cells.columns:
            return 0.0
        return float(self.n_cells.loc[cluster, batch])

    def linear(self, cluster: str, batch: str, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(mean, variance of the mean)`` of the genes at ``rows`` (:meth:`rows`) in ``cluster`` x ``batch``.

        NaN where the cluster x batch or the gene is absent.
        """
        j = self._column.get((cluster, batch))
        if j is None:
            nan = np.full(len(rows), np.nan)
            return nan, nan
        known = rows >= 0
        mean = np.where(known, self._means[rows, j], np.nan)
        rel = np.where(known, self._rel[rows, j], np.nan)
        return mean, rel * (mean + self.eps) ** 2

    def log2(self, cluster: str, batch: str, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(log2(mean + eps), its variance)`` of the genes at ``rows`` in ``cluster`` x ``batch``."""
        mean, var = self.linear(cluster, batch, rows)
        return np.log2(mean + self.eps), var / ((mean + self.eps) ** 2 * np.log(2) ** 2)

    def pooled_log2(self, cluster: str, batches: list[str], rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``log2`` of the cell-weighted mean of ``cluster`` over ``batches``, and its variance."""
        return self.weighted_log2(cluster, {b: self.cells(cluster, b) for b in batches}, rows)

    def weighted_log2(self, cluster: str, weights: dict[str, float], rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``log2`` of the ``weights``-weighted mean of ``cluster`` over batches (weight per batch), and its variance.

        Batches where ``cluster`` is absent or the weight is not positive are left out.
        """
        total, var, weight = np.zeros(len(rows)), np.zeros(len(rows)), 0.0
        for batch, n in weights.items():
            if n <= 0 or self.cells(cluster, batch) <= 0:
                continue
            mean, var_b = self.linear(cluster, batch, rows)
            total += n * np.nan_to_num(mean)
            var += n**2 * np.nan_to_num(var_b)
            weight += n
        if not weight:
            nan = np.full(len(rows), np.nan)
            return nan, nan
        mean, var = total / weight, var / weight**2
        return np.log2(mean + self.eps), var / ((mean + self.eps) ** 2 * np.log(2) ** 2)


def pseudocount(means: pd.DataFrame, fraction: float) -> float:
    """``fraction`` x the median of the positive gene means of a profile."""
    gene_means = means.mean(axis=1, skipna=True).to_numpy(dtype=float)
    positive = gene_means[np.isfinite(gene_means) & (gene_means > 0)]
    return float(np.median(positive)) * fraction if positive.size else 1e-9


def presence_counts(obs: pd.DataFrame, *, group_key: str, batch_key: str, rule: PresenceRule = PresenceRule()) -> pd.DataFrame:
    """Cells per cluster (rows) and batch (columns), 0 where the cluster is not present (presence rule)."""
    counts = cluster_batch_counts(obs, group_key=group_key, batch_key=batch_key)
    status = cluster_status(counts, rule)
    present = counts.copy()
    for cluster in counts.index:
        batches = set(split_names(status.loc[cluster, "batches"]))
        for batch in counts.columns:
            if batch not in batches:
                present.loc[cluster, batch] = 0
    present.index = present.index.astype(str)
    present.columns = present.columns.astype(str)
    return present


def count_unit(x) -> float:
    """One count in the data's own units: the smallest positive value (1 for integer counts; scale-free)."""
    values = x.data if hasattr(x, "data") and not isinstance(x, np.ndarray) else np.asarray(x).ravel()
    positive = values[values > 0]
    return float(positive.min()) if positive.size else 1.0


def count_prior(mean: np.ndarray, unit: float, n: int, prior_count: float) -> tuple[np.ndarray, np.ndarray]:
    """Posterior mean and Poisson variance of a mean of ``n`` cells given a prior of ``prior_count`` counts.

    ``unit``: one count in the mean's units; ``T = mean n / u`` counts give
    ``(T + c0) u / n`` and ``(T + c0) u^2 / n^2``.
    """
    posterior = mean + prior_count * unit / n
    return posterior, posterior * unit / n


def between_sample_variance(sample_means: np.ndarray) -> np.ndarray | None:
    """Variance of a mean from the spread of its samples' means (samples x genes; ``None`` with fewer than two samples)."""
    if len(sample_means) < 2:
        return None
    return sample_means.var(axis=0, ddof=1) / len(sample_means)


def raw_profile(adata: AnnData, *, group_key: str, batch_key: str, rule: PresenceRule = PresenceRule(),
                pseudocount_fraction: float = DEFAULT_PSEUDOCOUNT_FRACTION, sample_key: str | None = keys.SAMPLE,
                prior_count: float = DEFAULT_PRIOR_COUNT) -> ExpressionProfile:
    """Mean depth-normalized counts per present cluster x batch from raw counts in ``adata.X``, with their errors.

    ``adata`` may be backed: ``X`` is read in row chunks (:mod:`desweep.chunks`),
    once for the library sizes, then for the sums per cluster x batch (and per
    sample), never whole. ``sample_key``: obs column of biological samples
    (donors); used where present (module docstring).
    """
    from desweep.chunks import aggregate_codes, row_sums, smallest_positive

    n_cells = presence_counts(adata.obs, group_key=group_key, batch_key=batch_key, rule=rule)
    library = row_sums(adata)
    median = float(np.median(library[library > 0])) if (library > 0).any() else 1.0
    scale = np.divide(median, library, out=np.zeros_like(library), where=library > 0)
    unit = smallest_positive(adata) or 1.0
    groups = adata.obs[group_key].astype(str).to_numpy()
    batches = adata.obs[batch_key].astype(str).to_numpy()
    samples = adata.obs[sample_key].astype(str).to_numpy() if sample_key and sample_key in adata.obs.columns else None
    columns = [(c, b) for c in n_cells.index for b in n_cells.columns if n_cells.loc[c, b] > 0]
    codes = _pair_codes(groups, batches, columns)
    sizes = np.bincount(codes[codes >= 0], minlength=len(columns))
    _, mean_of, _, square_mean_of = aggregate_codes(adata, codes, len(columns), scale=scale, squares=True,
                                                    weights=_inverse_sizes(codes, sizes))
    assert square_mean_of is not None, "asked for the squares"
    by_sample = _sample_means(adata, codes, len(columns), samples, scale) if samples is not None else None
    means, variances = [], []
    for j in range(len(columns)):
        n = int(sizes[j])
        mean = mean_of[j]
        spread = square_mean_of[j] - mean**2
        variance = np.clip(spread, 0, None) * n / max(n - 1, 1) / n  # variance of the mean over cells
        between = between_sample_variance(by_sample[j]) if by_sample is not None else None
        mean, poisson = count_prior(mean, unit * float(scale[codes == j].mean()), n, prior_count)
        variance = np.maximum(variance, poisson)
        variances.append(variance if between is None else np.maximum(variance, between))
        means.append(mean)
    index = pd.MultiIndex.from_tuples(columns, names=["cluster", "batch"])
    genes = adata.var_names.astype(str)
    empty = np.zeros((adata.n_vars, 0))
    mean_df = pd.DataFrame(np.column_stack(means) if means else empty, index=genes, columns=index)
    eps = pseudocount(mean_df, pseudocount_fraction)
    var_df = pd.DataFrame(np.column_stack(variances) if variances else empty, index=genes, columns=index)
    return ExpressionProfile(RAW, mean_df, n_cells, eps=eps, rel_var=var_df / (mean_df + eps) ** 2)


def _pair_codes(groups: np.ndarray, batches: np.ndarray, columns: list[tuple[str, str]]) -> np.ndarray:
    """Each cell's position in ``columns`` (its cluster x batch), -1 where that pair is not in it."""
    position = {pair: j for j, pair in enumerate(columns)}
    return np.fromiter((position.get(pair, -1) for pair in zip(groups, batches, strict=True)), dtype=np.int64,
                       count=len(groups))


def _inverse_sizes(codes: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """``1 / n`` of each cell's group (0 for cells left out): weights that make group sums means."""
    weights = np.zeros(len(codes))
    kept = codes >= 0
    weights[kept] = 1.0 / sizes[codes[kept]]
    return weights


def _sample_means(adata: AnnData, codes: np.ndarray, n_pairs: int, samples: np.ndarray, scale: np.ndarray,
                  ) -> list[np.ndarray]:
    """Per cluster x batch (``codes``): its samples' means of depth-normalized counts (samples x genes)."""
    from desweep.chunks import aggregate_codes

    kept = codes >= 0
    pairs = pd.DataFrame({"pair": codes[kept], "sample": samples[kept]})
    keys_ = pairs.drop_duplicates().sort_values(["pair", "sample"]).reset_index(drop=True)
    sub_codes = np.full(len(codes), -1, dtype=np.int64)
    sub_codes[kept] = pd.MultiIndex.from_frame(keys_).get_indexer(pd.MultiIndex.from_frame(pairs))
    sizes = np.bincount(sub_codes[kept], minlength=len(keys_))
    _, sample_means, _, _ = aggregate_codes(adata, sub_codes, len(keys_), scale=scale,
                                            weights=_inverse_sizes(sub_codes, sizes))
    rows = keys_.groupby("pair").indices
    return [sample_means[rows[j]] for j in range(n_pairs)]


def means_profiles(means: pd.DataFrame, raw: ExpressionProfile, *, source: str = keys.CLUSTER_BATCH_MEANS_CSV,
                   pseudocount_fraction: float = DEFAULT_PSEUDOCOUNT_FRACTION) -> dict[str, ExpressionProfile]:
    """One profile per scVI normalized choice of ``cluster_batch_means.csv`` (long: gene, cluster, batch, choice, mean).

    Every choice borrows the relative standard errors of the ``raw`` profile (module docstring).
    """
    missing = [c for c in MEANS_REQUIRED if c not in means.columns]
    if missing:
        raise DesweepInputError(source, missing[0], f"column missing (have: {', '.join(map(str, means.columns))})")
    means = means.astype({"gene": str, "cluster": str, "batch": str, "choice": str})
    n_cells = raw.n_cells
    profiles = {}
    assert raw.rel_var is not None, "the raw profile carries its relative variances"
    for choice, part in means.groupby("choice", sort=False):
        wide = part.pivot_table(index="gene", columns=["cluster", "batch"], values="mean", aggfunc="mean")
        keep = [(c, b) for c, b in wide.columns if c in n_cells.index and b in n_cells.columns and n_cells.loc[c, b] > 0]
        wide = wide[keep]
        wide.columns = pd.MultiIndex.from_tuples(keep, names=["cluster", "batch"])
        rel_var = raw.rel_var.reindex(index=wide.index, columns=wide.columns).fillna(0.0)
        profiles[str(choice)] = ExpressionProfile(str(choice), wide, n_cells, eps=pseudocount(wide, pseudocount_fraction),
                                                  rel_var=rel_var)
    return profiles


def build_profiles(adata: AnnData, means: pd.DataFrame | None, *, group_key: str, batch_key: str,
                   presence: PresenceRule = PresenceRule(),
                   pseudocount_fraction: float = DEFAULT_PSEUDOCOUNT_FRACTION,
                   sample_key: str | None = keys.SAMPLE) -> dict[str, ExpressionProfile]:
    """``{"raw": ..., <choice>: ...}``: the raw profile first, then one per scVI choice in ``means``."""
    raw = raw_profile(adata, group_key=group_key, batch_key=batch_key, rule=presence, pseudocount_fraction=pseudocount_fraction,
                      sample_key=sample_key)
    profiles = {RAW: raw}
    if means is not None:
        for name, profile in means_profiles(means, raw, pseudocount_fraction=pseudocount_fraction).items():
            profiles[name if name != RAW else "scvi_raw"] = profile
    return profiles


def top_gene_expression(patterns: pd.DataFrame, profile: ExpressionProfile, *, max_genes: int = 30) -> pd.DataFrame:
    """Long table of each setting's top ``max_genes`` genes across every present cluster x batch.

    Columns ``combination_id, setting_id, model, seed, gene, rank, pattern, cluster, batch,
    log2_mean, z`` (``z``: ``log2(mean + eps)`` standardized per gene and
    combination), for plots and the report's heatmaps.
    """
    columns = sorted(profile.means.columns, key=lambda cb: (str(cb[0]), str(cb[1])))
    id_columns = [c for c in ("combination_id", "setting_id", "model", "seed") if c in patterns.columns]
    frames = []
    for _, part in patterns.groupby("combination_id", sort=False):
        top = part.sort_values("rank").head(max_genes)
        top = top[top["gene"].astype(str).isin(profile.means.index)]
        if top.empty:
            continue
        values = np.log2(np.clip(profile.means.loc[top["gene"].astype(str), columns].to_numpy(dtype=float), 0, None) + profile.eps)
        mean = np.nanmean(values, axis=1, keepdims=True)
        sd = np.nanstd(values, axis=1, keepdims=True)
        z = np.divide(values - mean, sd, out=np.zeros_like(values), where=sd > 0)
        n_genes, n_cols = values.shape
        frame = {c: top[c].iloc[0] for c in id_columns}
        frame.update({
            "gene": np.repeat(top["gene"].astype(str).to_numpy(), n_cols),
            "rank": np.repeat(top["rank"].to_numpy(), n_cols),
            "pattern": np.repeat(top["pattern"].to_numpy(), n_cols),
            "cluster": [c for c, _ in columns] * n_genes,
            "batch": [b for _, b in columns] * n_genes,
            "log2_mean": values.ravel(),
            "z": z.ravel(),
        })
        frames.append(pd.DataFrame(frame))
    columns_out = [*id_columns, "gene", "rank", "pattern", "cluster", "batch", "log2_mean", "z"]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns_out)
