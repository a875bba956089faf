"""The ``target`` argument, parsed once into a selector.

Every documented form (None, an int, a tuple for outputs with more than two
dims, a single-element tensor, a 1-D tensor or list with one entry per
example, a list of tuples) becomes a :class:`Target`: either no selection,
one index tuple shared by every example, or a ``[batch, k]`` index tensor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .errors import ArgumentTypeError, ArgumentValueError


@dataclass(frozen=True)
class Target:
    """A parsed ``target``: ``shared`` index tuple or ``per_example`` [N, k] indices."""

    shared: tuple | None = None
    per_example: Tensor | None = None

    @property
    def is_none(self) -> bool:
        return self.shared is None and self.per_example is None

    def repeat(self, times: int, interleave: bool = False) -> Target:
        """The target for a batch expanded ``times`` times (see ``expand_batch``)."""
        if self.per_example is None or times == 1:
            return self
        idx = self.per_example
        idx = idx.repeat_interleave(times, 0) if interleave else idx.repeat(times, 1)
        return Target(per_example=idx)

    def take(self, start: int, stop: int) -> Target:
        """The target for examples ``start:stop`` of the batch."""
        if self.per_example is None:
            return self
        return Target(per_example=self.per_example[start:stop])

    def select(self, output: Tensor) -> Tensor:
        """Pick the targeted values of ``output`` (dim 0 is the batch)."""
        if self.is_none:
            return output
        if not isinstance(output, Tensor):
            raise ArgumentTypeError(
                f"`target` was given but the forward function returned "
                f"{type(output).__name__}, not a tensor"
            )
        if self.shared is not None:
            _check_indices(self.shared, output.shape)
            return output[(slice(None), *self.shared)]
        idx = self.per_example
        if idx.shape[0] != output.shape[0]:
            raise ArgumentValueError(
                f"`target` has {idx.shape[0]} entries but the output has "
                f"{output.shape[0]} examples"
            )
        _check_index_tensor(idx, output.shape)
        idx = idx.to(output.device)
        rows = torch.arange(output.shape[0], device=output.device)
        return output[(rows, *idx.unbind(1))]


def parse_target(target: Any, num_examples: int | None = None) -> Target:
    """Turn any documented ``target`` form into a :class:`Target`.

    ``num_examples`` (when known) checks per-example forms for length.
    """
    if isinstance(target, Target):
        return target
    if target is None:
        return Target()
    if isinstance(target, bool):
        raise ArgumentTypeError("`target` must be an int, tuple, tensor or list, not bool")
    if isinstance(target, int):
        return Target(shared=(target,))
    if isinstance(target, tuple):
        for t in target:
            if not isinstance(t, (int, slice)) or isinstance(t, bool):
                raise ArgumentTypeError(
                    f"`target` tuple entries must be ints, got {type(t).__name__}"
                )
        return Target(shared=target)
    if isinstance(target, Tensor):
        if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
            raise ArgumentTypeError(f"`target` tensor must hold integers, got {target.dtype}")
        if target.numel() == 1 and (target.dim() <= 1 or num_examples != 1):
            return Target(shared=(int(target.item()),))
        if target.dim() == 1:
            _check_length(target.shape[0], num_examples)
            return Target(per_example=target.detach().long().reshape(-1, 1))
        if target.dim() == 2:
            _check_length(target.shape[0], num_examples)
            return Target(per_example=target.detach().long())
        raise ArgumentValueError(
            f"`target` tensor must be a single index or 1-D with one entry per example; "
            f"got shape {tuple(target.shape)}"
        )
    if isinstance(target, list):
        if len(target) == 0:
            raise ArgumentValueError("`target` list is empty")
        _check_length(len(target), num_examples)
        if all(isinstance(t, int) and not isinstance(t, bool) for t in target):
            return Target(per_example=torch.tensor(target, dtype=torch.long).reshape(-1, 1))
        if all(isinstance(t, tuple) for t in target):
            lengths = {len(t) for t in target}
            if len(lengths) != 1:
                raise ArgumentValueError("`target` tuples must all have the same length")
            if not all(isinstance(i, int) for t in target for i in t):
                raise ArgumentTypeError("`target` tuples must hold ints")
            return Target(per_example=torch.tensor(target, dtype=torch.long).reshape(len(target), -1))
        if all(isinstance(t, Tensor) and t.numel() == 1 for t in target):
            return Target(
                per_example=torch.tensor([int(t.item()) for t in target]).reshape(-1, 1)
            )
        raise ArgumentTypeError(
            "`target` list must hold ints (one per example) or tuples of ints"
        )
    raise ArgumentTypeError(
        f"`target` must be None, an int, a tuple, a tensor or a list; got {type(target).__name__}"
    )


def _check_length(length: int, num_examples: int | None) -> None:
    if num_examples is not None and length != num_examples:
        raise ArgumentValueError(
            f"`target` has {length} entries but the inputs have {num_examples} examples; "
            "give one target per example or a single target for all"
        )


def _check_indices(index: tuple, shape: torch.Size) -> None:
    if len(index) > len(shape) - 1:
        raise ArgumentValueError(
            f"`target` {index} has {len(index)} indices but the output of shape "
            f"{tuple(shape)} has only {len(shape) - 1} dims after the batch dim"
        )
    for dim, i in enumerate(index, start=1):
        if isinstance(i, int) and not -shape[dim] <= i < shape[dim]:
            raise ArgumentValueError(
                f"`target` index {i} is out of range for output dim {dim} of size "
                f"{shape[dim]} (output shape {tuple(shape)})"
            )


def _check_index_tensor(idx: Tensor, shape: torch.Size) -> None:
    k = idx.shape[1]
    if k > len(shape) - 1:
        raise ArgumentValueError(
            f"`target` entries have {k} indices but the output of shape {tuple(shape)} "
            f"has only {len(shape) - 1} dims after the batch dim"
        )
    for j in range(k):
        size = shape[j + 1]
        col = idx[:, j]
        if bool(((col < -size) | (col >= size)).any()):
            bad = col[(col < -size) | (col >= size)][0].item()
            raise ArgumentValueError(
                f"`target` index {bad} is out of range for output dim {j + 1} of size "
                f"{size} (output shape {tuple(shape)})"
            )
