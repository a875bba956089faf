"""NeuronFeatureAblation: how one neuron changes as input features are ablated."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

from ..._engine.sites import site_values
from ..base import PerturbationAttribution
from ..layer.common import single_layer
from ..perturbation.feature_ablation import FeatureAblation
from .common import NeuronMethod, TensorOrTuple
from .selectors import NeuronSelector, check_selector, select_neuron


def _neuron_until_layer(
    forward_func: Callable, layer: nn.Module, selector: NeuronSelector, use_input: bool
) -> Callable[..., Tensor]:
    """The selected neuron per example; after the first call the forward stops at the layer.

    Ablation only reads the neuron, so nothing after the layer needs to
    run. The first forward (the unperturbed inputs) still runs to the end,
    so a layer that runs more than once is reported as it is elsewhere.
    """
    check_selector(selector)
    seen_whole = [False]

    def neuron(*args: Any) -> Tensor:
        (record,) = site_values(forward_func, [layer], args, (), use_input, stop=seen_whole[0])
        seen_whole[0] = True
        return select_neuron(record.values, selector)

    return neuron


class NeuronFeatureAblation(NeuronMethod, PerturbationAttribution):
    """Feature ablation of one neuron of a layer: how the neuron changes as input features are ablated.

    Example:
        >>> from attribuo.attr import NeuronFeatureAblation
        >>> import torch
        >>> first = torch.nn.Linear(3, 4)
        >>> model, x = torch.nn.Sequential(first, torch.nn.Tanh()), torch.rand(5, 3)
        >>> attr = NeuronFeatureAblation(model, first).attribute(x, 2)  # first layer: linear in x
        >>> torch.allclose(attr, x * first.weight[2], atol=1e-6)
        True
    """

    def attribute(
        self, inputs: TensorOrTuple, neuron_selector: NeuronSelector, baselines: Any = None,
        additional_forward_args: Any = None, feature_mask: TensorOrTuple | None = None,
        attribute_to_neuron_input: bool = False, perturbations_per_eval: int | None = None,
    ) -> TensorOrTuple:
        """Ablation attributions of the neuron, same form as ``inputs``."""
        layer = single_layer(self.layer, type(self))
        neuron = _neuron_until_layer(self.forward_func, layer, neuron_selector, attribute_to_neuron_input)
        return FeatureAblation(neuron).attribute(
            inputs, baselines, None, additional_forward_args, feature_mask, perturbations_per_eval
        )
