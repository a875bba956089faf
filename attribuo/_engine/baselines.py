"""The ``baselines`` argument: None, a number, or tensors per input."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .errors import ArgumentTypeError, ArgumentValueError


def baselines_as_tuple(baselines: Any, n_inputs: int, name: str = "baselines") -> tuple:
    """``baselines`` as a tuple with one entry (None, number or tensor) per input."""
    if baselines is None:
        return (None,) * n_inputs
    items = baselines if isinstance(baselines, tuple) else (baselines,)
    if len(items) != n_inputs:
        raise ArgumentValueError(
            f"`{name}` has {len(items)} entries but there are {n_inputs} inputs; "
            "give one baseline per input tensor"
        )
    return items


def full_baselines(inputs: tuple[Tensor, ...], baselines: Any, name: str = "baselines") -> tuple[Tensor, ...]:
    """One baseline tensor per input, each with the input's full shape.

    Accepts None (zeros), a Python number, a tensor of the input's shape, of
    one example's shape, or with a batch dim of 1; a tuple mixes them.
    """
    return tuple(
        _one_baseline(inp, b, f"{name}[{i}]" if isinstance(baselines, tuple) else name)
        for i, (inp, b) in enumerate(zip(inputs, baselines_as_tuple(baselines, len(inputs), name)))
    )


def _one_baseline(inp: Tensor, baseline: Any, name: str) -> Tensor:
    if baseline is None:
        return torch.zeros_like(inp)
    # a Python bool is an int (Captum accepts it: e.g. ``baselines=True`` for bool inputs)
    if isinstance(baseline, (int, float)):
        # the number's own type where it is wider (a 0.5 baseline for integer inputs stays 0.5)
        return torch.full(inp.shape, baseline, dtype=torch.result_type(inp, baseline), device=inp.device)
    if not isinstance(baseline, Tensor):
        raise ArgumentTypeError(
            f"`{name}` must be None, a number or a tensor, got {type(baseline).__name__}"
        )
    baseline = baseline.to(device=inp.device, dtype=inp.dtype) if inp.is_floating_point() else baseline.to(inp.device)
    if baseline.shape == inp.shape:
        return baseline
    if baseline.numel() == 1:
        return baseline.reshape(()).expand(inp.shape)
    if baseline.shape == inp.shape[1:] or (
        baseline.dim() == inp.dim() and baseline.shape[0] == 1 and baseline.shape[1:] == inp.shape[1:]
    ):
        return baseline.expand(inp.shape)
    raise ArgumentValueError(
        f"`{name}` has shape {tuple(baseline.shape)}, which fits neither the input shape "
        f"{tuple(inp.shape)} nor one example's shape {tuple(inp.shape[1:])}"
    )
