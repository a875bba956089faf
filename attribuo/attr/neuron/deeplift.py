"""NeuronDeepLift and NeuronDeepLiftShap."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from ..base import GradientAttribution
from ..gradient.deeplift import DeepLift, DeepLiftShap
from ..layer.common import MultipliesByInputs
from .common import NeuronMethod, TensorOrTuple
from .selectors import NeuronSelector


class NeuronDeepLift(MultipliesByInputs, NeuronMethod, GradientAttribution):
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

    def attribute(  # type: ignore[override]
        self, inputs: TensorOrTuple, neuron_selector: NeuronSelector,
        baselines: TensorOrTuple | Callable[..., TensorOrTuple], additional_forward_args: Any = None,
        attribute_to_neuron_input: bool = False, custom_attribution_func: Callable | None = None,
    ) -> TensorOrTuple:
        """DeepLift attributions of the neuron averaged over the baselines, same form as ``inputs``."""
        return super().attribute(
            inputs, neuron_selector, baselines, additional_forward_args, attribute_to_neuron_input,
            custom_attribution_func,
        )
