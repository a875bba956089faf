"""The machinery of the metrics that explain perturbed inputs again (robustness, axiomatic).

:class:`Reexplained` holds a checked call, its attribution method and how
explanations are prepared (``normalise`` per example, ``abs``); its
:meth:`~Reexplained.copies` explains ``count`` perturbed copies of the batch
stacked along the batch, as many per call as the memory budget (or
``max_examples_per_batch``, a bound on copies x examples) allows.
:func:`noise_func` draws Quantus' uniform or Gaussian noise with torch, copy
by copy (so chunking never changes it), or wraps a user's ``perturb_func``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from .._engine.batching import (
    bytes_per_copy,
    capped_by_activations,
    chunk_ranges,
    chunk_size,
    remembered_activation_bytes,
)
from .._engine.call import Call
from .._engine.errors import ArgumentTypeError, ArgumentValueError
from .._engine.model_outputs import logits_of
from ._common import check_flag, check_number, generator, normalise_rows
from .randomisation import _Reexplain
from .sensitivity import uniform_noise

Perturb = Callable[[Tensor], Tensor]
_NORMS = {"fro": 2.0, "l2": 2.0, "l1": 1.0, "linf": math.inf}


def norm_rows(spec: Any, name: str, what: str) -> Callable[[Tensor], Tensor]:
    """``rows (M, F) -> (M,)`` norms: ``"fro"``/``"l2"``, ``"l1"``, ``"linf"``, an order ``p``, or a function."""
    if callable(spec):
        return lambda rows: torch.as_tensor(spec(rows)).reshape(-1).to(torch.float64)
    if isinstance(spec, str) and spec.lower() in _NORMS:
        order = _NORMS[spec.lower()]
    elif not isinstance(spec, bool) and isinstance(spec, (int, float)) and spec > 0:
        order = float(spec)
    else:
        raise ArgumentValueError(f"{name}: `{what}` must be one of {sorted(_NORMS)}, an order p > 0 or a "
                                 f"function rows (M, F) -> (M,), got {spec!r}")
    return lambda rows: torch.linalg.vector_norm(rows, ord=order, dim=-1)


def noise_func(
    name: str,
    perturb_func: Callable | None,
    seed: int | None,
    device: torch.device,
    *,
    lower_bound: float | None = None,
    upper_bound: float | None = None,
    perturb_mean: float | None = None,
    perturb_std: float | None = None,
) -> Perturb:
    """One perturbed copy of the batch per call: the user's ``perturb_func`` or torch noise.

    Uniform (``lower_bound`` given): ``U(-lower, lower)``, or ``U(lower,
    upper)`` with ``upper_bound``, as Quantus' uniform noise (drawn as
    :func:`~attribuo.metrics.sensitivity.uniform_noise`, Captum's
    perturbation). Gaussian otherwise: ``N(perturb_mean, perturb_std^2)``.
    Drawn copy by copy from ``seed``'s generator on ``device``, in the
    input's dtype.
    """
    if perturb_func is not None:
        if not callable(perturb_func):
            raise ArgumentTypeError(f"{name}: `perturb_func` must be a function x (N, ...) -> perturbed x")
        return lambda x: perturb_func(x.clone())  # a user's function may write in place
    gen = generator(seed, device)
    if lower_bound is not None:
        low = check_number(lower_bound, name, "lower_bound")
        if upper_bound is None:
            low, high = -low, low
        else:
            high = check_number(upper_bound, name, "upper_bound")
            if high <= low:
                raise ArgumentValueError(f"{name}: `upper_bound` ({high}) must be larger than `lower_bound` ({low})")
        return lambda x: uniform_noise(x, low, high, gen)
    mean = check_number(perturb_mean, name, "perturb_mean")
    std = check_number(perturb_std, name, "perturb_std", 0.0)
    return lambda x: x + torch.randn(x.shape, generator=gen, dtype=x.dtype, device=x.device) * std + mean


@contextmanager
def captured(layers: Sequence[nn.Module], rows: int) -> Iterator[list[Tensor]]:
    """The flattened ``(rows, -1)`` outputs of ``layers`` in the order they run; hooks removed on exit."""
    seen: list[Tensor] = []

    def hook(module: nn.Module, args: Any, output: Any) -> None:
        if not isinstance(output, Tensor):
            raise ArgumentTypeError(f"`layer` {type(module).__name__} returned {type(output).__name__}, "
                                    "not a tensor: choose a layer whose output is one tensor")
        seen.append(output.detach().reshape(rows, -1))

    handles = [layer.register_forward_hook(hook) for layer in layers]
    try:
        yield seen
    finally:
        for handle in handles:
            handle.remove()


class Reexplained:
    """A re-explaining metric call: reference explanations and explained perturbed copies.

    ``normalise`` (True means ``default_normalise``: ``"max"`` or
    ``"second_moment"``) and ``abs`` prepare every explanation per example,
    as Quantus prepares its ``a_batch`` and each perturbed batch.
    """

    def __init__(self, name: str, forward_func: Any, inputs: Any, attributions: Any, target: Any,
                 additional_forward_args: Any, explain_kwargs: dict | None, max_examples_per_batch: int | None,
                 normalise: bool | str, abs: bool, default_normalise: str = "max",
                 needs_module: bool = False) -> None:
        self.setup = _Reexplain(name, forward_func, inputs, attributions, target, additional_forward_args,
                                explain_kwargs, max_examples_per_batch, needs_module=needs_module)
        self.name = name
        self.mc = self.setup.call
        if not self.mc.x.is_floating_point():
            raise ArgumentTypeError(f"{name}: `inputs` must be floating point to perturb them, got {self.mc.x.dtype}")
        self.normalise = default_normalise if normalise is True else normalise
        self.abs = check_flag(abs, name, "abs")
        normalise_rows(torch.zeros(1, 1), self.normalise, self.abs)  # checks `normalise`

    @property
    def model(self) -> Callable:
        return self.mc.forward_func

    def prepared(self, a: Tensor) -> Tensor:
        return normalise_rows(a.to(torch.float64), self.normalise, self.abs)

    def reference(self, model: Callable | None = None, call: Call | None = None) -> Tensor:
        """``(N, F)`` prepared explanations of ``call`` (default: the inputs) on ``model``."""
        return self.prepared(self.setup.examples(self.model if model is None else model, call))

    def outputs(self, call: Call, layers: Sequence[nn.Module] = ()) -> tuple[Tensor, Tensor | None]:
        """``(rows, C)`` outputs of ``call`` (no gradient) and the layers' ``(rows, R)`` representation."""
        with torch.no_grad(), captured(layers, call.batch) as seen:
            out = logits_of(self.model(*call.inputs, *call.args)).detach()
        rep = torch.cat(seen, dim=1).to(torch.float64) if layers else None
        if layers and not seen:
            raise ArgumentValueError(f"{self.name}: `layer` did not run in the model's forward")
        return out.reshape(call.batch, -1), rep

    def copies(self, count: int, make: Callable[[int], Tensor], forward: bool = False,
               layers: Sequence[nn.Module] = ()) -> Iterator[tuple[Tensor, Tensor, Tensor | None, Tensor | None]]:
        """Chunks of ``(copies (k, N, ...), explanations (k, N, F), outputs (k, N, C), representations)``.

        ``make(s)`` builds copy ``s`` of the batch ``(N, ...)``, in order;
        ``forward`` (or ``layers``) adds one forward of the chunk.
        """
        x, n, mc = self.mc.x, self.mc.batch, self.mc
        size = chunk_size(count, bytes_per_copy((x,)), examples=mc.max_examples_per_batch, batch=n,
                          name="max_examples_per_batch")
        if mc.max_examples_per_batch is None and size > 1:
            size = capped_by_activations(size, remembered_activation_bytes(self.model, (x,), mc.call.args, grad=True))
        for start, stop in chunk_ranges(count, size):
            k = stop - start
            stacked = torch.stack([self._copy(make(s)) for s in range(start, stop)])
            call = mc.call.expanded(k, inputs=(stacked.reshape(k * n, *x.shape[1:]),))
            expl = self.prepared(self.setup.run(self.model, call)).reshape(k, n, -1)
            out = rep = None
            if forward or layers:
                out, rep = self.outputs(call, layers)
                out = out.reshape(k, n, -1)
                rep = None if rep is None else rep.reshape(k, n, -1)
            yield stacked, expl, out, rep

    def _copy(self, copy: Any) -> Tensor:
        x = self.mc.x
        if not isinstance(copy, Tensor) or copy.shape != x.shape:
            shape = tuple(copy.shape) if isinstance(copy, Tensor) else type(copy).__name__
            raise ArgumentValueError(f"{self.name}: `perturb_func` returned {shape}; expected a tensor of the "
                                     f"inputs' shape {tuple(x.shape)}")
        return copy.detach().to(dtype=x.dtype, device=x.device)


def flat_copies(t: Tensor) -> Tensor:
    return t.reshape(*t.shape[:2], -1).to(torch.float64)


def nan_where_changed(scores: Tensor, out: Tensor, before: Tensor) -> Tensor:
    """``scores`` (k, N) set to NaN where the copy's predicted class differs from ``before`` (N,)."""
    return torch.where(out.argmax(dim=-1) != before, torch.full_like(scores, math.nan), scores)


def reduce_samples(columns: list[Tensor], how: str) -> Tensor:
    """The per-example reduction over all samples (``columns``: chunks of (k, N))."""
    scores = torch.cat(columns, dim=0)
    if how == "max":
        return scores.amax(dim=0)  # NaN propagates, as numpy's max
    if how == "mean":
        return scores.mean(dim=0)
    if how == "nanmean":
        return scores.nanmean(dim=0)
    best = torch.where(scores.isnan(), torch.full_like(scores, -math.inf), scores).amax(dim=0)
    return torch.where(scores.isnan().all(dim=0), torch.full_like(best, math.nan), best)
