"""Path integrals of gradients (Integrated Gradients, conductance and kin).

:func:`path_weights` gives the points ``alpha_k`` in [0, 1] and weights
``w_k`` of each quadrature rule; :func:`integrate_path_gradients` returns
``sum_k w_k * dF/dx (start + alpha_k * (end - start))`` for a batch, with the
steps evaluated many per forward and chunked under the memory budget.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .batching import bytes_per_copy, chunk_ranges, items_per_chunk
from .errors import ArgumentValueError
from .forward import output_gradients
from .inputs import expand_additional_args
from .sites import site_gradients
from .targets import Target

PATH_METHODS = (
    "riemann_left",
    "riemann_right",
    "riemann_middle",
    "riemann_trapezoid",
    "gausslegendre",
)


def path_weights(method: str, n_steps: int) -> tuple[list[float], list[float]]:
    """``(alphas, weights)`` of the quadrature rule ``method`` with ``n_steps`` points."""
    if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 1:
        raise ArgumentValueError(f"`n_steps` must be a positive int, got {n_steps!r}")
    if method == "gausslegendre":
        nodes, w = np.polynomial.legendre.leggauss(n_steps)
        return list(0.5 * (nodes + 1)), list(0.5 * w)
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
    starts: tuple[Tensor, ...],
    ends: tuple[Tensor, ...],
    alphas: list[float],
    internal_batch_size: int | None = None,
) -> Iterator[tuple[int, int, tuple[Tensor, ...]]]:
    """``(lo, hi, points)`` for the steps ``alphas[lo:hi]``, chunked as the path methods chunk.

    ``internal_batch_size // batch`` steps a chunk (at least one) when given,
    else as many as fit the memory budget.
    """
    n = ends[0].shape[0]
    n_steps = len(alphas)
    if internal_batch_size is not None:
        items_per_chunk(n_steps, 1, internal_batch_size)  # validates the value
        per_chunk = max(1, internal_batch_size // max(n, 1))
    else:
        per_chunk = items_per_chunk(n_steps, bytes_per_copy(ends))
    for lo, hi in chunk_ranges(n_steps, per_chunk):
        yield lo, hi, path_points(starts, ends, alphas[lo:hi])


def integrate_path_gradients(
    forward_func: Callable,
    starts: tuple[Tensor, ...],
    ends: tuple[Tensor, ...],
    alphas: list[float],
    weights: list[float],
    target: Target,
    additional_args: tuple[Any, ...] = (),
    internal_batch_size: int | None = None,
) -> tuple[Tensor, ...]:
    """``sum_k weights[k] * grad F(start + alphas[k] * (end - start))`` per input.

    Steps are evaluated ``internal_batch_size // batch`` at a time (at least
    one), or as many as fit the memory budget when it is None. The sum runs in
    step order, so the result does not depend on the chunking.
    """
    n = ends[0].shape[0]
    totals = [torch.zeros_like(e) for e in ends]
    for lo, hi, chunk in path_chunks(starts, ends, alphas, internal_batch_size):
        k = hi - lo
        points = tuple(p.detach().requires_grad_() for p in chunk)
        grads = output_gradients(
            forward_func,
            points,
            target.repeat(k),
            expand_additional_args(additional_args, n, k),
        )
        for total, g in zip(totals, grads):
            g = g.reshape((k,) + total.shape)
            for j in range(k):
                total.add_(g[j], alpha=weights[lo + j])
    return tuple(totals)


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
