"""The memory of an export, checked before anything is decoded, and the chunk size it allows."""

from __future__ import annotations

from dataclasses import dataclass

from desweep.errors import ParameterError

DEFAULT_MAX_MEMORY_GB = 16.0
MAX_CHUNK = 4096
#: dense float32 blocks of n_samples x chunk x modelled genes alive while one batch is decoded
#: (scale, rate, zero-inflation logits, softmax input, the copy on the CPU, the running sum over batches)
_WORK_BLOCKS = 7
_SAFETY = 0.5  # use at most half the working budget for the chunk estimate


@dataclass(frozen=True)
class MemoryPlan:
    """Memory estimate of an export (bytes) and the chunk size used."""

    output_bytes: int
    bytes_per_chunk_cell: int
    chunk_size: int
    budget_bytes: int

    @property
    def working_bytes(self) -> int:
        return self.bytes_per_chunk_cell * self.chunk_size

    @property
    def total_bytes(self) -> int:
        return self.output_bytes + self.working_bytes


def plan_memory(
    *, n_cells: int, n_genes_model: int, n_genes_out: int, n_layers: int, n_samples: int,
    max_memory_gb: float = DEFAULT_MAX_MEMORY_GB, chunk_size: int | None = None,
) -> MemoryPlan:
    """Estimate the memory of an export and choose the chunk size.

    The output layers take ``n_layers x n_cells x n_genes_out x 4`` bytes; one
    chunk of ``c`` cells takes about ``4 x c x (7 x n_samples + 2) x
    n_genes_model`` bytes while it is decoded (every modelled gene is decoded:
    the cluster x batch means cover them all). The chunk
    size is the largest (up to 4,096) whose working block fits half of what the
    output leaves of ``max_memory_gb``.

    Raises
    ------
    DesweepInputError
        When the output layers alone exceed ``max_memory_gb``, or the given
        ``chunk_size`` does not fit.
    """
    if max_memory_gb <= 0:
        raise ParameterError("max_memory_gb", "max_memory_gb", f"must be positive, got {max_memory_gb}")
    budget = int(max_memory_gb * 2**30)
    output = 4 * n_layers * n_cells * n_genes_out
    per_cell = 4 * (n_samples * _WORK_BLOCKS + 2) * n_genes_model
    if output + per_cell * min(n_cells, 16) > budget:
        raise ParameterError(
            "max_memory_gb", "max_memory_gb",
            f"{n_layers} layers of {n_cells} cells x {n_genes_out} genes need {output / 2**30:.2f} GiB (float32), "
            f"more than {max_memory_gb:g} GiB: export fewer genes (--genes), fewer --choices / --n-samples, or raise --max-memory-gb",
        )
    if chunk_size is None:
        fit = int(_SAFETY * (budget - output) // per_cell)
        chunk_size = max(16, min(MAX_CHUNK, fit, n_cells))
    elif chunk_size < 1:
        raise ParameterError("chunk_size", "chunk_size", f"must be at least 1, got {chunk_size}")
    else:
        chunk_size = min(chunk_size, max(n_cells, 1))
        if output + per_cell * chunk_size > budget:
            raise ParameterError(
                "chunk_size", "chunk_size",
                f"{chunk_size} cells need {(output + per_cell * chunk_size) / 2**30:.2f} GiB with the outputs, "
                f"more than --max-memory-gb {max_memory_gb:g}: use a smaller chunk or leave it out",
            )
    return MemoryPlan(output_bytes=output, bytes_per_chunk_cell=per_cell, chunk_size=int(chunk_size), budget_bytes=budget)
