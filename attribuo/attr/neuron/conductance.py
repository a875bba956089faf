"""NeuronConductance: the conductance of one neuron, decomposed over the inputs."""

from __future__ import annotations

from typing import Any

from ..._engine.baselines import full_baselines
from ..base import GradientAttribution
from ..gradient.integrated_gradients import IntegratedGradients
from ..layer.common import MultipliesByInputs, prepare, single_layer
from ..layer.path_integrals import check_grad_kwargs
from .common import NeuronMethod, TensorOrTuple
from .selectors import NeuronSelector, conductance_function


class NeuronConductance(MultipliesByInputs, NeuronMethod, GradientAttribution):
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
