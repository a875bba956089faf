"""NeuronFeatureAblation: how one neuron changes as input features are ablated."""

from __future__ import annotations

from typing import Any

from ..base import PerturbationAttribution
from ..perturbation.feature_ablation import FeatureAblation
from .common import NeuronMethod, TensorOrTuple
from .selectors import NeuronSelector


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
        # ablation reads only the neuron: after the first forward, stop at its layer
        neuron = self.neuron(neuron_selector, attribute_to_neuron_input, stop_early=True)
        return FeatureAblation(neuron).attribute(
            inputs, baselines, None, additional_forward_args, feature_mask, perturbations_per_eval
        )
