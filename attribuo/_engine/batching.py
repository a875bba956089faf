"""Chunking of expanded evaluations (steps x batch, samples x batch, ...).

Every loop in the library evaluates *items* (path steps, perturbations,
noise samples, masked copies, curve steps), each costing one copy of the
batch. :func:`chunk_size` is the one place that decides how many items go
into one forward: an explicit count of items, or of expanded examples,
from the user wins; otherwise as many items as fit the memory budget
(``ATTRIBUO_MEMORY_BUDGET_MB``), so large inputs are split and small ones
run in a single forward. :func:`chunks` walks the items in those pieces.

Input bytes are a poor measure for models whose activations are many
times their input (wide convolutions at full resolution), so loops whose
chunks can grow large also cap them by the activations one probe forward
of one example creates (:func:`activation_bytes`, budget
``ATTRIBUO_ACTIVATION_BUDGET_MB``).
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode

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


def activation_budget_bytes() -> int:
    """Bytes of activations one evaluation may create (env ``ATTRIBUO_ACTIVATION_BUDGET_MB``)."""
    return int(float(os.environ.get("ATTRIBUO_ACTIVATION_BUDGET_MB", "512")) * _MIB)


class _Tally(TorchFunctionMode):
    """Adds up the bytes of every tensor torch functions return during a forward."""

    def __init__(self) -> None:
        super().__init__()
        self.total = 0
        self.largest = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, Tensor):
                size = t.numel() * t.element_size()
                self.total += size
                self.largest = max(self.largest, size)
        return out


def activation_bytes(forward_func: Callable, inputs: tuple[Tensor, ...], args: tuple, grad: bool) -> int:
    """Bytes of activations one forward of ``inputs`` costs, from a probe forward.

    With ``grad`` (the activations stay alive until the backward) every
    tensor the forward creates counts; without, about two of the largest
    are alive at once. Counted through a ``TorchFunctionMode``, so functional
    calls count as module calls do, on any device. Zero (no estimate) for
    empty inputs, a forward that fails (its own error comes when the method
    runs it), or a forward that is not a model's (an ``nn.Module`` or
    attribuo's wrapper of one): user functions are never called an extra time.
    """
    if not inputs or inputs[0].numel() == 0 or not _probeable(forward_func):
        return 0
    tally = _Tally()
    try:
        with torch.no_grad(), tally:
            forward_func(*inputs, *args)
    except Exception:  # noqa: BLE001 (no estimate; the method's own forward reports the error)
        return 0
    return tally.total if grad else 2 * tally.largest


# Probe results per model and input signature. The probe is a whole forward (a tenth of a
# path method's time on a small CNN); repeated calls on the same model and shapes (a loop
# over a data set) need it once. Weak keys: a model is not kept alive.
_PROBES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def remembered_activation_bytes(forward_func: Callable, inputs: tuple[Tensor, ...], args: tuple, grad: bool) -> int:
    """:func:`activation_bytes`, probed once per ``nn.Module``, mode, modules and input signature.

    Only an estimate for chunk sizes depends on it, never a result. Other
    forward functions (wrappers rebuilt per call) are probed every time.

    Example:
        >>> net = torch.nn.Linear(3, 5)
        >>> remembered_activation_bytes(net, (torch.ones(2, 3),), (), grad=True)  # one [2, 5] output
        40
    """
    key = _probe_key(forward_func, inputs, args)
    if key is None:
        return activation_bytes(forward_func, inputs, args, grad)
    entries = _PROBES.setdefault(forward_func, {})
    known = entries.get((key, grad))
    if known is None:
        known = activation_bytes(forward_func, inputs, args, grad)
        if known:  # no estimate (a failed forward) is not remembered
            if len(entries) >= 16:  # many shapes (variable-length batches): keep the newest
                entries.pop(next(iter(entries)))
            entries[(key, grad)] = known
    return known


def _signature(value: object) -> object:
    if isinstance(value, Tensor):
        return ("tensor", tuple(value.shape), value.dtype, value.device, value.requires_grad)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError  # anything else may change the forward: no caching


def _probe_key(forward_func: Callable, inputs: tuple[Tensor, ...], args: tuple) -> tuple | None:
    """What the probe's result depends on, or None when it cannot be told cheaply."""
    try:
        weakref.ref(forward_func)
        values = tuple(_signature(v) for v in (*inputs, *args))
    except TypeError:
        return None
    if not isinstance(forward_func, torch.nn.Module):
        return None  # a bound method or wrapper is rebuilt per call; a cache would only grow
    # A change of mode or of the modules (a layer swapped in) changes the activations.
    state = tuple((id(m), m.training) for m in forward_func.modules())
    return values, state


def _probeable(forward_func: Callable) -> bool:
    # Only a model's forward, or attribuo's own wrappers of one, is run for a probe: a user's
    # function may have side effects (logging, API calls) that an extra call would repeat.
    seen = 0
    while forward_func is not None and seen < 8:
        if isinstance(forward_func, torch.nn.Module) or isinstance(getattr(forward_func, "__self__", None), torch.nn.Module):
            return True
        forward_func = getattr(forward_func, "__wrapped__", None) or getattr(forward_func, "wraps_forward", None)
        seen += 1
    return False


def capped_by_activations(size: int, per_item: int) -> int:
    """``size`` items, fewer if their activations (``per_item`` bytes each) exceed the budget."""
    if per_item <= 0:
        return size
    return max(1, min(size, activation_budget_bytes() // per_item))


_CACHE_BYTES = 4 << 20
_MIN_EXAMPLES = 256


def cache_friendly_copies(forward_func: Callable, inputs: tuple[Tensor, ...], args: tuple, batch: int) -> int:
    """Copies of a ``batch``-example call per CPU forward: a few MiB of activations, >= 256 examples.

    The memory budget alone allows forwards of tens of thousands of examples,
    which run 2-4x slower per example on CPU than forwards whose activations
    stay in cache (measured on small CNNs and MLPs); below a few hundred
    examples the per-call overhead dominates instead. Not for GPUs.

    Example:
        >>> cache_friendly_copies(torch.nn.Linear(8, 2), (torch.ones(16, 8),), (), 16) >= 16
        True
    """
    try:
        act = remembered_activation_bytes(forward_func, inputs, args, grad=False)
    except Exception:  # noqa: BLE001 - only an estimate; the real forward reports errors
        act = 0
    if act <= 0:  # a user function is not probed: guess activations from the input size
        act = 8 * bytes_per_copy(inputs)
    per_example = max(1, act // max(1, batch))
    examples = max(_MIN_EXAMPLES, _CACHE_BYTES // per_example)
    return max(1, examples // max(1, batch))


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
