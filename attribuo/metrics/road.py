"""ROAD: RemOve And Debias (Rong et al., 2022; Quantus' ROAD).

The top (or bottom) ``p`` percent of pixels by attribution are replaced by
*noisy linear imputation*: every removed pixel takes the weighted mean of
its eight neighbours (weight 1/6 on the sides, 1/12 on the corners), all
removed pixels solved together as one sparse linear system, plus Gaussian
noise. The imputation leaves no sharp-edged holes, so the model sees no
"where was something removed" signal (the bias the paper debiases). The
curve records whether the model still predicts the class at each ``p``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .._engine.errors import ArgumentTypeError, ArgumentValueError
from ._common import check_flag, generator, metric_call, per_example_targets
from .flipping import order_ranks, prepare

# (row offset, column offset, weight) of the eight neighbours; the weights sum to 1
_NEIGHBOURS = (
    (1, 1, 1 / 12), (0, 1, 1 / 6), (-1, 1, 1 / 12), (1, -1, 1 / 12),
    (0, -1, 1 / 6), (-1, -1, 1 / 12), (1, 0, 1 / 6), (-1, 0, 1 / 6),
)
# unknowns solved in one sparse factorisation: bounds the solver's memory
_UNKNOWNS_PER_SOLVE = 400_000
# up to this band width (the shorter image side) the solver's natural order beats COLAMD
_NATURAL_ORDER_UP_TO = 48


def noisy_linear_imputation(
    images: Tensor,
    removed: Tensor,
    noise: float = 0.01,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Images ``(M, C, H, W)`` with the pixels marked in ``removed`` ``(M, H, W)`` imputed.

    Each removed pixel (all channels) is set to the weighted mean of its
    in-image neighbours, removed or not: one sparse linear system per image,
    the same matrix for every channel. The systems of all ``M`` images are
    built at once from the 3x3 stencil and solved together as one
    block-diagonal system (scipy's sparse LU, on the CPU, in float64), in
    pieces of at most a few hundred thousand unknowns. ``noise`` times
    standard normal noise is then added to the imputed values
    (``generator`` for repeatable draws). A copy is returned.

    Example:
        >>> import torch
        >>> from attribuo.metrics.road import noisy_linear_imputation
        >>> img = torch.arange(9.0).view(1, 1, 3, 3)
        >>> hole = torch.zeros(1, 3, 3, dtype=torch.bool)
        >>> hole[0, 1, 1] = True
        >>> noisy_linear_imputation(img, hole, noise=0.0)[0, 0, 1, 1]
        tensor(4.)
    """
    if not isinstance(images, Tensor) or images.dim() != 4:
        raise ArgumentValueError(f"`images` must be a tensor (M, C, H, W), "
                                 f"got {getattr(images, 'shape', images)}")
    m, c, h, w = images.shape
    if not isinstance(removed, Tensor) or tuple(removed.shape) != (m, h, w):
        raise ArgumentValueError(f"`removed` must be a bool tensor of shape {(m, h, w)}, got "
                                 f"{getattr(removed, 'shape', type(removed).__name__)}")
    removed = removed.to(device="cpu", dtype=torch.bool)
    if bool(removed.flatten(1).all(1).any()):
        raise ArgumentValueError("`removed` marks every pixel of an image: nothing to impute from")
    out = images.detach().clone()
    counts = removed.flatten(1).sum(1)
    if int(counts.sum()) == 0:
        return out
    # the stencil is symmetric: solving the transposed images gives the same values, and rows of
    # the shorter side make a narrower band for the solver
    flip = w > h
    values = images.detach().to("cpu", torch.float64)
    if flip:
        values, removed = values.transpose(2, 3), removed.transpose(1, 2)
    solved, start, cumulative = [], 0, counts.cumsum(0)
    while start < m:
        # images start..stop-1: at least one, at most _UNKNOWNS_PER_SOLVE unknowns when more
        base = int(cumulative[start - 1]) if start else 0
        stop = max(int(torch.searchsorted(cumulative, base + _UNKNOWNS_PER_SOLVE, right=True)), start + 1)
        solved.append(_solve(values[start:stop], removed[start:stop]))
        start = stop
    sol = torch.cat(solved).to(device=images.device, dtype=images.dtype)
    if noise:
        sol = sol + noise * torch.randn(sol.shape, dtype=sol.dtype, device=sol.device, generator=generator)
    # the solution's order is row-major over the (possibly transposed) grid: write it there
    grid = out.transpose(2, 3) if flip else out
    mask = removed.to(images.device)
    grid.permute(0, 2, 3, 1)[mask] = sol
    return out


