"""The common arguments of an ``attribute`` call, validated once.

Almost every method starts by checking ``inputs``, finding the batch size,
parsing ``target`` and normalising ``additional_forward_args``; and ends by
giving the result back in the form of ``inputs``. :func:`parse_call` does the
first part and :meth:`Call.result` the last.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from .inputs import (
    as_tuple,
    batch_size,
    format_additional_args,
    is_tuple,
    require_floating,
    restore_form,
)
from .targets import Target, parse_target


@dataclass(frozen=True)
class Call:
    """Validated ``inputs`` (as a tuple), their batch size, ``target`` and extra args.

    Example:
        >>> import torch
        >>> from attribuo._engine.call import parse_call
        >>> call = parse_call(torch.zeros(3, 2), target=1)
        >>> call.batch, call.target.shared, call.args
        (3, (1,), ())
        >>> call.result((torch.ones(3, 2),)).shape  # a tensor, as the inputs were
        torch.Size([3, 2])
    """

    inputs: tuple[Tensor, ...]
    was_tuple: bool
    batch: int
    target: Target
    args: tuple[Any, ...]

    def result(self, values: Sequence[Any]) -> Any:
        """``values`` (one per input) in the form the user passed ``inputs`` in."""
        return restore_form(self.was_tuple, values)


def parse_call(
    inputs: Any,
    target: Any = None,
    additional_forward_args: Any = None,
    *,
    floating: bool = False,
    require_equal_batch: bool = True,
) -> Call:
    """Check and normalise the arguments every ``attribute`` method shares.

    In this order: ``inputs`` must be a tensor or tuple of tensors,
    floating-point when ``floating`` (gradient methods), with a batch dim
    (all of equal size unless ``require_equal_batch=False``, where
    ``inputs[0]`` fixes it); then ``target`` is parsed for that batch.
    """
    xs = as_tuple(inputs)
    if floating:
        require_floating(xs)
    n = batch_size(xs, require_equal=require_equal_batch)
    return Call(xs, is_tuple(inputs), n, parse_target(target, n), format_additional_args(additional_forward_args))
