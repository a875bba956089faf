"""What the layer classes share: layer arguments, result forms, layer values.

Layer classes bind an algorithm to a *site*, the output (or, with
``attribute_to_layer_input=True``, the input) of ``layer``: results have
the layer's shape, a tensor when the layer gives one tensor and a tuple
when it gives several; a list of layers gives a list of results.

A layer that runs more than once in one forward pass is rejected with an
error (which use to attribute would be a guess); in-place operations after
the layer (``nn.ReLU(inplace=True)``) are safe, the model continues on a
copy of the layer's values.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..._engine.call import Call
from ..._engine.errors import ArgumentTypeError, ArgumentValueError
from ..._engine.sites import site_values
from ..base import InternalAttribution

TensorOrTuple = Tensor | tuple[Tensor, ...]
LayerResult = TensorOrTuple | list[TensorOrTuple]


def layer_list(layer: Any) -> list[nn.Module]:
    """``layer`` as a list of modules (one module, or Captum's list of modules)."""
    layers = list(layer) if isinstance(layer, (list, tuple)) else [layer]
    if not layers:
        raise ArgumentValueError("`layer` is an empty list; give at least one module")
    for item in layers:
        if not isinstance(item, nn.Module):
            raise ArgumentTypeError(
                f"`layer` must be a torch.nn.Module or a list of them, got {type(item).__name__}"
            )
    return layers


def single_layer(layer: Any, cls: type) -> nn.Module:
    if not isinstance(layer, nn.Module):
        raise ArgumentTypeError(
            f"{cls.__name__} takes one `layer` (a torch.nn.Module), got {type(layer).__name__}"
        )
    return layer


def layer_form(values: Sequence[Tensor]) -> TensorOrTuple:
    """Captum's layer result form: a tensor for one value, a tuple for several."""
    return values[0] if len(values) == 1 else tuple(values)


def per_layer(layer: Any, results: list[TensorOrTuple]) -> LayerResult:
    return results if isinstance(layer, (list, tuple)) else results[0]


class MultipliesByInputs(InternalAttribution):
    """Mixin of the layer and neuron classes with Captum's ``multiply_by_inputs`` switch.

    Example:
        >>> from attribuo.attr import LayerIntegratedGradients
        >>> import torch
        >>> net = torch.nn.Linear(2, 2)
        >>> LayerIntegratedGradients(net, net, multiply_by_inputs=False).multiplies_by_inputs
        False
    """

    def __init__(
        self,
        forward_func: Callable,
        layer: nn.Module | list[nn.Module],
        device_ids: list[int] | None = None,
        multiply_by_inputs: bool = True,
    ) -> None:
        super().__init__(forward_func, layer, device_ids)
        self._multiply_by_inputs = multiply_by_inputs


def layer_values_at(
    forward_func: Callable, layers: list[nn.Module], call: Call, use_input: bool
) -> list[tuple[Tensor, ...]]:
    """Each layer's values (detached) for ``call``'s inputs and arguments.

    The forward stops after the layers: callers run the whole model next
    (replacing the layers), which reports a layer used more than once.
    """
    with torch.no_grad():
        records = site_values(forward_func, layers, call.inputs, call.args, use_input, stop=True)
    return [r.values for r in records]
