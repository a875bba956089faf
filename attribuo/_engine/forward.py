"""Running the forward function and taking gradients of the selected output."""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import torch
from torch import Tensor

from .errors import ArgumentTypeError, ArgumentValueError
from .targets import Target, parse_target


def _no_args(func: Callable) -> bool:
    # Not cached: layer/override wrappers are new closures per call that hold the
    # user's tensors, and a cache keyed by them would keep those alive. A module's
    # signature is that of ``Module.__call__`` (``*args, **kwargs``): never empty.
    if isinstance(func, torch.nn.Module) and type(func).__call__ is torch.nn.Module.__call__:
        return False
    try:
        return len(inspect.signature(func).parameters) == 0
    except (TypeError, ValueError):
        return False


# Captum's contract for its future-aware methods (FeatureAblation and kin): ``attribute``
# takes forward functions that return values, ``attribute_future`` those that return
# futures. None (every other method): either kind, futures are waited for.
_FUTURES: ContextVar[bool | None] = ContextVar("attribuo_forward_futures", default=None)


@contextmanager
def forward_futures(required: bool) -> Iterator[None]:
    """Require (True) or reject (False) futures from the forward function within the block.

    A block inside another keeps the outer requirement (``attribute_future``
    runs ``attribute``).
    """
    token = _FUTURES.set(required if _FUTURES.get() is None else _FUTURES.get())
    try:
        yield
    finally:
        _FUTURES.reset(token)


# A check run before every forward of the methods (it raises to stop them): how an
# app cancels work in this thread without hooks, which would turn off the
# incremental paths.
_CHECKPOINT: ContextVar[Callable[[], None] | None] = ContextVar("attribuo_checkpoint", default=None)


@contextmanager
def before_each_forward(check: Callable[[], None]) -> Iterator[None]:
    """Run ``check()`` before each forward call of the methods inside the block (this thread)."""
    token = _CHECKPOINT.set(check)
    try:
        yield
    finally:
        _CHECKPOINT.reset(token)


def run_forward(
    forward_func: Callable,
    inputs: tuple[Tensor, ...],
    target: Any = None,
    additional_args: tuple[Any, ...] = (),
) -> Tensor:
    """Call ``forward_func(*inputs, *additional_args)`` and select ``target``."""
    check = _CHECKPOINT.get()
    if check is not None:
        check()
    if _no_args(forward_func):
        output = forward_func()
    else:
        output = forward_func(*inputs, *additional_args)
    wanted = _FUTURES.get()
    if isinstance(output, torch.Future):
        if wanted is False:
            raise ArgumentTypeError(
                "the forward function returned a torch.futures.Future; when using the attribute "
                "function, outputs should have non-Future type: call attribute_future instead"
            )
        output = output.wait()
    elif wanted is True:
        raise ArgumentTypeError(
            "when using attribute_future, the forward function must return a torch.futures.Future "
            f"(Future type), got {type(output).__name__}; call attribute instead"
        )
    if not isinstance(target, Target):
        target = parse_target(target)
    return target.select(output)


def scalar_per_example(selected: Tensor, batch: int) -> Tensor:
    """Check the selected output holds one value per example (or one in all)."""
    if not isinstance(selected, Tensor):
        raise ArgumentTypeError(
            f"the forward function must return a tensor, got {type(selected).__name__}"
        )
    if selected.dim() == 0:
        return selected
    if selected.shape[0] == batch and math.prod(selected.shape[1:]) == 1:
        return selected.reshape(batch)
    if selected.numel() == 1:
        return selected.reshape(())
    raise ArgumentValueError(
        f"`target` must select one value per example, but the selected output has shape "
        f"{tuple(selected.shape)}; give `target` an index for every output dim after the "
        "batch dim (an int for 2-D outputs, a tuple for larger ones)"
    )


def output_gradients(
    forward_func: Callable,
    inputs: tuple[Tensor, ...],
    target: Any = None,
    additional_args: tuple[Any, ...] = (),
) -> tuple[Tensor, ...]:
    """Gradients of the targeted output, summed over examples, w.r.t. ``inputs``.

    ``inputs`` must already require grad. Inputs the output does not depend
    on get zero gradients.
    """
    with torch.enable_grad():
        selected = run_forward(forward_func, inputs, target, additional_args)
        values = scalar_per_example(selected, inputs[0].shape[0] if inputs else 1)
        grads = torch.autograd.grad(
            values.sum(), inputs, allow_unused=True, materialize_grads=True
        )
    return grads


def outside_inference_mode(function: Callable) -> Callable:
    """``function`` run outside ``torch.inference_mode``, on normal copies of inference tensors.

    Gradients cannot be taken in inference mode, and inference tensors cannot
    take part in autograd. A call made inside ``torch.inference_mode()`` runs
    with the mode off for its own duration, on copies of the inference
    tensors among its arguments; the results are normal tensors. Outside
    inference mode the function is called as it is.

    Example:
        >>> import torch
        >>> def square_grad(x):
        ...     x.requires_grad_()
        ...     return torch.autograd.grad((x**2).sum(), x)[0]
        >>> square_grad = outside_inference_mode(square_grad)
        >>> with torch.inference_mode():
        ...     square_grad(torch.tensor([1.0, 2.0]))
        tensor([2., 4.])
    """

    @functools.wraps(function)
    def run(*args: Any, **kwargs: Any) -> Any:
        if not torch.is_inference_mode_enabled():
            return function(*args, **kwargs)
        with torch.inference_mode(False):
            return function(*_normal(args), **_normal(kwargs))

    run.outside_inference_mode = True  # type: ignore[attr-defined]
    return run


def _normal(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.clone() if value.is_inference() else value
    if isinstance(value, tuple) and not hasattr(value, "_fields"):
        return tuple(_normal(v) for v in value)
    if isinstance(value, list):
        return [_normal(v) for v in value]
    if isinstance(value, dict):
        return {k: _normal(v) for k, v in value.items()}
    return value
