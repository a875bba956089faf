"""Saliency: the gradient of the target output with respect to the inputs."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from ..._engine.call import input_gradients
from ..base import GradientAttribution

TensorOrTuple = Tensor | tuple[Tensor, ...]


class Saliency(GradientAttribution):
    """Gradient of the target output with respect to each input (Simonyan et al., 2013).

    With ``abs=True`` (the default) the absolute value is returned.

    Example:
        >>> import torch
        >>> from attribuo.attr import Saliency
        >>> model = torch.nn.Linear(3, 2)
        >>> x = torch.rand(4, 3)
        >>> Saliency(model).attribute(x, target=1).shape
        torch.Size([4, 3])
    """

    def attribute(
        self,
        inputs: TensorOrTuple,
        target: Any = None,
        abs: bool = True,
        additional_forward_args: Any = None,
    ) -> TensorOrTuple:
        """Gradients (absolute by default) of ``target`` w.r.t. ``inputs``, same form as ``inputs``."""
        call, grads = input_gradients(self.forward_func, inputs, target, additional_forward_args)
        if abs:
            grads = tuple(g.abs() for g in grads)
        return call.result(grads)
