"""Path quadrature: integrals of gradients along straight paths.

:func:`path_weights` gives the points ``alpha_k`` in [0, 1] and weights
``w_k`` of each quadrature rule; :func:`path_chunks` evaluates the path
points many per forward, chunked under the memory budget;
:func:`integrate_path_gradients` returns ``sum_k w_k * dF/dx (start +
alpha_k * (end - start))`` for a batch, and :func:`site_path_evaluations`
gives the gradients at a layer along the input path (for internal
influence and conductance).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor, nn

from .batching import (
    bytes_per_copy,
    capped_by_activations,
    chunk_ranges,
    chunk_size,
    remembered_activation_bytes,
)
from .call import Call
from .errors import ArgumentValueError
from .inputs import grad_ready, positive_int
from .sites import site_gradients

PATH_METHODS = (
    "riemann_left",
    "riemann_right",
    "riemann_middle",
    "riemann_trapezoid",
    "gausslegendre",
)


def path_weights(method: str, n_steps: int) -> tuple[list[float], list[float]]:
    """``(alphas, weights)`` of the quadrature rule ``method`` with ``n_steps`` points."""
    positive_int(n_steps, "n_steps")
    if method == "gausslegendre":
        alphas, weights = _gauss_legendre(n_steps)
        return list(alphas), list(weights)
    if method not in PATH_METHODS:
        raise ArgumentValueError(f"`method` must be one of {PATH_METHODS}, got {method!r}")
    if n_steps < 2:
        raise ArgumentValueError(f"`n_steps` must be at least 2 for {method}")
    # Captum's conventions: float32 linspace points, 1/n weights (trapezoid halves the ends).
    weights = [1.0 / n_steps] * n_steps
    if method == "riemann_trapezoid":
        weights[0] /= 2
        weights[-1] /= 2
        alphas = torch.linspace(0, 1, n_steps)
    elif method == "riemann_left":
        alphas = torch.linspace(0, 1 - 1 / n_steps, n_steps)
    elif method == "riemann_right":
        alphas = torch.linspace(1 / n_steps, 1, n_steps)
    else:
        alphas = torch.linspace(1 / (2 * n_steps), 1 - 1 / (2 * n_steps), n_steps)
    return alphas.tolist(), weights


@lru_cache(maxsize=64)
def _gauss_legendre(n_steps: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    # numpy's leggauss solves an eigenproblem (about 0.3 ms at 20 points), and every
    # path call asks at least twice: once to validate, once to run.
    nodes, w = np.polynomial.legendre.leggauss(n_steps)
    return tuple(0.5 * (nodes + 1)), tuple(0.5 * w)


def path_points(
    starts: tuple[Tensor, ...], ends: tuple[Tensor, ...], alphas: Tensor | list[float]
) -> tuple[Tensor, ...]:
    """Points ``start + alpha * (end - start)`` for every alpha, stacked step-major."""
    points = []
    for s, e in zip(starts, ends):
        a = torch.as_tensor(alphas, dtype=e.dtype, device=e.device)
        a = a.reshape((-1,) + (1,) * e.dim())
        diff = e - s
        points.append((s.unsqueeze(0) + a * diff.unsqueeze(0)).reshape((-1,) + e.shape[1:]))
    return tuple(points)


def path_chunks(
    forward_func: Callable,
    call: Call,
    starts: tuple[Tensor, ...],
    alphas: list[float],
    internal_batch_size: int | None = None,
    differentiable: bool = True,
) -> Iterator[tuple[int, int, Call]]:
    """``(lo, hi, points)``: the call on the path points of steps ``alphas[lo:hi]``.

    The path runs from ``starts`` to ``call.inputs``; the points of a chunk
    are stacked step-major, with the target and batched arguments expanded
    to match, and are fresh leaves that require grad when ``differentiable``.
    Chunks as :func:`point_chunks`.
    """
    return point_chunks(forward_func, call, len(alphas),
                        lambda lo, hi: path_points(starts, call.inputs, alphas[lo:hi]),
                        internal_batch_size, differentiable)


def point_chunks(
    forward_func: Callable,
    call: Call,
    count: int,
    make_points: Callable[[int, int], tuple[Tensor, ...]],
    internal_batch_size: int | None = None,
    differentiable: bool = True,
) -> Iterator[tuple[int, int, Call]]:
    """``(lo, hi, points)``: the call on the points ``make_points(lo, hi)`` of steps ``lo:hi`` of any path.

    ``make_points`` stacks the points of its steps step-major (straight
    paths, per-example step grids, blur paths). A chunk holds
    ``internal_batch_size // batch`` steps (at least one) when given, else as
    many as fit the memory budgets: of inputs, and of the activations a
    probe forward of ``forward_func`` shows a step costs.
    """
    size = chunk_size(count, bytes_per_copy(call.inputs), examples=internal_batch_size, batch=call.batch)
    if internal_batch_size is None and size > 1:
        size = capped_by_activations(size, remembered_activation_bytes(forward_func, call.inputs, call.args, grad=True))
    for lo, hi in chunk_ranges(count, size):
        points = make_points(lo, hi)
        if differentiable:
            points = grad_ready(points)
        yield lo, hi, call.expanded(hi - lo, inputs=points)


def integrate_path_gradients(
    forward_func: Callable,
    call: Call,
    starts: tuple[Tensor, ...],
    alphas: list[float],
    weights: list[float],
    internal_batch_size: int | None = None,
) -> tuple[Tensor, ...]:
    """``sum_k weights[k] * grad F(start + alphas[k] * (end - start))`` per input.

    The ends are ``call.inputs``; the steps are chunked by :func:`path_chunks`.
    The sum runs in step order, so the result does not depend on the chunking.

    Example:
        >>> import torch
        >>> from attribuo._engine.call import parse_call
        >>> x = torch.tensor([[1.0, 2.0]])
        >>> alphas, weights = path_weights("gausslegendre", 4)
        >>> integrate_path_gradients(lambda t: (t**2).sum(1), parse_call(x), (torch.zeros_like(x),),
        ...                          alphas, weights)  # the mean gradient on the path is x
        (tensor([[1., 2.]]),)
    """
    totals = [torch.zeros_like(e) for e in call.inputs]
    for lo, hi, points in path_chunks(forward_func, call, starts, alphas, internal_batch_size):
        k = hi - lo
        grads = points.gradients(forward_func)
        for total, g in zip(totals, grads):
            g = g.reshape((k,) + total.shape)
            for j in range(k):
                total.add_(g[j], alpha=weights[lo + j])
    return tuple(totals)


def site_path_evaluations(
    forward_func: Callable,
    layer: nn.Module,
    call: Call,
    starts: tuple[Tensor, ...],
    alphas: list[float],
    use_input: bool = False,
    internal_batch_size: int | None = None,
    grad_kwargs: dict | None = None,
) -> Evaluations:
    """``(lo, hi, grads, values)`` for the path steps ``lo:hi``, each ``[hi - lo, batch, ...]``.

    The path runs through the inputs, from ``starts`` to ``call.inputs``, as
    for integrated gradients; at every point the target output is
    differentiated with respect to ``layer``'s output (or input) instead:
    ``values`` are the layer's values at the points, ``grads`` the gradients
    of the targeted output with respect to them.
    """
    for lo, hi, points in path_chunks(forward_func, call, starts, alphas, internal_batch_size, differentiable=False):
        k = hi - lo
        (record,) = site_gradients(forward_func, [layer], points, use_input, grad_kwargs)
        yield lo, hi, _by_step(record.grads, k), _by_step(record.values, k)


def _by_step(tensors: tuple[Tensor, ...], k: int) -> tuple[Tensor, ...]:
    return tuple(t.reshape((k, -1) + t.shape[1:]) for t in tensors)


Evaluations = Iterator[tuple[int, int, tuple[Tensor, ...], tuple[Tensor, ...]]]
