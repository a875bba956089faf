"""Chunking of expanded evaluations (steps x batch, samples x batch, ...).

Methods express their work as a number of items (steps, perturbations,
samples), each costing one copy of the batch. :func:`items_per_chunk`
honours an explicit size and otherwise picks one from a memory budget on
the expanded inputs, so large inputs are split and small ones run in a
single forward.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

from torch import Tensor

from .errors import ArgumentValueError

_MIB = 1 << 20


def memory_budget_bytes() -> int:
    """Bytes of expanded input one evaluation may hold (env ``ATTRIBUO_MEMORY_BUDGET_MB``)."""
    return int(float(os.environ.get("ATTRIBUO_MEMORY_BUDGET_MB", "48")) * _MIB)


def bytes_per_copy(inputs: Sequence[Tensor]) -> int:
    """Bytes of one copy of the (batched) inputs."""
    return max(1, sum(t.numel() * t.element_size() for t in inputs))


def items_per_chunk(
    total_items: int,
    copy_bytes: int,
    requested: int | None = None,
    name: str = "internal_batch_size",
) -> int:
    """How many items to evaluate in one forward.

    ``requested`` (a user's explicit count) wins; otherwise as many items as
    fit in the memory budget, at least one.
    """
    if requested is not None:
        if isinstance(requested, bool) or not isinstance(requested, int) or requested < 1:
            raise ArgumentValueError(f"`{name}` must be a positive int, got {requested!r}")
        return min(requested, max(total_items, 1))
    return max(1, min(total_items, memory_budget_bytes() // max(copy_bytes, 1)))


def chunk_ranges(total: int, size: int) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` pairs covering ``range(total)`` in pieces of ``size``."""
    for start in range(0, total, size):
        yield start, min(start + size, total)
