"""Layer attribution against references: DeepLift, DeepLiftShap (and GradientShap).

The primary method runs on the model *after* the layer (the layer's output
replaced by the given values), between the layer's values at the inputs
and at the baselines; so the rules, the baseline forms and the convergence
delta are the primary method's own. See :mod:`attribuo.attr.layer.common` for
the conventions shared by the layer classes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

from ..._engine.baselines import full_baselines
from ..._engine.call import Call, completeness_delta, parse_call
from ..._engine.sites import site_function
from ..base import GradientAttribution, LayerAttribution
from ..gradient.deeplift import (
    baseline_distribution,
    deeplift_attributions,
    expand_pairs,
    mean_over_baselines,
)
from .common import (
    MultipliesByInputs,
    TensorOrTuple,
    layer_form,
    layer_values_at,
    single_layer,
)


class LayerDeepLift(MultipliesByInputs, LayerAttribution, GradientAttribution):
    """DeepLift (Rescale rule) attributions to the neurons of a layer.

    The layer's values at ``inputs`` and at ``baselines`` are the two ends;
    DeepLift's rules apply to the non-linearities after the layer (with
    ``attribute_to_layer_input=True``, from the layer itself on). The
    attributions of an example add up to ``F(inputs) - F(baselines)``.

    Example:
        >>> import torch
        >>> from attribuo.attr import LayerDeepLift
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
        >>> attr, delta = LayerDeepLift(net, net[0]).attribute(
        ...     torch.rand(5, 3), target=0, return_convergence_delta=True)
        >>> attr.shape, bool(delta.abs().max() < 1e-5)
        (torch.Size([5, 4]), True)
    """

    _convergence_delta = True

    def __init__(self, model: Callable, layer: nn.Module, multiply_by_inputs: bool = True) -> None:
        super().__init__(model, layer, None, multiply_by_inputs)
        self.model = model

    def attribute(
        self, inputs: TensorOrTuple, baselines: Any = None, target: Any = None,
        additional_forward_args: Any = None, return_convergence_delta: bool = False,
        attribute_to_layer_input: bool = False, custom_attribution_func: Callable | None = None,
        grad_kwargs: dict[str, Any] | None = None,
    ) -> TensorOrTuple | tuple[TensorOrTuple, Tensor]:
        """DeepLift attributions of ``target``, the layer's shape; with deltas when asked."""
        call = parse_call(inputs, target, additional_forward_args)
        attrs, delta = self._layer_deeplift(
            call, full_baselines(call.inputs, baselines), attribute_to_layer_input, custom_attribution_func,
            return_convergence_delta,
        )
        return (layer_form(attrs), delta) if return_convergence_delta else layer_form(attrs)

    def _layer_deeplift(
        self, call: Call, baselines: tuple[Tensor, ...], use_input: bool, custom: Callable | None,
        with_delta: bool,
    ) -> tuple[tuple[Tensor, ...], Tensor | None]:
        # DeepLift on the rest of the model, between the layer's values at inputs and baselines
        layer = single_layer(self.layer, type(self))
        (ends,) = layer_values_at(self.forward_func, [layer], call, use_input)
        (begins,) = layer_values_at(self.forward_func, [layer], call.with_inputs(baselines), use_input)
        replaced = site_function(self.forward_func, layer, call, use_input)
        attrs, _ = deeplift_attributions(
            replaced, call.with_inputs(ends, args=()), begins, 1e-10, self.multiplies_by_inputs,
            custom, method=type(self).__name__,
        )
        # the model's own output change between the inputs and the baselines, as Captum's delta
        return attrs, completeness_delta(self.forward_func, attrs, baselines, call) if with_delta else None


class LayerDeepLiftShap(LayerDeepLift):
    """LayerDeepLift averaged over a distribution of baselines.

    Every input is paired with each of the ``B > 1`` baselines; DeepLift at
    the layer runs on all pairs in one forward and the attributions are
    averaged over the baselines. Deltas are returned per pair (``N * B``,
    input-major).

    Example:
        >>> import torch
        >>> from attribuo.attr import LayerDeepLiftShap
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
        >>> attr, delta = LayerDeepLiftShap(model, model[0]).attribute(
        ...     torch.rand(2, 3), torch.randn(5, 3), target=0, return_convergence_delta=True)
        >>> attr.shape, delta.shape
        (torch.Size([2, 4]), torch.Size([10]))
    """

    def attribute(  # type: ignore[override]
        self, inputs: TensorOrTuple, baselines: TensorOrTuple | Callable[..., TensorOrTuple],
        target: Any = None, additional_forward_args: Any = None,
        return_convergence_delta: bool = False, attribute_to_layer_input: bool = False,
        custom_attribution_func: Callable | None = None,
    ) -> TensorOrTuple | tuple[TensorOrTuple, Tensor]:
        """Mean DeepLift attributions over the baselines, the layer's shape."""
        call = parse_call(inputs, target, additional_forward_args)
        dist = baseline_distribution(call.inputs, inputs, baselines)
        attrs, delta = self._layer_deeplift(
            *expand_pairs(call, dist), attribute_to_layer_input, custom_attribution_func,
            return_convergence_delta,
        )
        n, b = call.batch, dist[0].shape[0]
        attrs = tuple(mean_over_baselines(a, n, b) for a in attrs)
        return (layer_form(attrs), delta) if return_convergence_delta else layer_form(attrs)
