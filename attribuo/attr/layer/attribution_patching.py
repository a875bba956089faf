"""Attribution patching and the activation patching it approximates.

Activation patching (causal tracing: Vig et al., 2020; Meng et al., 2022;
the practice is laid out in Heimersheim & Nanda, 2024) asks how much of a
behaviour runs through one *site* of a model: run the model on a corrupted
input (a prompt with the decisive token changed), replace the activation
at the site (one position of a layer's output, one attention head) by its
value on the clean input, and measure how the metric (a logit, a logit
difference) moves. One forward per site.

Attribution patching (Nanda, 2023, "Attribution Patching: Activation
Patching At Industrial Scale"; Syed, Rager & Conmy, 2023, "Attribution
Patching Outperforms Automated Circuit Discovery") replaces every such
forward by the first-order Taylor term around the corrupted run::

    effect(site) ~= sum over the site's elements of (a_clean - a_corrupt) * dm/da |corrupted

so one clean forward and one corrupted forward + backward give the effect of
every site of every layer at once. The convention here is Nanda's
*denoising* one (clean values patched into the corrupted run); swapping
``inputs`` and ``corrupted_inputs`` gives the *noising* direction (corrupted
values patched into the clean run, gradient at the clean run).

Both classes read and replace sites with the engine's layer hooks
(:mod:`attribuo._engine.sites`, removed on every exit path).
:class:`ActivationPatching` is the exact reference: for each layer it is
feature ablation at the layer (:func:`~attribuo.attr.perturbation.feature_ablation.ablate`)
with the clean values as baselines and one feature per position (or head),
so the copies of a layer are evaluated many per forward, with the part of
the model before the layer computed once when the model allows it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..._engine.baselines import full_baselines
from ..._engine.call import Call, parse_call
from ..._engine.errors import ArgumentTypeError, ArgumentValueError
from ..._engine.forward import run_forward
from ..._engine.hooks import modules_of
from ..._engine.inputs import expand_batch, positive_int
from ..._engine.model_outputs import explained_scores
from ..._engine.perturb import perturbation_baselines
from ..._engine.sites import Captured, StopForward, capture, site_function
from ..._engine.targets import Target, parse_target
from ..base import GradientAttribution, LayerAttribution, PerturbationAttribution
from ..perturbation.feature_ablation import ablate
from .common import TensorOrTuple, layer_list, per_layer

_PER = ("position", "layer", "head")
PatchingResult = Tensor | list[Tensor]
Score = Callable[[Any], Tensor]


# ------------------------------------------------------------------ argument checks
def _check_per(per: Any) -> str:
    if not isinstance(per, str) or per not in _PER:
        raise ArgumentValueError(f"`per` must be one of {', '.join(map(repr, _PER))}; got {per!r}")
    return per


def _head_count(n_heads: int | None, forward_func: Callable, per: str) -> int:
    """The number of heads: given, or the Hugging Face model's ``config.num_attention_heads``."""
    if per != "head":
        return 1
    if n_heads is not None:
        return positive_int(n_heads, "n_heads")
    config = getattr(modules_of(forward_func) or forward_func, "config", None)
    heads = getattr(config, "num_attention_heads", None)
    if isinstance(heads, int) and heads > 0:
        return heads
    raise ArgumentValueError(
        "`n_heads` is needed for per='head': give n_heads= to the constructor (the forward "
        "function has no config.num_attention_heads to read it from)"
    )


def _calls(inputs: Any, corrupted_inputs: Any, additional_forward_args: Any) -> tuple[Call, Call]:
    """The clean and the corrupted call; ``corrupted_inputs`` in any form ``baselines`` take."""
    clean = parse_call(inputs, None, additional_forward_args)
    if corrupted_inputs is None:
        raise ArgumentValueError("`corrupted_inputs` is required: the run the clean activations are patched into")
    # a number, one example's shape or a batch of 1 is shared by every example, as baselines are
    corrupted = full_baselines(clean.inputs, corrupted_inputs, name="corrupted_inputs")
    return clean, clean.with_inputs(corrupted)


