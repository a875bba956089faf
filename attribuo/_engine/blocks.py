"""Copies of a 4-D activation that differ from a shared base only in a block, and layers on them.

The data structure of incremental evaluation (:mod:`.incremental`): a
:class:`Patch` holds the unperturbed batch's activation and, per perturbed
copy, a block of values at an offset. :func:`slide` runs a convolution or
pooling over the block its input block affects, :func:`align` brings two
blocks to a common one (residual sums), :func:`materialize` splices blocks
into full copies.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class Patch:
    """Copies of a 4-D activation that differ from ``base`` only in a block.

    ``base`` is ``[N, C, H, W]``; ``values`` is ``[P * N, C, h, w]``
    (copy-major, as the perturbed batch); copy ``p`` equals the base except
    rows ``top[p]:top[p] + h`` and columns ``left[p]:left[p] + w``.
    """

    base: Tensor
    values: Tensor
    top: Tensor
    left: Tensor

    @property
    def copies(self) -> int:
        return self.top.shape[0]

    @property
    def full_shape(self) -> torch.Size:
        return torch.Size((self.copies * self.base.shape[0],) + tuple(self.base.shape[1:]))


# ----------------------------------------------------------------------- blocks
def block_index(top: Tensor, left: Tensor, height: int, width: int, row_len: int) -> Tensor:
    """Flat indices ``[P, height * width]`` of each copy's block in a map with rows of ``row_len``."""
    rows = top[:, None] + torch.arange(height, device=top.device)
    cols = left[:, None] + torch.arange(width, device=top.device)
    return (rows[:, :, None] * row_len + cols[:, None, :]).reshape(top.shape[0], -1)


def gather_windows(flat: Tensor, index: Tensor, copies: int) -> Tensor:
    """``flat`` ``[L, N * C]`` (positions major) read at ``index`` ``[P, K]``: ``[P, K, N * C]``.

    Each position is one contiguous row of channels, so the gather copies
    rows rather than single elements.
    """
    return flat.index_select(0, index.reshape(-1)).view(copies, -1, flat.shape[1])


def as_copies(rows: Tensor, n: int, c: int, height: int, width: int) -> Tensor:
    """``[P, height * width, N * C]`` as ``[P * N, C, height, width]`` (channels-last strides for one example)."""
    p = rows.shape[0]
    return rows.view(p, height, width, n, c).permute(0, 3, 4, 1, 2).reshape(p * n, c, height, width)


def as_rows(values: Tensor, copies: int) -> Tensor:
    """``[P * N, C, h, w]`` as ``[P, h * w, N * C]``."""
    pn, c, h, w = values.shape
    n = pn // copies
    return values.reshape(copies, n, c, h * w).permute(0, 3, 1, 2).reshape(copies, h * w, n * c)


def materialize(patch: Patch) -> Tensor:
    """The full copies ``[P * N, C, H, W]``.

    Example:
        >>> import torch
        >>> base = torch.zeros(1, 1, 3, 3)
        >>> patch = Patch(base, torch.ones(2, 1, 1, 2), torch.tensor([0, 2]), torch.tensor([1, 0]))
        >>> materialize(patch)[:, 0].tolist()
        [[[0.0, 1.0, 1.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]], [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [1.0, 1.0, 0.0]]]
    """
    base, values = patch.base, patch.values
    n, c, h, w = base.shape
    p = patch.copies
    out = base.unsqueeze(0).expand(p, n, c, h, w).clone(memory_format=torch.contiguous_format)
    bh, bw = values.shape[-2:]
    index = block_index(patch.top, patch.left, bh, bw, w)  # [P, bh*bw]
    src = values.reshape(p, n * c, bh * bw).to(out.dtype)
    out.view(p, n * c, h * w).scatter_(2, index[:, None, :].expand(p, n * c, -1), src)
    return out.view(p * n, c, h, w)


class PaddedBases:
    """Bases padded with a fill value, positions major (``[Hp * Wp, N * C]``), kept across chunks."""

    def __init__(self) -> None:
        self.cache: dict[tuple[int, int, int, float], Tensor] = {}

    def get(self, base: Tensor, pad_h: int, pad_w: int, fill: float) -> Tensor:
        key = (id(base), pad_h, pad_w, fill)
        hit = self.cache.get(key)
        if hit is None:
            padded = F.pad(base, (pad_w, pad_w, pad_h, pad_h), value=fill) if pad_h or pad_w else base
            n, c = base.shape[:2]
            hit = padded.permute(2, 3, 0, 1).reshape(-1, n * c).contiguous()
            self.cache[key] = hit
        return hit


def window(patch: Patch, top: Tensor, left: Tensor, height: int, width: int, fill: float,
           padded: PaddedBases) -> Tensor:
    """Each copy's values over rows ``top[p]..+height``, columns ``left[p]..+width``: ``[P * N, C, height, width]``.

    The window may reach past the map by up to its own size; outside it reads ``fill``.
    """
    base, values = patch.base, patch.values
    n, c, h, w = base.shape
    p = patch.copies
    pad_h = max(0, -int(top.min()), int((top + height).max()) - h)
    pad_w = max(0, -int(left.min()), int((left + width).max()) - w)
    flat = padded.get(base, pad_h, pad_w, fill)
    out = gather_windows(flat, block_index(top + pad_h, left + pad_w, height, width, w + 2 * pad_w), p)
    # overlay the block where it overlaps the window
    bh, bw = values.shape[-2:]
    ry, rx = patch.top - top, patch.left - left
    src = as_rows(values, p).to(out.dtype)  # [P, bh * bw, N * C]
    if bool((ry >= 0).all() and (ry + bh <= height).all() and (rx >= 0).all() and (rx + bw <= width).all()):
        at = block_index(ry, rx, bh, bw, width)  # the usual case: the whole block lies in the window
        out.scatter_(1, at[:, :, None].expand(-1, -1, n * c), src)
        return as_copies(out, n, c, height, width)
    dy = torch.arange(height, device=top.device)[None, :] - ry[:, None]  # [P, height]
    dx = torch.arange(width, device=top.device)[None, :] - rx[:, None]
    inside = ((dy >= 0) & (dy < bh))[:, :, None] & ((dx >= 0) & (dx < bw))[:, None, :]
    at = dy.clamp(0, bh - 1)[:, :, None] * bw + dx.clamp(0, bw - 1)[:, None, :]  # [P, height, width]
    block = src.gather(1, at.reshape(p, -1, 1).expand(-1, -1, n * c))
    out = torch.where(inside.reshape(p, -1, 1), block, out)
    return as_copies(out, n, c, height, width)


