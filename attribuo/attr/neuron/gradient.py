"""Neuron attribution by gradients: plain, integrated, guided, deconvolution, GradientShap."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from ..._engine.call import input_gradients
from ..base import GradientAttribution
from ..gradient.gradient_shap import GradientShap
from ..gradient.guided_backprop import Deconvolution, GuidedBackprop
from ..gradient.integrated_gradients import IntegratedGradients
from ..layer.common import MultipliesByInputs
from .common import Baselines, NeuronMethod, TensorOrTuple
from .selectors import NeuronSelector


class NeuronGradient(NeuronMethod, GradientAttribution):
    """Gradient of one neuron of a layer with respect to the inputs.

    Example:
        >>> import torch
        >>> from attribuo.attr import NeuronGradient
        >>> lin = torch.nn.Linear(3, 4)
        >>> x = torch.rand(5, 3)
        >>> grads = NeuronGradient(torch.nn.Sequential(lin, torch.nn.ReLU()), lin).attribute(x, 2)
        >>> torch.allclose(grads, lin.weight[2].expand(5, 3))
        True
    """

    def attribute(
        self, inputs: TensorOrTuple, neuron_selector: NeuronSelector,
        additional_forward_args: Any = None, attribute_to_neuron_input: bool = False,
    ) -> TensorOrTuple:
        """``d neuron / d inputs``, same form as ``inputs``."""
        neuron = self.neuron(neuron_selector, attribute_to_neuron_input)
        call, grads = input_gradients(neuron, inputs, None, additional_forward_args)
        return call.result(grads)


class NeuronIntegratedGradients(MultipliesByInputs, NeuronMethod, GradientAttribution):
    """Integrated gradients of one neuron of a layer with respect to the inputs.

    Example:
        >>> import torch
        >>> from attribuo.attr import NeuronIntegratedGradients
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
        >>> x = torch.rand(5, 3)
        >>> attr = NeuronIntegratedGradients(model, model[1]).attribute(x, 0)
        >>> torch.allclose(attr.sum(1), torch.tanh(model[0](x))[:, 0] - torch.tanh(model[0].bias[0]), atol=1e-4)
        True
    """

    def attribute(
        self, inputs: TensorOrTuple, neuron_selector: NeuronSelector, baselines: Any = None,
        additional_forward_args: Any = None, n_steps: int = 50, method: str = "gausslegendre",
        internal_batch_size: int | None = None, attribute_to_neuron_input: bool = False,
    ) -> TensorOrTuple:
        """Integrated gradients of the neuron, same form as ``inputs``."""
        neuron = self.neuron(neuron_selector, attribute_to_neuron_input)
        ig = IntegratedGradients(neuron, self.multiplies_by_inputs)
        return ig.attribute(
            inputs, baselines, None, additional_forward_args, n_steps, method, internal_batch_size
        )


class NeuronGuidedBackprop(NeuronMethod, GradientAttribution):
    """Guided backpropagation of one neuron of a layer (Springenberg et al., 2014).

    Example:
        >>> import torch
        >>> from attribuo.attr import NeuronGuidedBackprop
        >>> conv = torch.nn.Conv2d(1, 2, 3)
        >>> net = torch.nn.Sequential(conv, torch.nn.ReLU(), torch.nn.Conv2d(2, 2, 3), torch.nn.ReLU())
        >>> NeuronGuidedBackprop(net, net[2]).attribute(torch.rand(1, 1, 6, 6), (1, 0, 0)).shape
        torch.Size([1, 1, 6, 6])
    """

    _primary: type = GuidedBackprop

    def __init__(self, model: Callable, layer: nn.Module, device_ids: list[int] | None = None) -> None:
        super().__init__(model, layer, device_ids)

    def attribute(
        self, inputs: TensorOrTuple, neuron_selector: NeuronSelector,
        additional_forward_args: Any = None, attribute_to_neuron_input: bool = False,
    ) -> TensorOrTuple:
        """Modified-backward gradients of the neuron, same form as ``inputs``."""
        neuron = self.neuron(neuron_selector, attribute_to_neuron_input)
        return self._primary(neuron).attribute(inputs, None, additional_forward_args)


class NeuronDeconvolution(NeuronGuidedBackprop):
    """Deconvolution of one neuron of a layer (Zeiler and Fergus, 2014).

    Example:
        >>> import torch
        >>> from attribuo.attr import NeuronDeconvolution
        >>> relu = torch.nn.ReLU()
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 4), relu, torch.nn.Linear(4, 2))
        >>> NeuronDeconvolution(net, relu).attribute(torch.rand(5, 3), 0).shape
        torch.Size([5, 3])
    """

    _primary = Deconvolution


class NeuronGradientShap(MultipliesByInputs, NeuronMethod, GradientAttribution):
    """GradientShap of one neuron of a layer: expected gradients over a baseline distribution.

    Random draws follow :class:`GradientShap`'s (and Captum's), so the same
    seeds give the same numbers.

    Example:
        >>> import torch
        >>> from attribuo.attr import NeuronGradientShap
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Softplus(), torch.nn.Linear(4, 2))
        >>> NeuronGradientShap(net, net[1]).attribute(torch.rand(2, 3), 1, torch.randn(6, 3)).shape
        torch.Size([2, 3])
    """

    def attribute(
        self, inputs: TensorOrTuple, neuron_selector: NeuronSelector, baselines: Baselines,
        n_samples: int = 5, stdevs: float | tuple[float, ...] = 0.0,
        additional_forward_args: Any = None, attribute_to_neuron_input: bool = False,
    ) -> TensorOrTuple:
        """GradientShap attributions of the neuron, same form as ``inputs``."""
        neuron = self.neuron(neuron_selector, attribute_to_neuron_input)
        gradient_shap = GradientShap(neuron, self.multiplies_by_inputs)
        return gradient_shap.attribute(inputs, baselines, n_samples, stdevs, None, additional_forward_args)
