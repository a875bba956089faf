"""Substituting non-linearities during a forward pass.

Modified-backward methods (guided backprop, deconvolution, DeepLift, LRP)
need their own rule at every non-linearity. Module hooks see only
``nn.ReLU`` modules; a :class:`torch.overrides.TorchFunctionMode` sees every
call, whether it comes from a module (``nn.ReLU`` calls ``F.relu``), a reused
module, or a functional call such as ``torch.relu`` or ``x.relu()``.

:func:`overriding` wraps a forward function so that, while it runs, each
function in ``rules`` is replaced by its rule. A rule receives the original
function, its positional and keyword arguments.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from functools import cache, wraps
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

Rule = Callable[[Callable, tuple, dict], Any]

RELU_FUNCTIONS: tuple[Callable, ...] = (F.relu, torch.relu, torch.Tensor.relu)
RELU_INPLACE_FUNCTIONS: tuple[Callable, ...] = (F.relu_, torch.relu_, torch.Tensor.relu_)


class _RuleMode(TorchFunctionMode):
    def __init__(self, rules: Mapping[Callable, Rule]):
        super().__init__()
        self.rules = rules

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        rule = self.rules.get(func)
        if rule is None:
            return func(*args, **kwargs)
        return rule(func, args, kwargs)


def call_argument(args: tuple, kwargs: dict, index: int, name: str, default: Any = None) -> Any:
    """The argument a rule's call got at position ``index`` or as keyword ``name``, else ``default``.

    Example:
        >>> call_argument((1, 2), {"dim": 0}, 2, "dim")
        0
    """
    if name in kwargs:
        return kwargs[name]
    return args[index] if len(args) > index else default


_CURRENT: ContextVar[Mapping[Callable, Rule] | None] = ContextVar("attribuo_rules", default=None)


def overriding(forward_func: Callable, rules: Mapping[Callable, Rule]) -> Callable:
    """``forward_func`` with each function in ``rules`` replaced while it runs."""

    @wraps(forward_func)
    def wrapped(*args, **kwargs):
        token = _CURRENT.set(rules)
        try:
            with _RuleMode(rules):
                return forward_func(*args, **kwargs)
        finally:
            _CURRENT.reset(token)

    return wrapped


def see_inside(func: Callable, args: tuple, kwargs: dict) -> Any:
    """A rule that runs ``func`` with the current rules applied to the calls it makes.

    A function that is itself overridable (``F.multi_head_attention_forward``,
    say) is one call to the mode, which does not see the torch calls inside
    it; this rule lets it see them.
    """
    rules = _CURRENT.get()
    body = _body(func)
    if rules is None or body is None:
        return func(*args, **kwargs)
    with _RuleMode(rules):
        return body(*args, **kwargs)


def _never_overridden(*args: Any, **kwargs: Any) -> bool:
    return False


@cache
def _body(func: Callable) -> Callable | None:
    # ``func`` first hands itself to the active mode (``has_torch_function``),
    # which would see it again and again; its copy here skips that check, so
    # the mode sees only the calls it makes.
    code = getattr(func, "__code__", None)
    if code is None:
        return None
    scope = dict(func.__globals__)
    for name in ("has_torch_function", "has_torch_function_unary", "has_torch_function_variadic"):
        scope[name] = _never_overridden
    body = types.FunctionType(code, scope, func.__name__, func.__defaults__, func.__closure__)
    body.__kwdefaults__ = func.__kwdefaults__
    return body


def relu_rules(backward: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> dict:
    """Rules for every ReLU spelling whose gradient is ``backward(grad_out, out)``.

    The forward is ordinary ReLU; in-place spellings stay in place.
    """

    class _ReLU(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            out = x.clamp(min=0)
            ctx.save_for_backward(out)
            return out

        @staticmethod
        def backward(ctx, grad_out):
            (out,) = ctx.saved_tensors
            return backward(grad_out, out)

    class _ReLUInplace(_ReLU):  # the same backward
        @staticmethod
        def forward(ctx, x):
            ctx.mark_dirty(x)
            x.clamp_(min=0)
            ctx.save_for_backward(x)
            return x

    def out_of_place(func, args, kwargs):
        inplace = kwargs.get("inplace", args[1] if len(args) > 1 else False)
        return (_ReLUInplace if inplace else _ReLU).apply(args[0])

    def in_place(func, args, kwargs):
        return _ReLUInplace.apply(args[0])

    rules: dict[Callable, Rule] = {f: out_of_place for f in RELU_FUNCTIONS}
    rules.update({f: in_place for f in RELU_INPLACE_FUNCTIONS})
    return rules
