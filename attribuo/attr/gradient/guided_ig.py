"""Guided Integrated Gradients: an adaptive path that moves the least important features first."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..._engine.baselines import full_baselines
from ..._engine.batching import chunk_ranges, chunk_size
from ..._engine.call import Call, parse_call
from ..._engine.errors import ArgumentTypeError, ArgumentValueError
from ..._engine.inputs import grad_ready, positive_int, rows
from ..base import GradientAttribution
from .idgi import IdgiSum
from .path_sampling import output_values, values_and_gradients

TensorOrTuple = Tensor | tuple[Tensor, ...]
# the reference implementation's tolerance for "the step reached its L1 target"
_CLOSE = 1e-9
_CACHE_BYTES = 1 << 21


def _fraction(value: Any, name: str, low_open: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ArgumentTypeError(f"`{name}` must be a number, got {type(value).__name__}")
    value = float(value)
    if not (0 < value <= 1 if low_open else 0 <= value <= 1):
        bounds = "(0, 1]" if low_open else "[0, 1]"
        raise ArgumentValueError(f"`{name}` must lie in {bounds}, got {value}")
    return value


def _kth_smallest(values: Tensor, k: int) -> Tensor:
    """The ``k``-th smallest entry (1-based) of every row."""
    if values.device.type == "cpu":  # numpy's introselect is about 15x faster than torch's kthvalue here
        return torch.from_numpy(np.partition(values.numpy(), k - 1, axis=1)[:, k - 1].copy())
    return values.kthvalue(k, dim=1).values


def _moved(x: Tensor, new: Tensor, grad: Tensor, attr: Tensor) -> Tensor:
    # the attribution of a move along the path: the gradient times the move
    attr.add_((new - x) * grad)
    return new


def _guided_step(
    x: Tensor, g: Tensor, attr: Tensor, base: Tensor, end: Tensor, safe: Tensor, l1_total: Tensor,
    alpha: float, max_dist: float, k_lower: int,
) -> Tensor:
    """One step of the path for a block of examples: the new point; ``attr`` gets the moves."""
    diff = end - base
    alpha_min, alpha_max = max(alpha - max_dist, 0.0), min(alpha + max_dist, 1.0)
    x_min, x_max = base + diff * alpha_min, base + diff * alpha_max
    l1_target = l1_total * (1 - alpha)
    magnitude = g.abs()
    active = l1_total > 0  # an input equal to its baseline gets no attribution
    # features that fell behind the allowed band catch up to its lower edge; only moves
    # toward the input follow, so later rounds of the step find none behind
    behind = ((x - base) / safe < alpha_min) & active[:, None]
    x = _moved(x, torch.where(behind, x_min, x), g, attr)
    l1_now = (x - end).abs().sum(1)
    # features at the band's upper edge can move no further this step
    at_edge = x == x_max
    # Each round either ends an example's step or moves at least `fraction` of its
    # features to the upper bound, so a few rounds end every step; the bound is a guard.
    for _ in range(x.shape[1] + 2):
        gap = l1_now - l1_target
        close = gap.abs() <= torch.clamp(_CLOSE * torch.maximum(l1_now.abs(), l1_target.abs()), min=_CLOSE)
        going = active & ~close & (gap > 0)
        if not bool(going.any()):
            break
        magnitude.masked_fill_(at_edge, math.inf)
        threshold = _kth_smallest(magnitude, k_lower).clamp(max=torch.finfo(x.dtype).max)  # inf: every finite one
        chosen = (magnitude <= threshold[:, None]) & going[:, None]
        room = torch.where(chosen, x_max - x, 0).abs().sum(1)
        gamma = torch.where(room > 0, gap / room.clamp_min(1e-300), math.inf)
        all_the_way = gamma > 1
        goal = torch.where(all_the_way[:, None], x_max, x + (x_max - x) * gamma.clamp(0, 1)[:, None])
        x = _moved(x, torch.where(chosen, goal, x), g, attr)
        # moves toward the upper edge shorten the distance to the input by their length
        l1_now = l1_now - torch.where(all_the_way, room, gap)
        at_edge = chosen
        # an example goes on while the chosen features could not close its gap
        active = going & all_the_way & (room > 0)
    return x


def guided_ig(
    forward_func: Callable,
    call: Call,
    starts: tuple[Tensor, ...],
    n_steps: int = 200,
    fraction: float = 0.25,
    max_dist: float = 0.02,
    idgi: bool = False,
) -> tuple[Tensor, ...]:
    """Guided IG of every example of ``call``, all examples in one forward per step.

    The features of all inputs of an example form one vector. The path is
    kept in float64 (the reference implementation's precision) and each
    point is cast to the inputs' dtype for the model.
    """
    work = torch.float64 if call.inputs[0].device.type != "mps" else call.inputs[0].dtype
    end = torch.cat([rows(x).to(work) for x in call.inputs], 1)
    base = torch.cat([rows(b).to(work) for b in starts], 1)
    diff = end - base
    safe = torch.where(diff != 0, diff, torch.ones_like(diff))  # unmoving features: x_min = x anyway
    l1_total = diff.abs().sum(1)
    sizes = [math.prod(x.shape[1:]) for x in call.inputs]
    n_features = end.shape[1]
    k_lower = int(math.floor(fraction * (n_features - 1))) + 1  # numpy's 'lower' quantile, 1-based

    def model_inputs(flat: Tensor) -> tuple[Tensor, ...]:
        parts = torch.split(flat, sizes, 1)
        return tuple(p.reshape(x.shape).to(x.dtype) for p, x in zip(parts, call.inputs))

    x = base.clone()
    attr = torch.zeros_like(end)
    # On a CPU the bookkeeping runs over a few examples at a time, whose arrays stay in cache
    # (2-3x faster than whole-batch arrays on 224-pixel images); a GPU takes the batch at once.
    rows_at_once = max(1, _CACHE_BYTES // (8 * n_features)) if end.device.type == "cpu" else max(1, call.batch)
    blocks = list(chunk_ranges(call.batch, rows_at_once))
    summed = IdgiSum((attr,)) if idgi else None
    for step in range(n_steps):
        points = call.with_inputs(grad_ready(model_inputs(x)))
        if summed is not None:
            values, grads = values_and_gradients(points, forward_func)
            summed.add(values.to(work), (torch.cat([rows(g).to(work) for g in grads], 1),))
        else:
            grads = points.gradients(forward_func)
        g = torch.cat([rows(t).to(work) for t in grads], 1)
        alpha = (step + 1) / n_steps
        for lo, hi in blocks:
            x[lo:hi] = _guided_step(x[lo:hi], g[lo:hi], attr[lo:hi], base[lo:hi], end[lo:hi], safe[lo:hi],
                                    l1_total[lo:hi], alpha, max_dist, k_lower)
    if summed is not None:
        (attr,) = summed.total(output_values(call, forward_func).to(work))
    parts = torch.split(attr, sizes, 1)
    return tuple(p.reshape(x.shape).to(x.dtype) for p, x in zip(parts, call.inputs))


class GuidedIntegratedGradients(GradientAttribution):
    """Guided Integrated Gradients (Kapishnikov et al., 2021).

    "Guided Integrated Gradients: an Adaptive Path Method for Removing
    Noise" (CVPR 2021). Instead of the straight line from ``baselines`` to
    ``inputs``, the path is chosen as it is walked: at each of ``n_steps``
    steps the gradient is taken, and the features with the smallest
    ``|gradient|`` (``fraction`` of them at a time, repeatedly) move toward
    the input until the L1 distance to the input has shrunk by
    ``1 / n_steps`` of the total. No feature may stray further than
    ``max_dist`` (relative) from its place on the straight line: features
    that fall behind are pulled up, features ahead wait. The attribution is
    the gradient times each step's actual move, summed over the path, and
    adds up to ``F(input) - F(baseline)`` up to the Riemann sum's error.
    ``max_dist=0`` is integrated gradients on the straight line (a left
    Riemann sum); ``max_dist=1`` lets the path go anywhere in the box
    between baseline and input.

    Defaults follow the reference implementation (PAIR saliency):
    ``n_steps=200``, ``fraction=0.25``, ``max_dist=0.02``. With
    ``idgi=True`` each step's gradient is used as IDGI does (Yang et al.,
    2023: ``g_i**2 / ||g||**2`` times the output change of the step), which
    adds up to ``F(input) - F(baseline)`` exactly.

    The steps are sequential; each is one gradient evaluation of the whole
    batch (or of ``internal_batch_size`` examples at a time), plus a few
    vectorised selection rounds; the path is kept in float64. The features
    of all inputs of an example form one vector (the selection runs over
    them together).

    Example:
        >>> import torch
        >>> model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 2))
        >>> x = torch.rand(3, 6)
        >>> attr, delta = GuidedIntegratedGradients(model).attribute(
        ...     x, target=0, n_steps=50, return_convergence_delta=True)
        >>> attr.shape, bool(delta.abs().max() < 1e-2)
        (torch.Size([3, 6]), True)
    """

    _convergence_delta = True

    def __init__(self, forward_func: Callable) -> None:
        super().__init__(forward_func)

    def attribute(
        self,
        inputs: TensorOrTuple,
        baselines: Any = None,
        target: Any = None,
        additional_forward_args: Any = None,
        n_steps: int = 200,
        fraction: float = 0.25,
        max_dist: float = 0.02,
        idgi: bool = False,
        internal_batch_size: int | None = None,
        return_convergence_delta: bool = False,
    ) -> TensorOrTuple | tuple[TensorOrTuple, Tensor]:
        """Guided IG attributions of ``target``, in the form of ``inputs``.

        ``baselines`` as in :class:`IntegratedGradients` (default zeros).
        ``fraction`` in (0, 1]: the share of features chosen per selection
        round. ``max_dist`` in [0, 1]: how far (as a fraction of the path)
        a feature may lead or lag the straight line. ``internal_batch_size``:
        at most this many examples per forward (the examples are
        independent, so the result does not depend on it). With
        ``return_convergence_delta=True`` returns ``(attributions, delta)``.
        """
        call = parse_call(inputs, target, additional_forward_args, floating=True)
        positive_int(n_steps, "n_steps")
        fraction = _fraction(fraction, "fraction", low_open=True)
        max_dist = _fraction(max_dist, "max_dist", low_open=False)
        starts = full_baselines(call.inputs, baselines)
        if call.batch == 0:
            attrs = tuple(torch.zeros_like(x) for x in call.inputs)
            return self._with_delta(call.result(attrs), attrs, starts, call, return_convergence_delta)
        size = chunk_size(call.batch, None, examples=internal_batch_size, batch=1)
        pieces = [
            guided_ig(self.forward_func, call.take(lo, hi), tuple(b[lo:hi] for b in starts),
                      n_steps, fraction, max_dist, bool(idgi))
            for lo, hi in chunk_ranges(call.batch, size)
        ]
        attrs = tuple(torch.cat(parts) for parts in zip(*pieces)) if len(pieces) > 1 else pieces[0]
        return self._with_delta(call.result(attrs), attrs, starts, call, return_convergence_delta)