def _solve(values: Tensor, removed: Tensor) -> Tensor:
    """``(unknowns, C)`` imputed values of ``values`` ``(m, C, H, W)`` at ``removed`` ``(m, H, W)``.

    Row ``i`` of the system: ``-S_i z_i + sum_{removed j ~ i} w_ij z_j = -sum_{kept j ~ i} w_ij x_j``,
    ``S_i`` the weight of ``i``'s in-image neighbours.
    """
    from scipy.sparse import csc_matrix
    from scipy.sparse.linalg import spsolve

    m, c, h, w = values.shape
    unknowns = int(removed.sum())
    variable = torch.full(removed.shape, -1, dtype=torch.long)
    variable[removed] = torch.arange(unknowns)
    kernel = torch.zeros(1, 1, 3, 3, dtype=torch.float64)
    for dr, dc, weight in _NEIGHBOURS:
        kernel[0, 0, 1 + dr, 1 + dc] = weight
    kept = values * (~removed).unsqueeze(1)
    rhs = -F.conv2d(kept.reshape(m * c, 1, h, w), kernel, padding=1).view(m, c, h, w).permute(0, 2, 3, 1)
    in_image = F.conv2d(torch.ones(1, 1, h, w, dtype=torch.float64), kernel, padding=1)[0, 0]
    rows, cols, weights = [variable[removed]], [variable[removed]], [-in_image.expand(m, h, w)[removed]]
    for dr, dc, weight in _NEIGHBOURS:
        # pixels (r, q) whose neighbour (r + dr, q + dc) lies in the image
        here = (slice(None), slice(max(0, -dr), h - max(0, dr)), slice(max(0, -dc), w - max(0, dc)))
        there = (slice(None), slice(max(0, dr), h + min(0, dr)), slice(max(0, dc), w + min(0, dc)))
        both = removed[here] & removed[there]
        rows.append(variable[here][both])
        cols.append(variable[there][both])
        weights.append(torch.full((rows[-1].numel(),), weight, dtype=torch.float64))
    matrix = csc_matrix(
        (torch.cat(weights).numpy(), (torch.cat(rows).numpy(), torch.cat(cols).numpy())),
        shape=(unknowns, unknowns),
    )
    # narrow bands factor fastest in their own order; wide images want a fill-reducing one
    order = "NATURAL" if w <= _NATURAL_ORDER_UP_TO else "COLAMD"
    solution = spsolve(matrix, rhs[removed].numpy(), permc_spec=order)
    return torch.from_numpy(np.asarray(solution).reshape(unknowns, c))


def _argmax_hits(forward_func: Callable) -> Callable:
    """The model as one-hot rows of its predicted class: the target's column is 1 iff predicted."""

    def hits(*args: Any, **kwargs: Any) -> Tensor:
        out = forward_func(*args, **kwargs)
        if not isinstance(out, Tensor) or out.dim() != 2:
            raise ArgumentValueError(
                f"road: the model must return class scores (N, classes), got "
                f"{getattr(out, 'shape', type(out).__name__)}"
            )
        return F.one_hot(out.argmax(1), out.shape[1]).to(torch.float64)

    return hits


def _percentages(percentages: Sequence[float] | None) -> list[float]:
    if percentages is None:
        return list(range(1, 100, 2))
    if isinstance(percentages, (str, bytes)) or not isinstance(percentages, Sequence) or not percentages:
        raise ArgumentTypeError(f"road: `percentages` must be a non-empty sequence of numbers, "
                                f"got {percentages!r}")
    for p in percentages:
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p < 100:
            raise ArgumentValueError(f"road: `percentages` must lie in [0, 100), got {p!r}")
    return list(percentages)


