"""The simulators' parameters, presets and names, shared by :mod:`desweep.simulate` and :mod:`desweep.simulate_realistic`.

Kept apart from both so that the realistic simulator, which :func:`desweep.simulate.simulate`
dispatches to, imports its parameters without importing the module that calls it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

from desweep.errors import DesweepInputError

BATCH_KEY = "batch"
LABELS_KEY = "cell_type"
#: the largest simulation (the atlas-scale benchmark draws 1,000,000 cells; the simulator writes them block by block)
MAX_CELLS = 2_000_000


@dataclass(frozen=True)
class SimulationParams:
    """Parameters of :func:`simulate` (all counts are totals over the dataset)."""

    n_cells: int = 3000
    n_genes: int = 2000
    n_batches: int = 3
    n_shared_clusters: int = 3
    n_specific_clusters: int = 2
    markers_per_cluster: int = 20
    batch_wide_genes_per_batch: int = 30
    marker_lfc: tuple[float, float] = (1.5, 3.0)
    batch_lfc: tuple[float, float] = (1.0, 2.0)
    batch_noise: float = 0.1
    specific_fraction: float = 0.25
    library_median: float = 2500.0
    seed: int = 0
    #: cells of each batch-specific cluster drawn uniformly in this range (instead of ``specific_fraction``)
    specific_cells: tuple[int, int] | None = None
    #: mean and SD of the base logit of planted genes (others: N(0, 1))
    planted_base: tuple[float, float] = (0.5, 0.5)
    preset: str = "default"
    #: realistic structure (module docstring, preset ``realistic``); None leaves it out and keeps the draws of the other presets
    interaction_genes_per_batch: int | None = None
    donors_per_batch: int | None = None
    #: SD of each donor's per-gene effect (natural log)
    donor_sd: float | None = None
    #: range of the per-batch ambient fraction (share of each cell's mean taken from its batch's average profile)
    ambient_fraction: tuple[float, float] | None = None
    #: markers shared by the related pair (the first two batch-specific clusters)
    parent_markers: int | None = None
    #: share of a cluster's markers also up in one other cluster (markers that are not exclusive)
    shared_program_fraction: float | None = None

    @property
    def realistic(self) -> bool:
        """Whether the realistic structure (interactions, donors, ambient RNA, related pair) is planted."""
        return self.interaction_genes_per_batch is not None

    def check(self) -> None:
        """Raise a one-line error for impossible parameter values."""
        if not 500 <= self.n_cells <= MAX_CELLS:
            raise DesweepInputError("simulate", "--n-cells", f"must be between 500 and {MAX_CELLS}, got {self.n_cells}")
        if not 2 <= self.n_batches <= 4:
            raise DesweepInputError("simulate", "--n-batches", f"must be between 2 and 4, got {self.n_batches}")
        if self.n_specific_clusters > self.n_batches:
            raise DesweepInputError("simulate", "--n-specific-clusters", "at most one batch-specific cluster per batch")
        if self.n_shared_clusters < 1:
            raise DesweepInputError("simulate", "--n-shared-clusters", "need at least one shared cluster")
        planted = (self.n_shared_clusters + self.n_specific_clusters) * self.markers_per_cluster
        planted += self.n_batches * self.batch_wide_genes_per_batch
        if planted > self.n_genes // 2:
            raise DesweepInputError("simulate", "--n-genes", f"too few genes ({self.n_genes}) for {planted} planted genes; need at least twice as many")
        if self.realistic and (self.n_specific_clusters < 2 or self.n_shared_clusters < 2):
            raise DesweepInputError("simulate", "--preset", "realistic needs 2+ batch-specific clusters (the related pair) and 2+ shared ones")
        if self.specific_cells is not None:
            low, high = self.specific_cells
            per_batch = self.n_cells // self.n_batches
            if not 1 <= low <= high or high >= per_batch // 2:
                raise DesweepInputError("simulate", "specific_cells", f"range {low}-{high} must be positive and below half a batch ({per_batch} cells)")


#: named parameter sets (``desweep simulate --preset``); module docstring
Preset = Literal["default", "hard", "realistic"]
PRESETS: dict[str, SimulationParams] = {
    "default": SimulationParams(),
    "hard": SimulationParams(
        n_cells=1000, n_genes=10_000, markers_per_cluster=25, batch_wide_genes_per_batch=25,
        marker_lfc=(0.5 * math.log(2), 2 * math.log(2)), batch_lfc=(0.5 * math.log(2), 2 * math.log(2)),
        library_median=2000.0, specific_cells=(30, 150), planted_base=(1.0, 0.75), preset="hard",
    ),
    "realistic": SimulationParams(
        n_cells=3000, n_genes=3000, n_shared_clusters=4, n_specific_clusters=3, markers_per_cluster=30,
        batch_wide_genes_per_batch=25, marker_lfc=(0.6 * math.log(2), 2.0 * math.log(2)),
        batch_lfc=(0.5 * math.log(2), 2.0 * math.log(2)), specific_fraction=0.15, library_median=2500.0,
        planted_base=(0.75, 0.75), preset="realistic", interaction_genes_per_batch=20, donors_per_batch=3, donor_sd=0.2,
        ambient_fraction=(0.05, 0.15), parent_markers=20, shared_program_fraction=0.3,
    ),
}


def preset_params(preset: Preset = "default", **overrides: object) -> SimulationParams:
    """The parameters of a preset, with some replaced (``seed=1``, ``n_cells=2000``, ...)."""
    if preset not in PRESETS:
        raise DesweepInputError("simulate", "--preset", f"must be one of {', '.join(PRESETS)}, got {preset!r}")
    return replace(PRESETS[preset], **overrides)


def cluster_names(params: SimulationParams) -> tuple[list[str], list[str]]:
    """Names of the shared clusters and of the batch-specific ones (in batch order)."""
    shared = [f"shared{k}" for k in range(params.n_shared_clusters)]
    specific = [f"only_batch{b}" for b in range(params.n_specific_clusters)]
    return shared, specific
