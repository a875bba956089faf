"""Input normalisation: tensor-or-tuple in, the same form out."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from torch import Tensor

from .errors import ArgumentTypeError, ArgumentValueError


def is_tuple(value: Any) -> bool:
    return isinstance(value, tuple)


def as_tuple(inputs: Any, name: str = "inputs") -> tuple[Tensor, ...]:
    """Return ``inputs`` as a tuple of tensors, checking every element."""
    items = inputs if isinstance(inputs, tuple) else (inputs,)
    if isinstance(inputs, list):
        raise ArgumentTypeError(
            f"`{name}` must be a tensor or a tuple of tensors, got a list; "
            "pass tuple(...) instead"
        )
    for i, item in enumerate(items):
        if not isinstance(item, Tensor):
            where = f"`{name}[{i}]`" if isinstance(inputs, tuple) else f"`{name}`"
            raise ArgumentTypeError(f"{where} must be a torch.Tensor, got {type(item).__name__}")
    return items


def restore_form(was_tuple: bool, values: Sequence[Any]) -> Any:
    """Give back a tuple when the user passed a tuple, else the single value."""
    values = tuple(values)
    if was_tuple:
        return values
    if len(values) != 1:
        raise ArgumentValueError(f"expected one result for a single input tensor, got {len(values)}")
    return values[0]


def batch_size(inputs: tuple[Tensor, ...], name: str = "inputs", require_equal: bool = True) -> int:
    """The common size of dim 0 across ``inputs``; raises when they disagree.

    With ``require_equal=False`` the batch size is that of ``inputs[0]`` and
    the others may differ (Captum's perturbation methods accept e.g. a
    sparse index list of any length next to the batch).
    """
    sizes = []
    for i, t in enumerate(inputs):
        if t.dim() == 0:
            raise ArgumentValueError(
                f"`{name}[{i}]` is a 0-dim tensor; dim 0 must be the batch dimension"
            )
        sizes.append(t.shape[0])
    if require_equal and len(set(sizes)) > 1:
        raise ArgumentValueError(
            f"every tensor in `{name}` must have the same batch size (dim 0); got {sizes}"
        )
    return sizes[0] if sizes else 0


def require_floating(inputs: tuple[Tensor, ...], name: str = "inputs") -> None:
    """Gradient methods differentiate with respect to inputs, so they must be float."""
    for i, t in enumerate(inputs):
        if not (t.is_floating_point() or t.is_complex()):
            raise ArgumentTypeError(
                f"`{name}[{i}]` has dtype {t.dtype}; gradient-based attribution needs "
                "floating-point inputs (for token ids, attribute an embedding layer "
                "with LayerIntegratedGradients instead)"
            )


def rows(t: Tensor) -> Tensor:
    """``t`` as ``[batch, values per example]``, also for an empty batch or a 1-D tensor."""
    return t.reshape(t.shape[0], math.prod(t.shape[1:]))


def positive_int(value: Any, name: str) -> int:
    """``value`` when it is a positive int (not a bool); else an error naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ArgumentValueError(f"`{name}` must be a positive int, got {value!r}")
    return value


def grad_ready(inputs: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """Fresh leaves that require grad, sharing memory with (never modifying) the inputs."""
    return tuple(t.detach().requires_grad_() for t in inputs)


def format_additional_args(args: Any) -> tuple[Any, ...]:
    """Captum's convention: None -> (), a non-tuple -> a 1-tuple, a tuple as is."""
    if args is None:
        return ()
    return args if isinstance(args, tuple) else (args,)


def expand_additional_args(
    args: tuple[Any, ...], batch: int, times: int, interleave: bool = False
) -> tuple[Any, ...]:
    """Expand tensor arguments whose dim 0 is the batch ``times`` times (see :meth:`Call.expanded`).

    ``interleave=False`` stacks whole copies of the batch (step-major order, as
    path methods lay out their points); ``interleave=True`` repeats each
    example in place (example-major, as NoiseTunnel does).
    """
    if times == 1:
        return args
    return tuple(expand_batch(a, times, interleave) if is_batched(a, batch) else a for a in args)


def is_batched(value: Any, batch: int) -> bool:
    return isinstance(value, Tensor) and value.dim() > 0 and value.shape[0] == batch


def expand_batch(t: Tensor, times: int, interleave: bool = False) -> Tensor:
    """``times`` copies of ``t`` along dim 0: whole copies in turn, or each row repeated in place."""
    if interleave:
        return t.repeat_interleave(times, dim=0)
    return t.repeat((times,) + (1,) * (t.dim() - 1))
