"""Occlusion: slide a baseline-filled window over each input, record the drop."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ..._engine.call import Call, parse_call
from ..._engine.errors import ArgumentTypeError, ArgumentValueError
from ..._engine.perturb import (
    evaluate_perturbations,
    initial_output,
    perturbation_baselines,
    replace_elements,
)
from ..base import PerturbationAttribution

TensorOrTuple = Tensor | tuple[Tensor, ...]


def _window_counts(shape: tuple[int, ...], window: tuple[int, ...], stride: tuple[int, ...]) -> tuple[int, ...]:
    # ceil((D - W) / s) + 1 positions per dim; the last window may stick out and is cropped
    return tuple(-(-(d - w) // s) + 1 for d, w, s in zip(shape, window, stride))


class _Windows:
    """The elements each window position covers, in one example of ``shape``.

    Window positions are numbered with dim 0 varying fastest; a window
    reaching past the end is cropped. The positions' corners and a window's
    element offsets are computed once; :meth:`elements` lists the ``(p, e)``
    pairs (window ``lo + p`` covers flat element ``e``) of a run of windows.
    Listed rather than masked: a window's elements are few, the example's many.
    """

    def __init__(self, shape: tuple[int, ...], window: tuple[int, ...], stride: tuple[int, ...],
                 counts: tuple[int, ...], device: torch.device) -> None:
        steps, step = [], 1
        for size in reversed(shape):  # row-major element strides
            steps.append(step)
            step *= size
        steps.reverse()
        rest = torch.arange(int(torch.Size(counts).numel()), device=device)
        corners, self.origin = [], torch.zeros_like(rest)
        for c, s, st in zip(counts, stride, steps):
            corners.append((rest % c) * s)
            rest = rest // c
            self.origin += corners[-1] * st
        # each element's coordinate in the window (a 0-d example: one window of one element)
        grid = torch.meshgrid(*(torch.arange(w, device=device) for w in window), indexing="ij") if window else ()
        self.offsets = [g.reshape(-1) for g in grid]
        self.rel = sum((o * st for o, st in zip(self.offsets, steps)), torch.zeros(1, dtype=torch.long, device=device))
        # windows cropped at the far end need a validity mask; most layouts have none
        self.cropped = any(
            bool((corner + w > size).any()) for corner, w, size in zip(corners, window, shape)
        )
        self.corners, self.shape = corners, shape

    def elements(self, lo: int, hi: int) -> tuple[Tensor, Tensor]:
        e = self.origin[lo:hi, None] + self.rel[None, :]  # [P, W]
        p = torch.arange(hi - lo, device=e.device)[:, None].expand_as(e)
        if not self.cropped:
            return p.reshape(-1), e.reshape(-1)
        valid = torch.ones_like(e, dtype=torch.bool)
        for corner, off, size in zip(self.corners, self.offsets, self.shape):
            valid &= (corner[lo:hi, None] + off[None, :]) < size
        return p[valid], e[valid]


def occlude(
    forward_func: Callable,
    call: Call,
    baselines: tuple[Tensor, ...],
    windows: tuple[tuple[int, ...], ...],
    strides: tuple[tuple[int, ...], ...],
    perturbations_per_eval: int | None = None,
    show_progress: bool = False,
    desc: str = "Occlusion",
) -> tuple[Tensor, ...]:
    """Occlusion as a pure function (the algorithm behind :class:`Occlusion`).

    For every input ``i`` of ``call`` a window of shape ``windows[i]`` moves over one
    example's shape with steps ``strides[i]`` (windows reaching past the end
    are cropped). Each position is one perturbation: the window's elements
    take the baseline and ``f(inputs) - f(perturbed)`` is added to every
    element it covers; each element's total is divided by the number of
    windows covering it. Results have shape
    ``[f(inputs).numel(), *inputs[i].shape[1:]]``.

    Example:
        >>> import torch
        >>> from attribuo._engine.call import parse_call
        >>> x = torch.tensor([[1.0, 2.0, 3.0]])
        >>> occlude(lambda t: t.sum(1), parse_call(x), (torch.zeros_like(x),), ((2,),), ((1,),))[0]
        tensor([[3., 4., 5.]])
    """
    inputs = call.inputs
    initial = initial_output(forward_func, call)
    flat_initial = initial.reshape(1, -1)
    n_out = flat_initial.shape[1]
    shapes = [tuple(x.shape[1:]) for x in inputs]
    counts = [_window_counts(s, w, st) for s, w, st in zip(shapes, windows, strides)]
    sizes = [int(torch.Size(c).numel()) for c in counts]
    offsets = [sum(sizes[:i]) for i in range(len(sizes))]
    total = sum(sizes)
    dtype = initial.dtype if initial.is_floating_point() else torch.get_default_dtype()
    sums = [torch.zeros((n_out, math.prod(x.shape[1:])), dtype=dtype, device=x.device) for x in inputs]
    cover = [torch.zeros(math.prod(x.shape[1:]), dtype=dtype, device=x.device) for x in inputs]

    grids = [_Windows(sh, w, st, c, x.device) for sh, w, st, c, x in zip(shapes, windows, strides, counts, inputs)]

    def chunk_entries(start: int, stop: int) -> list[tuple[Tensor, Tensor] | None]:
        # (copy, element) pairs covered by windows start..stop-1, per input
        entries: list[tuple[Tensor, Tensor] | None] = []
        for i in range(len(inputs)):
            lo, hi = max(start, offsets[i]), min(stop, offsets[i] + sizes[i])
            if lo >= hi:
                entries.append(None)
                continue
            p, e = grids[i].elements(lo - offsets[i], hi - offsets[i])
            entries.append((p + (lo - start) if lo > start else p, e))
        return entries

    def make(start: int, stop: int) -> tuple[tuple[Tensor, ...], list[tuple[Tensor, Tensor] | None]]:
        entries = chunk_entries(start, stop)
        copies = []
        for x, b, pe in zip(inputs, baselines, entries):
            if pe is None:
                copies.append(x.repeat((stop - start,) + (1,) * (x.dim() - 1)))
            else:
                copies.append(replace_elements(x, stop - start, pe[0], pe[1], None, b))
        return tuple(copies), entries

    for _, _, rows, entries in evaluate_perturbations(
        forward_func, call, total, make, initial, perturbations_per_eval, show_progress, desc
    ):
        diff = (flat_initial - rows).to(dtype)  # [P, n_out]
        for i, pe in enumerate(entries):
            if pe is not None:
                p, e = pe[0].to(diff.device), pe[1]
                sums[i].index_add_(1, e, diff[p].transpose(0, 1).to(e.device))
                cover[i].index_add_(0, e, torch.ones(e.shape[0], dtype=dtype, device=e.device))
    return tuple(
        (s / c).reshape((n_out,) + shape) for s, c, shape in zip(sums, cover, shapes)
    )


def _per_input(value: Any, inputs: tuple[Tensor, ...], name: str, default: Any) -> tuple[tuple[int, ...], ...]:
    """Normalise ``sliding_window_shapes`` / ``strides`` to one int tuple per input."""
    if value is None:
        value = default
    if name == "strides":  # Captum: a single input's strides are wrapped unless a 1-tuple
        if len(inputs) == 1 and not (isinstance(value, tuple) and len(value) == 1):
            value = (value,)
    elif isinstance(value, tuple) and value and isinstance(value[0], int):
        value = (value,)
    if not isinstance(value, tuple) or len(value) != len(inputs):
        raise ArgumentValueError(
            f"`{name}` must give one entry per input tensor ({len(inputs)}), got {value!r}"
        )
    out = []
    for i, (v, x) in enumerate(zip(value, inputs)):
        dims = x.dim() - 1
        if isinstance(v, int) and not isinstance(v, bool) and name == "strides":
            v = (v,) * dims
        if not isinstance(v, tuple) or not all(isinstance(d, int) and not isinstance(d, bool) for d in v):
            raise ArgumentTypeError(
                f"`{name}` entry {i} must be a tuple of ints"
                + (" or an int" if name == "strides" else "") + f", got {v!r}"
            )
        if len(v) != dims:
            raise ArgumentValueError(
                f"`{name}` entry {i} is {v}, but input {i} has shape {tuple(x.shape)}: "
                f"it needs {dims} entries (one per dim after the batch dim)"
            )
        if any(d < 1 for d in v):
            raise ArgumentValueError(f"`{name}` entry {i} is {v}; every entry must be >= 1")
        out.append(v)
    return tuple(out)


class Occlusion(PerturbationAttribution):
    """Attribution by occlusion (Zeiler & Fergus, 2014): a sliding baseline window.

    Every position of a window of ``sliding_window_shapes`` (moved by
    ``strides``) is replaced by the baseline; every element covered gets the
    drop in the target output, averaged over the windows covering it.

    Example:
        >>> import torch
        >>> from attribuo.attr import Occlusion
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3), torch.nn.Flatten(),
        ...                             torch.nn.LazyLinear(2))
        >>> x = torch.rand(2, 3, 8, 8)
        >>> _ = model(x)
        >>> Occlusion(model).attribute(x, sliding_window_shapes=(3, 2, 2), strides=2,
        ...                            target=0).shape
        torch.Size([2, 3, 8, 8])
    """

    def attribute(
        self,
        inputs: TensorOrTuple,
        sliding_window_shapes: tuple[int, ...] | tuple[tuple[int, ...], ...],
        strides: Any = None,
        baselines: Any = None,
        target: Any = None,
        additional_forward_args: Any = None,
        perturbations_per_eval: int | None = None,
        show_progress: bool = False,
    ) -> TensorOrTuple:
        """Occlusion attributions, same form as ``inputs``."""
        call = parse_call(inputs, target, additional_forward_args)
        xs = call.inputs
        windows = _per_input(sliding_window_shapes, xs, "sliding_window_shapes", None)
        steps = _per_input(strides, xs, "strides", tuple(1 for _ in xs))
        for i, (x, w, s) in enumerate(zip(xs, windows, steps)):
            for d, (size, wd, sd) in enumerate(zip(x.shape[1:], w, s)):
                if wd > size:
                    raise ArgumentValueError(
                        f"`sliding_window_shapes` entry {i} is {w}, larger than the input's "
                        f"example shape {tuple(x.shape[1:])}"
                    )
                if sd > wd and size != wd:
                    raise ArgumentValueError(
                        f"`strides` entry {i} is {s}: stride {sd} in dim {d} is larger than "
                        f"the window ({wd}), which would skip elements"
                    )
        result = occlude(
            self.forward_func,
            call,
            perturbation_baselines(xs, baselines),
            windows,
            steps,
            perturbations_per_eval,
            show_progress,
            self.get_name(),
        )
        return call.result(result)
