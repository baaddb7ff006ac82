"""Decoding chunk by chunk, every batch from the same posterior draws of ``z`` (common random numbers)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Literal

import numpy as np

from desweep import scvi_compat
from desweep.normalize.layers import Latent, LayerSpec
from desweep.progress import ProgressLog

if TYPE_CHECKING:
    from anndata import AnnData
    from scvi.model import SCVI

logger = logging.getLogger(__name__)

#: cells per block of posterior noise; the noise of a cell depends only on seed and its position
NOISE_BLOCK = 1024


def latent_noise(seed: int, start: int, stop: int, *, n_samples: int, n_dims: int, stream: int = 0) -> np.ndarray:
    """Standard normal draws ``(n_samples, stop - start, n_dims)`` for cells ``start:stop``.

    Drawn per block of :data:`NOISE_BLOCK` cells from ``(seed, block, stream)``,
    so a cell's draws depend on the seed and its position only, never on the
    chunk size.
    """
    blocks = []
    for block in range(start // NOISE_BLOCK, (stop - 1) // NOISE_BLOCK + 1):
        rng = np.random.default_rng([seed, block, stream])
        noise = rng.standard_normal((n_samples, NOISE_BLOCK, n_dims), dtype=np.float32)
        lo = max(start, block * NOISE_BLOCK) - block * NOISE_BLOCK
        hi = min(stop, (block + 1) * NOISE_BLOCK) - block * NOISE_BLOCK
        blocks.append(noise[:, lo:hi])
    return np.concatenate(blocks, axis=1)


def decoded_chunks(
    adata: AnnData, model: SCVI, *, specs: list[LayerSpec], codes: list[int], library: float | Literal["latent"],
    n_samples: int, latent: Latent, chunk_size: int, seed: int,
) -> Iterator[tuple[LayerSpec, int, int, np.ndarray]]:
    """Decode chunk by chunk; yield ``(spec, start, stop, values)`` with every modelled gene, float32 ``(stop - start, genes)``.

    See :func:`export_normalized` for what each layer holds.
    """
    import torch
    from scvi import REGISTRY_KEYS

    adata = scvi_compat.validate_anndata(model, adata)
    module = model.module
    n_cells = adata.n_obs
    by_choice: dict[str, list[LayerSpec]] = {}
    for s in specs:
        by_choice.setdefault(s.choice, []).append(s)
    batch_specs = dict(zip(codes, by_choice.get("each_batch", []), strict=False))
    own = by_choice.get("own_batch", [None])[0]
    mean_spec = by_choice.get("mean_all_batches", [None])[0]
    sample_specs = by_choice.get("all_batches_samples", [])
    need_batches = bool(batch_specs or mean_spec or sample_specs)
    output_key = "mu" if library == "latent" else "scale"
    scaling = 1.0 if library == "latent" else float(library)
    n_draws = 1 if latent == "mean" else n_samples
    n_latent = module.n_latent
    observed_library = bool(getattr(module, "use_observed_lib_size", True))
    z_transformation = module.z_encoder.z_transformation

    was_training = module.training
    module.eval()
    loader = scvi_compat.data_loader(model, adata, batch_size=chunk_size)
    progress = ProgressLog(logger, "normalized export", n_cells, unit="cells")
    start = 0
    try:
        with torch.inference_mode():
            for tensors in loader:
                stop = start + tensors[REGISTRY_KEYS.X_KEY].shape[0]
                inference = module.inference(**scvi_compat.inference_input(module, tensors))
                qz = inference["qz"]
                device = qz.loc.device
                if latent == "mean":
                    z = z_transformation(qz.loc).unsqueeze(0)
                else:
                    eps = torch.from_numpy(latent_noise(seed, start, stop, n_samples=n_draws, n_dims=n_latent)).to(device)
                    z = z_transformation(qz.loc + qz.scale * eps)
                if observed_library:
                    lib = inference["library"]
                else:
                    ql = inference["ql"]
                    if latent == "mean":
                        lib = ql.loc
                    else:
                        eps_l = latent_noise(seed, start, stop, n_samples=n_draws, n_dims=1, stream=1)
                        lib = ql.loc + ql.scale * torch.from_numpy(eps_l).to(device)
                if lib.dim() == 2:
                    lib = lib.unsqueeze(0).expand(n_draws, -1, -1)
                generative_input = scvi_compat.generative_input(module, tensors, {**inference, "z": z, "library": lib})

                def decode(code: int | None, generative_input: dict = generative_input) -> np.ndarray:
                    values = module.generative(**generative_input, transform_batch=code)["px"].get_normalized(output_key)
                    if scaling != 1.0:
                        values = values * scaling
                    return values.float().cpu().numpy()  # (n_draws, chunk, genes)

                cell_codes = tensors[REGISTRY_KEYS.BATCH_KEY].reshape(-1).cpu().numpy().astype(int)
                own_from_batches = own is not None and need_batches and set(cell_codes) <= set(codes)
                own_values = None
                total = None
                if need_batches:
                    for code in codes:
                        values = decode(code)
                        if mean_spec or sample_specs:
                            total = values if total is None else total + values
                        batch_mean = values.mean(axis=0)
                        if code in batch_specs:
                            yield batch_specs[code], start, stop, batch_mean
                        if own_from_batches:
                            if own_values is None:
                                own_values = np.empty_like(batch_mean)
                            rows = cell_codes == code
                            own_values[rows] = batch_mean[rows]
                if own is not None:
                    yield own, start, stop, own_values if own_from_batches else decode(None).mean(axis=0)  # type: ignore[misc]
                if total is not None:
                    total /= len(codes)
                    if mean_spec is not None:
                        yield mean_spec, start, stop, total.mean(axis=0)
                    for spec in sample_specs:
                        yield spec, start, stop, total[spec.sample]
                start = stop
                progress.update(stop)
    finally:
        module.train(was_training)
    if start != n_cells:  # pragma: no cover - a data loader that drops cells
        raise RuntimeError(f"decoded {start} of {n_cells} cells")
