"""Attention maps of one forward, and which row and columns of them to report.

The maps are read without editing the model: SDPA calls are written out and
eager-attention softmaxes recorded (:mod:`attribuo._engine.attention`), so
any Hugging Face encoder, decoder or vision transformer, and
``nn.TransformerEncoder``, gives its ``(batch, heads, tokens, tokens)`` maps.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..._engine.attention import AttentionRecorder, attention_rules
from ..._engine.errors import ArgumentTypeError, ArgumentValueError
from ..._engine.hooks import modules_of, owned_hooks, preserved_state
from ..._engine.inputs import as_tuple, grad_ready
from ..._engine.model_outputs import call_model, explained_scores
from ..._engine.overrides import overriding


@dataclass
class Maps:
    """Attention maps (detached) and, when asked for, the gradient of the explained score w.r.t. them."""

    maps: list[Tensor]
    gradients: list[Tensor]
    scores: Tensor | None


def input_embedding(model: Any) -> nn.Module | None:
    """The token-embedding module of ``model`` (``get_input_embeddings()``, else the first nn.Embedding)."""
    if not isinstance(model, nn.Module):
        return None
    getter = getattr(model, "get_input_embeddings", None)
    if callable(getter):
        with contextlib.suppress(NotImplementedError, AttributeError):
            found = getter()
            if isinstance(found, nn.Module):
                return found
    return next((m for m in model.modules() if isinstance(m, nn.Embedding)), None)


@contextlib.contextmanager
def _differentiable_embeddings(module: nn.Module | None) -> Iterator[None]:
    # With token ids and frozen weights nothing in the graph requires grad;
    # the embedding output becomes a leaf so that gradients exist.
    def hook(mod, args, output):
        if isinstance(output, Tensor) and output.is_floating_point() and not output.requires_grad:
            return output.detach().requires_grad_()
        return output

    with owned_hooks(forward=[(module, hook)] if module is not None else []):
        yield


def collect_maps(
    forward_func: Callable,
    inputs: Any,
    target: Any = None,
    additional_forward_args: Any = None,
    gradients: bool = False,
    model: nn.Module | None = None,
) -> Maps:
    """Run the model once, recording its attention maps (and their gradients if ``gradients``)."""
    xs = as_tuple(inputs, "inputs")
    model = model if model is not None else modules_of(forward_func)
    recorder = AttentionRecorder()
    feeds = grad_ready(xs) if gradients and all(x.is_floating_point() for x in xs) else xs
    embedding = input_embedding(model) if gradients and feeds is xs else None
    grad_mode = torch.enable_grad() if gradients else torch.no_grad()
    with preserved_state(model), _differentiable_embeddings(embedding), grad_mode:
        forward = overriding(lambda *a: call_model(forward_func, a, additional_forward_args), attention_rules(recorder.record))
        output = forward(*feeds)
        if not recorder.maps:
            raise ArgumentValueError(
                "no attention maps were seen in the forward pass: the model must compute attention with "
                "F.scaled_dot_product_attention, nn.MultiheadAttention or a softmax over the last dim of "
                "(batch, heads, queries, keys) scores"
            )
        scores = None
        grads: list[Tensor] = []
        if gradients:
            scores, _ = explained_scores(output, target, xs[0].shape[0])
            if not all(m.requires_grad for m in recorder.maps):
                raise ArgumentValueError("the attention maps do not depend on anything that requires grad")
            grads = list(torch.autograd.grad(scores.sum(), recorder.maps, allow_unused=True, materialize_grads=True))
            scores = scores.detach()
    return Maps([m.detach() for m in recorder.maps], grads, scores)


def fuse_heads(maps: Tensor, head_fusion: str) -> Tensor:
    """``(batch, heads, q, k)`` -> ``(batch, q, k)`` by mean, max or min over heads."""
    if head_fusion == "mean":
        return maps.mean(1)
    if head_fusion == "max":
        return maps.amax(1)
    if head_fusion == "min":
        return maps.amin(1)
    raise ArgumentValueError(f"`head_fusion` must be 'mean', 'max' or 'min', got {head_fusion!r}")


def check_square(maps: list[Tensor]) -> int:
    """All maps must be self-attention over one sequence length; returns it."""
    lengths = {(m.shape[-2], m.shape[-1]) for m in maps}
    if len(lengths) != 1 or next(iter(lengths))[0] != next(iter(lengths))[1]:
        raise ArgumentValueError(
            f"attention rollout needs self-attention maps over one sequence; the maps have (queries, keys) "
            f"shapes {sorted(lengths)}"
        )
    return next(iter(lengths))[0]


def is_causal(maps: list[Tensor]) -> bool:
    """Whether every map is lower-triangular (a decoder: each token attends only to earlier ones)."""
    first = maps[0]
    upper = torch.ones(first.shape[-2:], dtype=torch.bool, device=first.device).triu(1)
    return all(bool((m[..., upper] == 0).all()) for m in maps)


def query_position(maps: list[Tensor], position: int | None) -> int:
    """The explained token's index: ``position``, or by default the last token for causal
    (decoder) models and the first ([CLS]) otherwise."""
    length = maps[0].shape[-1]
    if position is None:
        return length - 1 if is_causal(maps) else 0
    if not isinstance(position, int) or isinstance(position, bool) or not -length <= position < length:
        raise ArgumentValueError(f"`position` must be an int in [-{length}, {length}), got {position!r}")
    return position % length


def per_input(scores: Tensor, inputs: tuple[Tensor, ...], model: Any) -> Tensor:
    """``scores`` (batch, tokens) as reported: for pixel inputs the leading special tokens
    ([CLS], distillation) are dropped so that one score per patch remains."""
    first, length = inputs[0], scores.shape[-1]
    if not (first.is_floating_point() and first.dim() == 4):
        return scores
    config = getattr(model, "config", None)
    size, patch = getattr(config, "image_size", None), getattr(config, "patch_size", None)
    patches = (size // patch) ** 2 if isinstance(size, int) and isinstance(patch, int) else length - 1
    return scores[:, length - patches :]


def report(
    relevance: Tensor, maps: list[Tensor], inputs: tuple[Tensor, ...], position: int | None, model: Any
) -> Tensor:
    """The row of ``relevance`` (batch, tokens, tokens) at the explained position, per input token or patch."""
    return per_input(relevance[:, query_position(maps, position)], inputs, model)


def check_model(forward_func: Any) -> None:
    if not callable(forward_func):
        raise ArgumentTypeError(f"`model` must be callable, got {type(forward_func).__name__}")
