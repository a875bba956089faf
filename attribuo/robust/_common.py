"""Argument checks and the loss gradient shared by FGSM and PGD."""

from __future__ import annotations

import math
from collections.abc import Callable
from numbers import Real
from typing import Any

import torch
from torch import Tensor

from .._engine.errors import ArgumentTypeError, ArgumentValueError
from .._engine.forward import run_forward, scalar_per_example
from .._engine.inputs import as_tuple, batch_size, format_additional_args, grad_ready
from .._engine.targets import parse_target


def real_number(value: Any, name: str, minimum: float | None = None) -> float:
    """``value`` as a float; bools, tensors of many values and NaN are refused."""
    if isinstance(value, Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ArgumentTypeError(f"`{name}` must be a real number, got {type(value).__name__}")
    value = float(value)
    if math.isnan(value):
        raise ArgumentValueError(f"`{name}` must not be NaN")
    if minimum is not None and value < minimum:
        raise ArgumentValueError(f"`{name}` must be >= {minimum}, got {value}")
    return value


def check_bounds(lower_bound: Any, upper_bound: Any) -> tuple[float, float]:
    lower = real_number(lower_bound, "lower_bound")
    upper = real_number(upper_bound, "upper_bound")
    if lower > upper:
        raise ArgumentValueError(
            f"`lower_bound` ({lower}) must not exceed `upper_bound` ({upper})"
        )
    return lower, upper


def clamp_bounds(lower_bound: Any, upper_bound: Any) -> tuple[float, float, Callable[[Tensor], Tensor]]:
    """Checked bounds and the clamp to them (an attack's ``bound`` attribute)."""
    lower, upper = check_bounds(lower_bound, upper_bound)
    return lower, upper, lambda x: torch.clamp(x, lower, upper)


def check_callable(value: Any, name: str, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not callable(value):
        raise ArgumentTypeError(f"`{name}` must be callable, got {type(value).__name__}")


def format_masks(mask: Any, inputs: tuple[Tensor, ...]) -> tuple[Tensor | None, ...]:
    """One mask per input (``None`` = perturb everything); each broadcasts to its input."""
    if mask is None:
        return (None,) * len(inputs)
    masks = as_tuple(mask, "mask")
    if len(masks) != len(inputs):
        raise ArgumentValueError(
            f"`mask` has {len(masks)} tensors but `inputs` has {len(inputs)}; "
            "give one mask per input tensor"
        )
    out = []
    for i, (m, x) in enumerate(zip(masks, inputs)):
        try:
            shape = torch.broadcast_shapes(m.shape, x.shape)
        except RuntimeError:
            shape = None
        if shape != x.shape:
            raise ArgumentValueError(
                f"`mask[{i}]` of shape {tuple(m.shape)} does not broadcast to the "
                f"shape {tuple(x.shape)} of `inputs[{i}]`"
            )
        out.append(m.to(x.device))
    return tuple(out)


def loss_gradients(
    forward_func: Callable,
    loss_func: Callable | None,
    inputs: tuple[Tensor, ...],
    target: Any,
    args: tuple[Any, ...],
) -> tuple[Tensor, ...]:
    """Gradients of the summed loss w.r.t. ``inputs``.

    With no ``loss_func`` the loss is ``-log`` of the output picked by
    ``target`` (already parsed by :func:`parse_loss_target`); otherwise
    ``loss_func(output, target)`` with ``target`` as the user gave it.
    """
    leaves = grad_ready(inputs)
    with torch.enable_grad():
        output = run_forward(forward_func, leaves, None, args)
        if loss_func is None:
            # select before the log: unselected zeros would otherwise give NaN gradients
            selected = scalar_per_example(target.select(output), leaves[0].shape[0])
            loss = -torch.log(selected)
        else:
            loss = loss_func(output, target)
            if not isinstance(loss, Tensor):
                raise ArgumentTypeError(
                    f"`loss_func` must return a tensor, got {type(loss).__name__}"
                )
        total = loss.sum()
        if not total.requires_grad:  # the loss does not depend on the inputs
            return tuple(torch.zeros_like(x) for x in inputs)
        return torch.autograd.grad(total, leaves, allow_unused=True, materialize_grads=True)


def attack_inputs(inputs: Any) -> tuple[tuple[Tensor, ...], int]:
    """Validate attack inputs: floating tensors sharing dim 0."""
    xs = as_tuple(inputs)
    n = batch_size(xs)
    for i, x in enumerate(xs):
        if not x.is_floating_point():
            raise ArgumentTypeError(
                f"`inputs[{i}]` has dtype {x.dtype}; gradient attacks need floating-point inputs"
            )
    return xs, n


def attack_arguments(
    xs: tuple[Tensor, ...],
    n: int,
    mask: Any,
    loss_func: Callable | None,
    target: Any,
    additional_forward_args: Any,
) -> tuple[tuple[Tensor | None, ...], Any, tuple[Any, ...]]:
    """Masks, loss target and additional forward arguments of an attack, validated."""
    masks = format_masks(mask, xs)
    return masks, parse_loss_target(loss_func, target, n), format_additional_args(additional_forward_args)


def parse_loss_target(loss_func: Callable | None, target: Any, n: int) -> Any:
    """A parsed :class:`Target` for the default loss; a custom loss gets ``target`` as is."""
    return parse_target(target, n) if loss_func is None else target
