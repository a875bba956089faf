"""Neuron attribution: primary methods applied to one neuron of a layer.

Every class here is a primary method (gradient, integrated gradients,
guided backprop, ...) run on :func:`neuron_function`: the model returning
the neuron of ``layer`` picked by ``neuron_selector``. The selector is an
int or a tuple of ints (one index per layer dim after the batch dim), a
tuple with slices (the neurons in the slices are summed), or a callable
from the layer's value to one value per example. With
``attribute_to_neuron_input=True`` the neuron is picked from the layer's
input instead of its output. Results have the form of ``inputs``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

from .._engine.baselines import full_baselines
from .._engine.forward import input_gradients
from .._engine.inputs import is_tuple, restore_form
from .._engine.neurons import NeuronSelector, conductance_function, neuron_function
from .base import GradientAttribution, NeuronAttribution, PerturbationAttribution
from .deeplift import DeepLift, DeepLiftShap
from .feature_ablation import FeatureAblation
from .gradient_shap import GradientShap
from .guided import Deconvolution, GuidedBackprop
from .integrated_gradients import IntegratedGradients
from .layer import MultipliesByInputs, prepare, single_layer
from .layer_path import check_grad_kwargs

TensorOrTuple = Tensor | tuple[Tensor, ...]
Baselines = TensorOrTuple | Callable[..., TensorOrTuple]


class _NeuronMethod(NeuronAttribution):
    def neuron(self, neuron_selector: NeuronSelector, attribute_to_neuron_input: bool) -> Callable[..., Tensor]:
        """The model as a function returning the selected neuron per example."""
        layer = single_layer(self.layer, type(self))
        # a callable returning one value for the whole batch is a batch total; gradient
        # methods accept it as Captum does (its gradient is the per-example gradient)
        scalar_total = not isinstance(self, PerturbationAttribution)
        return neuron_function(
            self.forward_func, layer, neuron_selector, attribute_to_neuron_input, scalar_total
        )


class NeuronGradient(_NeuronMethod, GradientAttribution):
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
        _, grads = input_gradients(neuron, inputs, None, additional_forward_args)
        return restore_form(is_tuple(inputs), grads)


class NeuronIntegratedGradients(MultipliesByInputs, _NeuronMethod, GradientAttribution):
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


class NeuronConductance(MultipliesByInputs, _NeuronMethod, GradientAttribution):
    """Conductance of one neuron, decomposed over the inputs (Dhamdhere et al., 2018).

    Integrated gradients of the target output flowing through the neuron:
    along the path from ``baselines`` to ``inputs``, the output's gradient
    w.r.t. the neuron times the neuron's gradient w.r.t. each input, times
    ``inputs - baselines``. With slices in ``neuron_selector`` both factors
    are taken for the sum of the selected neurons, as Captum does.

    Example:
        >>> import torch
        >>> from attribuo.attr import NeuronConductance
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
        >>> NeuronConductance(net, net[0]).attribute(torch.rand(5, 3), neuron_selector=1, target=0).shape
        torch.Size([5, 3])
    """

    def attribute(
        self, inputs: TensorOrTuple, neuron_selector: NeuronSelector, baselines: Any = None,
        target: Any = None, additional_forward_args: Any = None, n_steps: int = 50,
        method: str = "riemann_trapezoid", internal_batch_size: int | None = None,
        attribute_to_neuron_input: bool = False, grad_kwargs: dict[str, Any] | None = None,
    ) -> TensorOrTuple:
        """Conductance of the neuron for each input feature, same form as ``inputs``."""
        layer = single_layer(self.layer, type(self))
        check_grad_kwargs(grad_kwargs)
        xs, tgt, _ = prepare(inputs, target, additional_forward_args, floating=True)
        # The objective's input gradient is the conductance integrand, so
        # integrated gradients of it is neuron conductance.
        objective = conductance_function(
            self.forward_func, layer, neuron_selector, tgt, xs[0].shape[0], attribute_to_neuron_input
        )
        ig = IntegratedGradients(objective, self.multiplies_by_inputs)
        return ig.attribute(
            inputs, full_baselines(xs, baselines), None, additional_forward_args, n_steps,
            method, internal_batch_size,
        )


class NeuronGuidedBackprop(_NeuronMethod, GradientAttribution):
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


class NeuronGradientShap(MultipliesByInputs, _NeuronMethod, GradientAttribution):
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


class NeuronDeepLift(MultipliesByInputs, _NeuronMethod, GradientAttribution):
    """DeepLift (Rescale rule) attributions of one neuron of a layer to the inputs.

    Example:
        >>> import torch
        >>> from attribuo.attr import NeuronDeepLift
        >>> hidden = torch.nn.Sigmoid()
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 4), hidden, torch.nn.Linear(4, 1))
        >>> attr = NeuronDeepLift(net, hidden).attribute(torch.rand(2, 3), 3)
        >>> attr.shape
        torch.Size([2, 3])
    """

    _primary: type = DeepLift

    def __init__(self, model: Callable, layer: nn.Module, multiply_by_inputs: bool = True) -> None:
        super().__init__(model, layer, None, multiply_by_inputs)

    def attribute(
        self, inputs: TensorOrTuple, neuron_selector: NeuronSelector, baselines: Any = None,
        additional_forward_args: Any = None, attribute_to_neuron_input: bool = False,
        custom_attribution_func: Callable | None = None,
    ) -> TensorOrTuple:
        """DeepLift attributions of the neuron, same form as ``inputs``.

        :class:`NeuronDeepLiftShap` takes a distribution of ``B > 1``
        baselines here and averages over them.
        """
        neuron = self.neuron(neuron_selector, attribute_to_neuron_input)
        return self._primary(neuron, self.multiplies_by_inputs).attribute(
            inputs, baselines, None, additional_forward_args, False, custom_attribution_func
        )


class NeuronDeepLiftShap(NeuronDeepLift):
    """DeepLift of one neuron averaged over a distribution of ``B > 1`` baselines.

    ``baselines`` is required: per input a tensor of baseline examples (or
    a callable returning them), as for :class:`DeepLiftShap`.

    Example:
        >>> import torch
        >>> from attribuo.attr import NeuronDeepLiftShap
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ELU(), torch.nn.Linear(4, 2))
        >>> x, references = torch.rand(2, 3), torch.randn(5, 3)
        >>> NeuronDeepLiftShap(net, net[1]).attribute(x, 3, references).shape
        torch.Size([2, 3])
    """

    _primary = DeepLiftShap


class NeuronFeatureAblation(_NeuronMethod, PerturbationAttribution):
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
        neuron = self.neuron(neuron_selector, attribute_to_neuron_input)
        return FeatureAblation(neuron).attribute(
            inputs, baselines, None, additional_forward_args, feature_mask, perturbations_per_eval
        )
