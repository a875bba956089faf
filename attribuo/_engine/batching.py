"""Chunking of expanded evaluations (steps x batch, samples x batch, ...).

Every loop in the library evaluates *items* (path steps, perturbations,
noise samples, masked copies, curve steps), each costing one copy of the
batch. :func:`chunk_size` is the one place that decides how many items go
into one forward: an explicit count of items, or of expanded examples,
from the user wins; otherwise as many items as fit the memory budget
(``ATTRIBUO_MEMORY_BUDGET_MB``), so large inputs are split and small ones
run in a single forward. :func:`chunks` walks the items in those pieces.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

from torch import Tensor

from .inputs import positive_int

_MIB = 1 << 20


def memory_budget_bytes() -> int:
    """Bytes of expanded input one evaluation may hold (env ``ATTRIBUO_MEMORY_BUDGET_MB``)."""
    return int(float(os.environ.get("ATTRIBUO_MEMORY_BUDGET_MB", "48")) * _MIB)


def bytes_per_copy(inputs: Sequence[Tensor]) -> int:
    """Bytes of one copy of the (batched) inputs."""
    return max(1, sum(t.numel() * t.element_size() for t in inputs))


def chunk_size(
    total: int,
    item_bytes: int | None,
    *,
    items: int | None = None,
    examples: int | None = None,
    batch: int = 1,
    name: str = "internal_batch_size",
) -> int:
    """How many of ``total`` items to evaluate in one forward (at least 1, at most ``total``).

    - ``items``: the user's count of items per forward (``perturbations_per_eval``);
    - ``examples``: the user's bound on expanded examples per forward
      (``internal_batch_size``), each item holding ``batch`` of them; at
      least one item a forward whatever the bound;
    - otherwise the memory budget over ``item_bytes``, the bytes one item
      costs; ``item_bytes=None`` means the work is not budgeted (Captum
      evaluates it at once, and random draws must follow its chunks).

    ``name`` is the argument named in the error for a bad ``items`` or
    ``examples``.

    Example:
        >>> chunk_size(10, 8, items=4)
        4
        >>> chunk_size(10, 8, examples=12, batch=5)  # 12 examples hold 2 items of 5
        2
        >>> chunk_size(10, 1 << 40)  # huge items: one at a time
        1
    """
    most = max(total, 1)
    if items is not None:
        return min(positive_int(items, name), most)
    if examples is not None:
        return max(1, min(most, positive_int(examples, name) // max(batch, 1)))
    if item_bytes is None:
        return most
    return max(1, min(most, memory_budget_bytes() // max(item_bytes, 1)))


def chunk_ranges(total: int, size: int) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` pairs covering ``range(total)`` in pieces of ``size``."""
    for start in range(0, total, size):
        yield start, min(start + size, total)


def chunks(total: int, item_bytes: int | None, **request: int | str | None) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` pieces of ``range(total)`` sized by :func:`chunk_size`.

    Example:
        >>> list(chunks(5, 8, items=2))
        [(0, 2), (2, 4), (4, 5)]
    """
    return chunk_ranges(total, chunk_size(total, item_bytes, **request))