def _scores(values: Any, batch: int) -> Tensor:
    """A user metric's value as one score per example."""
    if not isinstance(values, Tensor):
        raise ArgumentTypeError(f"`metric` must return a tensor, got {type(values).__name__}")
    if values.shape[:1] != (batch,) or values.numel() != batch:
        raise ArgumentValueError(
            f"`metric` must return one value per example (shape ({batch},)); got shape "
            f"{tuple(values.shape)}"
        )
    return values.reshape(batch)


def _metric(metric: Any, target: Any, batch: int) -> tuple[Score | None, Target | None]:
    """The user's metric, or the parsed target for the default metric."""
    if metric is None:
        return None, parse_target(target, batch)
    if not callable(metric):
        raise ArgumentTypeError(f"`metric` must be a callable(output) -> (N,) tensor, got {type(metric).__name__}")
    if target is not None:
        raise ArgumentValueError("give `target` or `metric`, not both (a metric reads the output itself)")
    return (lambda output: _scores(metric(output), batch)), None


def _fixed_default(target: Target, clean_output: Any, batch: int) -> Score:
    """The default metric: the targeted logit, the same class in every run.

    ``target=None`` on logits of several classes explains each example's top
    class on the clean run (also in the corrupted and patched runs).
    """
    _, chosen = explained_scores(clean_output, target, batch)
    fixed = target if chosen is None else Target(per_example=chosen.detach().reshape(-1, 1))
    return lambda output: explained_scores(output, fixed, batch)[0]


# ------------------------------------------------------------------ runs
def _site_run(
    forward_func: Callable, layers: list[nn.Module], call: Call, use_input: bool,
    keep_graph: bool, stop: bool,
) -> tuple[list[Captured], Any]:
    """One forward of ``call`` recording every site; the output (None when cut short)."""
    output = None
    with capture(layers, use_input, keep_graph=keep_graph, stop=stop) as records:
        try:
            output = run_forward(forward_func, call.inputs, None, call.args)
        except StopForward:
            pass
    for record, layer in zip(records, layers):
        if record.calls == 0:
            raise ArgumentValueError(f"`layers` entry {type(layer).__name__} was not called during the forward pass")
    return records, output


def _clean_run(
    forward_func: Callable, layers: list[nn.Module], call: Call, use_input: bool,
    score: Score | None, target: Target | None,
) -> tuple[list[Tensor], Score]:
    """The clean values of every site and the metric fixed for all runs."""
    # the clean output is needed only to pick the default metric's class
    needs_output = score is None and target is not None and target.is_none
    with torch.no_grad():
        records, output = _site_run(forward_func, layers, call, use_input, False, stop=not needs_output)
    if score is None:
        score = _fixed_default(target, output, call.batch) if needs_output else (
            lambda out: explained_scores(out, target, call.batch)[0]
        )
    return [r.values[0] for r in records], score


def _check_pair(clean: Tensor, corrupt: Tensor, layer: nn.Module) -> None:
    if clean.shape != corrupt.shape:
        raise ArgumentValueError(
            f"the site {type(layer).__name__} has shape {tuple(clean.shape)} on `inputs` but "
            f"{tuple(corrupt.shape)} on `corrupted_inputs`; patching needs the same shape "
            "(pad the prompts to the same length)"
        )


