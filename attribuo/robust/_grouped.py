"""Evaluating several perturbed copies of a batch in one forward call.

``AttackComparator`` and ``MinParamPerturbation`` collect up to
``perturbations_per_eval`` perturbed inputs, concatenate them along dim 0,
run the model once and hand each copy's slice of the output to the metric
(or correctness test), exactly as one forward per copy would.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from .._engine.errors import ArgumentTypeError
from .._engine.inputs import expand_additional_args


def leading_size(value: Any) -> int | None:
    """Dim 0 of a tensor, or of the first tensor of a tuple/list; ``None`` for raw inputs."""
    if isinstance(value, Tensor) and value.dim() > 0:
        return value.shape[0]
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], Tensor):
        return leading_size(value[0])
    return None


def require_batchable(value: Any, perturbations_per_eval: int) -> None:
    """Grouping concatenates inputs, so they must be tensors or tuples of tensors."""
    if perturbations_per_eval > 1 and leading_size(value) is None:
        raise ArgumentTypeError(
            "`perturbations_per_eval` > 1 concatenates perturbed inputs along dim 0, so the "
            "model inputs (the output of `preproc_fn`, or `inputs`) must be a tensor or a "
            f"tuple of tensors, got {type(value).__name__}"
        )


def _concat(items: Sequence[Any]) -> Any:
    first = items[0]
    if isinstance(first, Tensor):
        return torch.cat([t.to(first.device) for t in items])
    if isinstance(first, (tuple, list)):
        return tuple(_concat([item[i] for item in items]) for i in range(len(first)))
    raise ArgumentTypeError(
        f"perturbed inputs of type {type(first).__name__} cannot be grouped; "
        "use `perturbations_per_eval=1`"
    )


def grouped_outputs(
    forward_func: Callable, items: Sequence[Any], args: tuple[Any, ...]
) -> list[Any]:
    """The model output for each of ``items`` (perturbed inputs), from one forward call.

    Each item is passed to ``forward_func`` as its first argument (a tuple
    stays one argument, as in Captum), followed by ``args``; tensor
    arguments whose dim 0 is the batch are repeated once per item.
    """
    with torch.no_grad():
        if len(items) == 1:
            return [forward_func(items[0], *args)]
        sizes = [leading_size(item) for item in items]
        if any(s is None for s in sizes):
            raise ArgumentTypeError(
                "perturbed inputs must be tensors or tuples of tensors to be grouped; "
                "use `perturbations_per_eval=1`"
            )
        expanded = expand_additional_args(args, sizes[0], len(items))
        output = forward_func(_concat(items), *expanded)
    slices, start = [], 0
    for size in sizes:
        slices.append(output[start : start + size])
        start += size
    return slices