def common_span(lo: Tensor, hi: Tensor, limit: int) -> tuple[Tensor, int]:
    """Starts and one common size of blocks covering ``lo[p]..hi[p]`` (inclusive) within ``0..limit-1``."""
    size = min(int((hi - lo).max()) + 1, limit)
    return torch.minimum(lo.clamp(min=0), torch.full_like(lo, limit - size)), size


# ---------------------------------------------------------------------- layers
@dataclass
class _Sliding:
    """A sliding-window layer on a 4-D map: what the block needs from its input."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    fill: float
    run: Callable[[Tensor], Tensor]  # the layer on a window, without padding


def pair(v: Any) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _conv_padding(module: nn.Conv2d) -> tuple[int, int] | None:
    if module.padding_mode != "zeros":
        return None
    if isinstance(module.padding, str):
        if module.padding == "valid":
            return (0, 0)
        span = [d * (k - 1) for d, k in zip(module.dilation, module.kernel_size)]
        return None if any(s % 2 for s in span) else (span[0] // 2, span[1] // 2)
    return pair(module.padding)


def sliding_module(module: nn.Module) -> _Sliding | None:
    """The window form of a convolution or pooling module, or None when it has none here."""
    kind = type(module)
    if kind is nn.Conv2d:
        padding = _conv_padding(module)
        if padding is None:
            return None
        return _Sliding(
            pair(module.kernel_size), pair(module.stride), padding, pair(module.dilation), 0.0,
            lambda x, m=module: F.conv2d(x, m.weight, m.bias, m.stride, 0, m.dilation, m.groups),
        )
    if kind is nn.MaxPool2d and not module.ceil_mode and not module.return_indices:
        k, s = pair(module.kernel_size), pair(module.stride or module.kernel_size)
        d = pair(module.dilation)
        return _Sliding(k, s, pair(module.padding), d, -math.inf,
                        lambda x: F.max_pool2d(x, k, s, 0, d))
    if kind is nn.AvgPool2d and not module.ceil_mode and module.divisor_override is None:
        k, s, pad = pair(module.kernel_size), pair(module.stride or module.kernel_size), pair(module.padding)
        if pad != (0, 0) and not module.count_include_pad:
            return None
        return _Sliding(k, s, pad, (1, 1), 0.0, lambda x: F.avg_pool2d(x, k, s, 0))
    return None


def _affected(lo: Tensor, size: int, layer: _Sliding, dim: int, out_len: int) -> tuple[Tensor, int]:
    """Output block (starts, size) that covers every output reading input ``lo..lo+size-1``."""
    k, s, p, d = layer.kernel[dim], layer.stride[dim], layer.padding[dim], layer.dilation[dim]
    reach = d * (k - 1)
    first = torch.div(lo + p - reach + s - 1, s, rounding_mode="floor")  # ceil
    last = torch.div(lo + size - 1 + p, s, rounding_mode="floor")
    return common_span(first, last.clamp(max=out_len - 1), out_len)


def slide(patch: Patch, layer: _Sliding, out_base: Tensor, padded: PaddedBases) -> Patch:
    """The layer on the copies: computed over the affected block only."""
    out_h, out_w = out_base.shape[-2:]
    bh, bw = patch.values.shape[-2:]
    top, rows = _affected(patch.top, bh, layer, 0, out_h)
    left, cols = _affected(patch.left, bw, layer, 1, out_w)
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = layer.kernel, layer.stride, layer.padding, layer.dilation
    need_h = (rows - 1) * sh + dh * (kh - 1) + 1
    need_w = (cols - 1) * sw + dw * (kw - 1) + 1
    inputs = window(patch, top * sh - ph, left * sw - pw, need_h, need_w, layer.fill, padded)
    return Patch(out_base, layer.run(inputs), top, left)


def align(a: Patch, b: Patch, padded: PaddedBases) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Both operands' values over one block per copy covering both blocks."""
    h, w = a.base.shape[-2:]
    (ah, aw), (bh, bw) = a.values.shape[-2:], b.values.shape[-2:]
    top, rows = common_span(torch.minimum(a.top, b.top), torch.maximum(a.top + ah, b.top + bh) - 1, h)
    left, cols = common_span(torch.minimum(a.left, b.left), torch.maximum(a.left + aw, b.left + bw) - 1, w)
    if (rows, cols) == (ah, aw) and bool((a.top == top).all() and (a.left == left).all()):
        va = a.values
    else:
        va = window(a, top, left, rows, cols, 0.0, padded)
    if (rows, cols) == (bh, bw) and bool((b.top == top).all() and (b.left == left).all()):
        vb = b.values
    else:
        vb = window(b, top, left, rows, cols, 0.0, padded)
    return va, vb, top, left
