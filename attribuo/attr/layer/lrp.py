"""LayerLRP: LRP relevance at a layer's output or input."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from ..._engine.inputs import as_tuple, restore_form
from ..base import LayerAttribution
from ..relevance.attnlrp import attnlrp_relevance
from ..relevance.lrp import LRP, TensorOrTuple


class LayerLRP(LRP, LayerAttribution):
    """LRP relevance at a layer's output (or input), as Captum's ``LayerLRP``.

    ``layer`` may be a list of modules; then a list of results (and deltas)
    is returned, one per layer.

    Example:
        >>> import torch
        >>> from attribuo.attr import LayerLRP
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
        >>> LayerLRP(model, model[2]).attribute(torch.rand(2, 3), target=0, attribute_to_layer_input=True).shape
        torch.Size([2, 4])
    """

    def __init__(
        self,
        model: nn.Module,
        layer: nn.Module | list[nn.Module],
        *,
        composite: Any = None,
        canonizers: Sequence[Any] = (),
    ) -> None:
        LRP.__init__(self, model, composite=composite, canonizers=canonizers)
        self.layer = layer
        self.device_ids = getattr(model, "device_ids", None)

    def _run_transformer_layers(
        self, inputs: Any, target: Any, args: Any, layers: list[nn.Module], use_input: bool
    ) -> tuple[list[tuple[tuple[Tensor, ...], bool]], Tensor]:
        # AttnLRP's gradient form has one source per pass: one pass per layer.
        per_layer, output = [], None
        for layer in layers:
            result = attnlrp_relevance(
                self.model, as_tuple(inputs), target, args, self.composite, layer=layer,
                attribute_to_layer_input=use_input, attention_rule=self.composite.attention_rule,
            )
            per_layer.append((result.relevance, False))
            output = result.scores
        return per_layer, output

    def attribute(  # type: ignore[override]
        self,
        inputs: TensorOrTuple,
        target: Any = None,
        additional_forward_args: Any = None,
        return_convergence_delta: bool = False,
        attribute_to_layer_input: bool = False,
        verbose: bool = False,
    ) -> Any:
        """Relevance of the layer's neurons for ``target``; the layer's shape.

        With ``return_convergence_delta``, also output minus the summed
        layer relevance per example (a list for a list of layers).
        """
        layers = self.layer if isinstance(self.layer, list) else [self.layer]
        if getattr(self.composite, "gradient_form", False):
            per_layer, output = self._run_transformer_layers(
                inputs, target, additional_forward_args, layers, attribute_to_layer_input
            )
        else:
            _, per_layer, output = self._run(
                inputs, target, additional_forward_args, layers, attribute_to_layer_input, verbose
            )
        results = [restore_form(was_tuple, values) for values, was_tuple in per_layer]
        deltas = [self.compute_convergence_delta(r, output) for r in results]
        if not isinstance(self.layer, list):
            results, deltas = results[0], deltas[0]
        return (results, deltas) if return_convergence_delta else results
