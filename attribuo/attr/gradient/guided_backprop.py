"""Guided backpropagation and deconvolution: gradients with a modified ReLU backward."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

from torch import Tensor

from ..._engine.call import input_gradients
from ..._engine.overrides import (
    RELU_INPLACE_FUNCTIONS,
    Rule,
    call_argument,
    overriding,
    relu_rules,
)
from ..base import GradientAttribution

TensorOrTuple = Tensor | tuple[Tensor, ...]

# What ``grad_fn`` of a native ReLU's output is: the node whose result the hooks adjust.
_RELU_NODE = "ReluBackward0"


def _guided(grad_out: Tensor, out: Tensor) -> Tensor:
    # Pass only positive gradients, and only where the ReLU was active.
    return grad_out.clamp(min=0) * (out > 0)


def _deconv(grad_out: Tensor, out: Tensor) -> Tensor:
    # Pass positive gradients regardless of the forward activation.
    return grad_out.clamp(min=0)


def _guided_node_hook(grad_inputs: tuple, grad_outputs: tuple) -> tuple | None:
    # The native ReLU backward already kept the gradient only where the ReLU was active;
    # clamping its result gives _guided. That result is a fresh tensor nobody else holds
    # yet, so it is clamped in place (one pass, no allocation).
    g = grad_inputs[0]
    return None if g is None else (g.clamp_(min=0),)


def _deconv_node_hook(grad_inputs: tuple, grad_outputs: tuple) -> tuple | None:
    # The incoming gradient, clamped, instead of the masked one (_deconv). It may be
    # shared with other consumers of the ReLU's output, so it is not modified.
    g = grad_outputs[0]
    return None if g is None or grad_inputs[0] is None else (g.clamp(min=0),)


def _node_rules(node_hook: Callable, fallback: dict[Callable, Rule]) -> dict[Callable, Rule]:
    """ReLU rules that run the native (fused) ReLU and adjust its backward node's result.

    Cheaper than a Python ``autograd.Function`` per ReLU: the forward is
    torch's own, and the backward adds one hook call and one elementwise
    op. An in-place ReLU on a view (whose node is the view's, not a ReLU's)
    or any other unexpected node goes through ``fallback`` instead.
    """

    def native(func, args, kwargs):
        x = args[0] if args else kwargs.get("input")
        inplace = func in RELU_INPLACE_FUNCTIONS or bool(call_argument(args, kwargs, 1, "inplace", False))
        if not isinstance(x, Tensor) or (inplace and x._base is not None):
            return fallback[func](func, args, kwargs)
        out = func(*args, **kwargs)
        node = out.grad_fn if isinstance(out, Tensor) else None
        if node is None:  # no graph (grad disabled, or input without grad): nothing to adjust
            return out
        if type(node).__name__ != _RELU_NODE:
            if inplace:  # cannot run again on the changed input; never seen for a plain tensor
                raise RuntimeError(f"unexpected autograd node {type(node).__name__} after an in-place ReLU")
            return fallback[func](func, args, kwargs)
        node.register_hook(node_hook)
        return out

    return {f: native for f in fallback}


class _ModifiedReLUGradient(GradientAttribution):
    _relu_backward: Callable[[Tensor, Tensor], Tensor]
    _node_hook: Callable[[tuple, tuple], tuple | None]

    def __init__(self, model: Callable) -> None:
        super().__init__(model)
        self.model = model

    @classmethod
    @cache  # the rules hold no state; building them defines two autograd Functions
    def _rules(cls) -> dict[Callable, Rule]:
        return _node_rules(cls._node_hook, relu_rules(cls._relu_backward))

    def attribute(
        self,
        inputs: TensorOrTuple,
        target: Any = None,
        additional_forward_args: Any = None,
    ) -> TensorOrTuple:
        """Modified-backward gradients of ``target`` w.r.t. ``inputs``, same form as ``inputs``."""
        forward = overriding(self.forward_func, self._rules())
        call, grads = input_gradients(forward, inputs, target, additional_forward_args)
        return call.result(grads)


class GuidedBackprop(_ModifiedReLUGradient):
    """Guided backpropagation (Springenberg et al., 2014).

    At each ReLU the backward pass keeps a gradient only where it is positive
    and the ReLU's input was positive. Works for ``nn.ReLU`` modules (also
    reused ones), ``F.relu``, ``torch.relu`` and ``Tensor.relu``.

    Example:
        >>> import torch
        >>> from attribuo.attr import GuidedBackprop
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
        >>> GuidedBackprop(model).attribute(torch.rand(2, 3), target=0).shape
        torch.Size([2, 3])
    """

    _relu_backward = staticmethod(_guided)
    _node_hook = staticmethod(_guided_node_hook)


class Deconvolution(_ModifiedReLUGradient):
    """Deconvolution (Zeiler and Fergus, 2014).

    At each ReLU the backward pass applies ReLU to the incoming gradient,
    ignoring the forward activation. Works for every ReLU spelling, as
    :class:`GuidedBackprop` does.

    Example:
        >>> import torch
        >>> from attribuo.attr import Deconvolution
        >>> def f(x):  # a functional ReLU; the first one is inactive at x
        ...     return torch.relu(-x).sum(1)
        >>> Deconvolution(f).attribute(torch.tensor([[1.0, -2.0]]))  # the gradient still passes
        tensor([[-1., -1.]])
    """

    _relu_backward = staticmethod(_deconv)
    _node_hook = staticmethod(_deconv_node_hook)
