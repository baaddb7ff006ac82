"""The ``transform_batch`` choices of an export and the layers each one writes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from desweep import keys
from desweep.choices import literal_values
from desweep.errors import ParameterError
from desweep.names import encode_name, join_names

if TYPE_CHECKING:
    from scvi.model import SCVI

#: every choice, in the order layers are written
Choice = Literal["own_batch", "each_batch", "mean_all_batches", "all_batches_samples"]
CHOICES = literal_values(Choice)
DEFAULT_CHOICES: tuple[str, ...] = ("own_batch", "each_batch", "mean_all_batches")
#: what each choice means in scvi-tools' terms
CHOICE_HELP: dict[str, str] = {
    "own_batch": "transform_batch=None: each cell decoded in its own batch",
    "each_batch": "transform_batch=b for every batch b: one layer per decoded batch",
    "mean_all_batches": "transform_batch=[all batches], return_mean=True: mean over batches and posterior samples",
    "all_batches_samples": "transform_batch=[all batches], return_mean=False: one layer per posterior sample, each a mean over batches",
}
Latent = Literal["sample", "mean"]
LATENTS = literal_values(Latent)
DEFAULT_LIBRARY_SIZE = 1e4


@dataclass(frozen=True)
class LayerSpec:
    """One output layer.

    Attributes
    ----------
    layer
        The layer name in ``normalized.h5ad`` (``scvi_norm__...``).
    choice
        The choice it belongs to (one of :data:`CHOICES`).
    transform_batch
        The decoding in scvi-tools' terms: ``None`` (own batch), a batch, or
        ``"[all]"`` / the list of batches averaged (:func:`desweep.names.join_names`).
    return_mean
        Whether the posterior samples were averaged.
    sample
        The posterior sample index for ``all_batches_samples``, else ``-1``.
    """

    layer: str
    choice: str
    transform_batch: str
    return_mean: bool
    sample: int = -1

    @property
    def suffix(self) -> str:
        """The layer name without :data:`desweep.keys.NORM_LAYER_PREFIX` (the ``choice`` column of the means table)."""
        return self.layer[len(keys.NORM_LAYER_PREFIX):]


def parse_library_size(value: str | float | int) -> float | Literal["latent"]:
    """``"latent"`` or a positive number (``1``, ``1e4``, ``"10000"``)."""
    if isinstance(value, str) and value.strip().lower() == "latent":
        return "latent"
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ParameterError("library_size", "library_size", f"must be 'latent' or a positive number, got {value!r}") from None
    if not np.isfinite(number) or number <= 0:
        raise ParameterError("library_size", "library_size", f"must be 'latent' or a positive number, got {value!r}")
    return number


def check_choices(choices: Sequence[str]) -> tuple[str, ...]:
    """Validate and order ``choices`` (``"all"`` expands to every choice)."""
    wanted = list(choices)
    if "all" in wanted:
        wanted = list(CHOICES)
    if not wanted:
        raise ParameterError("choices", "choices", f"give at least one of {', '.join(CHOICES)}")
    unknown = [c for c in wanted if c not in CHOICES]
    if unknown:
        raise ParameterError("choices", unknown[0], f"unknown choice; use one of {', '.join(CHOICES)} or all")
    return tuple(c for c in CHOICES if c in wanted)


def model_batches(model: SCVI) -> list[str]:
    """The batch categories of the model, in the order of their codes."""
    from scvi import REGISTRY_KEYS

    mapping = model.adata_manager.get_state_registry(REGISTRY_KEYS.BATCH_KEY).categorical_mapping
    return [str(b) for b in mapping]


def layer_plan(choices: Sequence[str], batches: Sequence[str], *, n_samples: int) -> list[LayerSpec]:
    """The layers an export writes, in order (see :data:`CHOICE_HELP`).

    Batch names in layer names are encoded with :func:`desweep.names.encode_name`
    (safe for HDF5 keys, one-to-one, bounded); ``LayerSpec.transform_batch``
    keeps the real name.
    """
    prefix = keys.NORM_LAYER_PREFIX
    listed = join_names(batches)
    specs: list[LayerSpec] = []
    for choice in check_choices(choices):
        if choice == "own_batch":
            specs.append(LayerSpec(f"{prefix}{keys.NORM_OWN_BATCH}", choice, "None", True))
        elif choice == "each_batch":
            specs.extend(LayerSpec(f"{prefix}{keys.NORM_BATCH}__{encode_name(batch)}", choice, batch, True) for batch in batches)
        elif choice == "mean_all_batches":
            specs.append(LayerSpec(f"{prefix}{keys.NORM_MEAN_ALL_BATCHES}", choice, f"[{listed}]", True))
        else:
            specs.extend(
                LayerSpec(f"{prefix}{keys.NORM_MEAN_ALL_BATCHES}__{keys.NORM_SAMPLE}_{k}", choice, f"[{listed}]", False, k)
                for k in range(n_samples)
            )
    return specs
