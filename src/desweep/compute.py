"""Threads, seeds and the accelerator: set explicitly, never left to torch's defaults.

torch's default thread count oversubscribes a busy machine (measured on 2 cores:
1 thread 0.85 s/epoch, 2 threads up to 6.7 s/epoch on 3,000 cells x 2,000 genes),
so every step that runs torch calls :func:`configure` first.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Sequence
from typing import Literal

from desweep.choices import check_choice, literal_values
from desweep.errors import ParameterError

logger = logging.getLogger(__name__)

Accelerator = Literal["auto", "cpu", "gpu"]
ACCELERATORS = literal_values(Accelerator)


def default_threads() -> int:
    """The cores given to this process (Nextflow's ``task.cpus`` via affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def configure(*, threads: int | None = None, seed: int | None = None) -> int:
    """Set torch's thread counts and seed every random generator scvi-tools uses.

    Returns
    -------
    The number of threads set.
    """
    import torch

    n = threads or default_threads()
    torch.set_num_threads(n)
    with contextlib.suppress(RuntimeError):  # torch refuses once parallel work started
        torch.set_num_interop_threads(n)
    if seed is not None:
        import scvi

        scvi.settings.seed = seed
    scvi_settings_quiet()
    return n


def safe_batch_size(sizes: Sequence[int], preferred: int) -> int:
    """The batch size nearest ``preferred`` (at least 8) that leaves no minibatch of one or two cells for any of ``sizes``.

    scVI's batch normalisation fails on a minibatch of a single cell, in training
    and in inference. A size no larger than the batch is one minibatch whatever
    the batch size, so only larger sizes are checked.
    """
    for delta in range(0, preferred):
        for candidate in (preferred + delta, preferred - delta):
            if candidate >= 8 and all(n % candidate not in (1, 2) for n in sizes if n > candidate):
                return candidate
    return preferred


def resolve_accelerator(requested: Accelerator, *, allow_fallback: bool = True) -> str:
    """Return ``"gpu"`` or ``"cpu"`` for ``requested``.

    A GPU requested where none exists falls back to the CPU with a warning, or
    raises when ``allow_fallback`` is false.
    """
    check_choice(requested, Accelerator, source="--accelerator", field="accelerator")
    import torch

    has_gpu = torch.cuda.is_available()
    if requested == "auto":
        return "gpu" if has_gpu else "cpu"
    if requested == "gpu" and not has_gpu:
        if not allow_fallback:
            raise ParameterError("accelerator", "gpu", "requested but no CUDA device is available (and --no-gpu-fallback was given)")
        warnings.warn("--accelerator gpu requested but no CUDA device is available: using the CPU", stacklevel=2)
        logger.warning("no CUDA device available: falling back to the CPU")
        return "cpu"
    return requested


def scvi_settings_quiet() -> None:
    """Silence per-call progress bars of scvi-tools (desweep logs its own progress)."""
    import scvi

    scvi.settings.progress_bar_style = "rich"
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    logging.getLogger("lightning.fabric").setLevel(logging.WARNING)

