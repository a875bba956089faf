"""AttnLRP and LayerAttnLRP: relevance propagation for transformers (see :mod:`.transformer_rules`)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..._engine.attention import AttentionRecorder
from ..._engine.call import parse_call
from ..._engine.errors import ArgumentTypeError, ArgumentValueError
from ..._engine.hooks import modules_of, owned_hooks, preserved_state
from ..._engine.inputs import as_tuple, grad_ready, is_tuple, restore_form, rows
from ..._engine.model_outputs import call_model, explained_scores
from ..._engine.overrides import overriding
from ..base import GradientAttribution, LayerAttribution
from .transformer_rules import (
    Dependence,
    TransformerState,
    check_gradient_form,
    transformer_rules,
    unit_hooks,
)

TensorOrTuple = Tensor | tuple[Tensor, ...]


@dataclass
class TransformerRelevance:
    """What one AttnLRP pass gives: relevances of the sources, the explained scores, the maps."""

    relevance: tuple[Tensor, ...]
    scores: Tensor
    chosen: Tensor | None
    maps: list[Tensor]
    map_relevance: list[Tensor]


def layer_rules(model: Any, composite: Any) -> dict[nn.Module, Any]:
    """Rules for ``model``'s modules (a ``rule`` attribute wins over the composite), checked for a gradient form."""
    if not isinstance(model, nn.Module):
        return {}
    chosen = composite.rules(model) if composite is not None else {}
    for module in model.modules():
        own = getattr(module, "rule", None)
        if own is not None:
            chosen[module] = own
    for module, rule in chosen.items():
        check_gradient_form(rule, type(module).__name__)
    return chosen


@contextlib.contextmanager
def _layer_source(layer: nn.Module | None, use_input: bool, state: TransformerState) -> Iterator[list[Tensor]]:
    """Make the output (or input) of ``layer`` a fresh leaf: the source of the relevance."""
    found: list[Tensor] = []
    if layer is None:
        yield found
        return

    def leaf(value: Any) -> Tensor:
        if found:
            raise ArgumentValueError(
                f"`layer` {type(layer).__name__} runs more than once in one forward; give each use its own module"
            )
        if not isinstance(value, Tensor) or not value.is_floating_point():
            raise ArgumentTypeError(
                f"the {'input' if use_input else 'output'} of `layer` {type(layer).__name__} must be a "
                f"floating-point tensor, got {type(value).__name__}"
            )
        source = value.detach().requires_grad_()
        state.dependence.add(source)
        found.append(source)
        return source.clone()

    def after(module, args, output):
        return leaf(output)

    def before(module, args):
        return (leaf(args[0]), *args[1:])

    with owned_hooks(forward=[] if use_input else [(layer, after)], pre=[(layer, before)] if use_input else []):
        yield found


def attnlrp_relevance(
    forward_func: Callable,
    inputs: tuple[Tensor, ...],
    target: Any = None,
    additional_forward_args: Any = None,
    composite: Any = None,
    layer: nn.Module | None = None,
    attribute_to_layer_input: bool = False,
    model: nn.Module | None = None,
    record_attention: bool = False,
    attention_rule: str = "attnlrp",
) -> TransformerRelevance:
    """One AttnLRP forward and backward: relevance = source * modified gradient.

    The sources are the inputs, or the output (input) of ``layer`` when given.
    With ``record_attention`` the attention maps of the forward and their
    relevance (map times its AttnLRP gradient) are returned as well.
    """
    model = model if model is not None else modules_of(forward_func)
    rules_for_layers = layer_rules(model, composite)
    sources = grad_ready(inputs) if layer is None else ()
    batch = inputs[0].shape[0] if inputs else 0
    recorder = AttentionRecorder() if record_attention else None
    state = TransformerState(Dependence(sources), recorder, check_attention_rule(attention_rule) == "constant")
    rules = transformer_rules(state)
    feeds = sources if layer is None else inputs
    with (
        preserved_state(model),
        unit_hooks(model, state, rules_for_layers),
        _layer_source(layer, attribute_to_layer_input, state) as found,
        torch.enable_grad(),
    ):
        forward = overriding(lambda *xs: call_model(forward_func, xs, additional_forward_args), rules)
        output = forward(*feeds)
        scores, chosen = explained_scores(output, target, batch)
        wrt = list(sources) if layer is None else found
        if layer is not None and not found:
            raise ArgumentValueError(f"`layer` {type(layer).__name__} was not called during the forward pass")
        maps = recorder.maps if recorder is not None else []
        wanted = [t for t in (*wrt, *maps) if t.requires_grad]
        grads = torch.autograd.grad(scores.sum(), wanted, allow_unused=True, materialize_grads=True) if wanted else ()
    by_id = {id(t): g for t, g in zip(wanted, grads)}
    relevance = tuple(t.detach() * by_id.get(id(t), torch.zeros_like(t)) for t in wrt)
    map_relevance = [m.detach() * by_id[id(m)] for m in maps if id(m) in by_id]
    return TransformerRelevance(relevance, scores.detach(), chosen, [m.detach() for m in maps], map_relevance)


