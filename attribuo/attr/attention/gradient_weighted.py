"""Gradient-weighted attention relevance (Chefer, Gur and Wolf, 2021).

Two variants, both accumulating per-layer maps ``Abar`` as
``R <- R + Abar R`` from ``R = I``:

* ``"generic"`` (Generic Attention-model Explainability, ICCV 2021):
  ``Abar = mean_heads((dA * A)^+)``, with ``dA`` the gradient of the
  explained score w.r.t. the attention probabilities ``A``;
* ``"transformer_attribution"`` (Transformer Interpretability Beyond
  Attention Visualization, CVPR 2021): ``Abar = mean_heads((dA * R_A)^+)``,
  with ``R_A`` the LRP relevance of the attention probabilities, here
  AttnLRP's (:mod:`attribuo.attr.relevance.transformer_rules`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from ..._engine.errors import ArgumentValueError
from ..._engine.hooks import modules_of
from ..._engine.inputs import as_tuple
from ..base import GradientAttribution
from ..relevance.attnlrp import attnlrp_relevance
from .maps import check_model, check_square, collect_maps, input_embedding, report

VARIANTS = ("transformer_attribution", "generic")


def accumulate(weighted: list[Tensor]) -> Tensor:
    """``R = I``, then ``R <- R + Abar_l R`` layer by layer; ``weighted`` holds the ``Abar_l``."""
    eye = torch.eye(weighted[0].shape[-1], dtype=torch.float64, device=weighted[0].device)
    total = eye.expand(weighted[0].shape[0], -1, -1).clone()
    for a in weighted:
        total = total + a.to(torch.float64) @ total
    return total


class AttentionRelevance(GradientAttribution):
    """Chefer et al.'s gradient-weighted attention relevance, for any transformer.

    One score per input token (or image patch) for the explained token and
    target: attention maps weighted by the gradient of the target (and, in
    the default variant, by their LRP relevance), positive parts averaged over
    heads and accumulated over the layers with the residual identity.

    Args:
        model: a transformer (Hugging Face model, ``nn.TransformerEncoder``
            stack, or a function of the inputs, then with ``model=``).
        variant: ``"transformer_attribution"`` (default; relevance times
            gradient, one extra forward and backward) or ``"generic"``
            (attention times gradient).
        model: the module behind ``forward_func`` when that is a function.

    Example:
        >>> import torch
        >>> from attribuo.attr import AttentionRelevance
        >>> layer = torch.nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
        >>> encoder = torch.nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        >>> net = torch.nn.Sequential(encoder, torch.nn.Flatten(), torch.nn.Linear(40, 3)).eval()
        >>> AttentionRelevance(net).attribute(torch.randn(2, 5, 8), target=1).shape
        torch.Size([2, 5])
    """

    def __init__(self, forward_func: Callable, variant: str = "transformer_attribution", *, model: nn.Module | None = None) -> None:
        check_model(forward_func)
        if variant not in VARIANTS:
            raise ArgumentValueError(f"`variant` must be one of {VARIANTS}, got {variant!r}")
        super().__init__(forward_func)
        self.variant = variant
        self.model = model

    def attribute(
        self,
        inputs: Tensor | tuple[Tensor, ...],
        target: Any = None,
        additional_forward_args: Any = None,
        position: int | None = None,
    ) -> Tensor:
        """Scores ``(batch, tokens)`` (patches for pixel inputs) for ``target`` at ``position``.

        ``target`` None explains each example's top class (for language
        models: the top next token). ``position`` None: the last token for
        decoders, the first ([CLS]) for encoders.
        """
        xs = as_tuple(inputs, "inputs")
        model = self.model if self.model is not None else modules_of(self.forward_func)
        plain = collect_maps(self.forward_func, xs, target, additional_forward_args, gradients=True, model=model)
        check_square(plain.maps)
        if self.variant == "generic":
            weights = plain.maps
        else:
            tokens = not all(x.is_floating_point() for x in xs)
            layer = input_embedding(model) if tokens else None
            if tokens and layer is None:
                raise ArgumentValueError(
                    "the transformer_attribution variant with token ids needs the model's embedding module; "
                    "pass `model=` (or use variant='generic')"
                )
            lrp = attnlrp_relevance(
                self.forward_func, xs, target, additional_forward_args, layer=layer, model=model, record_attention=True
            )
            if len(lrp.map_relevance) != len(plain.maps):
                raise ArgumentValueError("the attention maps of the relevance pass do not match the plain pass")
            weights = lrp.map_relevance
        weighted = [(g * w).clamp(min=0).mean(1) for g, w in zip(plain.gradients, weights)]
        return report(accumulate(weighted), plain.maps, xs, position, model)
