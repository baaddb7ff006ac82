"""Every scvi-tools name that is not part of its public API, in one place.

desweep reproduces ``differential_expression`` step by step and decodes the
posterior chunk by chunk, which needs a few of scvi-tools' private functions
and methods. They live here so that supporting a new scvi-tools release (the
upper pin in pyproject.toml) means checking this one file:
tests/test_scvi_compat.py checks that each name exists with the parameters
used here, and that no other module of desweep imports a private scvi-tools name.

scvi-tools is imported inside each function: importing desweep stays cheap.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from anndata import AnnData
    from scvi.data import AnnDataManager
    from scvi.model import SCVI

#: (module, name) of every private scvi-tools function used, and the keyword arguments desweep passes
PRIVATE_FUNCTIONS: dict[tuple[str, str], tuple[str, ...]] = {
    ("scvi.model._utils", "scrna_raw_counts_properties"): ("adata_manager", "idx1", "idx2"),
    ("scvi.model.base._differential", "describe_continuous_distrib"): ("samples",),
    ("scvi.model.base._differential", "estimate_pseudocounts_offset"):
        ("scales_a", "scales_b", "where_zero_a", "where_zero_b", "quantile"),
}

#: (class, method) of every private scvi-tools method used, and the arguments desweep passes
PRIVATE_METHODS: dict[tuple[str, str], tuple[str, ...]] = {
    ("scvi.model.SCVI", "_validate_anndata"): ("adata",),
    ("scvi.model.SCVI", "_make_data_loader"): ("adata", "indices", "batch_size", "shuffle"),
    ("scvi.module.VAE", "_get_inference_input"): ("tensors",),
    ("scvi.module.VAE", "_get_generative_input"): ("tensors", "inference_outputs"),
}


def raw_counts_properties(manager: AnnDataManager, idx1: np.ndarray, idx2: np.ndarray) -> dict[str, np.ndarray]:
    """scvi-tools' raw count columns of a DE table (``raw_mean1``, ``non_zeros_proportion1``, ...).

    ``idx1`` and ``idx2`` select the two groups' cells (boolean masks or indices).
    """
    from scvi.model._utils import scrna_raw_counts_properties

    return scrna_raw_counts_properties(manager, idx1, idx2)


def describe_continuous_distrib(samples: np.ndarray) -> dict[str, np.ndarray]:
    """scvi-tools' summary of log fold change samples (mean, median, std, min, max) per gene."""
    from scvi.model.base._differential import describe_continuous_distrib as describe

    return describe(samples=samples)


def estimate_pseudocounts_offset(*, scales_a: np.ndarray, scales_b: np.ndarray, where_zero_a: np.ndarray,
                                 where_zero_b: np.ndarray, quantile: float) -> float:
    """scvi-tools' pseudocount of the change mode: a quantile of the scales of the genes with (almost) no counts."""
    from scvi.model.base._differential import estimate_pseudocounts_offset as estimate

    return estimate(scales_a=scales_a, scales_b=scales_b, where_zero_a=where_zero_a, where_zero_b=where_zero_b,
                    quantile=quantile)


def validate_anndata(model: SCVI, adata: AnnData) -> AnnData:
    """``adata`` checked against (and registered with) the model's setup, as the model's own methods do."""
    return model._validate_anndata(adata)


def data_loader(model: SCVI, adata: AnnData, *, batch_size: int) -> Iterable[dict[str, Any]]:
    """Minibatches of every cell of ``adata`` in order, as tensors keyed by scvi-tools' registry keys."""
    return model._make_data_loader(adata=adata, indices=np.arange(adata.n_obs), batch_size=batch_size, shuffle=False)


def inference_input(module: Any, tensors: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of ``module.inference`` for one minibatch."""
    return module._get_inference_input(tensors)


def generative_input(module: Any, tensors: dict[str, Any], inference_outputs: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of ``module.generative`` for one minibatch and its (possibly replaced) inference outputs."""
    return module._get_generative_input(tensors, inference_outputs)
