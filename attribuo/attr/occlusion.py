"""Occlusion: slide a baseline-filled window over each input, record the drop."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from .._engine.errors import ArgumentTypeError, ArgumentValueError
from .._engine.inputs import as_tuple, batch_size, format_additional_args, is_tuple, restore_form
from .._engine.perturb import (
    Evaluation,
    blend,
    evaluate_perturbations,
    initial_output,
    perturbation_baselines,
)
from .._engine.targets import Target, parse_target
from .base import PerturbationAttribution

TensorOrTuple = Tensor | tuple[Tensor, ...]


def _window_counts(shape: tuple[int, ...], window: tuple[int, ...], stride: tuple[int, ...]) -> tuple[int, ...]:
    # ceil((D - W) / s) + 1 positions per dim; the last window may stick out and is cropped
    return tuple(-(-(d - w) // s) + 1 for d, w, s in zip(shape, window, stride))


def _window_masks(
    shape: tuple[int, ...], window: tuple[int, ...], stride: tuple[int, ...],
    counts: tuple[int, ...], numbers: Tensor,
) -> Tensor:
    """Boolean ``[P, *shape]`` masks of windows ``numbers`` (dim 0 varies fastest)."""
    mask = None
    rest = numbers
    for dim, (size, w, s, c) in enumerate(zip(shape, window, stride, counts)):
        start = (rest % c) * s
        rest = rest // c
        pos = torch.arange(size, device=numbers.device)
        inside = (pos >= start[:, None]) & (pos < start[:, None] + w)  # [P, size]
        view = (inside.shape[0],) + (1,) * dim + (size,) + (1,) * (len(shape) - dim - 1)
        inside = inside.reshape(view)
        mask = inside if mask is None else mask & inside
    return mask if mask is not None else torch.ones(numbers.shape[0], dtype=torch.bool, device=numbers.device)


def occlude(
    forward_func: Callable,
    inputs: tuple[Tensor, ...],
    baselines: tuple[Tensor, ...],
    windows: tuple[tuple[int, ...], ...],
    strides: tuple[tuple[int, ...], ...],
    target: Target,
    args: tuple[Any, ...],
    perturbations_per_eval: int | None = None,
    show_progress: bool = False,
    desc: str = "Occlusion",
) -> tuple[Tensor, ...]:
    """Occlusion as a pure function (the algorithm behind :class:`Occlusion`).

    For every input ``i`` a window of shape ``windows[i]`` moves over one
    example's shape with steps ``strides[i]`` (windows reaching past the end
    are cropped). Each position is one perturbation: the window's elements
    take the baseline and ``f(inputs) - f(perturbed)`` is added to every
    element it covers; each element's total is divided by the number of
    windows covering it. Results have shape
    ``[f(inputs).numel(), *inputs[i].shape[1:]]``.

    Example:
        >>> import torch
        >>> from attribuo._engine.targets import parse_target
        >>> x = torch.tensor([[1.0, 2.0, 3.0]])
        >>> occlude(lambda t: t.sum(1), (x,), (torch.zeros_like(x),), ((2,),), ((1,),),
        ...         parse_target(None), ())[0]
        tensor([[3., 4., 5.]])
    """
    evaluation = Evaluation(forward_func, inputs, target, args)
    initial = initial_output(evaluation, inputs)
    flat_initial = initial.reshape(1, -1)
    n_out = flat_initial.shape[1]
    shapes = [tuple(x.shape[1:]) for x in inputs]
    counts = [_window_counts(s, w, st) for s, w, st in zip(shapes, windows, strides)]
    sizes = [int(torch.Size(c).numel()) for c in counts]
    offsets = [sum(sizes[:i]) for i in range(len(sizes))]
    total = sum(sizes)
    dtype = initial.dtype if initial.is_floating_point() else torch.get_default_dtype()
    sums = [torch.zeros((n_out, x[0].numel()), dtype=dtype, device=x.device) for x in inputs]
    cover = [torch.zeros(x[0].numel(), dtype=dtype, device=x.device) for x in inputs]

    def chunk_masks(start: int, stop: int) -> list[Tensor | None]:
        masks: list[Tensor | None] = []
        for i, x in enumerate(inputs):
            lo, hi = max(start, offsets[i]), min(stop, offsets[i] + sizes[i])
            if lo >= hi:
                masks.append(None)
                continue
            numbers = torch.arange(lo - offsets[i], hi - offsets[i], device=x.device)
            local = _window_masks(shapes[i], windows[i], strides[i], counts[i], numbers)
            full = torch.zeros((stop - start,) + shapes[i], dtype=torch.bool, device=x.device)
            full[lo - start:hi - start] = local
            masks.append(full)
        return masks

    def make(start: int, stop: int) -> tuple[tuple[Tensor, ...], list[Tensor | None]]:
        masks = chunk_masks(start, stop)
        copies = []
        for x, b, m in zip(inputs, baselines, masks):
            if m is None:
                copies.append(x.repeat((stop - start,) + (1,) * (x.dim() - 1)))
            else:
                copies.append(blend(m.unsqueeze(1), b, x))
        return tuple(copies), masks

    for start, stop, rows, masks in evaluate_perturbations(
        evaluation, total, make, initial, perturbations_per_eval, show_progress, desc
    ):
        diff = (flat_initial - rows).to(dtype)  # [P, n_out]
        for i, m in enumerate(masks):
            if m is not None:
                flat = m.reshape(stop - start, -1).to(dtype)
                sums[i] += diff.transpose(0, 1).to(flat.device) @ flat
                cover[i] += flat.sum(0)
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

    def __init__(self, forward_func: Callable) -> None:
        super().__init__(forward_func)

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
        xs = as_tuple(inputs)
        n = batch_size(xs)
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
            xs,
            perturbation_baselines(xs, baselines),
            windows,
            steps,
            parse_target(target, n),
            format_additional_args(additional_forward_args),
            perturbations_per_eval,
            show_progress,
            self.get_name(),
        )
        return restore_form(is_tuple(inputs), result)

    def attribute_future(self, *args: Any, **kwargs: Any) -> Any:
        """Not available for Occlusion (as in Captum)."""
        raise NotImplementedError("attribute_future is not implemented for Occlusion")