ATTENTION_RULES = ("attnlrp", "constant")


def check_attention_rule(rule: Any) -> str:
    if rule not in ATTENTION_RULES:
        raise ArgumentValueError(f"`attention_rule` must be one of {ATTENTION_RULES}, got {rule!r}")
    return rule


def relevance_delta(relevance: TensorOrTuple, scores: Tensor) -> Tensor:
    """Per example: the explained score minus the sum of all relevances (Captum's sign)."""
    parts = relevance if isinstance(relevance, tuple) else (relevance,)
    return scores.reshape(-1) - sum(rows(r).sum(1) for r in parts).reshape(-1)


def _configure(method: Any, composite: Any, attention_rule: str, model: nn.Module | None) -> None:
    """The settings AttnLRP and LayerAttnLRP share, checked when the method is made."""
    method.composite = composite
    method.attention_rule = check_attention_rule(attention_rule)
    # found now, so that a copy with another forward function (LLMGradientAttribution) keeps it
    method.model = model if model is not None else modules_of(method.forward_func)
    layer_rules(method.model, composite)


class AttnLRP(GradientAttribution):
    """AttnLRP (Achtibat et al., 2024): LRP for transformers, in one forward and one backward.

    Relevance of each input feature (usually the token embeddings, or the
    pixels of a vision transformer) for the explained logit. The rules act on
    the functions the model calls, not on its classes, so any Hugging Face
    model (BERT, GPT2, Llama, ViT, ... with SDPA or eager attention) or
    ``nn.TransformerEncoder`` works unmodified; see
    :mod:`attribuo.attr.relevance.transformer_rules` for the rules and which
    of them conserve relevance exactly.

    ``forward_func`` is the model (its modules are searched for activation
    units) or any function of the inputs; pass ``model=`` with a function so
    that its modules can be found. A Hugging Face model is given 3-D
    floating inputs as ``inputs_embeds`` and 4-D ones as ``pixel_values``.

    Args:
        forward_func: the model, or a function of the inputs.
        composite: optional composite (``attribuo.attr.relevance``) giving
            epsilon or gamma rules to linear layers; default LRP-0 (the
            plain gradient) there.
        attention_rule: ``"attnlrp"`` (default): relevance also flows
            through the attention probabilities, by AttnLRP's softmax rule,
            which is not exactly conservative; ``"constant"``: the
            probabilities are held constant (CP-LRP, Ali et al. 2022), so all
            relevance flows through the values and is conserved exactly on
            bias-free models.
        model: the module behind ``forward_func`` when that is a function.

    Example:
        >>> import torch
        >>> from attribuo.attr import AttnLRP
        >>> layer = torch.nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
        >>> model = torch.nn.Sequential(layer, torch.nn.Flatten(), torch.nn.Linear(40, 3)).eval()
        >>> attr, delta = AttnLRP(model).attribute(torch.randn(2, 5, 8), target=1, return_convergence_delta=True)
        >>> attr.shape, delta.shape
        (torch.Size([2, 5, 8]), torch.Size([2]))
    """

    _convergence_delta = True
    _multiply_by_inputs = True

    def __init__(
        self,
        forward_func: Callable,
        composite: Any = None,
        *,
        attention_rule: str = "attnlrp",
        model: nn.Module | None = None,
    ) -> None:
        if not callable(forward_func):
            raise ArgumentTypeError(f"`forward_func` must be callable, got {type(forward_func).__name__}")
        super().__init__(forward_func)
        _configure(self, composite, attention_rule, model)

    def attribute(
        self,
        inputs: TensorOrTuple,
        target: Any = None,
        additional_forward_args: Any = None,
        return_convergence_delta: bool = False,
    ) -> TensorOrTuple | tuple[TensorOrTuple, Tensor]:
        """Relevance of each input feature; same form as ``inputs``.

        ``target``: as for the other methods; for 3-D logits (language
        models) an int is read at the last position, and None explains the
        top class. ``return_convergence_delta`` adds, per example, the
        explained score minus the sum of all relevances.
        """
        call = parse_call(inputs, None, None, floating=True)
        result = attnlrp_relevance(
            self.forward_func, call.inputs, target, additional_forward_args, self.composite,
            model=self.model, attention_rule=self.attention_rule,
        )
        attributions = restore_form(is_tuple(inputs), result.relevance)
        if return_convergence_delta:
            return attributions, relevance_delta(result.relevance, result.scores)
        return attributions


