"""InputXGradient: the input times the gradient of the target output."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from ..._engine.call import input_gradients
from ..base import GradientAttribution

TensorOrTuple = Tensor | tuple[Tensor, ...]


class InputXGradient(GradientAttribution):
    """Input times the gradient of the target output (Shrikumar et al., 2016).

    Example:
        >>> import torch
        >>> from attribuo.attr import InputXGradient
        >>> model = torch.nn.Linear(3, 1)
        >>> x = torch.rand(4, 3)
        >>> torch.allclose(InputXGradient(model).attribute(x, target=0), x * model.weight)
        True
    """

    _multiply_by_inputs = True

    def attribute(
        self,
        inputs: TensorOrTuple,
        target: Any = None,
        additional_forward_args: Any = None,
    ) -> TensorOrTuple:
        """``inputs * d target / d inputs``, same form as ``inputs``."""
        call, grads = input_gradients(self.forward_func, inputs, target, additional_forward_args)
        return call.result(tuple(x * g for x, g in zip(call.inputs, grads)))
