"""Scaled dot-product attention written out as the operations it stands for.

``F.scaled_dot_product_attention`` is one fused call, so a rule-substitution
mode (see :mod:`.overrides`) sees neither the query-key product, nor the
softmax, nor the attention-value product. :func:`decomposed_attention`
computes the same result from those three steps, each one a function the
caller supplies: the attention probabilities can then be recorded, and
relevance or DeepLift rules can act on each product, for any model that
calls SDPA (Hugging Face's ``sdpa`` attention, ``nn.MultiheadAttention``,
``nn.TransformerEncoderLayer``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .overrides import call_argument, see_inside

SDPA_FUNCTIONS: tuple[Callable, ...] = (F.scaled_dot_product_attention,)

_SDPA_NAMES = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")
_SDPA_DEFAULTS = (None, None, None, None, 0.0, False, None, False)


@dataclass(frozen=True)
class AttentionCall:
    """The arguments of one ``scaled_dot_product_attention`` call, by name."""

    query: Tensor
    key: Tensor
    value: Tensor
    attn_mask: Tensor | None = None
    dropout_p: float = 0.0
    is_causal: bool = False
    scale: float | None = None
    enable_gqa: bool = False

    @classmethod
    def parse(cls, args: tuple, kwargs: dict) -> AttentionCall:
        values = {}
        for i, (name, default) in enumerate(zip(_SDPA_NAMES, _SDPA_DEFAULTS)):
            values[name] = kwargs[name] if name in kwargs else (args[i] if len(args) > i else default)
        return cls(**values)


def _expand_heads(t: Tensor, heads: int) -> Tensor:
    if t.dim() < 3 or t.shape[-3] == heads:
        return t
    return t.repeat_interleave(heads // t.shape[-3], dim=-3)


def decomposed_attention(
    call: AttentionCall,
    matmul: Callable[[Tensor, Tensor], Tensor] = torch.matmul,
    softmax: Callable[[Tensor], Tensor] = lambda s: torch.softmax(s, -1),
    on_probabilities: Callable[[Tensor], Tensor] | None = None,
) -> Tensor:
    """SDPA's output as ``matmul(softmax(matmul(q, k^T) * scale + mask), v)``.

    ``on_probabilities`` sees (and may replace) the attention probabilities.
    Rows that the mask hides completely give zeros, as torch's math kernel
    does. Dropout is applied when ``dropout_p > 0``.

    Example:
        >>> import torch, torch.nn.functional as F
        >>> q, k, v = torch.randn(3, 1, 2, 5, 4).unbind(0)
        >>> call = AttentionCall(q, k, v, is_causal=True)
        >>> torch.allclose(decomposed_attention(call), F.scaled_dot_product_attention(q, k, v, is_causal=True), atol=1e-6)
        True
    """
    q, k, v = call.query, call.key, call.value
    if call.enable_gqa:
        k, v = _expand_heads(k, q.shape[-3]), _expand_heads(v, q.shape[-3])
    scale = call.scale if call.scale is not None else 1.0 / math.sqrt(q.shape[-1])
    scores = matmul(q, k.transpose(-2, -1)) * scale
    length, source = q.shape[-2], k.shape[-2]
    mask = call.attn_mask
    if call.is_causal:
        causal = torch.ones(length, source, dtype=torch.bool, device=q.device).tril()
        scores = scores.masked_fill(~causal, float("-inf"))
    if mask is not None:
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask, float("-inf"))
        else:
            scores = scores + mask
    probabilities = softmax(scores)
    hidden = torch.isneginf(scores).all(-1, keepdim=True)
    if bool(hidden.any()):
        probabilities = probabilities.masked_fill(hidden, 0.0)
    if on_probabilities is not None:
        probabilities = on_probabilities(probabilities)
    if call.dropout_p > 0:
        probabilities = F.dropout(probabilities, call.dropout_p)
    return matmul(probabilities.to(v.dtype), v)


def sdpa_call(args: tuple, kwargs: dict) -> AttentionCall | None:
    """The parsed call, or None when it cannot be written out (nested tensors, odd shapes)."""
    try:
        call = AttentionCall.parse(args, kwargs)
    except (IndexError, TypeError):
        return None
    tensors: Any = (call.query, call.key, call.value)
    if not all(isinstance(t, Tensor) and not t.is_nested and t.dim() >= 2 for t in tensors):
        return None
    return call


# ------------------------------------------------------- recording the maps
SOFTMAX_FUNCTIONS: tuple[Callable, ...] = (F.softmax, torch.softmax, torch.Tensor.softmax, torch.special.softmax)


class AttentionRecorder:
    """Collects the attention probabilities of one forward, layer by layer.

    Each map has shape ``(batch, heads, queries, keys)``. A map comes from a
    written-out SDPA call, from a softmax over the last dim of a 4-D tensor
    (Hugging Face's eager attention), or from ``nn.MultiheadAttention``'s
    weight-returning path. The recorded tensors are part of the autograd
    graph, so gradients with respect to them can be taken.

    Example:
        >>> import torch
        >>> from attribuo._engine.overrides import overriding
        >>> layer = torch.nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True).eval()
        >>> recorder = AttentionRecorder()
        >>> _ = overriding(layer, attention_rules(recorder.record))(torch.randn(3, 5, 8))
        >>> [tuple(m.shape) for m in recorder.maps]
        [(3, 2, 5, 5)]
    """

    def __init__(self) -> None:
        self.maps: list[Tensor] = []

    def record(self, probabilities: Tensor) -> Tensor:
        self.maps.append(probabilities)
        return probabilities


def attention_rules(
    on_map: Callable[[Tensor], Tensor] | None = None,
    matmul: Callable[[Tensor, Tensor], Tensor] = torch.matmul,
) -> dict[Callable, Callable]:
    """Rules (for :func:`.overrides.overriding`) that write attention out.

    ``matmul`` is the product the written-out SDPA uses, so that an
    attribution method can put its own backward rule on it; ``on_map`` sees
    (and may replace) every attention map, ``(batch, heads, queries, keys)``.
    """
    heads: list[int] = []

    def softmax(scores: Tensor) -> Tensor:
        return torch.softmax(scores, -1)

    def sdpa(func, args, kwargs):
        call = sdpa_call(args, kwargs)
        if call is None:
            return func(*args, **kwargs)
        return decomposed_attention(call, matmul, softmax, on_map)

    def multi_head(func, args, kwargs):
        heads.append(int(kwargs.get("num_heads", args[4] if len(args) > 4 else 1)))
        try:
            return see_inside(func, args, kwargs)
        finally:
            heads.pop()

    def map_softmax(func, args, kwargs):
        out = func(*args, **kwargs)
        dim = call_argument(args, kwargs, 1, "dim")
        if not isinstance(out, Tensor) or dim not in (-1, out.dim() - 1):
            return out
        if out.dim() == 4:
            return on_map(out)
        if out.dim() == 3 and heads:
            return on_map(out.view(-1, heads[-1], *out.shape[1:])).view(out.shape)
        return out

    rules: dict[Callable, Callable] = {f: sdpa for f in SDPA_FUNCTIONS}
    rules[F.multi_head_attention_forward] = multi_head
    if on_map is not None:
        rules.update({f: map_softmax for f in SOFTMAX_FUNCTIONS})
    return rules
