"""Path integrals whose integrand lives at a layer (internal influence, layer conductance).

The path runs through the *inputs*, from baselines to inputs, as for
integrated gradients; at every point the target output is differentiated
with respect to a layer's values instead of the inputs. The points are
evaluated many per forward, chunked like every path method
(:func:`paths.path_chunks`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

from .inputs import expand_additional_args
from .paths import path_chunks
from .sites import site_gradients
from .targets import Target


def site_path_evaluations(
    forward_func: Callable,
    layer: nn.Module,
    starts: tuple[Tensor, ...],
    ends: tuple[Tensor, ...],
    alphas: list[float],
    target: Target,
    additional_args: tuple[Any, ...] = (),
    use_input: bool = False,
    internal_batch_size: int | None = None,
    grad_kwargs: dict | None = None,
) -> Evaluations:
    """``(lo, hi, grads, values)`` for the path steps ``lo:hi``, each ``[hi - lo, batch, ...]``.

    ``values`` are the layer's values at the points, ``grads`` the gradients
    of the targeted output with respect to them.
    """
    n = ends[0].shape[0]
    for lo, hi, points in path_chunks(starts, ends, alphas, internal_batch_size):
        k = hi - lo
        (record,) = site_gradients(
            forward_func,
            [layer],
            points,
            target.repeat(k),
            expand_additional_args(additional_args, n, k),
            use_input,
            grad_kwargs,
        )
        yield lo, hi, _by_step(record.extra["grads"], k), _by_step(record.values, k)


def _by_step(tensors: tuple[Tensor, ...], k: int) -> tuple[Tensor, ...]:
    return tuple(t.reshape((k, -1) + t.shape[1:]) for t in tensors)


Evaluations = Iterator[tuple[int, int, tuple[Tensor, ...], tuple[Tensor, ...]]]


def internal_influence(evaluations: Evaluations, weights: list[float]) -> tuple[Tensor, ...]:
    """``sum_k weights[k] * dF/dy(x_k)`` over the :func:`site_path_evaluations` of a path.

    ``y`` is the layer's output (or input); one tensor per layer value.
    """
    totals: list[Tensor] = []
    for lo, hi, grads, _ in evaluations:
        w = torch.tensor(weights[lo:hi], dtype=grads[0].dtype, device=grads[0].device)
        sums = [torch.tensordot(w, g, dims=1) for g in grads]
        totals = sums if not totals else [t + s for t, s in zip(totals, sums)]
    return tuple(totals)


def layer_conductance(evaluations: Evaluations) -> tuple[Tensor, ...]:
    """Conductance of every neuron of a layer (Dhamdhere et al., 2018).

    ``sum_k dF/dy(x_k) * (y(x_{k+1}) - y(x_k))`` over consecutive points of
    the :func:`site_path_evaluations` of a path: the change of each neuron
    along the path, weighted by the output's sensitivity to it. The sum of
    a layer's conductances approaches ``F(end) - F(start)``.
    """
    totals: list[Tensor] = []
    last: tuple[tuple[Tensor, ...], tuple[Tensor, ...]] | None = None
    for _, _, grads, values in evaluations:
        if last is not None:  # the step from the previous chunk's last point
            grads = tuple(torch.cat([p[-1:], g]) for p, g in zip(last[0], grads))
            values = tuple(torch.cat([p[-1:], v]) for p, v in zip(last[1], values))
        sums = [(g[:-1] * (v[1:] - v[:-1])).sum(0) for g, v in zip(grads, values)]
        totals = sums if not totals else [t + s for t, s in zip(totals, sums)]
        last = (grads, values)
    return tuple(totals)
