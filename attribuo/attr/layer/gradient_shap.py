"""LayerGradientShap: GradientShap attributions to the neurons of a layer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from ..._engine.baselines import full_baselines
from ..._engine.call import Call, parse_call
from ..._engine.sites import site_gradients
from ..base import GradientAttribution, LayerAttribution
from ..gradient.gradient_shap import against_baselines, gradient_shap, random_point_gradients
from .common import (
    MultipliesByInputs,
    TensorOrTuple,
    layer_form,
    layer_values_at,
    single_layer,
)


class LayerGradientShap(MultipliesByInputs, LayerAttribution, GradientAttribution):
    """GradientShap attributions to the neurons of a layer.

    As :class:`GradientShap`, with the gradient taken w.r.t. the layer at
    the random point between a drawn baseline and the noisy input, times
    the difference of the layer's values at the two. Random draws follow
    Captum's, so the same seeds give the same numbers.

    Example:
        >>> import torch
        >>> from attribuo.attr import LayerGradientShap
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.GELU(), torch.nn.Linear(4, 2))
        >>> attr, delta = LayerGradientShap(net, net[1]).attribute(
        ...     torch.rand(2, 3), torch.randn(6, 3), n_samples=4, target=0, return_convergence_delta=True)
        >>> attr.shape, delta.shape
        (torch.Size([2, 4]), torch.Size([8]))
    """

    _convergence_delta = True

    def attribute(
        self, inputs: TensorOrTuple, baselines: TensorOrTuple | Callable[..., TensorOrTuple],
        n_samples: int = 5, stdevs: float | tuple[float, ...] = 0.0, target: Any = None,
        additional_forward_args: Any = None, return_convergence_delta: bool = False,
        attribute_to_layer_input: bool = False,
    ) -> TensorOrTuple | tuple[TensorOrTuple, Tensor]:
        """GradientShap attributions, the layer's shape; with ``n_samples`` deltas per example."""
        inner = LayerInputBaselineXGradient(
            self.forward_func, self.layer, self.device_ids, self.multiplies_by_inputs,
            attribute_to_layer_input,
        )
        return gradient_shap(
            inner, inputs, baselines, n_samples, stdevs, target, additional_forward_args,
            return_convergence_delta,
        )


class LayerInputBaselineXGradient(MultipliesByInputs, LayerAttribution, GradientAttribution):
    """Layer gradient at one random point between baseline and input, times the layer's change.

    The building block of :class:`LayerGradientShap`. ``attribute_to_layer_input``
    may be fixed at construction (as LayerGradientShap does) or given per call.

    Example:
        >>> import torch
        >>> from attribuo.attr.layer import LayerInputBaselineXGradient
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 1))
        >>> x = torch.rand(2, 3)
        >>> attr = LayerInputBaselineXGradient(model, model[0]).attribute(x, torch.zeros(2, 3), target=0)
        >>> torch.allclose(attr, (model[0](x) - model[0].bias) * model[1].weight)
        True
    """

    _convergence_delta = True

    def __init__(
        self, forward_func: Callable, layer: nn.Module, device_ids: list[int] | None = None,
        multiply_by_inputs: bool = True, attribute_to_layer_input: bool = False,
    ) -> None:
        super().__init__(forward_func, layer, device_ids, multiply_by_inputs)
        self._use_input = attribute_to_layer_input

    def attribute(
        self, inputs: TensorOrTuple, baselines: Any, target: Any = None,
        additional_forward_args: Any = None, return_convergence_delta: bool = False,
        attribute_to_layer_input: bool | None = None, grad_kwargs: dict[str, Any] | None = None,
        internal_batch_size: int | None = None,
    ) -> TensorOrTuple | tuple[TensorOrTuple, Tensor]:
        """Attributions at random points, the layer's shape; optionally with deltas."""
        layer = single_layer(self.layer, type(self))
        use_input = self._use_input if attribute_to_layer_input is None else attribute_to_layer_input
        call = parse_call(inputs, target, additional_forward_args)
        # integer inputs (e.g. an LLM prompt's presence tensor) are interpolated as floats, as in Captum
        call = against_baselines(call.with_inputs(tuple(
            x if x.is_floating_point() or x.is_complex() else x.to(torch.get_default_dtype()) for x in call.inputs
        )), baselines)
        starts = full_baselines(call.inputs, baselines)

        def layer_gradients(points: Call) -> tuple[Tensor, ...]:
            (record,) = site_gradients(self.forward_func, [layer], points, use_input, grad_kwargs)
            return record.grads

        attrs = random_point_gradients(self.forward_func, layer_gradients, call, starts, internal_batch_size)
        if self.multiplies_by_inputs:
            (ends,) = layer_values_at(self.forward_func, [layer], call, use_input)
            (begins,) = layer_values_at(self.forward_func, [layer], call.with_inputs(starts), use_input)
            attrs = tuple((e - b) * g for e, b, g in zip(ends, begins, attrs))
        return self._with_delta(layer_form(attrs), attrs, starts, call, return_convergence_delta)
