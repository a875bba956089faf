"""Localisation: does the attribution fall on a ground-truth region? (Quantus' localisation metrics).

Each metric compares the attributions with a ground-truth mask ``masks``
(bool or 0/1; the region the explanation should point at, Quantus'
``s_batch``), broadcastable to the attributions: ``(N, 1, H, W)`` (or
``(N, H, W)``) for image attributions of shape ``(N, 1, H, W)`` or
``(N, C, H, W)``, ``(N, D)`` for tabular ones. Every entry of the
attributions is one feature. No forward of the model is needed (unless
``attributions`` is a method, computed on the inputs first); everything is
vectorised over the batch. An empty mask gives NaN. Higher is better for
all of them.

As in Quantus, attributions are first normalised by their largest absolute
value (``normalise=True``; per example here, per batch in Quantus, which
changes none of these scores beyond rounding) and made absolute where
``abs=True``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from .._engine.errors import ArgumentTypeError, ArgumentValueError
from ._common import _no_model, prepared_attributions
from .randomization import _average_ranks


def _setup(name: str, forward_func: Any, inputs: Any, attributions: Any, target: Any, masks: Any,
           additional_forward_args: Any, explain_kwargs: dict | None, normalise: bool,
           absolute: bool) -> tuple[Tensor, Tensor]:
    """``(N, F)`` float64 prepared attributions and the ``(N, F)`` bool masks on the same features."""
    call, a = prepared_attributions(name, _no_model(forward_func), inputs, attributions, target,
                                    additional_forward_args, explain_kwargs, normalise, absolute)
    shape = (call.batch, *call.grid)
    if not isinstance(masks, Tensor):
        raise ArgumentTypeError(f"{name}: `masks` must be a tensor (bool or 0/1), got {type(masks).__name__}")
    m = masks.detach().to(call.x.device)
    x = call.x
    if m.dim() == x.dim() - 1 and x.dim() >= 3 and m.shape == x.shape[:1] + x.shape[2:]:
        m = m.unsqueeze(1)  # (N, H, W): one mask value per pixel
    fits = m.dim() == len(shape) and m.shape[0] == shape[0]
    if not fits or any(d not in (1, s) for d, s in zip(m.shape, shape)):
        raise ArgumentValueError(
            f"{name}: `masks` of shape {tuple(masks.shape)} do not fit the attributions of shape "
            f"{shape}; give the same shape or size 1 in dims to share (e.g. (N, 1, H, W))"
        )
    if m.dtype != torch.bool:
        on = m != 0
        if not torch.equal(on.to(m.dtype), m):  # only 0 and 1 survive the round trip
            raise ArgumentValueError(f"{name}: `masks` must hold only 0/1 (or bool) values")
        m = on
    return a, m.expand(shape).reshape(call.batch, -1)


def _nan_where_empty(scores: Tensor, masks: Tensor) -> Tensor:
    return torch.where(masks.any(dim=1), scores, torch.full_like(scores, float("nan")))


def pointing_game(
    forward_func: Callable,
    inputs: Tensor,
    attributions: Any,
    target: Any = None,
    *,
    masks: Tensor,
    additional_forward_args: Any = None,
    weighted: bool = False,
    abs: bool = False,
    normalise: bool = True,
    explain_kwargs: dict | None = None,
) -> Tensor:
    """1 where the largest attribution lies in the mask, else 0 (Zhang et al., 2018).

    Ties for the maximum count as a hit when any of them is in the mask.
    ``weighted=True`` scales a hit by ``1 - mask size / F``, so pointing
    into a small region counts more. Quantus 0.6 means the same, but stores
    the weights (and the NaN of an empty mask) into a boolean array: its
    weighted call fails or returns True, and an empty mask gives True; here
    they are the float weights and NaN. Higher is better; no forward.

    Example:
        >>> import torch
        >>> from attribuo.metrics.localisation import pointing_game
        >>> a = torch.tensor([[0.1, 0.9, 0.2, 0.0], [0.9, 0.1, 0.2, 0.0]])
        >>> masks = torch.tensor([[0, 1, 1, 0], [0, 1, 1, 0]])
        >>> pointing_game(None, torch.zeros(2, 4), a, masks=masks)
        tensor([1., 0.], dtype=torch.float64)
    """
    a, m = _setup("pointing_game", forward_func, inputs, attributions, target, masks,
                  additional_forward_args, explain_kwargs, normalise, abs)
    top = a == a.amax(dim=1, keepdim=True)
    hit = (top & m).any(dim=1).to(torch.float64)
    if weighted:
        hit = hit * (1 - m.sum(dim=1).to(torch.float64) / m.shape[1])
    return _nan_where_empty(hit, m)


def top_k_intersection(
    forward_func: Callable,
    inputs: Tensor,
    attributions: Any,
    target: Any = None,
    *,
    masks: Tensor,
    additional_forward_args: Any = None,
    k: int = 1000,
    concept_influence: bool = False,
    abs: bool = False,
    normalise: bool = True,
    explain_kwargs: dict | None = None,
) -> Tensor:
    """Fraction of the ``k`` largest attributions that lie in the mask (Theiner et al., 2021).

    ``concept_influence=True`` divides by the mask's share of the features
    (``F / mask size``), so a score of 1 means the top-k hit the mask as
    often as chance would. ``k`` must not exceed the number of features
    (Quantus' default 1000 needs more than 1000 pixels; Quantus asks for
    strictly fewer). Ties at the k-th place are broken arbitrarily, as
    Quantus' unstable argsort does. Higher is better; no forward.

    Example:
        >>> import torch
        >>> from attribuo.metrics.localisation import top_k_intersection
        >>> a = torch.tensor([[0.1, 0.9, 0.8, 0.0]])
        >>> top_k_intersection(None, torch.zeros(1, 4), a, masks=torch.tensor([[0, 1, 0, 0]]), k=2)
        tensor([0.5000], dtype=torch.float64)
    """
    a, m = _setup("top_k_intersection", forward_func, inputs, attributions, target, masks,
                  additional_forward_args, explain_kwargs, normalise, abs)
    n = a.shape[1]
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n:
        raise ArgumentValueError(f"top_k_intersection: `k` must be an int in [1, {n}] (the number of "
                                 f"features), got {k!r}")
    top = a.topk(k, dim=1, sorted=False).indices
    score = m.gather(1, top).to(torch.float64).mean(dim=1)
    if concept_influence:
        score = score * n / m.sum(dim=1)
    return _nan_where_empty(score, m)


def relevance_mass_accuracy(
    forward_func: Callable,
    inputs: Tensor,
    attributions: Any,
    target: Any = None,
    *,
    masks: Tensor,
    additional_forward_args: Any = None,
    abs: bool = False,
    normalise: bool = True,
    explain_kwargs: dict | None = None,
) -> Tensor:
    """Share of the total attribution that lies in the mask (Arras et al., 2021).

    ``sum(a inside) / sum(a)``: 1 when all relevance is in the region. With
    signed attributions (the default ``abs=False``, as Quantus) it can leave
    ``[0, 1]``. Higher is better; no forward.

    Example:
        >>> import torch
        >>> from attribuo.metrics.localisation import relevance_mass_accuracy
        >>> a = torch.tensor([[1.0, 3.0, 0.0, 0.0]])
        >>> relevance_mass_accuracy(None, torch.zeros(1, 4), a, masks=torch.tensor([[0, 1, 1, 0]]))
        tensor([0.7500], dtype=torch.float64)
    """
    a, m = _setup("relevance_mass_accuracy", forward_func, inputs, attributions, target, masks,
                  additional_forward_args, explain_kwargs, normalise, abs)
    return _nan_where_empty((a * m).sum(dim=1) / a.sum(dim=1), m)


def relevance_rank_accuracy(
    forward_func: Callable,
    inputs: Tensor,
    attributions: Any,
    target: Any = None,
    *,
    masks: Tensor,
    additional_forward_args: Any = None,
    abs: bool = False,
    normalise: bool = True,
    explain_kwargs: dict | None = None,
) -> Tensor:
    """Fraction of the ``K`` largest attributions in the mask, ``K`` = mask size (Arras et al., 2021).

    1 when the mask's features are exactly the ``K`` most relevant ones.
    Ties at the K-th place are broken by position (Quantus: arbitrarily).
    Higher is better; no forward.

    Example:
        >>> import torch
        >>> from attribuo.metrics.localisation import relevance_rank_accuracy
        >>> a = torch.tensor([[0.1, 0.9, 0.8, 0.0]])
        >>> relevance_rank_accuracy(None, torch.zeros(1, 4), a, masks=torch.tensor([[1, 1, 0, 0]]))
        tensor([0.5000], dtype=torch.float64)
    """
    a, m = _setup("relevance_rank_accuracy", forward_func, inputs, attributions, target, masks,
                  additional_forward_args, explain_kwargs, normalise, abs)
    size = m.sum(dim=1, keepdim=True)
    order = a.argsort(dim=1, descending=True, stable=True)
    first = torch.arange(a.shape[1], device=a.device).unsqueeze(0) < size
    hits = (m.gather(1, order) & first).sum(dim=1).to(torch.float64)
    return _nan_where_empty(hits / size.squeeze(1), m)


def attribution_localisation(
    forward_func: Callable,
    inputs: Tensor,
    attributions: Any,
    target: Any = None,
    *,
    masks: Tensor,
    additional_forward_args: Any = None,
    weighted: bool = False,
    max_size: float = 1.0,
    positive_attributions: bool = False,
    abs: bool = True,
    normalise: bool = True,
    explain_kwargs: dict | None = None,
) -> Tensor:
    """Inside-to-total attribution ratio (Kohlbrenner et al., 2020).

    ``sum(a inside) / (sum(a) + 1e-9)`` on the absolute attributions by
    default; ``positive_attributions=True`` keeps only positive values
    (with ``abs=False``). A ratio above 1 (possible with signed values) and
    an empty mask give NaN, as in Quantus. ``weighted=True`` multiplies by
    the mask's share of the features (Quantus' weighting); Quantus divides
    the mask size by ``x_batch[2:].size``, a slip that makes its weights
    depend on the batch size, here the share is ``mask size / F``. A mask
    covering more than ``max_size`` of the features draws a warning, as in
    Quantus. Higher is better; no forward.

    Example:
        >>> import torch
        >>> from attribuo.metrics.localisation import attribution_localisation
        >>> a = torch.tensor([[1.0, -3.0, 0.0, 0.0]])
        >>> attribution_localisation(None, torch.zeros(1, 4), a, masks=torch.tensor([[0, 1, 1, 0]]))
        tensor([0.7500], dtype=torch.float64)
    """
    a, m = _setup("attribution_localisation", forward_func, inputs, attributions, target, masks,
                  additional_forward_args, explain_kwargs, normalise, abs)
    if positive_attributions:
        a = a.clamp(min=0)
    share = m.sum(dim=1).to(torch.float64) / m.shape[1]
    if bool((share > max_size).any()):
        warnings.warn(f"attribution_localisation: a mask covers more than max_size={max_size} of the "
                      "features; the score says little for such large regions", stacklevel=2)
    ratio = (a * m).sum(dim=1) / (a.sum(dim=1) + 1e-9)
    ratio = torch.where(ratio > 1, torch.full_like(ratio, float("nan")), ratio)
    if weighted:
        ratio = ratio * share
    return _nan_where_empty(ratio, m)


def auc(
    forward_func: Callable,
    inputs: Tensor,
    attributions: Any,
    target: Any = None,
    *,
    masks: Tensor,
    additional_forward_args: Any = None,
    abs: bool = False,
    normalise: bool = True,
    explain_kwargs: dict | None = None,
) -> Tensor:
    """Area under the ROC curve of the attributions as a detector of the mask (Fawcett, 2006).

    The attributions score each feature, the mask labels it; the AUC is the
    probability that a masked feature outscores an unmasked one (ties count
    one half), computed from average ranks (the Mann-Whitney statistic),
    which equals scikit-learn's ``auc(roc_curve(...))`` that Quantus uses.
    0.5 is chance, 1 perfect. An empty or full mask gives NaN. Higher is
    better; no forward.

    Example:
        >>> import torch
        >>> from attribuo.metrics.localisation import auc
        >>> a = torch.tensor([[0.1, 0.9, 0.8, 0.0]])
        >>> auc(None, torch.zeros(1, 4), a, masks=torch.tensor([[1, 1, 0, 0]]))
        tensor([0.7500], dtype=torch.float64)
    """
    a, m = _setup("auc", forward_func, inputs, attributions, target, masks,
                  additional_forward_args, explain_kwargs, normalise, abs)
    ranks = _average_ranks(a) + 1  # 1-based average ranks
    positives = m.sum(dim=1).to(torch.float64)
    negatives = m.shape[1] - positives
    u = (ranks * m).sum(dim=1) - positives * (positives + 1) / 2
    score = u / (positives * negatives)
    return torch.where(negatives > 0, score, torch.full_like(score, float("nan")))
