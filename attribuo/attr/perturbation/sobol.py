"""SobolAttribution: total-order Sobol indices of image regions (Fel et al., 2021)."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.quasirandom import SobolEngine

from ..._engine.call import Call, parse_call
from ..._engine.errors import ArgumentTypeError, ArgumentValueError
from ..._engine.incremental import incremental_evaluation
from ..._engine.inputs import positive_int
from ..._engine.perturb import evaluate_perturbations, initial_output, perturbation_baselines
from ..base import PerturbationAttribution

TensorOrTuple = Tensor | tuple[Tensor, ...]

PERTURBATIONS = ("inpainting", "blurring", "amplitude")
BLUR_KERNEL = 10  # the reference implementation's box blur (cv2.blur with a 10 x 10 kernel)
AMPLITUDE_SIGMA = 1.0
VARIANCE_FLOOR = 1e-12  # a constant output has no variance to share: indices 0, not NaN


def sobol_design(
    dimension: int, nb_design: int, seed: int | None = None, dtype: torch.dtype = torch.float64
) -> Tensor:
    """The replicated design ``[nb_design * (dimension + 2), dimension]`` of the Jansen estimator.

    ``nb_design`` points of a Sobol sequence in ``2 * dimension`` dims give
    the matrices ``A`` (first half) and ``B`` (second half); ``C_i`` is
    ``A`` with column ``i`` taken from ``B``. Rows are ``A``, ``B``,
    ``C_0``, ..., ``C_{d-1}``. ``seed=None`` is the plain sequence (the
    first point is all zeros, as scipy's ``qmc.Sobol(scramble=False)``);
    an int scrambles it (Owen scrambling) with that seed.

    Example:
        >>> sobol_design(2, 64).shape  # A, B, C_0, C_1: 64 rows each
        torch.Size([256, 2])
    """
    engine = SobolEngine(2 * dimension, scramble=seed is not None, seed=seed)
    points = engine.draw(nb_design, dtype=torch.float64)
    a, b = points[:, :dimension], points[:, dimension:]
    same = (a == b).all(0)
    if bool(same.any()):  # the plain sequence's first points repeat across some dims
        warnings.warn(
            f"with nb_design={nb_design} the Sobol points of {int(same.sum())} of {dimension} "
            "variables are the same in A and B, so their indices are 0; use a larger "
            "nb_design or a seed",
            stacklevel=3,
        )
    c = a.unsqueeze(0).repeat(dimension, 1, 1)  # [d, nb, d]
    cols = torch.arange(dimension)
    c[cols, :, cols] = b.T  # C_i[:, i] = B[:, i]
    return torch.cat([a, b, c.reshape(dimension * nb_design, dimension)]).to(dtype)


def jansen_total_indices(outputs: Tensor, nb_design: int) -> Tensor:
    """Total-order Sobol indices ``[..., d]`` from outputs ``[..., nb_design * (d + 2)]``.

    Jansen's (1999) estimator over the design of :func:`sobol_design`:
    ``ST_i = sum_j (f(A_j) - f(C_i,j))^2 / (2 n Var f(A))`` with ``n =
    nb_design`` and the unbiased variance of ``f(A)``.

    Example:
        >>> design = sobol_design(2, 64)
        >>> st = jansen_total_indices(design[:, 0] + 2 * design[:, 1], 64)
        >>> [round(v, 1) for v in st.tolist()]  # 1 : 4, as the variances of x0 and 2 x1
        [0.2, 0.8]
    """
    total = outputs.shape[-1]
    dimension = total // nb_design - 2
    if dimension < 1 or total != nb_design * (dimension + 2):
        raise ArgumentValueError(
            f"`outputs` must hold nb_design * (d + 2) values per row; got {total} for nb_design={nb_design}"
        )
    values = outputs.to(torch.float64)
    f_a = values[..., :nb_design]
    f_c = values[..., 2 * nb_design:].reshape(values.shape[:-1] + (dimension, nb_design))
    variance = f_a.var(dim=-1).clamp_min(VARIANCE_FLOOR)
    return (f_a.unsqueeze(-2) - f_c).square().sum(-1) / (2 * nb_design * variance.unsqueeze(-1))


def _box_blur(x: Tensor, kernel: int) -> Tensor:
    """cv2.blur's box filter: mean over a ``kernel`` square anchored at its centre, mirrored edges."""
    before, after = kernel // 2, kernel - 1 - kernel // 2
    if min(x.shape[-2:]) <= max(before, after):  # too small to mirror: replicate the edges
        padded = F.pad(x, (before, after, before, after), mode="replicate")
    else:
        padded = F.pad(x, (before, after, before, after), mode="reflect")
    return F.avg_pool2d(padded, kernel, stride=1)


def _perturbation(name: Any, x: Tensor, baseline: Tensor) -> Callable[[Tensor], Tensor]:
    """``apply(masks [P, 1, H, W]) -> [P, N, C, H, W]`` for the paper's perturbation functions."""
    if not isinstance(name, str):
        raise ArgumentTypeError(f"`perturbation` must be one of {PERTURBATIONS}, got {type(name).__name__}")
    if name not in PERTURBATIONS:
        raise ArgumentValueError(f"`perturbation` must be one of {PERTURBATIONS}, got {name!r}")
    if name == "amplitude":  # the reference's amplitude operator: x (M - 1/2) sigma
        return lambda m: x.unsqueeze(0) * ((m.unsqueeze(1) - 0.5) * AMPLITUDE_SIGMA)
    # inpainting fades towards the baseline, blurring towards a blurred copy
    toward = baseline if name == "inpainting" else _box_blur(x, BLUR_KERNEL)
    gap = x - toward
    return lambda m: torch.addcmul(toward.unsqueeze(0), gap.unsqueeze(0), m.unsqueeze(1))


def sobol_indices(
    forward_func: Callable,
    call: Call,
    grid_size: int = 8,
    nb_design: int = 32,
    perturbation: str = "inpainting",
    baselines: Tensor | None = None,
    batch_size: int | None = None,
    seed: int | None = None,
    desc: str = "Sobol",
) -> Tensor:
    """Total-order Sobol indices ``[N, grid_size, grid_size]`` per grid cell (behind :class:`SobolAttribution`).

    ``call.inputs[0]`` is ``[N, C, H, W]``; ``baselines`` (its shape) is
    what inpainting fades to. Every mask of :func:`sobol_design` (one value
    per cell, nearest-upsampled to ``H x W``) perturbs every example; the
    masks go through the perturbation loop ``batch_size`` at a time (each a
    copy of the batch; None: the memory budget decides).
    """
    x = call.inputs[0]
    height, width = x.shape[-2:]
    cells = grid_size * grid_size
    design = sobol_design(cells, nb_design, seed, x.dtype if x.is_floating_point() else torch.float32)
    masks = design.to(x.device).reshape(-1, 1, grid_size, grid_size)
    apply = _perturbation(perturbation, x, baselines if baselines is not None else torch.zeros_like(x))
    total = masks.shape[0]

    def make(start: int, stop: int) -> tuple[tuple[Tensor, ...], None]:
        # half-pixel nearest upsampling (as tf.image.resize): each pixel follows one cell
        up = F.interpolate(masks[start:stop], size=(height, width), mode="nearest-exact")
        return (apply(up).reshape((stop - start) * x.shape[0], *x.shape[1:]),), None

    initial = initial_output(forward_func, call)
    if initial.numel() != call.batch or initial.dim() == 0:
        raise ArgumentValueError(
            "SobolAttribution needs one output per example; the forward function (with `target`) "
            f"returned shape {tuple(initial.shape)} for {call.batch} examples: pass `target`"
        )
    outputs = torch.empty((total, call.batch), dtype=torch.float64, device=x.device)
    with incremental_evaluation(False):  # every mask changes the whole image
        for start, stop, rows, _ in evaluate_perturbations(
            forward_func, call, total, make, initial, batch_size, False, desc
        ):
            outputs[start:stop] = rows.to(torch.float64)
    return jansen_total_indices(outputs.T, nb_design).reshape(call.batch, grid_size, grid_size)


class SobolAttribution(PerturbationAttribution):
    """Sobol attribution (Fel, Cadene, Chalvidal, Cord, Vigouroux & Serre, NeurIPS 2021).

    "Look at the Variance! Efficient Black-box Explanations with
    Sobol-based Sensitivity Analysis". The image is cut into a ``grid_size
    x grid_size`` grid; each cell gets a real mask value in ``[0, 1]``
    drawn from a quasi-Monte-Carlo (Sobol) sequence, upsampled to the image
    (nearest) and applied by a perturbation function. The attribution of a
    cell is its total-order Sobol index for the targeted output -- the
    share of the output's variance that involves that cell, interactions
    included -- estimated with Jansen's estimator, and the ``grid_size^2``
    indices are upsampled (bicubic) to the image; every channel gets the
    same map.

    Perturbations (as the authors' implementation): ``"inpainting"``
    ``x M + b (1 - M)`` with ``b = baselines`` (0 by default),
    ``"blurring"`` ``x M + blur(x) (1 - M)`` (a 10 x 10 box blur),
    ``"amplitude"`` ``x (M - 1/2)``.

    Cost: ``nb_design * (grid_size^2 + 2)`` perturbed copies of the batch
    (2112 at the defaults), in large batched forwards; ``batch_size``
    fixes the masks per forward. Indices are non-negative and not
    normalised to sum to 1 (interactions are counted in every cell
    involved).

    ``seed=None`` uses the plain (unscrambled) Sobol sequence, as the
    paper's code; an int scrambles it with that seed.

    Example:
        >>> import torch
        >>> from attribuo.attr.perturbation.sobol import SobolAttribution
        >>> f = lambda x: x[:, :, :4, :4].sum((1, 2, 3))  # only the top-left quarter matters
        >>> attr = SobolAttribution(f).attribute(torch.ones(1, 1, 8, 8), grid_size=2, nb_design=16)
        >>> attr.shape, bool(attr[0, 0, 0, 0] > attr[0, 0, 7, 7])
        (torch.Size([1, 1, 8, 8]), True)
    """

    def attribute(
        self,
        inputs: TensorOrTuple,
        baselines: Any = 0,
        target: Any = None,
        additional_forward_args: Any = None,
        grid_size: int = 8,
        nb_design: int = 32,
        perturbation: str = "inpainting",
        batch_size: int | None = None,
        seed: int | None = None,
    ) -> TensorOrTuple:
        """Upsampled Sobol indices, same form and shape as ``inputs`` (images ``[N, C, H, W]``).

        Args:
            inputs: a batch of images ``[N, C, H, W]`` (or a tuple of one).
            target: output to explain (Captum's forms).
            additional_forward_args: passed to the model after the inputs.
            grid_size: cells per side of the mask grid (the paper: 8).
            nb_design: Sobol points per design matrix (the paper: 32; a
                power of two keeps the sequence balanced).
            perturbation: ``"inpainting"``, ``"blurring"`` or ``"amplitude"``.
            baselines: what inpainting fades to (a number or a tensor of the
                input's or one example's shape).
            batch_size: masks per forward call (each a copy of the batch);
                None: the memory budget decides. Results do not depend on it.
            seed: None for the plain Sobol sequence, an int to scramble it.
        """
        call = parse_call(inputs, target, additional_forward_args, floating=True)
        if len(call.inputs) != 1:
            raise ArgumentValueError(f"`inputs` must be one image batch; got {len(call.inputs)} tensors")
        x = call.inputs[0]
        if x.dim() != 4:
            raise ArgumentValueError(f"`inputs` must be images [N, C, H, W]; got shape {tuple(x.shape)}")
        positive_int(grid_size, "grid_size")
        positive_int(nb_design, "nb_design")
        if nb_design < 2:
            raise ArgumentValueError("`nb_design` must be at least 2 (the estimator needs a variance)")
        if grid_size > min(x.shape[-2:]):
            raise ArgumentValueError(
                f"`grid_size` ({grid_size}) must not exceed the image's height and width {tuple(x.shape[-2:])}"
            )
        if 2 * grid_size * grid_size > SobolEngine.MAXDIM:
            raise ArgumentValueError(f"`grid_size` must be at most {int((SobolEngine.MAXDIM / 2) ** 0.5)}")
        if batch_size is not None:
            positive_int(batch_size, "batch_size")
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
            raise ArgumentTypeError(f"`seed` must be None or an int, got {type(seed).__name__}")
        base = perturbation_baselines(call.inputs, baselines)[0]
        if x.shape[0] == 0:  # nothing to explain (and no variance to estimate)
            return call.result((torch.zeros_like(x),))
        grid = sobol_indices(
            self.forward_func, call, grid_size, nb_design, perturbation, base, batch_size, seed, self.get_name()
        )
        up = F.interpolate(grid.unsqueeze(1), size=tuple(x.shape[-2:]), mode="bicubic", align_corners=False)
        return call.result((up.to(x.dtype).expand(-1, x.shape[1], -1, -1).contiguous(),))
