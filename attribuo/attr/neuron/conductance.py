"""NeuronConductance: the conductance of one neuron, decomposed over the inputs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from ..._engine.baselines import full_baselines
from ..._engine.call import parse_call
from ..._engine.errors import ArgumentValueError
from ..._engine.forward import run_forward, scalar_per_example
from ..._engine.sites import capture, check_module
from ..._engine.targets import Target
from ..base import GradientAttribution
from ..gradient.integrated_gradients import IntegratedGradients
from ..layer.common import MultipliesByInputs, single_layer
from ..layer.path_integrals import check_grad_kwargs
from .common import NeuronMethod, TensorOrTuple
from .selectors import NeuronSelector, check_selector, select_neuron


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
        call = parse_call(inputs, target, additional_forward_args, floating=True)
        # The objective's input gradient is the conductance integrand, so
        # integrated gradients of it is neuron conductance.
        objective = conductance_function(
            self.forward_func, layer, neuron_selector, call.target, call.batch, attribute_to_neuron_input
        )
        ig = IntegratedGradients(objective, self.multiplies_by_inputs)
        return ig.attribute(
            inputs, full_baselines(call.inputs, baselines), None, call.args, n_steps,
            method, internal_batch_size,
        )


def conductance_function(
    forward_func: Callable,
    layer: nn.Module,
    selector: NeuronSelector,
    target: Target,
    batch: int,
    use_input: bool = False,
) -> Callable[..., Tensor]:
    """The objective whose input gradient is neuron conductance's integrand.

    Per example it returns ``neuron(x) * stop_grad(dF/d neuron)``, so its
    gradient is ``dF/d neuron * d neuron/dx``: the target output's gradient
    at the neuron (``neuron_selector`` applied to the layer gradient, as
    Captum does) times the neuron's gradient with respect to the inputs.
    One forward gives both factors. ``batch`` is the original batch size,
    so the ``target`` can follow the expanded batches of a path method.
    """
    check_selector(selector)
    check_module(layer)

    def objective(*args: Any) -> Tensor:
        times = args[0].shape[0] // batch if batch else 1
        with capture([layer], use_input, keep_graph=True) as (record,):
            output = run_forward(forward_func, args, target.repeat(times))
        if record.calls == 0:
            raise ArgumentValueError(
                f"`layer` {type(layer).__name__} was not called during the forward pass"
            )
        selected = scalar_per_example(output, args[0].shape[0])
        grads = torch.autograd.grad(
            selected.sum(), record.values, retain_graph=True, allow_unused=True, materialize_grads=True
        )
        return select_neuron(record.values, selector) * select_neuron(grads, selector).detach()

    return objective
