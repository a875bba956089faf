"""GradientShap: expected gradients over a baseline distribution and input noise.

GradientShap is SmoothGrad over one random path point per sample: each
sample draws a baseline row from the distribution, adds Gaussian noise to
the input and takes the gradient at a uniformly random point between them.
It is therefore written as :class:`NoiseTunnel` over a one-point method,
:class:`InputBaselineXGradient`, which evaluates all samples in a few
batched backward passes.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..._engine.baselines import full_baselines
from ..._engine.batching import (
    activation_bytes,
    bytes_per_copy,
    capped_by_activations,
    chunk_ranges,
    chunk_size,
)
from ..._engine.call import Call, parse_call
from ..._engine.errors import ArgumentTypeError
from ..._engine.inputs import as_tuple, is_tuple, positive_int
from ..base import GradientAttribution
from .noise_tunnel import NoiseTunnel

TensorOrTuple = Tensor | tuple[Tensor, ...]


def _call_baselines(baselines: Any, inputs: Any) -> Any:
    # A callable gets the inputs when it takes an argument, else nothing.
    if not callable(baselines) or isinstance(baselines, Tensor):
        return baselines
    try:
        takes_args = len(inspect.signature(baselines).parameters) > 0
    except (TypeError, ValueError):
        takes_args = True
    return baselines(inputs) if takes_args else baselines()


class GradientShap(GradientAttribution):
    """Gradient SHAP (Lundberg and Lee, 2017): expected gradients times (input - baseline).

    For each example, ``n_samples`` times: pick a baseline row at random from
    ``baselines`` (a distribution: dim 0 counts baseline examples), add
    Gaussian noise of ``stdevs`` to the input, pick a uniformly random point
    between baseline and noisy input, and take the gradient there. The
    attribution is the mean over samples of ``(noisy input - baseline) *
    gradient``. Random draws follow Captum's, so the same ``torch`` and
    ``numpy`` seeds give the same numbers.

    ``internal_batch_size`` (not in Captum) caps how many samples go into one
    forward; without it the samples are chunked under the memory budget.

    Example:
        >>> import torch
        >>> from attribuo.attr import GradientShap
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
        >>> x, dist = torch.rand(2, 3), torch.randn(10, 3)
        >>> attr, delta = GradientShap(model).attribute(
        ...     x, dist, n_samples=8, target=0, return_convergence_delta=True)
        >>> attr.shape, delta.shape
        (torch.Size([2, 3]), torch.Size([16]))
    """

    _convergence_delta = True

    def __init__(self, forward_func: Callable, multiply_by_inputs: bool = True) -> None:
        super().__init__(forward_func)
        self._multiply_by_inputs = multiply_by_inputs

    def attribute(
        self,
        inputs: TensorOrTuple,
        baselines: TensorOrTuple | Callable[..., TensorOrTuple],
        n_samples: int = 5,
        stdevs: float | tuple[float, ...] = 0.0,
        target: Any = None,
        additional_forward_args: Any = None,
        return_convergence_delta: bool = False,
        internal_batch_size: int | None = None,
    ) -> TensorOrTuple | tuple[TensorOrTuple, Tensor]:
        """GradientShap attributions, same form as ``inputs``.

        ``baselines``: a tensor (or tuple, one per input) whose rows are
        baseline examples, or a callable returning one (called with
        ``inputs`` when it takes an argument). With
        ``return_convergence_delta=True`` returns ``(attributions, delta)``
        with ``n_samples`` deltas per example, example-major.
        """
        inner = InputBaselineXGradient(self.forward_func, self.multiplies_by_inputs)
        return gradient_shap(
            inner, inputs, baselines, n_samples, stdevs, target, additional_forward_args,
            return_convergence_delta, internal_batch_size,
        )



def gradient_shap(
    inner: GradientAttribution, inputs: TensorOrTuple, baselines: Any, n_samples: int = 5,
    stdevs: float | tuple[float, ...] = 0.0, target: Any = None, additional_forward_args: Any = None,
    return_convergence_delta: bool = False, internal_batch_size: int | None = None,
) -> TensorOrTuple | tuple[TensorOrTuple, Tensor]:
    """GradientShap as SmoothGrad over ``inner``, a one-random-point method.

    ``inner`` is :class:`InputBaselineXGradient` for :class:`GradientShap`; a
    layer variant passes one that differentiates w.r.t. a layer instead.
    """
    xs = as_tuple(inputs)
    positive_int(n_samples, "n_samples")
    dist = _call_baselines(baselines, inputs)
    first = dist[0] if isinstance(dist, tuple) and dist else dist
    if not isinstance(first, Tensor):
        raise ArgumentTypeError(
            "`baselines` must be a tensor (or a tuple of tensors, one per input) whose "
            f"dim 0 counts baseline examples, or a callable returning one; got {type(first).__name__}"
        )
    return NoiseTunnel(inner).attribute(
        xs if is_tuple(inputs) else xs[0],
        nt_type="smoothgrad",
        nt_samples=n_samples,
        stdevs=stdevs,
        draw_baseline_from_distrib=True,
        baselines=dist,
        target=target,
        additional_forward_args=additional_forward_args,
        return_convergence_delta=return_convergence_delta,
        internal_batch_size=internal_batch_size,
    )


def random_point_gradients(
    forward_func: Callable,
    gradients: Callable[[Call], tuple[Tensor, ...]],
    call: Call,
    starts: tuple[Tensor, ...],
    internal_batch_size: int | None = None,
) -> tuple[Tensor, ...]:
    """Per example, ``gradients(points)`` at one uniformly random point.

    The point lies between ``starts`` and ``call.inputs`` at a fraction drawn
    with ``numpy.random.uniform`` (as Captum does); ``points`` is ``call`` on
    a chunk of the examples with their points as (grad-ready) inputs.
    ``gradients`` may differentiate w.r.t. the points (the default use) or
    anything else with one row per example, such as a layer; chunks of
    examples fit the budgets of inputs and of ``forward_func``'s activations.
    """
    xs, n = call.inputs, call.batch
    alpha = torch.as_tensor(np.random.uniform(0.0, 1.0, n), dtype=xs[0].dtype, device=xs[0].device)
    size = chunk_size(n, bytes_per_copy(xs) // max(n, 1), examples=internal_batch_size)
    if internal_batch_size is None and size > 1:
        one = call.take(0, 1)  # a one-example probe: the full batch would cost a whole extra forward
        per_example = activation_bytes(forward_func, one.inputs, one.args, grad=True)
        size = capped_by_activations(size, per_example)
    if size >= n:  # one chunk (the usual case): no slicing, no concatenation
        return tuple(gradients(call.with_inputs(_points(alpha, xs, starts))))
    grads: list[list[Tensor]] = []
    for lo, hi in chunk_ranges(n, size):
        part = call.take(lo, hi)
        points = _points(alpha[lo:hi], part.inputs, tuple(b[lo:hi] for b in starts))
        for i, g in enumerate(gradients(part.with_inputs(points))):
            if i == len(grads):
                grads.append([])
            grads[i].append(g)
    return tuple(torch.cat(g, 0) if len(g) > 1 else g[0] for g in grads)


class InputBaselineXGradient(GradientAttribution):
    """Gradient at one uniformly random point between baseline and input, per example.

    With ``multiply_by_inputs=True`` multiplied by ``inputs - baselines``. The
    random point of each example is drawn with ``numpy.random.uniform`` (as
    Captum does). The building block of :class:`GradientShap`.

    Example:
        >>> import torch
        >>> from attribuo.attr.gradient import InputBaselineXGradient
        >>> model = torch.nn.Linear(3, 1)
        >>> x = torch.rand(4, 3)
        >>> torch.allclose(InputBaselineXGradient(model).attribute(x, target=0), x * model.weight)
        True
    """

    _convergence_delta = True

    def __init__(self, forward_func: Callable, multiply_by_inputs: bool = True) -> None:
        super().__init__(forward_func)
        self._multiply_by_inputs = multiply_by_inputs

    def attribute(
        self,
        inputs: TensorOrTuple,
        baselines: Any = None,
        target: Any = None,
        additional_forward_args: Any = None,
        return_convergence_delta: bool = False,
        internal_batch_size: int | None = None,
    ) -> TensorOrTuple | tuple[TensorOrTuple, Tensor]:
        """Attributions at random points, same form as ``inputs``; optionally with deltas."""
        call = against_baselines(parse_call(inputs, target, additional_forward_args, floating=True), baselines)
        starts = full_baselines(call.inputs, baselines)
        forward = self.forward_func
        result = random_point_gradients(
            forward, lambda points: points.gradients(forward), call, starts, internal_batch_size
        )
        if self.multiplies_by_inputs:
            result = tuple((x - b).mul_(g) for x, b, g in zip(call.inputs, starts, result))
        return self._with_delta(call.result(result), result, starts, call, return_convergence_delta)



def against_baselines(call: Call, baselines: Any) -> Call:
    """``call`` repeated once per baseline when one example meets several baselines.

    Captum broadcasts a batch of one input against ``B`` baseline rows (one
    result per baseline); every other shape is left to the baseline checks.
    """
    if call.batch != 1:
        return call
    rows = {b.shape[0] for b in (baselines if isinstance(baselines, tuple) else (baselines,))
            if isinstance(b, Tensor) and b.dim() > 0}
    fits = all(
        isinstance(b, Tensor) and b.dim() == x.dim() and b.shape[1:] == x.shape[1:]
        for x, b in zip(call.inputs, baselines if isinstance(baselines, tuple) else (baselines,))
    )
    if len(rows) == 1 and fits and (b := rows.pop()) > 1:
        return call.expanded(b)
    return call


def _points(a: Tensor, xs: tuple[Tensor, ...], starts: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    # Same formula as Captum's (a * x + (1 - a) * b) so the points agree bit for bit.
    return tuple(
        (_rows(a, x) * x).add_((1.0 - _rows(a, x)) * b).requires_grad_() for x, b in zip(xs, starts)
    )


def _rows(a: Tensor, like: Tensor) -> Tensor:
    return a.reshape((-1,) + (1,) * (like.dim() - 1))


__all__ = ["GradientShap", "InputBaselineXGradient", "against_baselines", "gradient_shap", "random_point_gradients"]
