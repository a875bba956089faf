"""Layer attribution by perturbation: feature ablation and permutation at a layer.

The primary method perturbs the layer's values (not the inputs): the model
runs with the layer's output replaced by the perturbed copies, many copies
per forward. ``layer_mask`` groups the layer's neurons as ``feature_mask``
groups input features. See :mod:`attribuo.attr.layer.common` for the conventions
shared by the layer classes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..._engine.call import parse_call
from ..._engine.sites import site_function
from ..base import LayerAttribution, PerturbationAttribution
from ..perturbation.feature_ablation import FeatureAblation
from ..perturbation.feature_permutation import FeaturePermutation
from .common import TensorOrTuple, layer_form, layer_values_at, single_layer


def _at_layer(
    method: LayerAttribution, inputs: Any, additional_forward_args: Any, use_input: bool
) -> tuple[Callable, TensorOrTuple]:
    """The model as a function of the layer's values, and those values for ``inputs``."""
    layer = single_layer(method.layer, type(method))
    call = parse_call(inputs, None, additional_forward_args)
    (values,) = layer_values_at(method.forward_func, [layer], call, use_input)
    # copies are evaluated independently, so the model before the layer runs once per chunk
    replaced = site_function(method.forward_func, layer, call, use_input, reuse_prefix=True)
    return replaced, layer_form(values)


class LayerFeatureAblation(LayerAttribution, PerturbationAttribution):
    """Feature ablation of a layer's neurons.

    Each neuron (or group of neurons with the same id in ``layer_mask``) is
    replaced by ``layer_baselines`` (default zero) in turn; its attribution
    is the change of the target output.

    Example:
        >>> import torch
        >>> from attribuo.attr import LayerFeatureAblation
        >>> head = torch.nn.Linear(4, 1)
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), head)
        >>> x = torch.rand(5, 3)
        >>> attr = LayerFeatureAblation(model, model[1]).attribute(x, target=0)
        >>> torch.allclose(attr, model[:2](x) * head.weight, atol=1e-6)  # linear head: exact
        True
    """

    def attribute(
        self, inputs: TensorOrTuple, layer_baselines: Any = None, target: Any = None,
        additional_forward_args: Any = None, layer_mask: TensorOrTuple | None = None,
        attribute_to_layer_input: bool = False, perturbations_per_eval: int | None = None,
    ) -> TensorOrTuple:
        """Ablation attributions of the layer's neurons, the layer's shape.

        ``perturbations_per_eval``: perturbed copies per forward (default: as
        many as fit the memory budget; results do not depend on it).
        """
        replaced, values = _at_layer(self, inputs, additional_forward_args, attribute_to_layer_input)
        return FeatureAblation(replaced).attribute(
            values, layer_baselines, target, None, layer_mask, perturbations_per_eval
        )


class LayerFeaturePermutation(LayerAttribution, PerturbationAttribution):
    """Permutation importance of a layer's neurons.

    Each neuron (or group in ``layer_mask``) is shuffled across the examples
    of the batch in turn; its attribution is the change of the target
    output. The batch must hold at least 2 examples.

    Example:
        >>> from attribuo.attr import LayerFeaturePermutation
        >>> import torch
        >>> torch.manual_seed(0)  # the permutations are random
        <torch._C.Generator object at ...>
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
        >>> LayerFeaturePermutation(net, net[1]).attribute(torch.rand(5, 3), target=0).shape
        torch.Size([5, 4])
    """

    def attribute(
        self, inputs: TensorOrTuple, target: Any = None, additional_forward_args: Any = None,
        layer_mask: TensorOrTuple | None = None, perturbations_per_eval: int | None = None,
    ) -> TensorOrTuple:
        """Permutation attributions of the layer's neurons, the layer's shape."""
        replaced, values = _at_layer(self, inputs, additional_forward_args, False)
        return FeaturePermutation(replaced).attribute(
            values, target, None, layer_mask, perturbations_per_eval
        )
