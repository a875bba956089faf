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

from torch import Tensor

from ..base import NeuronAttribution, PerturbationAttribution
from ..layer.common import single_layer
from .selectors import NeuronSelector, neuron_function

TensorOrTuple = Tensor | tuple[Tensor, ...]
Baselines = TensorOrTuple | Callable[..., TensorOrTuple]


class NeuronMethod(NeuronAttribution):
    def neuron(
        self, neuron_selector: NeuronSelector, attribute_to_neuron_input: bool, stop_early: bool = False
    ) -> Callable[..., Tensor]:
        """The model as a function returning the selected neuron per example (see ``neuron_function``)."""
        layer = single_layer(self.layer, type(self))
        # a callable returning one value for the whole batch is a batch total; gradient
        # methods accept it as Captum does (its gradient is the per-example gradient)
        scalar_total = not isinstance(self, PerturbationAttribution)
        return neuron_function(
            self.forward_func, layer, neuron_selector, attribute_to_neuron_input, scalar_total, stop_early
        )
