"""Blur Integrated Gradients: a path in scale space, from a blurred image to the image."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ..._engine.call import Call, parse_call
from ..._engine.errors import ArgumentTypeError, ArgumentValueError
from ..._engine.inputs import positive_int
from ..._engine.paths import point_chunks
from ..base import GradientAttribution
from .idgi import IdgiSum, idgi_steps
from .path_sampling import output_values, sampled_grid

TensorOrTuple = Tensor | tuple[Tensor, ...]
# scipy.ndimage's names for how an image continues past its border
PADDINGS = ("constant", "reflect", "mirror", "nearest", "wrap")
# entries of the (sigmas, size, 2 * radius + 1) tap table built at once
_TAPS = 1 << 22


def _fold(index: Tensor, size: int, padding: str) -> Tensor:
    """Where the sample at ``index`` (any integer) of a row of ``size`` comes from."""
    if padding == "reflect":  # d c b a | a b c d | d c b a
        m = index.remainder(2 * size)
        return torch.where(m >= size, 2 * size - 1 - m, m)
    if padding == "mirror":  # d c b | a b c d | c b a
        if size == 1:
            return torch.zeros_like(index)
        m = index.remainder(2 * size - 2)
        return torch.where(m >= size, 2 * size - 2 - m, m)
    if padding == "nearest":
        return index.clamp(0, size - 1)
    if padding == "wrap":
        return index.remainder(size)
    return index  # constant: out-of-range taps are dropped by the caller


def blur_matrices(
    size: int, sigmas: Tensor, padding: str = "constant", truncate: float = 4.0,
    dtype: torch.dtype = torch.float64, device: Any = None,
) -> Tensor:
    """``(len(sigmas), size, size)``: 1-D Gaussian blurs of a row, as matrices (``B @ row``).

    The kernel of ``scipy.ndimage.gaussian_filter1d``: taps ``exp(-k**2 / (2
    sigma**2))`` for ``|k| <= int(truncate * sigma + 0.5)``, normalised to
    sum 1; a sigma of (nearly) zero is the identity. The image's
    continuation past its border (``padding``, scipy's mode names; zeros
    for ``"constant"``) is folded into the matrix, so one matrix product
    blurs a whole axis whatever the radius.

    Example:
        >>> m = blur_matrices(3, torch.tensor([1.0, 1.0]), "reflect")
        >>> torch.allclose(m.sum(2), torch.ones(2, 3, dtype=torch.float64))  # reflecting keeps the mass
        True
    """
    sigmas = sigmas.detach().to("cpu", torch.float64).reshape(-1)
    radius = torch.where(sigmas > 1e-15, torch.floor(truncate * sigmas + 0.5), torch.zeros_like(sigmas))
    reach = int(radius.max()) if sigmas.numel() else 0
    taps = torch.arange(-reach, reach + 1, dtype=torch.float64)
    inside = taps.abs() <= radius[:, None]
    spread = torch.where(sigmas > 1e-15, sigmas, torch.ones_like(sigmas))[:, None]
    weights = torch.where(inside, torch.exp(-0.5 * taps**2 / spread**2), 0.0)
    weights = weights / weights.sum(1, keepdim=True)
    source = torch.arange(size)[:, None] + taps.to(torch.long)[None]
    valid = (source >= 0) & (source < size) if padding == "constant" else torch.ones_like(source, dtype=torch.bool)
    columns = _fold(source, size, padding).clamp(0, size - 1)
    out = torch.zeros(sigmas.numel(), size, size, dtype=torch.float64)
    group = max(1, _TAPS // max(1, size * taps.numel()))
    for lo in range(0, sigmas.numel(), group):
        w = weights[lo : lo + group, None, :] * valid
        out[lo : lo + group].scatter_add_(2, columns.expand(w.shape[0], -1, -1), w)
    return out.to(dtype=dtype, device=device)


def blurred(images: Tensor, sigmas: Tensor, padding: str = "constant", truncate: float = 4.0) -> Tensor:
    """``images`` (N, C, H, W) blurred over H and W at ``sigmas`` (K, N) or (K, 1): (K, N, C, H, W)."""
    k, r = sigmas.shape
    h, w = images.shape[-2:]
    rows = blur_matrices(h, sigmas, padding, truncate, images.dtype, images.device).reshape(k, r, 1, h, h)
    cols = rows if h == w else blur_matrices(w, sigmas, padding, truncate, images.dtype, images.device).reshape(k, r, 1, w, w)
    return torch.matmul(torch.matmul(rows, images.unsqueeze(0)), cols.transpose(-1, -2))


def gaussian_blur(images: Tensor, sigma: float | Tensor, padding: str = "constant", truncate: float = 4.0) -> Tensor:
    """``images`` (N, C, H, W) blurred over H and W, as ``scipy.ndimage.gaussian_filter``.

    ``sigma``: one number, or one per image (shape (N,)). The same as
    ``gaussian_filter(image, sigma=(0, sigma, sigma), mode=padding,
    truncate=truncate)`` per image, in torch (on the images' device; the
    kernel is built in float64).

    Example:
        >>> image = torch.zeros(1, 1, 5, 5)
        >>> image[0, 0, 2, 2] = 1.0
        >>> out = gaussian_blur(image, 1.0)  # zeros past the border: some mass leaves
        >>> round(float(out.sum()), 4), round(float(out[0, 0, 2, 2]), 4)
        (0.9818, 0.1592)
    """
    _check_images((images,), "images")
    _check_padding(padding)
    sig = torch.as_tensor(sigma, dtype=torch.float64).reshape(1, -1)
    if sig.shape[1] not in (1, images.shape[0]) or not torch.isfinite(sig).all() or (sig < 0).any():
        raise ArgumentValueError(f"`sigma` must be one non-negative number or one per image, got {sigma!r}")
    return blurred(images, sig, padding, truncate)[0]


def _check_images(inputs: tuple[Tensor, ...], name: str) -> None:
    for i, x in enumerate(inputs):
        if x.dim() != 4:
            where = f"`{name}[{i}]`" if len(inputs) > 1 else f"`{name}`"
            raise ArgumentValueError(f"{where} must be images of shape (N, C, H, W), got shape {tuple(x.shape)}")


def _check_padding(padding: Any) -> None:
    if padding not in PADDINGS:
        raise ArgumentValueError(f"`padding` must be one of {PADDINGS}, got {padding!r}")


def blur_ig(
    forward_func: Callable,
    call: Call,
    sigmas: Tensor,
    grad_step: float = 0.01,
    padding: str = "constant",
    idgi: bool = False,
    internal_batch_size: int | None = None,
) -> tuple[Tensor, ...]:
    """Blur IG along ``sigmas`` (rows 1 or batch, K + 1; ``sigmas[:, 0] = 0``, the last the maximum).

    The gradient is taken at the blurs of ``sigmas[:, :-1]``; each is
    multiplied by the finite-difference derivative of the blur w.r.t.
    sigma (step ``grad_step``) and the interval's length, summed, and
    negated, since the path runs from the largest sigma down to zero.
    """
    n, count = call.batch, sigmas.shape[1] - 1
    at = sigmas[:, :-1].T.contiguous()  # (K, rows)
    widths = (sigmas[:, 1:] - sigmas[:, :-1]).T

    def make(lo: int, hi: int) -> tuple[Tensor, ...]:
        return tuple(blurred(x, at[lo:hi], padding).reshape((-1,) + x.shape[1:]) for x in call.inputs)

    chunks = point_chunks(forward_func, call, count, make, internal_batch_size)
    if idgi:
        summed = IdgiSum(call.inputs)
        idgi_steps(forward_func, chunks, n, summed)
        most = tuple(blurred(x, sigmas[:, -1:].T, padding)[0] for x in call.inputs)
        return tuple(-t for t in summed.total(output_values(call.with_inputs(most), forward_func)))
    totals = [torch.zeros_like(x) for x in call.inputs]
    for lo, hi, points in chunks:
        grads = points.gradients(forward_func)
        for total, x, p, g in zip(totals, call.inputs, points.inputs, grads):
            shape = (hi - lo, n) + x.shape[1:]
            ahead = blurred(x, at[lo:hi] + grad_step, padding)
            slope = (ahead - p.detach().reshape(shape)) / grad_step
            g = g.reshape(shape)
            for j in range(hi - lo):
                w = widths[lo + j].to(device=x.device, dtype=x.dtype).reshape((-1,) + (1,) * (x.dim() - 1))
                total.add_(slope[j] * g[j] * w)
    return tuple(-t for t in totals)


class BlurIntegratedGradients(GradientAttribution):
    """Blur Integrated Gradients (Xu, Venugopalan and Sundararajan, 2020).

    "Attribution in Scale and Space" (CVPR 2020). The path starts at the
    image blurred by a Gaussian of ``max_sigma`` (pixels, over H and W) and
    removes the blur down to the image itself: at ``n_steps`` sigmas
    ``sigma_k = k * max_sigma / n_steps`` (``k < n_steps``) the gradient at
    the blurred image is multiplied by the derivative of the blurred image
    w.r.t. sigma (a finite difference of ``grad_step``, as in the paper's
    code) and by the step in sigma; the sum is negated, since the path runs
    toward smaller sigmas. The attributions add up to ``F(image) -
    F(image blurred by max_sigma)`` up to the Riemann sum's error, which
    ``return_convergence_delta=True`` reports. No baseline is needed: the
    blurred image is the start. With ``idgi=True`` the steps' gradients are
    used as IDGI does (Yang et al., 2023), which adds up exactly.

    The blur is scipy's ``gaussian_filter`` (``truncate=4``) written as two
    matrix products per image; ``padding="constant"`` (zeros past the
    border) is what the paper's code (PAIR saliency) uses, ``"reflect"``
    is scipy's default. ``step_sampling`` places the sigmas: ``"uniform"``,
    ``"adaptive"`` (more steps where the output changes, after
    ``n_probes + 1`` probe forwards; see :mod:`.path_sampling`), or a grid
    of fractions of ``max_sigma`` from 0 to 1 (``(K + 1,)`` or ``(batch, K +
    1)``). Inputs are images ``(N, C, H, W)`` (or a tuple of them, each
    blurred). Cost: ``n_steps`` gradient evaluations of the batch, chunked
    under the memory budget or by ``internal_batch_size`` expanded examples
    per forward, and two blurs per step.

    Example:
        >>> import torch
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Tanh(),
        ...                             torch.nn.Flatten(), torch.nn.Linear(72, 2))
        >>> x = torch.rand(2, 1, 8, 8)
        >>> attr, delta = BlurIntegratedGradients(model).attribute(
        ...     x, target=0, max_sigma=4.0, n_steps=40, return_convergence_delta=True)
        >>> attr.shape, bool(delta.abs().max() < 0.05)
        (torch.Size([2, 1, 8, 8]), True)
    """

    _convergence_delta = True

    def __init__(self, forward_func: Callable) -> None:
        super().__init__(forward_func)

    def attribute(
        self,
        inputs: TensorOrTuple,
        target: Any = None,
        additional_forward_args: Any = None,
        max_sigma: float = 50.0,
        n_steps: int = 100,
        grad_step: float = 0.01,
        padding: str = "constant",
        step_sampling: Any = "uniform",
        n_probes: int | None = None,
        idgi: bool = False,
        internal_batch_size: int | None = None,
        return_convergence_delta: bool = False,
    ) -> TensorOrTuple | tuple[TensorOrTuple, Tensor]:
        """Blur IG attributions of ``target``, in the form of ``inputs``.

        ``max_sigma`` (> 0): the blur at the path's start, in pixels.
        ``grad_step`` (> 0): the finite-difference step in sigma.
        ``padding``: one of ``"constant"``, ``"reflect"``, ``"mirror"``,
        ``"nearest"``, ``"wrap"``. A ``step_sampling`` grid overrides
        ``n_steps``. With ``return_convergence_delta=True`` returns
        ``(attributions, delta)``, the delta against the fully blurred start.
        """
        call = parse_call(inputs, target, additional_forward_args, floating=True)
        _check_images(call.inputs, "inputs")
        _check_padding(padding)
        max_sigma = _positive(max_sigma, "max_sigma")
        grad_step = _positive(grad_step, "grad_step")
        positive_int(n_steps, "n_steps")

        def chunks(times: Tensor, differentiable: bool) -> Any:
            def make(lo: int, hi: int) -> tuple[Tensor, ...]:
                at = times[:, lo:hi].T * max_sigma
                return tuple(blurred(x, at, padding).reshape((-1,) + x.shape[1:]) for x in call.inputs)

            return point_chunks(self.forward_func, call, times.shape[1], make, internal_batch_size, differentiable)

        grid = sampled_grid(self.forward_func, call, step_sampling, n_steps, n_probes, chunks)
        sigmas = grid * max_sigma
        attrs = blur_ig(self.forward_func, call, sigmas, grad_step, padding, bool(idgi), internal_batch_size)
        if not return_convergence_delta:
            return call.result(attrs)
        starts = tuple(blurred(x, sigmas[:, -1:].T, padding)[0] for x in call.inputs)
        return self._with_delta(call.result(attrs), attrs, starts, call, True)


def _positive(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ArgumentTypeError(f"`{name}` must be a number, got {type(value).__name__}")
    if not value > 0 or value != value or value == float("inf"):
        raise ArgumentValueError(f"`{name}` must be a positive finite number, got {value}")
    return float(value)
