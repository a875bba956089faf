"""XRAI: integrated-gradients attributions ranked by image region.

Kapishnikov, Bolukbasi, Viegas and Terry, "XRAI: Better Attributions
Through Regions" (ICCV 2019). The image is over-segmented at several scales
(Felzenszwalb's graph-based segmentation, each segment dilated a little, so
the regions of different scales overlap); pixel attributions come from
integrated gradients with a black and a white baseline, averaged, summed
over the channels. Starting from nothing selected, XRAI repeatedly adds the
region of highest *attribution density* -- the attribution summed over its
pixels not selected yet, divided by their count -- until the image is
covered (or ``area_threshold`` of it). Each pixel's value in the result is
the density of the region that added it, so high values mark the regions
added first (only roughly in order: a region's density can rise once
low-valued pixels it shares with an earlier region are taken).

Regions are the rows of a ``regions x pixels`` boolean matrix; after each
pick the sums and counts of every region are updated by the newly covered
pixels alone, so the greedy pass costs about one ``regions x pixels`` sweep
in all, one example at a time.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..._engine.baselines import full_baselines
from ..._engine.call import Call, parse_call
from ..._engine.errors import ArgumentTypeError, ArgumentValueError
from ..._engine.paths import integrate_path_gradients, path_weights
from ..._engine.threads import serial_threads
from ..base import GradientAttribution

TensorOrTuple = Tensor | tuple[Tensor, ...]

# The paper's segmentation (Felzenszwalb at several scales of a 224 x 224 copy of the
# image rescaled to [-1, 1], then each segment dilated).
SCALES = (50, 100, 150, 250, 500, 1200)
SIGMA = 0.8
MIN_SIZE = 150
SEGMENTATION_SIZE = 224
# without scikit-image: square cells, this many a side of the 224 x 224 copy, per level
GRID_LEVELS = (4, 7, 14, 28)
# _SMALL_OPS: dilation and the greedy pass run many small ops (one per offset, a few per
# step), on one CPU thread: on a busy machine every op spread over several threads waits
# for all of them to be scheduled (measured here: 2 s instead of 0.04 s for one dilation).


# ------------------------------------------------------------------ regions
def label_regions(labels: Tensor, dilation: int = 0) -> Tensor:
    """``[regions, H * W]`` membership of each label of ``labels`` ``[H, W]``, each grown by ``dilation``.

    A pixel belongs to a dilated region when a pixel of the region lies
    within Euclidean distance ``dilation`` of it. Labels with no pixel give
    no row.

    Example:
        >>> label_regions(torch.tensor([[0, 0, 1]])).int()
        tensor([[1, 1, 0],
                [0, 0, 1]], dtype=torch.int32)
        >>> label_regions(torch.tensor([[0, 0, 1]]), dilation=1).int()
        tensor([[1, 1, 1],
                [0, 1, 1]], dtype=torch.int32)
    """
    with serial_threads(labels.device.type == "cpu"):  # see _SMALL_OPS
        return _label_regions(labels, int(dilation))


def _label_regions(labels: Tensor, r: int) -> Tensor:
    h, w = labels.shape
    ids = torch.unique(labels)
    dense = torch.searchsorted(ids, labels.reshape(-1)).reshape(h, w)  # ids as 0..R-1
    member = torch.zeros((ids.numel(), h * w), dtype=torch.bool, device=labels.device)
    pixel = torch.arange(h * w, device=labels.device).reshape(h, w)
    for oy in range(-r, r + 1):
        for ox in range(-r, r + 1):
            if oy * oy + ox * ox > r * r:
                continue
            # pixel (i, j) joins the region of its neighbour (i + oy, j + ox)
            i0, i1, j0, j1 = max(0, -oy), min(h, h - oy), max(0, -ox), min(w, w - ox)
            if i0 >= i1 or j0 >= j1:
                continue
            near = dense[i0 + oy:i1 + oy, j0 + ox:j1 + ox].reshape(-1)
            member[near, pixel[i0:i1, j0:j1].reshape(-1)] = True
    return member


def _segmentation_copy(image: Tensor) -> Tensor:
    """``image`` ``[C, H, W]`` at the segmentation size, values rescaled to [-1, 1], as ``[S, S, C]``."""
    size = (SEGMENTATION_SIZE, SEGMENTATION_SIZE)
    img = image.detach().to(torch.float64).cpu()
    if tuple(img.shape[1:]) != size:
        img = F.interpolate(img[None], size=size, mode="bilinear", align_corners=False,
                            antialias=img.shape[1] > size[0] or img.shape[2] > size[1])[0]
    lo, hi = img.min(), img.max()
    img = (img - lo) / (hi - lo) * 2 - 1 if hi > lo else torch.zeros_like(img)
    return img.permute(1, 2, 0)


def image_regions(image: Tensor, scales: Sequence[float] = SCALES, dilation: int = 5) -> Tensor:
    """The paper's over-segmentation of one ``[C, H, W]`` image: ``[regions, H * W]`` membership.

    Felzenszwalb segmentation (``scikit-image``) of a 224 x 224 copy rescaled
    to [-1, 1], at each of ``scales`` (sigma 0.8, minimum size 150), every
    segment dilated by ``dilation`` pixels of that copy, then mapped back to
    the image's pixels (nearest). Without scikit-image the levels are square
    grids of 4, 7, 14 and 28 cells a side (not dilated).

    Example:
        >>> image_regions(torch.rand(3, 16, 16), scales=(100,)).shape[1]
        256
    """
    copy = _segmentation_copy(image)
    try:
        from skimage.segmentation import felzenszwalb
    except ImportError:  # the optional dependency is missing: a superpixel grid instead
        felzenszwalb = None
    levels = []
    if felzenszwalb is not None:
        array = copy.numpy()
        for scale in scales:
            labels = felzenszwalb(array, scale=float(scale), sigma=SIGMA, min_size=MIN_SIZE, channel_axis=-1)
            levels.append(label_regions(torch.from_numpy(labels).long(), dilation))
    else:
        side = torch.arange(SEGMENTATION_SIZE)
        for cells in GRID_LEVELS:
            row = side * cells // SEGMENTATION_SIZE
            levels.append(label_regions(row[:, None] * cells + row[None, :]))
    regions = torch.cat(levels)
    # back to the image's own pixels: each takes the membership of its nearest copy pixel
    h, w = image.shape[1:]
    ys = (2 * torch.arange(h) + 1) * SEGMENTATION_SIZE // (2 * h)  # the copy pixel under each centre
    xs = (2 * torch.arange(w) + 1) * SEGMENTATION_SIZE // (2 * w)
    regions = regions[:, (ys[:, None] * SEGMENTATION_SIZE + xs[None, :]).reshape(-1)]
    return regions[regions.any(1)].to(image.device)


# ------------------------------------------------------------------- greedy
def rank_regions(attributions: Tensor, regions: Tensor, area_threshold: float = 1.0) -> Tensor:
    """XRAI's greedy ranking: each pixel's value is the density of the region that added it.

    ``attributions`` is one value per pixel ``[P]``, ``regions`` a boolean
    ``[R, P]`` membership matrix (regions may overlap). At each step the
    region with the highest mean attribution over its pixels not yet
    selected is added (the first such region on ties); regions with no new
    pixel are passed over. The loop stops once ``area_threshold`` of the
    pixels are selected or no region adds any; pixels left over take the
    lowest value given (0 when none was).

    Example:
        >>> a = torch.tensor([0.0, 3.0, 1.0, 2.0])
        >>> regions = torch.tensor([[1, 1, 0, 0], [0, 1, 1, 1], [0, 0, 1, 1]], dtype=torch.bool)
        >>> rank_regions(a, regions)  # first pixels 1-3 (density 2), then pixel 0 alone (0)
        tensor([0., 2., 2., 2.], dtype=torch.float64)
    """
    with serial_threads(attributions.device.type == "cpu"):  # see _SMALL_OPS
        return _rank_regions(attributions, regions, area_threshold)


def _rank_regions(attributions: Tensor, regions: Tensor, area_threshold: float) -> Tensor:
    a = attributions.reshape(-1).to(torch.float64)
    total = a.numel()
    regions = regions.to(a.device)
    sums = regions.to(torch.float64) @ a
    counts = regions.sum(1)
    covered = torch.zeros(total, dtype=torch.bool, device=a.device)
    out = torch.full((total,), math.nan, dtype=torch.float64, device=a.device)
    done, goal = 0, area_threshold * total
    minus_inf = torch.tensor(-math.inf, dtype=torch.float64, device=a.device)
    while done < goal:
        gain = torch.where(counts > 0, sums / counts.clamp(min=1), minus_inf)
        best = int(torch.argmax(gain))  # the first maximum: ties go to the earlier region
        if counts[best] == 0:
            break
        new = torch.nonzero(regions[best] & ~covered).reshape(-1)
        out[new] = gain[best]
        covered[new] = True
        done += new.numel()
        # only the newly covered pixels change any region's sum and count
        touched = regions[:, new]
        counts -= touched.sum(1)
        sums -= touched.to(torch.float64) @ a[new]
    if done < total:
        given = out[covered]
        out[~covered] = given.min() if given.numel() else 0.0
    return out


# --------------------------------------------------------------- attributions
def _baseline_list(baselines: Any, x: Tensor) -> list[Tensor]:
    """The baselines to average: the paper's black and white (each image's min and max) by default."""
    if baselines is None:
        dims = tuple(range(1, x.dim()))
        return [x.detach().amin(dims, keepdim=True).expand_as(x), x.detach().amax(dims, keepdim=True).expand_as(x)]
    items = list(baselines) if isinstance(baselines, list) else [baselines]
    if not items:
        raise ArgumentValueError("`baselines` is an empty list; give at least one baseline")
    out = []
    for i, b in enumerate(items):
        name = f"baselines[{i}]" if isinstance(baselines, list) else "baselines"
        if isinstance(b, tuple):
            if len(b) != 1:
                raise ArgumentValueError(f"`{name}` has {len(b)} entries but XRAI has one input")
            b = b[0]
        out.append(full_baselines((x,), b, name)[0])
    return out


def averaged_integrated_gradients(
    forward_func: Callable,
    call: Call,
    baselines: list[Tensor],
    n_steps: int = 50,
    method: str = "gausslegendre",
    internal_batch_size: int | None = None,
) -> Tensor:
    """Integrated gradients of ``call`` from each of ``baselines``, averaged (one path run for all)."""
    x = call.inputs[0]
    k = len(baselines)
    alphas, weights = path_weights(method, n_steps)
    starts = torch.cat([b.to(x.dtype) for b in baselines])  # baseline-major, as expanded calls stack
    paths = call.expanded(k)
    grads = integrate_path_gradients(forward_func, paths, (starts,), alphas, weights, internal_batch_size)[0]
    return (grads * (paths.inputs[0] - starts)).reshape((k,) + tuple(x.shape)).mean(0)


def _pixel_attributions(attributions: Any, x: Tensor) -> Tensor:
    """Given attributions as one value per pixel ``[N, H, W]`` (summed over channels)."""
    if not isinstance(attributions, Tensor):
        raise ArgumentTypeError(f"`attributions` must be a tensor, got {type(attributions).__name__}")
    n, _, h, w = x.shape
    if attributions.shape == x.shape:
        return attributions.sum(1)
    if tuple(attributions.shape) in ((n, 1, h, w), (n, h, w)):
        return attributions.reshape(n, h, w)
    raise ArgumentValueError(
        f"`attributions` has shape {tuple(attributions.shape)}; expected the inputs' shape "
        f"{tuple(x.shape)}, ({n}, 1, {h}, {w}) or ({n}, {h}, {w})"
    )


def _segment_levels(segments: Any, x: Tensor) -> list[Tensor]:
    """User segmentations as ``[N, H, W]`` label maps, one per level."""
    items = list(segments) if isinstance(segments, (list, tuple)) else [segments]
    if not items:
        raise ArgumentValueError("`segments` is empty; give at least one label map")
    n, _, h, w = x.shape
    levels = []
    for i, s in enumerate(items):
        name = f"segments[{i}]" if isinstance(segments, (list, tuple)) else "segments"
        if not isinstance(s, Tensor):
            raise ArgumentTypeError(f"`{name}` must be a tensor of integer region ids, got {type(s).__name__}")
        if s.is_floating_point() or s.is_complex():
            raise ArgumentTypeError(f"`{name}` must hold integer region ids, got {s.dtype}")
        shape = tuple(s.shape)
        if shape not in ((h, w), (1, h, w), (n, h, w), (1, 1, h, w), (n, 1, h, w)):
            raise ArgumentValueError(
                f"`{name}` has shape {shape}; expected ({h}, {w}), (1 or {n}, {h}, {w}) or (1 or {n}, 1, {h}, {w})"
            )
        levels.append(s.reshape(-1, h, w).expand(n, h, w).long())
    return levels


class XRAI(GradientAttribution):
    """XRAI (Kapishnikov et al., 2019): integrated gradients ranked by over-segmented region.

    Computes integrated gradients from a black and a white baseline (the
    darkest and brightest value of each image; ``baselines`` may give one
    baseline or a list to average), sums them over the channels, and adds
    image regions greedily by attribution density (see the module notes).
    The result has the inputs' shape; a pixel's value (equal over its
    channels) is the density of the region that added it, so the top
    values mark the most attributed regions.

    Regions: the paper's Felzenszwalb segmentation at ``scales`` (needs
    scikit-image; a multi-scale square grid without it), each segment
    dilated by ``dilation`` pixels; or ``segments``, your own label maps
    (one or a list of levels; ids of a level are its regions, used as given).
    ``attributions`` skips the gradients and ranks the given attributions.

    Cost: ``n_steps`` gradient evaluations of a batch twice the inputs'
    (one per baseline; ``internal_batch_size`` bounds a chunk), then per
    example one segmentation and one greedy pass over ``regions x pixels``.
    One ``[N, C, H, W]`` image tensor (or a 1-tuple of it) is explained.

    Example:
        >>> import torch
        >>> from attribuo.attr.gradient.xrai import XRAI
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 2))
        >>> x = torch.rand(1, 3, 8, 8)
        >>> halves = (torch.arange(8) >= 4).long().expand(8, 8)  # two regions: left and right
        >>> ranked = XRAI(model).attribute(x, target=1, segments=halves, n_steps=8)
        >>> ranked.shape, len(torch.unique(ranked))
        (torch.Size([1, 3, 8, 8]), 2)
    """

    def attribute(
        self,
        inputs: TensorOrTuple,
        baselines: Any = None,
        target: Any = None,
        additional_forward_args: Any = None,
        n_steps: int = 50,
        method: str = "gausslegendre",
        internal_batch_size: int | None = None,
        attributions: Tensor | None = None,
        segments: Tensor | Sequence[Tensor] | None = None,
        area_threshold: float = 1.0,
        scales: Sequence[float] = SCALES,
        dilation: int = 5,
    ) -> TensorOrTuple:
        """XRAI's ranked region map for ``target``, in the form and shape of ``inputs``."""
        call = parse_call(inputs, target, additional_forward_args, floating=True)
        if len(call.inputs) != 1:
            raise ArgumentValueError(f"XRAI explains one image tensor; `inputs` has {len(call.inputs)}")
        x = call.inputs[0]
        if x.dim() != 4:
            raise ArgumentValueError(f"`inputs` has shape {tuple(x.shape)}; XRAI needs [N, C, H, W] images")
        if isinstance(area_threshold, bool) or not isinstance(area_threshold, (int, float)) \
                or not 0 < area_threshold <= 1:
            raise ArgumentValueError(f"`area_threshold` must be a number in (0, 1], got {area_threshold!r}")
        if isinstance(dilation, bool) or not isinstance(dilation, int) or dilation < 0:
            raise ArgumentValueError(f"`dilation` must be an int >= 0, got {dilation!r}")
        if segments is None and (isinstance(scales, (str, bytes)) or not len(scales)
                                 or any(isinstance(s, bool) or not isinstance(s, (int, float)) or s <= 0
                                        for s in scales)):
            raise ArgumentValueError(f"`scales` must be a non-empty sequence of positive numbers, got {scales!r}")
        levels = None if segments is None else _segment_levels(segments, x)
        if attributions is None:
            pixel = averaged_integrated_gradients(
                self.forward_func, call, _baseline_list(baselines, x), n_steps, method, internal_batch_size
            ).sum(1)
        else:
            pixel = _pixel_attributions(attributions, x)
        pixel = pixel.detach()
        maps = []
        for i in range(call.batch):
            if levels is None:
                regions = image_regions(x[i], scales, dilation)
            else:
                regions = torch.cat([label_regions(level[i].to(x.device)) for level in levels])
            maps.append(rank_regions(pixel[i], regions, float(area_threshold)))
        if not maps:  # an empty batch
            return call.result((torch.zeros_like(x),))
        ranked = torch.stack(maps).to(x.dtype).reshape(call.batch, 1, *x.shape[2:])
        return call.result((ranked.expand_as(x).contiguous(),))