class LayerAttnLRP(LayerAttribution, GradientAttribution):
    """AttnLRP relevance at a layer, typically the token embedding module of a model fed token ids.

    The output (or, with ``attribute_to_layer_input``, the input) of
    ``layer`` is the source of the relevance: the result has its shape, e.g.
    ``(batch, tokens, hidden)`` for an embedding layer; sum over the last dim
    for one score per token.

    Args:
        forward_func: the model, or a function of the inputs.
        layer: the module whose output is explained (called once per forward).
        composite: optional composite for the linear layers, as in AttnLRP.
        device_ids: accepted for Captum's signature; unused.
        attention_rule: ``"attnlrp"`` or ``"constant"``, as in AttnLRP.
        model: the module behind ``forward_func`` when that is a function.

    Example:
        >>> import torch
        >>> from attribuo.attr import LayerAttnLRP
        >>> embed = torch.nn.Embedding(20, 8)
        >>> block = torch.nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
        >>> model = torch.nn.Sequential(embed, block, torch.nn.Flatten(), torch.nn.Linear(32, 2)).eval()
        >>> LayerAttnLRP(model, embed).attribute(torch.randint(0, 20, (3, 4)), target=0).shape
        torch.Size([3, 4, 8])
    """

    _convergence_delta = True
    _multiply_by_inputs = True

    def __init__(
        self,
        forward_func: Callable,
        layer: nn.Module,
        composite: Any = None,
        device_ids: Any = None,
        *,
        attention_rule: str = "attnlrp",
        model: nn.Module | None = None,
    ) -> None:
        if not isinstance(layer, nn.Module):
            raise ArgumentTypeError(f"`layer` must be a torch.nn.Module, got {type(layer).__name__}")
        LayerAttribution.__init__(self, forward_func, layer, device_ids)
        _configure(self, composite, attention_rule, model)

    def attribute(
        self,
        inputs: TensorOrTuple,
        target: Any = None,
        additional_forward_args: Any = None,
        attribute_to_layer_input: bool = False,
        return_convergence_delta: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Relevance of each element of the layer's output (input) for ``target``."""
        xs = as_tuple(inputs, "inputs")
        result = attnlrp_relevance(
            self.forward_func, xs, target, additional_forward_args, self.composite,
            layer=self.layer, attribute_to_layer_input=attribute_to_layer_input, model=self.model,
            attention_rule=self.attention_rule,
        )
        (relevance,) = result.relevance
        if return_convergence_delta:
            return relevance, relevance_delta(result.relevance, result.scores)
        return relevance
