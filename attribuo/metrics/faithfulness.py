"""Deletion and insertion curves (pixel flipping; Samek et al. 2017, Petsiuk et al. 2018).

Features are taken in order of decreasing attribution (most relevant first).
*Deletion* replaces them one group after another by the baseline, starting
from the input; *insertion* puts them back into the baseline, starting from
the baseline. The model's score is recorded after each step; a faithful
attribution makes the deletion curve fall fast (small area) and the
insertion curve rise fast (large area). All steps are built as one expanded
batch (``steps x examples``) and evaluated in as few forwards as the memory
budget or ``max_examples_per_batch`` allows.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import Tensor

from .._engine.baselines import full_baselines
from .._engine.batching import bytes_per_copy, cache_friendly_copies, chunk_ranges, chunk_size
from .._engine.call import Call, parse_call
from .._engine.errors import ArgumentTypeError, ArgumentValueError
from .._engine.inputs import as_tuple, positive_int
from ._sampling import check_attributions, per_example_output

TensorOrTuple = Tensor | tuple[Tensor, ...]


class FaithfulnessCurve(NamedTuple):
    """A deletion or insertion curve.

    ``fractions[k]`` is the fraction of features changed at step ``k``
    (from 0 to 1), ``scores[b, k]`` the model's score for example ``b``
    then, and ``area[b]`` the area under the curve (trapezoidal rule over
    ``fractions``).
    """

    fractions: Tensor
    scores: Tensor
    area: Tensor


def deletion_curve(
    forward_func: Callable,
    inputs: TensorOrTuple,
    attributions: TensorOrTuple,
    baselines: Any = None,
    target: Any = None,
    additional_forward_args: Any = None,
    n_steps: int | None = None,
    feature_mask: TensorOrTuple | None = None,
    max_examples_per_batch: int | None = None,
) -> FaithfulnessCurve:
    """Score while the most relevant features are replaced by ``baselines``, step by step.

    ``n_steps`` (default: one step per feature, at most 100) splits the
    features into that many nearly equal groups. ``feature_mask`` (Captum's
    form: integer ids broadcastable to each input, the same for every
    example) groups elements into features, ranked by their summed
    attribution; by default every element is a feature. Ties are broken at
    random (torch's global generator), so a constant attribution gives a
    uniformly random order. Lower area means more faithful attributions.

    Example:
        >>> import torch
        >>> from attribuo.metrics import deletion_curve
        >>> model = torch.nn.Linear(4, 1)
        >>> x = torch.ones(1, 4)
        >>> curve = deletion_curve(model, x, model.weight.detach() * x, target=0)
        >>> curve.fractions
        tensor([0.0000, 0.2500, 0.5000, 0.7500, 1.0000])
        >>> curve.scores.shape, curve.area.shape
        (torch.Size([1, 5]), torch.Size([1]))
    """
    return _flip_curve(
        True, forward_func, inputs, attributions, baselines, target,
        additional_forward_args, n_steps, feature_mask, max_examples_per_batch,
    )


def insertion_curve(
    forward_func: Callable,
    inputs: TensorOrTuple,
    attributions: TensorOrTuple,
    baselines: Any = None,
    target: Any = None,
    additional_forward_args: Any = None,
    n_steps: int | None = None,
    feature_mask: TensorOrTuple | None = None,
    max_examples_per_batch: int | None = None,
) -> FaithfulnessCurve:
    """Score while the most relevant features are put back into ``baselines``, step by step.

    The mirror image of :func:`deletion_curve` (same arguments): the curve
    starts at the baseline's score and ends at the input's. Higher area means
    more faithful attributions.

    Example:
        >>> import torch
        >>> from attribuo.metrics import insertion_curve
        >>> model = torch.nn.Linear(4, 1)
        >>> x = torch.ones(2, 4)
        >>> curve = insertion_curve(model, x, x * model.weight.detach(), target=0, n_steps=2)
        >>> curve.fractions
        tensor([0.0000, 0.5000, 1.0000])
    """
    return _flip_curve(
        False, forward_func, inputs, attributions, baselines, target,
        additional_forward_args, n_steps, feature_mask, max_examples_per_batch,
    )


def _feature_ids(
    inputs: tuple[Tensor, ...], feature_mask: TensorOrTuple | None
) -> tuple[list[Tensor], int]:
    """Per input, one feature index (0..F-1) per element of one example, and F."""
    if feature_mask is None:
        ids, offset = [], 0
        for x in inputs:
            n = x[0].numel()
            ids.append(torch.arange(offset, offset + n, device=x.device).view(x.shape[1:]))
            offset += n
        return ids, offset
    masks = as_tuple(feature_mask, "feature_mask")
    if len(masks) != len(inputs):
        raise ArgumentValueError(
            f"`feature_mask` has {len(masks)} tensors but there are {len(inputs)} inputs"
        )
    raw = []
    for i, (m, x) in enumerate(zip(masks, inputs)):
        if m.is_floating_point() or m.is_complex():
            raise ArgumentTypeError(f"`feature_mask[{i}]` must hold integer ids, got {m.dtype}")
        try:
            full = torch.broadcast_to(m.to(x.device), x.shape)
        except RuntimeError:
            raise ArgumentValueError(
                f"`feature_mask[{i}]` of shape {tuple(m.shape)} does not broadcast to the "
                f"input shape {tuple(x.shape)}"
            ) from None
        if not bool((full == full[:1]).all()):
            raise ArgumentValueError(
                f"`feature_mask[{i}]` must be the same for every example (use batch dim 1)"
            )
        raw.append(full[0])
    # ids shared between inputs name one feature, as in Captum
    unique, inverse = torch.unique(torch.cat([r.reshape(-1) for r in raw]), return_inverse=True)
    ids, start = [], 0
    for r in raw:
        ids.append(inverse[start:start + r.numel()].view(r.shape))
        start += r.numel()
    return ids, unique.numel()


def _order_ranks(scores: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Rank of each feature (0 = most relevant) with ties broken uniformly at random."""
    shuffle = torch.rand(scores.shape, device=scores.device, generator=generator).argsort(dim=1)
    shuffled = scores.gather(1, shuffle)
    order = shuffle.gather(1, shuffled.argsort(dim=1, descending=True, stable=True))
    ranks = torch.empty_like(order)
    positions = torch.arange(order.shape[1], device=order.device).expand_as(order)
    ranks.scatter_(1, order, positions)
    return ranks


def _flip_curve(
    delete: bool,
    forward_func: Callable,
    inputs: TensorOrTuple,
    attributions: TensorOrTuple,
    baselines: Any,
    target: Any,
    additional_forward_args: Any,
    n_steps: int | None,
    feature_mask: TensorOrTuple | None,
    max_examples_per_batch: int | None,
) -> FaithfulnessCurve:
    call = parse_call(inputs, target, additional_forward_args)
    xs, bsz = call.inputs, call.batch
    attrs = as_tuple(attributions, "attributions")
    check_attributions(xs, attrs)
    bases = full_baselines(xs, baselines)
    ids, n_features = _feature_ids(xs, feature_mask)
    if n_features == 0:
        raise ArgumentValueError("`inputs` have no features to remove")
    steps = min(n_features, 100) if n_steps is None else positive_int(n_steps, "n_steps")
    steps = min(steps, n_features)

    device = xs[0].device
    feature_scores = torch.zeros(bsz, n_features, dtype=torch.float64, device=device)
    for a, fid in zip(attrs, ids):
        flat = a.detach().reshape(bsz, -1).to(device=device, dtype=torch.float64)
        feature_scores.index_add_(1, fid.reshape(-1).to(device), flat)
    ranks = _order_ranks(feature_scores)
    # rank of the feature each element belongs to: [batch, *example shape]
    elem_ranks = [ranks[:, fid.reshape(-1).to(device)].view(x.shape) for x, fid in zip(xs, ids)]
    counts = torch.round(
        torch.arange(steps + 1, dtype=torch.float64) * n_features / steps
    ).long()

    scores = _removal_scores(call, forward_func, bases, elem_ranks, counts, delete, max_examples_per_batch)
    fractions = (counts.to(torch.float64) / n_features).to(device=device, dtype=scores.dtype)
    return FaithfulnessCurve(fractions, scores, torch.trapezoid(scores, fractions, dim=1))


def _removal_scores(
    call: Call,
    forward_func: Callable,
    bases: tuple[Tensor, ...],
    elem_ranks: tuple[Tensor, ...] | list[Tensor],
    counts: Tensor,
    delete: bool,
    max_examples_per_batch: int | None,
) -> Tensor:
    """``(N, len(counts))`` scores with the ``counts[k]`` first-ranked elements changed.

    ``elem_ranks[i]`` (the shape of input ``i``) holds each element's rank;
    step ``k`` takes the elements of rank below ``counts[k]`` from
    ``bases`` (deletion) or keeps only those from the input (insertion).
    ``bases`` may hold a different value per element (e.g. one per step).
    """
    xs, bsz = call.inputs, call.batch
    device = xs[0].device
    size = chunk_size(len(counts), bytes_per_copy(xs), examples=max_examples_per_batch, batch=bsz,
                      name="max_examples_per_batch")
    if max_examples_per_batch is None and device.type == "cpu" and size > 1:
        size = min(size, cache_friendly_copies(forward_func, xs, call.args, bsz))
    columns = []
    with torch.no_grad():
        for start, stop in chunk_ranges(len(counts), size):
            k = stop - start
            c = counts[start:stop].to(device)
            batch = []
            for x, b, r in zip(xs, bases, elem_ranks):
                changed = r.unsqueeze(0) < c.view(-1, *([1] * r.dim()))
                keep, swap = (x, b) if delete else (b, x)
                batch.append(torch.where(changed, swap.unsqueeze(0), keep.unsqueeze(0)).flatten(0, 1))
            out = call.expanded(k, inputs=tuple(batch)).forward(forward_func)
            columns.append(per_example_output(out, bsz * k).view(k, bsz).T)
    return torch.cat(columns, dim=1)