def road(
    forward_func: Callable,
    inputs: Tensor,
    attributions: Any,
    target: Any = None,
    *,
    additional_forward_args: Any = None,
    percentages: Sequence[float] | None = None,
    noise: float = 0.01,
    order: str = "morf",
    abs: bool = False,
    return_curves: bool = False,
    explain_kwargs: dict | None = None,
    max_examples_per_batch: int | None = None,
    seed: int | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """Fraction of removal levels at which the class survives noisy linear imputation (Rong et al., 2022).

    For each ``p`` in ``percentages`` (default 1, 3, ..., 99) the
    ``int(H * W * p / 100)`` pixels ranked first by ``order`` ("morf": most
    relevant first, "lerf": least, "random") are imputed by
    :func:`noisy_linear_imputation` with ``noise``; the curve is 1 where the
    model's top class is still ``target`` (``target=None``: the class it
    predicts on ``x``), else 0, and the score is the curve's mean over
    ``percentages``. **Lower is better** for "morf", higher for "lerf".
    Quantus returns the batch mean of the curve per percentage (this
    ``curves.mean(0)``, with ``return_curves=True``). Cost: one sparse solve
    and one forward per example and percentage, batched.

    Attributions with one value per channel are summed over channels into
    one per pixel (Quantus handles only single-channel images here). The
    noise is drawn with torch (``seed``), Quantus with numpy: compare with
    ``noise=0`` for identical numbers.

    Example:
        >>> import torch
        >>> from attribuo.metrics.road import road
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
        >>> x = torch.rand(2, 1, 4, 4)
        >>> road(model, x, x, percentages=[10, 50, 90], seed=0).shape
        torch.Size([2])
    """
    name = "road"
    mc, scores = prepare(name, forward_func, inputs, attributions, target, additional_forward_args,
                         explain_kwargs, max_examples_per_batch, abs)
    x = mc.x
    if x.dim() != 4:
        raise ArgumentValueError(f"{name}: `inputs` must be images (N, C, H, W), got shape {tuple(x.shape)}")
    n, _, h, w = x.shape
    if tuple(mc.grid[-2:]) != (h, w):
        raise ArgumentValueError(f"{name}: `attributions` of shape {tuple(mc.attributions.shape)} must cover "
                                 f"every pixel of `inputs` {tuple(x.shape)}")
    pct = _percentages(percentages)
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or noise < 0:
        raise ArgumentValueError(f"{name}: `noise` must be a number >= 0, got {noise!r}")
    check_flag(return_curves, name, "return_curves")
    gen = generator(seed, x.device)
    pixel_scores = scores.view(n, -1, h * w).sum(1)
    ranks = order_ranks(pixel_scores, order, gen, name)
    sizes = [int(h * w * p / 100) for p in pct]  # Quantus' count, truncated

    if target is None:
        with torch.no_grad():
            out = _argmax_hits(forward_func)(x, *mc.call.args)
        labels = out.argmax(1)
    else:
        labels = per_example_targets(mc.call)
        if labels is None:
            raise ArgumentValueError(f"{name}: `target` must be one class index per example (or None)")
    hits = metric_call(_argmax_hits(forward_func), x, None, labels, additional_forward_args,
                       max_examples_per_batch, name)

    # one seed per percentage, drawn up front: the noise does not depend on how copies are chunked
    seeds = torch.randint(0, 2**62, (len(pct),), generator=gen, device=x.device).tolist()

    def make(start: int, stop: int) -> Tensor:
        k = stop - start
        removed = ranks.unsqueeze(0) < torch.tensor(sizes[start:stop], device=ranks.device).view(k, 1, 1)
        removed = removed.view(k, n, 1, h, w)
        imputed = noisy_linear_imputation(x.unsqueeze(0).expand(k, *x.shape).reshape(k * n, *x.shape[1:]),
                                          removed.view(k * n, h, w), 0.0).view(k, *x.shape)
        if noise:
            for j in range(k):
                draw = torch.Generator(device=x.device).manual_seed(seeds[start + j])
                jitter = torch.randn(x.shape, dtype=imputed.dtype, device=x.device, generator=draw)
                imputed[j] += noise * jitter * removed[j]
        return imputed

    curves = hits.score_copies(len(pct), make)
    scores = curves.mean(1)
    return (scores, curves) if return_curves else scores
