"""Attention rollout and attention flow (Abnar and Zuidema, 2020)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..._engine.errors import ArgumentValueError
from ..._engine.hooks import modules_of
from ..._engine.inputs import as_tuple
from ..base import Attribution
from .maps import (
    check_model,
    check_square,
    collect_maps,
    fuse_heads,
    per_input,
    query_position,
    report,
)


def residual_attention(maps: list[Tensor], head_fusion: str = "mean", discard_ratio: float = 0.0) -> list[Tensor]:
    """Per layer ``0.5 A + 0.5 I`` with rows summing to one; ``A`` the fused heads.

    ``discard_ratio`` zeroes that fraction of the weakest attention weights of
    each row first (keeping the diagonal), as in common ViT rollout code.
    """
    fused = []
    for m in maps:
        a = fuse_heads(m.to(torch.float64), head_fusion)
        if discard_ratio > 0:
            k = int(a.shape[-1] * discard_ratio)
            if k:
                weakest = a.topk(k, dim=-1, largest=False).indices
                eye = torch.eye(a.shape[-1], dtype=torch.bool, device=a.device).expand_as(a)
                dropped = torch.zeros_like(a, dtype=torch.bool).scatter_(-1, weakest, True) & ~eye
                a = a.masked_fill(dropped, 0.0)
        eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
        a = 0.5 * a + 0.5 * eye
        fused.append(a / a.sum(-1, keepdim=True))
    return fused


def rollout(layers: list[Tensor]) -> Tensor:
    """``A_L ... A_2 A_1``: how much each output token mixes each input token."""
    out = layers[0]
    for a in layers[1:]:
        out = a @ out
    return out


def _check_ratio(discard_ratio: float) -> float:
    if not isinstance(discard_ratio, (int, float)) or not 0 <= discard_ratio < 1:
        raise ArgumentValueError(f"`discard_ratio` must be in [0, 1), got {discard_ratio!r}")
    return float(discard_ratio)


class AttentionRollout(Attribution):
    """Attention rollout: attention weights multiplied through the layers, with the residual path.

    Each layer's head-averaged attention ``A`` becomes ``0.5 A + 0.5 I``
    (the residual connection), rows renormalised, and the layers are
    multiplied; the row of the explained token says how much each input token
    flows into it. It ignores the values and the MLPs, and so the target:
    ``target`` is accepted for a uniform call but does not change the result.

    Args:
        model: a transformer (Hugging Face model, ``nn.TransformerEncoder``
            stack, or a function of the inputs; pass ``model=`` too for a
            function, to find its embedding module).
        head_fusion: ``"mean"`` (default), ``"max"`` or ``"min"`` over heads.
        discard_ratio: fraction of the weakest weights per row dropped first.

    Example:
        >>> import torch
        >>> from attribuo.attr import AttentionRollout
        >>> layer = torch.nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
        >>> encoder = torch.nn.TransformerEncoder(layer, 2, enable_nested_tensor=False).eval()
        >>> scores = AttentionRollout(encoder).attribute(torch.randn(3, 5, 8))
        >>> scores.shape, torch.allclose(scores.sum(1), torch.ones(3, dtype=torch.float64))
        (torch.Size([3, 5]), True)
    """

    def __init__(self, model: Callable, head_fusion: str = "mean", discard_ratio: float = 0.0) -> None:
        check_model(model)
        super().__init__(model)
        fuse_heads(torch.zeros(1, 1, 1, 1), head_fusion)
        self.head_fusion = head_fusion
        self.discard_ratio = _check_ratio(discard_ratio)

    def attribute(
        self,
        inputs: Tensor | tuple[Tensor, ...],
        target: Any = None,
        additional_forward_args: Any = None,
        position: int | None = None,
    ) -> Tensor:
        """One score per input token (or patch) for the token at ``position``, shape ``(batch, tokens)``.

        ``position`` None: the last token for decoders, the first ([CLS])
        for encoders. Scores are float64 and sum to one per example (for
        token inputs).
        """
        maps = collect_maps(self.forward_func, inputs, None, additional_forward_args).maps
        check_square(maps)
        total = rollout(residual_attention(maps, self.head_fusion, self.discard_ratio))
        return report(total, maps, as_tuple(inputs), position, modules_of(self.forward_func))


def _max_flow_scores(layers: list[np.ndarray], sink: int, scale: float) -> np.ndarray:
    """Max flow from each input token to ``sink`` at the top, through the layered attention graph."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import maximum_flow

    depth, n = len(layers), layers[0].shape[0]
    nodes = (depth + 1) * n
    rows, cols, caps = [], [], []
    for level, a in enumerate(layers):
        target_ids = (level + 1) * n + np.arange(n)  # query tokens at layer level+1
        source_ids = level * n + np.arange(n)  # key tokens one layer below
        q, k = np.nonzero(a > 0)
        rows.append(source_ids[k])
        cols.append(target_ids[q])
        caps.append(np.maximum(np.rint(a[q, k] * scale), 1).astype(np.int32))
    graph = csr_matrix((np.concatenate(caps), (np.concatenate(rows), np.concatenate(cols))), shape=(nodes, nodes))
    top = depth * n + sink
    return np.array([maximum_flow(graph, j, top).flow_value / scale for j in range(n)])


class AttentionFlow(AttentionRollout):
    """Attention flow: the maximum flow from each input token to the explained one.

    The layers' residual attention matrices (as in rollout) are capacities of
    a layered graph, token ``j`` at layer ``l-1`` to token ``i`` at layer
    ``l``; the score of an input token is the value of the maximum flow from
    it to the explained token at the top. Needs SciPy
    (``scipy.sparse.csgraph.maximum_flow``, on capacities quantised to
    ``1 / resolution``); it costs one max-flow per token and example, so it
    suits short sequences.

    Example:
        >>> import torch
        >>> from attribuo.attr import AttentionFlow
        >>> layer = torch.nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
        >>> encoder = torch.nn.TransformerEncoder(layer, 2, enable_nested_tensor=False).eval()
        >>> AttentionFlow(encoder).attribute(torch.randn(2, 4, 8)).shape
        torch.Size([2, 4])
    """

    def __init__(
        self, model: Callable, head_fusion: str = "mean", discard_ratio: float = 0.0, resolution: int = 1_000_000
    ) -> None:
        super().__init__(model, head_fusion, discard_ratio)
        if not isinstance(resolution, int) or resolution < 10:
            raise ArgumentValueError(f"`resolution` must be an int >= 10, got {resolution!r}")
        self.resolution = resolution

    def attribute(
        self,
        inputs: Tensor | tuple[Tensor, ...],
        target: Any = None,
        additional_forward_args: Any = None,
        position: int | None = None,
    ) -> Tensor:
        """One max-flow value per input token (or patch), shape ``(batch, tokens)``."""
        try:
            import scipy.sparse.csgraph  # noqa: F401
        except ImportError as error:  # pragma: no cover - scipy ships with the test extras
            raise ImportError("AttentionFlow needs SciPy: pip install 'attribuo[attention]'") from error
        maps = collect_maps(self.forward_func, inputs, None, additional_forward_args).maps
        length = check_square(maps)
        layers = [a.cpu().numpy() for a in residual_attention(maps, self.head_fusion, self.discard_ratio)]
        sink = query_position(maps, position)
        flows = [_max_flow_scores([a[b] for a in layers], sink, float(self.resolution)) for b in range(len(layers[0]))]
        flow = torch.as_tensor(np.stack(flows) if flows else np.zeros((0, length)), dtype=torch.float64, device=maps[0].device)
        return per_input(flow, as_tuple(inputs), modules_of(self.forward_func))


