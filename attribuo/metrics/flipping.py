"""Faithfulness by removal in order of relevance: pixel flipping, region perturbation,
selectivity and IROF (Quantus' PixelFlipping, RegionPerturbation, Selectivity, IROF).

Each metric ranks features (single elements, square patches, or superpixels)
by their attribution, replaces them by a baseline one step after another,
and records the model's target score after each step. The steps differ
only in which elements they change, so all of them are evaluated through
the deletion machinery of :mod:`.faithfulness`: expanded batches of
``steps x examples`` copies, in as few forwards as the memory budget (or
``max_examples_per_batch``) allows.

Compared with Quantus 0.6:

- ``softmax=True`` (Quantus' default for these metrics) scores the softmax
  of the model's output; ``softmax=False`` the output as it is.
- Quantus divides attributions by their maximum before ranking; a positive
  scale never changes a ranking, so there is no ``normalise`` argument.
- Ties in the attributions are broken at random (``seed``), where Quantus
  takes numpy's sort order.
- ``perturb_baseline="mean"`` is each example's mean; Quantus recomputes the
  mean of the partly perturbed (for patches: padded; for IROF: whole-batch)
  array before each step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .._engine.errors import ArgumentTypeError, ArgumentValueError
from .._engine.inputs import positive_int
from ._common import MetricCall, baseline_fill, check_flag, generator, scored_call
from .faithfulness import _order_ranks, _removal_scores

_ORDERS = ("morf", "lerf", "random")


def prepare(
    name: str,
    forward_func: Callable,
    inputs: Any,
    attributions: Any,
    target: Any,
    additional_forward_args: Any,
    explain_kwargs: dict | None,
    max_examples_per_batch: int | None,
    abs: bool,
    softmax: bool = False,
) -> tuple[MetricCall, Tensor]:
    """The checked call and its ``(N, F)`` float64 attributions (absolute with ``abs``).

    A method as ``attributions`` is computed on the inputs (and the model as
    given) first; with ``softmax`` the call then scores probabilities.
    """
    if attributions is None:
        raise ArgumentTypeError(f"{name}: `attributions` must be a tensor or an attribution method, got None")
    return scored_call(name, forward_func, inputs, attributions, target, additional_forward_args,
                       explain_kwargs, max_examples_per_batch, abs, softmax)


def order_ranks(scores: Tensor, order: str, gen: torch.Generator | None, name: str) -> Tensor:
    """Rank per feature (0 first removed): "morf" most relevant first, "lerf" least, or "random"."""
    if not isinstance(order, str) or order.lower() not in _ORDERS:
        raise ArgumentValueError(f"{name}: `order` must be one of {_ORDERS}, got {order!r}")
    order = order.lower()
    if order == "random":
        scores = torch.zeros_like(scores)  # every order equally likely
    return _order_ranks(scores if order == "morf" else -scores, gen)


def fill_values(
    mc: MetricCall,
    baseline: Any,
    step_of: Tensor,
    n_steps: int,
    gen: torch.Generator | None,
) -> Tensor:
    """The value each element of ``x`` takes once removed (x's shape).

    ``perturb_baseline`` as in :func:`.correlation.baseline_fill`
    ("black"/"white"/"mean": each example's min/max/mean, a number, a
    tensor); "uniform" draws one U(0, 1) value per example and step
    (``step_of``, x's shape, is the step that removes each element:
    ``n_steps`` or more for never), "random" one per element.
    """
    x = mc.x
    if isinstance(baseline, str) and baseline.lower() == "random":
        if not x.is_floating_point():
            raise ArgumentTypeError(f"`inputs` must be floating point to perturb them, got {x.dtype}")
        return torch.rand(x.shape, dtype=x.dtype, device=x.device, generator=gen)
    fill = baseline_fill(mc, baseline, n_steps + 1, gen)(0, n_steps + 1)
    if fill.shape[0] == 1:
        return fill[0].expand(x.shape)
    per_step = fill.reshape(n_steps + 1, mc.batch).T  # "uniform": one value per copy and example
    return per_step.gather(1, step_of.clamp(max=n_steps).reshape(mc.batch, -1)).view(x.shape)


def removal_curve(
    mc: MetricCall,
    elem_ranks: Tensor,
    counts: Tensor,
    perturb_baseline: Any,
    gen: torch.Generator | None,
) -> Tensor:
    """``(N, len(counts))`` float64 scores with elements of rank < ``counts[k]`` replaced.

    Step ``k`` removes the elements ranked ``counts[k-1]..counts[k]-1``; its
    "uniform" value is drawn for that step.
    """
    step_of = torch.searchsorted(counts.to(elem_ranks.device), elem_ranks.contiguous(), right=True)
    fill = fill_values(mc, perturb_baseline, step_of, len(counts), gen)
    scores = _removal_scores(mc.call, mc.forward_func, (fill,), (elem_ranks,), counts, True,
                             mc.max_examples_per_batch)
    return scores.to(torch.float64)


def _area(curves: Tensor, return_curves: bool) -> Tensor | tuple[Tensor, Tensor]:
    area = torch.trapezoid(curves, dx=1.0, dim=1) if curves.shape[1] > 1 else \
        torch.zeros(curves.shape[0], dtype=curves.dtype, device=curves.device)
    return (area, curves) if return_curves else area


def pixel_flipping(
    forward_func: Callable,
    inputs: Tensor,
    attributions: Any,
    target: Any = None,
    *,
    additional_forward_args: Any = None,
    features_in_step: int = 1,
    perturb_baseline: Any = "black",
    abs: bool = False,
    softmax: bool = True,
    return_curves: bool = False,
    explain_kwargs: dict | None = None,
    max_examples_per_batch: int | None = None,
    seed: int | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """Area under the score curve while the most relevant features are removed (Bach et al., 2015).

    Features (the attributions' entries: one per pixel for ``(N, 1, H, W)``
    attributions of an image) are sorted by decreasing attribution and
    replaced by ``perturb_baseline``, ``features_in_step`` more at each of
    ``ceil(F / features_in_step)`` steps. The curve holds the target score
    after each step (not before the first, as in Quantus); the score is its
    trapezoidal area with unit spacing. **Lower is better.** Cost: one
    forward of the batch per step, grouped into chunks. ``softmax`` (Quantus'
    default) scores probabilities, as for every metric here.

    Quantus broadcasts attributions to the input first, so its steps count
    input elements: with one value per pixel of a C-channel image, Quantus'
    ``features_in_step=k*C`` is ours ``k``. The last step may be smaller (Quantus
    requires ``features_in_step`` to divide the image size).

    Example:
        >>> import torch
        >>> from attribuo.metrics.flipping import pixel_flipping
        >>> model = torch.nn.Linear(4, 2)
        >>> x = torch.randn(3, 4)
        >>> pixel_flipping(model, x, x * model.weight[0].detach(), target=0).shape
        torch.Size([3])
    """
    name = "pixel_flipping"
    mc, scores = prepare(name, forward_func, inputs, attributions, target, additional_forward_args,
                         explain_kwargs, max_examples_per_batch, abs, softmax)
    step = positive_int(features_in_step, "features_in_step")
    gen = generator(seed, mc.x.device)
    n, f = scores.shape
    ranks = order_ranks(scores, "morf", gen, name)
    elem_ranks = mc.spread(ranks.view(n, *mc.grid))
    n_steps = -(-f // step)
    counts = (torch.arange(1, n_steps + 1) * step).clamp(max=f)
    curves = removal_curve(mc, elem_ranks, counts, perturb_baseline, gen)
    return _area(curves, check_flag(return_curves, name, "return_curves"))


def _patch_ranks(
    mc: MetricCall, scores: Tensor, patch_size: int, order: str, gen: torch.Generator | None, name: str
) -> tuple[Tensor, int]:
    """Rank of each element's patch (x's shape) and the number of patches.

    Patches are ``patch_size`` squares over the last two dims (one row for
    ``(N, C, T)`` series) of an input padded evenly on both sides to a
    multiple of ``patch_size``; a patch's relevance is its attributions' sum.
    """
    x = mc.x
    if x.dim() not in (3, 4):
        raise ArgumentValueError(
            f"{name}: `inputs` must be images (N, C, H, W) or series (N, C, T), got shape {tuple(x.shape)}"
        )
    p = positive_int(patch_size, "patch_size")
    spatial = (1, x.shape[-1]) if x.dim() == 3 else tuple(x.shape[-2:])
    grid_spatial = (1, mc.grid[-1]) if x.dim() == 3 else tuple(mc.grid[-2:])
    if grid_spatial != spatial:
        raise ArgumentValueError(
            f"{name}: `attributions` of shape {tuple(mc.attributions.shape)} must cover every position of "
            f"`inputs` {tuple(x.shape)} (size 1 only in the channel dim)"
        )
    if p > max(spatial):
        raise ArgumentValueError(f"{name}: `patch_size` {p} is larger than the input {spatial}")
    # the patch of each position after padding by ((p - s % p) % p) split floor/ceil, as Quantus pads
    ids = []
    for s in spatial:
        before = ((p - s % p) % p) // 2
        ids.append((torch.arange(s, device=x.device) + before) // p)
    per_row = -(-(spatial[1]) // p)
    patch = ids[0][:, None] * per_row + ids[1][None, :]
    n_patches = int(patch.max()) + 1
    n = x.shape[0]
    channels = mc.n_features // (spatial[0] * spatial[1])
    sums = torch.zeros(n, n_patches, dtype=torch.float64, device=x.device)
    sums.index_add_(1, patch.reshape(-1).repeat(channels), scores)
    ranks = order_ranks(sums, order, gen, name)
    elem = ranks[:, patch.reshape(-1)].view(n, 1, *spatial)
    if x.dim() == 3:
        elem = elem.squeeze(2)
    return elem.expand(x.shape), n_patches


def _patch_curves(
    name: str, forward_func: Callable, inputs: Any, attributions: Any, target: Any,
    additional_forward_args: Any, patch_size: int, order: str, limit: int | None,
    perturb_baseline: Any, abs: bool, softmax: bool, explain_kwargs: dict | None,
    max_examples_per_batch: int | None, seed: int | None,
) -> Tensor:
    """Scores after each patch is removed (all of them: ``limit=None``), else the drops after
    each of the first ``limit``."""
    mc, scores = prepare(name, forward_func, inputs, attributions, target, additional_forward_args,
                         explain_kwargs, max_examples_per_batch, abs, softmax)
    gen = generator(seed, mc.x.device)
    elem_ranks, n_patches = _patch_ranks(mc, scores, patch_size, order, gen, name)
    counts = torch.arange(1, (n_patches if limit is None else min(limit, n_patches)) + 1)
    curves = removal_curve(mc, elem_ranks, counts, perturb_baseline, gen)
    # region perturbation records the drop from the unperturbed score
    return curves if limit is None else mc.scores()[:, None] - curves


def region_perturbation(
    forward_func: Callable,
    inputs: Tensor,
    attributions: Any,
    target: Any = None,
    *,
    additional_forward_args: Any = None,
    patch_size: int = 8,
    order: str = "morf",
    regions_evaluation: int = 100,
    perturb_baseline: Any = "black",
    abs: bool = False,
    softmax: bool = True,
    return_curves: bool = False,
    explain_kwargs: dict | None = None,
    max_examples_per_batch: int | None = None,
    seed: int | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """Area under the score drop while square regions are removed by relevance (Samek et al., 2015).

    The input is cut into non-overlapping ``patch_size`` squares (padded
    evenly to a multiple, as Quantus does); patches are taken in ``order``
    ("morf": most relevant first by summed attribution, "lerf": least, or
    "random") and replaced by ``perturb_baseline`` one per step, for the
    first ``regions_evaluation`` of them. The curve is ``f(x) - f(x_k)``
    after step ``k``; the score its trapezoidal area with unit spacing (the
    AOPC of Samek et al. times the number of steps). **Higher is better** for
    "morf" (the score falls fast), lower for "lerf". Cost: one forward of
    the batch per step plus one, grouped into chunks.

    Example:
        >>> import torch
        >>> from attribuo.metrics.flipping import region_perturbation
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2))
        >>> x = torch.randn(2, 1, 4, 4)
        >>> region_perturbation(model, x, x.abs(), target=1, patch_size=2).shape
        torch.Size([2])
    """
    limit = positive_int(regions_evaluation, "regions_evaluation")
    curves = _patch_curves("region_perturbation", forward_func, inputs, attributions, target,
                           additional_forward_args, patch_size, order, limit, perturb_baseline, abs,
                           softmax, explain_kwargs, max_examples_per_batch, seed)
    return _area(curves, check_flag(return_curves, "region_perturbation", "return_curves"))


def selectivity(
    forward_func: Callable,
    inputs: Tensor,
    attributions: Any,
    target: Any = None,
    *,
    additional_forward_args: Any = None,
    patch_size: int = 8,
    perturb_baseline: Any = "black",
    abs: bool = False,
    softmax: bool = True,
    return_curves: bool = False,
    explain_kwargs: dict | None = None,
    max_examples_per_batch: int | None = None,
    seed: int | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """Area under the score curve as every patch goes, most relevant first (Montavon et al., 2018).

    Patches as in :func:`region_perturbation`, all of them, most relevant
    first; the curve is the target score ``f(x_k)`` after each removal and
    the score its trapezoidal area with unit spacing. **Lower is better.**
    Cost: one forward of the batch per patch, grouped into chunks.

    Example:
        >>> import torch
        >>> from attribuo.metrics.flipping import selectivity
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2))
        >>> x = torch.randn(2, 1, 4, 4)
        >>> area, curves = selectivity(model, x, x.abs(), target=0, patch_size=2, return_curves=True)
        >>> curves.shape
        torch.Size([2, 4])
    """
    curves = _patch_curves("selectivity", forward_func, inputs, attributions, target,
                           additional_forward_args, patch_size, "morf", None, perturb_baseline, abs,
                           softmax, explain_kwargs, max_examples_per_batch, seed)
    return _area(curves, check_flag(return_curves, "selectivity", "return_curves"))


def superpixels(inputs: Tensor, segmentation_method: str = "slic") -> Tensor:
    """``(N, H, W)`` superpixel labels 0..L-1 of images ``(N, C, H, W)``, computed as Quantus does.

    scikit-image's ``slic(image, start_label=0)`` or ``felzenszwalb(image)``
    with default settings, on each image as a float64 (H, W, C) array (on
    the CPU: scikit-image has no batched or GPU form).

    Example:
        >>> import torch
        >>> from attribuo.metrics.flipping import superpixels
        >>> image = torch.zeros(1, 1, 8, 8)
        >>> image[..., 4:] = 1.0
        >>> superpixels(image, "felzenszwalb")[0, 0]
        tensor([0, 0, 0, 0, 1, 1, 1, 1])
    """
    if segmentation_method not in ("slic", "felzenszwalb"):
        raise ArgumentValueError(
            f"`segmentation_method` must be 'slic' or 'felzenszwalb', got {segmentation_method!r}"
        )
    from skimage.segmentation import felzenszwalb, slic

    images = np.moveaxis(inputs.detach().cpu().double().numpy(), 1, -1)
    labels = [slic(img, start_label=0) if segmentation_method == "slic" else felzenszwalb(img)
              for img in images]
    return torch.as_tensor(np.stack(labels), device=inputs.device)


def _segment_labels(mc: MetricCall, segments: Tensor | None, method: str, name: str) -> tuple[Tensor, Tensor]:
    """``(N, H*W)`` labels made contiguous per example (0..L_n-1) and ``(N,)`` counts L_n."""
    x = mc.x
    if x.dim() != 4:
        raise ArgumentValueError(f"{name}: `inputs` must be images (N, C, H, W), got shape {tuple(x.shape)}")
    n, _, h, w = x.shape
    if segments is None:
        segments = superpixels(x, method)
    elif not isinstance(segments, Tensor) or segments.is_floating_point() or segments.is_complex():
        raise ArgumentTypeError(f"{name}: `segments` must be an integer tensor (N, H, W), got "
                                f"{getattr(segments, 'dtype', type(segments).__name__)}")
    if segments.dim() == 4 and segments.shape[1] == 1:
        segments = segments[:, 0]
    if tuple(segments.shape) != (n, h, w):
        raise ArgumentValueError(f"{name}: `segments` must have shape {(n, h, w)}, "
                                 f"got {tuple(segments.shape)}")
    flat = segments.reshape(n, -1).to(device=x.device, dtype=torch.long)
    # per-example contiguous labels in label order (Quantus' labels already are)
    offset = flat - flat.amin(1, keepdim=True)
    shifted = offset + torch.arange(n, device=x.device)[:, None] * (int(offset.max()) + 1)
    _, inverse = torch.unique(shifted, return_inverse=True)
    first = inverse.amin(1, keepdim=True)
    labels = inverse - first
    count = labels.amax(1) + 1
    if bool((count < 2).any()):
        bad = int(torch.nonzero(count < 2)[0, 0])
        raise ArgumentValueError(f"{name}: example {bad} has a single segment; IROF needs at least two")
    return labels, count


def irof(
    forward_func: Callable,
    inputs: Tensor,
    attributions: Any,
    target: Any = None,
    *,
    additional_forward_args: Any = None,
    segmentation_method: str = "slic",
    segments: Tensor | None = None,
    perturb_baseline: Any = "mean",
    abs: bool = False,
    softmax: bool = True,
    return_curves: bool = False,
    explain_kwargs: dict | None = None,
    max_examples_per_batch: int | None = None,
    seed: int | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """Iterative removal of features: area over the relative score curve (Rieger & Hansen, 2020).

    Each image is cut into superpixels (``segments`` ``(N, H, W)``, or
    scikit-image's ``segmentation_method`` "slic"/"felzenszwalb" as Quantus
    calls it); superpixels are removed one per step in order of decreasing
    mean attribution, replaced by ``perturb_baseline``. The curve is
    ``f(x_k) / f(x)`` after step ``k = 1..L`` and the score ``L`` minus its
    trapezoidal area (unit spacing). **Higher is better.** The ratio wants
    positive scores (probabilities: ``softmax=True``). Cost: one forward per
    step (as many as the most segmented image has) plus one, in chunks.

    Quantus pads the curves of images with fewer segments than the batch's
    largest with zeros before taking the area, subtracting another half of
    their last value; ours stop at each image's own ``L`` (``return_curves``
    gives NaN past it). Quantus' "black"/"white"/"mean" are whole-batch values.
    Quantus' IROF draws "uniform" values per element: ours "random".

    Example:
        >>> import torch
        >>> from attribuo.metrics.flipping import irof
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2))
        >>> x = torch.rand(2, 1, 4, 4)
        >>> segments = torch.arange(4).repeat_interleave(4).view(1, 4, 4).expand(2, 4, 4)
        >>> irof(model, x, x, target=0, segments=segments).shape
        torch.Size([2])
    """
    name = "irof"
    mc, scores = prepare(name, forward_func, inputs, attributions, target, additional_forward_args,
                         explain_kwargs, max_examples_per_batch, abs, softmax)
    gen = generator(seed, mc.x.device)
    labels, count = _segment_labels(mc, segments, segmentation_method, name)
    n, c, h, w = mc.x.shape
    if tuple(mc.grid[-2:]) != (h, w):
        raise ArgumentValueError(f"{name}: `attributions` of shape {tuple(mc.attributions.shape)} must cover "
                                 f"every pixel of `inputs` {tuple(mc.x.shape)}")
    most = int(count.max())
    channels = mc.n_features // (h * w)
    slots = (labels + torch.arange(n, device=labels.device)[:, None] * most).repeat(1, channels).reshape(-1)
    flat = scores.reshape(-1)
    sums = flat.new_zeros(n * most).index_add_(0, slots, flat)
    sizes = flat.new_zeros(n * most).index_add_(0, slots, torch.ones_like(flat))
    means = torch.where(sizes > 0, sums / sizes.clamp(min=1), -torch.inf).view(n, most)  # absent: last
    ranks = order_ranks(means, "morf", gen, name)
    elem_ranks = ranks.gather(1, labels).view(n, 1, h, w).expand(mc.x.shape)
    steps = torch.arange(1, most + 1)
    ratios = removal_curve(mc, elem_ranks, steps, perturb_baseline, gen)
    ratios = ratios / mc.scores()[:, None]
    valid = steps.to(ratios.device)[None, :] <= count[:, None]
    curves = torch.where(valid, ratios, torch.nan)
    kept = torch.where(valid, ratios, 0.0)
    last = kept.gather(1, (count - 1)[:, None])[:, 0]
    area = kept.sum(1) - (kept[:, 0] + last) / 2
    aoc = count.to(torch.float64) - area
    return (aoc, curves) if check_flag(return_curves, name, "return_curves") else aoc
