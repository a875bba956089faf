"""Guided backpropagation and deconvolution: gradients with a modified ReLU backward."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor

from ..._engine.call import input_gradients
from ..._engine.overrides import overriding, relu_rules
from ..base import GradientAttribution

TensorOrTuple = Tensor | tuple[Tensor, ...]


def _guided(grad_out: Tensor, out: Tensor) -> Tensor:
    # Pass only positive gradients, and only where the ReLU was active.
    return grad_out.clamp(min=0) * (out > 0)


def _deconv(grad_out: Tensor, out: Tensor) -> Tensor:
    # Pass positive gradients regardless of the forward activation.
    return grad_out.clamp(min=0)


class _ModifiedReLUGradient(GradientAttribution):
    _relu_backward: Callable[[Tensor, Tensor], Tensor]

    def __init__(self, model: Callable) -> None:
        super().__init__(model)
        self.model = model

    def attribute(
        self,
        inputs: TensorOrTuple,
        target: Any = None,
        additional_forward_args: Any = None,
    ) -> TensorOrTuple:
        """Modified-backward gradients of ``target`` w.r.t. ``inputs``, same form as ``inputs``."""
        forward = overriding(self.forward_func, relu_rules(type(self)._relu_backward))
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
