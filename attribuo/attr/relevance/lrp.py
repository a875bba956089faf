"""LRP: layer-wise relevance propagation with Captum's API (see :mod:`.propagation`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from ..._engine.call import parse_call
from ..._engine.errors import ArgumentTypeError
from ..._engine.inputs import is_tuple, restore_form
from ..base import Attribution, GradientAttribution
from .attnlrp import attnlrp_relevance, relevance_delta
from .propagation import check_rules, lrp_relevance

TensorOrTuple = Tensor | tuple[Tensor, ...]


class LRP(GradientAttribution):
    """Layer-wise relevance propagation (Bach et al., 2015), as Captum's ``LRP``.

    The target output's value is propagated backward layer by layer; each
    layer splits the relevance over its inputs by its rule. A module's rule
    is its ``rule`` attribute (see :mod:`attribuo.attr.relevance.rules`), else the
    ``composite``'s choice, else the default for its class (EpsilonRule for
    Linear, Conv1d/2d/3d, pooling and BatchNorm). ReLU, Tanh and Dropout pass
    relevance through; additions (residual connections, ``torch.add``,
    ``+=``) split it in proportion to the summands.

    Args:
        model: the network (an ``nn.Module``).
        composite: optional composite assigning rules by layer type and
            position (``attribuo.attr.relevance``), used for modules
            without a ``rule`` attribute.
        canonizers: optional canonizers, e.g. ``[MergeBatchNorm()]``.

    Example:
        >>> import torch
        >>> from attribuo.attr import LRP
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
        >>> attr, delta = LRP(model).attribute(torch.rand(2, 3), target=1, return_convergence_delta=True)
        >>> attr.shape, delta.shape
        (torch.Size([2, 3]), torch.Size([2]))
    """

    _multiply_by_inputs = True
    _convergence_delta = True

    def __init__(self, model: nn.Module, *, composite: Any = None, canonizers: Sequence[Any] = ()) -> None:
        if not isinstance(model, nn.Module):
            raise ArgumentTypeError(f"`model` must be a torch.nn.Module, got {type(model).__name__}")
        Attribution.__init__(self, model)  # not super(): LayerLRP's MRO
        self.model = model
        self.composite = composite
        self.canonizers = tuple(canonizers)
        check_rules(model)

    def _run(self, inputs: Any, target: Any, args: Any, layers: Sequence[nn.Module], use_input: bool, verbose: bool):
        check_rules(self.model)
        return lrp_relevance(
            self.model, inputs, target, args, self.composite, self.canonizers, layers, use_input, verbose
        )

    def _run_transformer(self, inputs: Any, target: Any, args: Any) -> tuple[tuple[Tensor, ...], Tensor]:
        if self.canonizers:
            raise ArgumentTypeError("canonizers cannot be combined with AttnLRPComposite")
        call = parse_call(inputs, None, None, floating=True)
        result = attnlrp_relevance(
            self.model, call.inputs, target, args, self.composite, attention_rule=self.composite.attention_rule
        )
        return result.relevance, result.scores

    def attribute(
        self,
        inputs: TensorOrTuple,
        target: Any = None,
        additional_forward_args: Any = None,
        return_convergence_delta: bool = False,
        verbose: bool = False,
    ) -> TensorOrTuple | tuple[TensorOrTuple, Tensor]:
        """Relevance of each input feature for ``target``; same form as ``inputs``.

        Relevance sums to the target output (up to what epsilon and biases
        absorb); ``return_convergence_delta`` adds output minus that sum per
        example. ``verbose`` prints the rule chosen for each layer.
        """
        if getattr(self.composite, "gradient_form", False):
            rel, output = self._run_transformer(inputs, target, additional_forward_args)
        else:
            rel, _, output = self._run(inputs, target, additional_forward_args, (), False, verbose)
        result = restore_form(is_tuple(inputs), rel)
        if return_convergence_delta:
            return result, self.compute_convergence_delta(rel, output)
        return result

    def compute_convergence_delta(self, attributions: TensorOrTuple, output: Tensor) -> Tensor:  # type: ignore[override]
        """Per example: ``output`` minus the sum of all attributions (Captum's sign)."""
        return relevance_delta(attributions, output)