# ------------------------------------------------------------------ sites to positions / heads
def _site_view(values: Tensor, per: str, heads: int, layer: nn.Module) -> Tensor:
    """``values`` as ``[N, groups, rest]``: groups are positions, heads, or the whole layer."""
    n = values.shape[0]
    if per == "layer":
        return values.reshape(n, 1, math.prod(values.shape[1:]))
    if per == "position":
        if values.dim() < 2:
            raise ArgumentValueError(
                f"per='position' needs a site with a position dim (dim 1); {type(layer).__name__} "
                f"gives shape {tuple(values.shape)}: use per='layer'"
            )
        return values.reshape(n, values.shape[1], math.prod(values.shape[2:]))
    width = values.shape[-1] if values.dim() >= 2 else 0
    if width == 0 or width % heads:
        raise ArgumentValueError(
            f"per='head' splits the last dim of the site into `n_heads`={heads} heads, but "
            f"{type(layer).__name__} gives shape {tuple(values.shape)}; use a site where the heads "
            "are concatenated (the input of the attention output projection, "
            "attribute_to_layer_input=True)"
        )
    # [N, ..., heads, head_dim] -> [N, heads, (...) * head_dim]
    rest = math.prod(values.shape[1:-1])
    split = values.reshape(n, rest, heads, width // heads)
    return split.transpose(1, 2).reshape(n, heads, rest * (width // heads))


def _group_mask(values: Tensor, per: str, heads: int) -> Tensor:
    """One feature id per position / head (one id for the whole layer), the site's shape."""
    shape = (1, *values.shape[1:])
    if per == "layer":
        return torch.zeros(shape, dtype=torch.long, device=values.device)
    if per == "position":
        ids = torch.arange(values.shape[1], device=values.device)
        return ids.reshape(1, -1, *([1] * (values.dim() - 2))).expand(shape)
    ids = torch.arange(heads, device=values.device).repeat_interleave(values.shape[-1] // heads)
    return ids.reshape(*([1] * (values.dim() - 1)), -1).expand(shape)


def _finish(effects: Tensor, per: str) -> Tensor:
    # per='layer' gives one value per example, the others [N, positions] / [N, heads]
    return effects[:, 0] if per == "layer" else effects


# ------------------------------------------------------------------ the algorithms
def attribution_patching(
    forward_func: Callable, layers: list[nn.Module], clean: Call, corrupt: Call,
    score: Score | None, target: Target | None, per: str, heads: int, use_input: bool,
) -> list[Tensor]:
    """First-order patching effects of every layer's sites (the algorithm behind AttributionPatching).

    A clean forward (no grad, cut short after the last site unless the
    metric's class must be read off the output) and one corrupted forward
    and backward, whatever the number of layers and sites.
    """
    clean_values, score = _clean_run(forward_func, layers, clean, use_input, score, target)
    with torch.enable_grad():
        records, output = _site_run(forward_func, layers, corrupt, use_input, True, stop=False)
        acts = [r.values[0] for r in records]
        for a, layer in zip(acts, layers):
            if not a.is_floating_point():
                raise ArgumentTypeError(
                    f"the site {type(layer).__name__} holds {a.dtype} values, which have no gradient; "
                    "attribution patching needs a floating-point activation"
                )
        values = score(output)
        grads = torch.autograd.grad(values.sum(), acts, allow_unused=True, materialize_grads=True)
    effects = []
    for layer, a_clean, a_corrupt, grad in zip(layers, clean_values, acts, grads):
        _check_pair(a_clean, a_corrupt, layer)
        product = (a_clean - a_corrupt.detach()) * grad
        effects.append(_finish(_site_view(product, per, heads, layer).sum(-1), per))
    return effects


def _rows(output: Any, start: int, stop: int, total: int) -> Any:
    """Rows ``start:stop`` of every batched tensor in ``output`` (a tensor, tuple, dict, ModelOutput)."""
    if isinstance(output, Tensor):
        return output[start:stop] if output.dim() and output.shape[0] == total else output
    if isinstance(output, dict):
        sliced = {k: _rows(v, start, stop, total) for k, v in output.items()}
        try:
            return type(output)(**sliced)  # a Hugging Face ModelOutput keeps its type
        except TypeError:
            return sliced
    if isinstance(output, (tuple, list)) and not hasattr(output, "_fields"):
        return type(output)(_rows(v, start, stop, total) for v in output)
    return output


def activation_patching(
    forward_func: Callable, layers: list[nn.Module], clean: Call, corrupt: Call,
    score: Score | None, target: Target | None, per: str, heads: int, use_input: bool,
    perturbations_per_eval: int | None = None, show_progress: bool = False,
) -> list[Tensor]:
    """Exact patching effects (the algorithm behind ActivationPatching).

    Per layer: feature ablation of the corrupted run's site values, with the
    clean values as the baselines and one feature per position (or head, or
    one for the layer), so that ``-ablation`` is ``m(patched) - m(corrupted)``.
    """
    clean_values, score = _clean_run(forward_func, layers, clean, use_input, score, target)
    with torch.no_grad():
        records, _ = _site_run(forward_func, layers, corrupt, use_input, False, stop=True)
    n = corrupt.batch
    effects = []
    for layer, a_clean, record in zip(layers, clean_values, records):
        a_corrupt, others = record.values[0], record.values[1:]
        _check_pair(a_clean, a_corrupt, layer)
        view = _site_view(a_corrupt, per, heads, layer)  # the shape check, before any forward
        if n == 0:  # an empty batch: nothing to patch, an empty result of the right shape
            effects.append(_finish(view.sum(-1), per))
            continue
        # copies are independent: the model before the layer runs once per chunk where it can
        replaced = site_function(forward_func, layer, corrupt, use_input, reuse_prefix=True)

        def patched(values: Tensor, replaced: Callable = replaced, others: tuple = others) -> Tensor:
            times = values.shape[0] // n
            # a tuple site's other tensors (a block's extra outputs) keep their corrupted values
            out = replaced(values, *(expand_batch(o, times) for o in others))
            return torch.cat([score(_rows(out, c * n, (c + 1) * n, times * n)) for c in range(times)])

        patched.wraps_forward = replaced  # type: ignore[attr-defined]  # batching probes the model
        patched.reuses_prefix = getattr(replaced, "reuses_prefix", False)  # type: ignore[attr-defined]
        site = parse_call(a_corrupt)
        (drops,) = ablate(
            patched, site, perturbation_baselines((a_corrupt,), (a_clean,)),
            (_group_mask(a_corrupt, per, heads),), perturbations_per_eval, show_progress,
            "Activation Patching",
        )
        # every element of a group carries the group's value: read one of each
        effects.append(_finish(0.0 - _site_view(drops, per, heads, layer)[..., 0], per))  # no -0.0
    return effects


# ------------------------------------------------------------------ the classes
class _Patching(LayerAttribution):
    """What both patching classes share: the sites and the head count."""

    def __init__(
        self, forward_func: Callable, layers: nn.Module | Sequence[nn.Module],
        n_heads: int | None = None, device_ids: list[int] | None = None,
    ) -> None:
        super().__init__(forward_func, layers, device_ids)
        self.layers = layer_list(layers)
        if n_heads is not None:
            positive_int(n_heads, "n_heads")
        self.n_heads = n_heads

    def _parsed(
        self, inputs: Any, corrupted_inputs: Any, target: Any, additional_forward_args: Any,
        per: Any, metric: Any,
    ) -> tuple[Call, Call, Score | None, Target | None, str, int]:
        per = _check_per(per)
        clean, corrupt = _calls(inputs, corrupted_inputs, additional_forward_args)
        score, parsed = _metric(metric, target, clean.batch)
        return clean, corrupt, score, parsed, per, _head_count(self.n_heads, self.forward_func, per)


class AttributionPatching(_Patching, GradientAttribution):
    """Attribution patching (Nanda, 2023; Syed, Rager & Conmy, 2023).

    The linear approximation of activation patching: the effect on the
    metric of patching a site's clean activation into the corrupted run is
    estimated as ``(a_clean - a_corrupt) . dm/da`` with the gradient taken
    at the corrupted run, summed over the site's hidden dim (and over the
    positions for ``per='head'`` / ``'layer'``). One clean forward and one
    corrupted forward + backward give every site of every layer, against
    one forward per site for exact patching (:class:`ActivationPatching`).
    For the noising direction (corrupted values into the clean run), swap
    ``inputs`` and ``corrupted_inputs``.

    ``layers``: a module or a list of modules (block outputs, attention
    outputs, MLP outputs, ...), whose output (``attribute_to_layer_input=
    False``) or input is the site; for a module that returns a tuple the
    first tensor is the activation. Dim 0 of a site is the batch and dim 1
    the position. ``n_heads`` (for ``per='head'``) splits the site's last
    dim into heads; for Hugging Face attention use the attention output
    projection's input (GPT-2's ``attn.c_proj``, BERT's
    ``attention.output.dense``, Llama's ``self_attn.o_proj``, with
    ``attribute_to_layer_input=True``), and the head count is read from
    ``config.num_attention_heads`` when not given.

    Example:
        >>> import torch
        >>> from attribuo.attr.layer.attribution_patching import AttributionPatching
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
        >>> clean, corrupt = torch.rand(2, 5, 4), torch.rand(2, 5, 4)  # [N, positions, features]
        >>> score = lambda out: out[:, :, 0].sum(1) - out[:, :, 1].sum(1)  # a logit difference
        >>> atp = AttributionPatching(model, [model[0], model[1]])
        >>> effects = atp.attribute(clean, corrupt, metric=score)  # one per layer: [N, positions]
        >>> [tuple(e.shape) for e in effects]
        [(2, 5), (2, 5)]
    """

    def attribute(
        self, inputs: TensorOrTuple, corrupted_inputs: TensorOrTuple, target: Any = None,
        additional_forward_args: Any = None, per: str = "position",
        metric: Callable[[Any], Tensor] | None = None, attribute_to_layer_input: bool = False,
    ) -> PatchingResult:
        """Estimated patching effects per site of each layer.

        ``per='position'``: ``[N, positions]`` (dim 1 of the site, summed
        over the rest); ``'layer'``: ``[N]``; ``'head'``: ``[N, heads]``
        (summed over positions). A tensor for one layer, a list in the order
        of ``layers`` for a list. ``metric(output)`` gives one differentiable
        score per example; by default the logit picked by ``target`` as in
        Captum (a model's ``logits`` for a Hugging Face output, the last
        position for ``[N, positions, classes]`` logits, each example's top
        class on the clean run for ``target=None``). The metric is always
        called on the output of one batch of ``N`` examples (rows of a
        tensor, tuple or ``ModelOutput``), also where exact patching runs
        many patched copies in one forward. ``additional_forward_args`` go
        positionally to both runs (wrap the model for keyword arguments such
        as ``attention_mask``).
        """
        clean, corrupt, score, target_, per, heads = self._parsed(
            inputs, corrupted_inputs, target, additional_forward_args, per, metric
        )
        effects = attribution_patching(
            self.forward_func, self.layers, clean, corrupt, score, target_, per, heads,
            bool(attribute_to_layer_input),
        )
        return per_layer(self.layer, effects)


class ActivationPatching(_Patching, PerturbationAttribution):
    """Activation patching, exactly: one patched corrupted run per site.

    For each site (a position, a head, or the whole layer, as ``per``) the
    corrupted run is repeated with the site's clean values patched in; the
    effect is ``m(patched) - m(corrupted)``, one value per example. This is
    what :class:`AttributionPatching` approximates, with the same
    arguments, sites and result shapes (see there). Cost: one forward per
    site per example, ``perturbations_per_eval`` patched copies per forward
    (by default as many as the memory budget allows; results do not depend
    on it), the model before the layer computed once per chunk when the
    model allows it.

    Example:
        >>> import torch
        >>> from attribuo.attr.layer.attribution_patching import ActivationPatching
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
        >>> clean, corrupt = torch.rand(2, 5, 4), torch.rand(2, 5, 4)
        >>> score = lambda out: out[:, :, 0].sum(1)
        >>> exact = ActivationPatching(model, model[1]).attribute(clean, corrupt, metric=score)
        >>> total = score(model(clean)) - score(model(corrupt))  # what runs after tanh is linear:
        >>> torch.allclose(exact.sum(1), total, atol=1e-5)  # the position effects add up
        True
    """

    def attribute(
        self, inputs: TensorOrTuple, corrupted_inputs: TensorOrTuple, target: Any = None,
        additional_forward_args: Any = None, per: str = "position",
        metric: Callable[[Any], Tensor] | None = None, attribute_to_layer_input: bool = False,
        perturbations_per_eval: int | None = None, show_progress: bool = False,
    ) -> PatchingResult:
        """Exact patching effects per site of each layer, shaped as AttributionPatching's."""
        clean, corrupt, score, target_, per, heads = self._parsed(
            inputs, corrupted_inputs, target, additional_forward_args, per, metric
        )
        effects = activation_patching(
            self.forward_func, self.layers, clean, corrupt, score, target_, per, heads,
            bool(attribute_to_layer_input), perturbations_per_eval, show_progress,
        )
        return per_layer(self.layer, effects)
