"""Layer activations and gradient x activation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from ..._engine.call import parse_call
from ..._engine.sites import site_gradients, site_values
from ..base import GradientAttribution, LayerAttribution
from .common import (
    LayerResult,
    MultipliesByInputs,
    TensorOrTuple,
    layer_form,
    layer_list,
    per_layer,
)


class LayerActivation(LayerAttribution):
    """The values of a layer's output (or input) for the given inputs.

    Example:
        >>> import torch
        >>> from attribuo.attr import LayerActivation
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
        >>> LayerActivation(model, model[1]).attribute(torch.rand(5, 3)).shape
        torch.Size([5, 4])
    """

    _multiply_by_inputs = True

    def attribute(
        self, inputs: TensorOrTuple, additional_forward_args: Any = None,
        attribute_to_layer_input: bool = False,
    ) -> LayerResult:
        """The layer's output (input) values, detached; a list for a list of layers."""
        layers = layer_list(self.layer)
        call = parse_call(inputs, None, additional_forward_args)
        with torch.no_grad():
            records = site_values(self.forward_func, layers, call.inputs, call.args, attribute_to_layer_input)
        return per_layer(self.layer, [layer_form(r.values) for r in records])



class LayerGradientXActivation(MultipliesByInputs, LayerAttribution, GradientAttribution):
    """Gradient of the target output w.r.t. a layer, times the layer's values.

    With ``multiply_by_inputs=False`` the plain layer gradient is returned.

    Example:
        >>> from attribuo.attr import LayerGradientXActivation
        >>> import torch
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
        >>> gxa = LayerGradientXActivation(model, model[0])
        >>> gxa.attribute(torch.rand(5, 3), target=1).shape
        torch.Size([5, 4])
    """

    def __init__(
        self, forward_func: Callable, layer: nn.Module | list[nn.Module],
        device_ids: list[int] | None = None, multiply_by_inputs: bool = True,
        memory_efficient: bool = False,
    ) -> None:
        super().__init__(forward_func, layer, device_ids, multiply_by_inputs)
        self._memory_efficient = memory_efficient  # accepted; gradients are never offloaded

    def attribute(
        self, inputs: TensorOrTuple, target: Any = None, additional_forward_args: Any = None,
        attribute_to_layer_input: bool = False, grad_kwargs: dict[str, Any] | None = None,
    ) -> LayerResult:
        """``dF/dy * y`` (or ``dF/dy``) for the layer values ``y``; a list for a list of layers."""
        layers = layer_list(self.layer)
        call = parse_call(inputs, target, additional_forward_args)
        records = site_gradients(self.forward_func, layers, call, attribute_to_layer_input, grad_kwargs)
        return per_layer(self.layer, [layer_form(self.multiply_gradient_acts(r.grads, r.values)) for r in records])

    def multiply_gradient_acts(self, gradients: tuple[Tensor, ...], evals: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        """``gradients * evals`` per tensor, or the gradients when not multiplying by inputs."""
        if not self.multiplies_by_inputs:
            return tuple(gradients)
        return tuple(g * v for g, v in zip(gradients, evals))
