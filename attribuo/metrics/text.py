"""Faithfulness of token attributions: what the model loses when the top tokens go.

For text models (token ids in, logits out), batched over examples and
deletions:

- :func:`token_deletion_aopc`: area over the perturbation curve of deleting
  the top 1, 2, ..., ``max_k`` tokens (Samek et al. 2017; as used for text by
  Nguyen 2018 and DeYoung et al. 2020);
- :func:`token_comprehensiveness` and :func:`token_sufficiency`: ERASER's
  comprehensiveness (score lost when the top ``k%`` tokens are deleted) and
  sufficiency (score lost when only they are kept), averaged over the bins
  ``k`` in 1, 5, 10, 20, 50 % (DeYoung et al. 2020, "ERASER: a benchmark to
  evaluate rationalized NLP models").

Inputs are token ids ``(N, L)`` with attributions ``(N, L)`` (or ``(N, L,
D)``, e.g. a layer method on the embeddings, summed over ``D``).
``forward_func(ids[, attention_mask], *additional_forward_args)`` returns
logits ``(N, C)`` or a causal LM's ``(N, L, V)`` (read at the last real
token), or a Hugging Face output with ``logits``; models whose ``forward``
takes ``attention_mask`` get it by name. The score is the softmax
probability of ``target`` (``softmax=False``: the logit); ``target=None``
is each example's predicted class on the full input.

Deleting a token (``deletion``): ``"replace"`` puts ``mask_token_id`` in its
place; ``"remove"`` drops it, moves the following tokens left and pads the
end with ``pad_token_id`` (and ``attention_mask`` 0 there, when one is
given; other per-token arguments in ``additional_forward_args`` are not
moved). Only real tokens are deleted or counted: positions with
``attention_mask`` 0 or ``special_tokens_mask`` 1 (``[CLS]``, ``[SEP]``)
stay. Ties in the attributions go to the earlier position. All the deleted
copies of the batch go through
:meth:`~attribuo.metrics._common.MetricCall.score_copies`: as few forwards
as the memory budget or ``max_examples_per_batch`` allows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .._engine.errors import ArgumentTypeError, ArgumentValueError
from .._engine.inputs import positive_int
from .._engine.model_outputs import _accepts, logits_of
from ._common import MetricCall, check_flag, metric_call, resolve_attributions

ERASER_BINS = (0.01, 0.05, 0.1, 0.2, 0.5)


@dataclass
class _Tokens:
    """A checked token-metric call: ``call`` scores encoded ids (see :func:`_setup`)."""

    call: MetricCall
    ids: Tensor
    mask: Tensor | None
    ranks: Tensor  # (N, L): 0 = most attributed real token; L for tokens never deleted
    n_real: Tensor  # (N,) tokens that may be deleted
    deletion: str
    mask_token_id: int | None
    pad_token_id: int

    def copies(self, removed: Tensor) -> Tensor:
        """Encoded ids of the copies that delete ``removed`` ``(k, N, L)``."""
        ids = self.ids.unsqueeze(0).expand_as(removed)
        mask = None if self.mask is None else self.mask.unsqueeze(0).expand_as(removed)
        if self.deletion == "replace":
            ids = ids.masked_fill(removed, self.mask_token_id)
        else:
            # kept tokens first in their order, the deleted slots at the end become padding
            order = removed.to(torch.uint8).argsort(dim=-1, stable=True)
            gone = removed.gather(-1, order)
            ids = ids.gather(-1, order).masked_fill(gone, self.pad_token_id)
            mask = None if mask is None else mask.gather(-1, order) & ~gone
        return ids if mask is None else _encode(ids, mask)

    def drops(self, counts: Tensor, keep_top: bool) -> tuple[Tensor, Tensor]:
        """``(f(x), f(x) - f(copies))``; copy ``j`` deletes (or keeps only) the top ``counts[:, j]`` tokens."""
        counts = counts.to(self.ranks.device)

        def make(start: int, stop: int) -> Tensor:
            top = self.ranks.unsqueeze(0) < counts[:, start:stop].T.unsqueeze(-1)
            removed = (self.ranks.unsqueeze(0) < self.n_real.view(1, -1, 1)) & ~top if keep_top else top
            return self.copies(removed)

        full = self.call.scores()
        return full, full[:, None] - self.call.score_copies(counts.shape[1], make)


def _encode(ids: Tensor, mask: Tensor) -> Tensor:
    # the attention mask rides in the sign of the ids, so that one tensor holds each copy
    return torch.where(mask, ids, -ids - 1)


def _scorer(forward_func: Callable, has_mask: bool, mask_dtype: torch.dtype, softmax: bool) -> Callable:
    """``f(encoded ids, *args) -> (B, C)`` scores: decode the mask, call the model, pick the position."""
    by_name = has_mask and _accepts(forward_func, "attention_mask")

    def scored(encoded: Tensor, *args: Any) -> Tensor:
        mask = encoded >= 0 if has_mask else None
        if mask is None:
            out = forward_func(encoded, *args)
        else:
            ids = torch.where(mask, encoded, -encoded - 1)
            if by_name:
                out = forward_func(ids, *args, attention_mask=mask.to(mask_dtype))
            else:
                out = forward_func(ids, mask.to(mask_dtype), *args)
        logits = logits_of(out)
        if softmax and logits.dim() < 2:
            raise ArgumentValueError("softmax=True needs class scores (N, C) from the model; pass softmax=False")
        if logits.dim() == 3:  # a causal LM: the next-token logits after the last real token
            length = logits.shape[1]
            if mask is None:
                last = torch.full((logits.shape[0],), length - 1, device=logits.device)
            else:
                last = (mask * torch.arange(1, length + 1, device=mask.device)).argmax(dim=1)
            logits = logits[torch.arange(logits.shape[0], device=logits.device), last]
        return logits.softmax(dim=-1) if softmax else logits

    return scored


def _binary(value: Any, shape: tuple[int, ...], name: str, device: torch.device) -> Tensor | None:
    if value is None:
        return None
    if not isinstance(value, Tensor):
        raise ArgumentTypeError(f"`{name}` must be a tensor (N, L) of 0/1, got {type(value).__name__}")
    if tuple(value.shape) != shape:
        raise ArgumentValueError(f"`{name}` must have the shape of `inputs` {shape}, got {tuple(value.shape)}")
    if value.dtype != torch.bool and not bool(((value == 0) | (value == 1)).all()):
        raise ArgumentValueError(f"`{name}` must hold only 0/1 (or bool) values")
    return value.to(device) != 0


def _setup(name: str, forward_func: Callable, inputs: Any, attributions: Any, target: Any,
           additional_forward_args: Any, attention_mask: Any, special_tokens_mask: Any, mask_token_id: Any,
           pad_token_id: Any, deletion: str, softmax: bool, explain_kwargs: dict | None,
           max_examples_per_batch: int | None) -> _Tokens:
    if not callable(forward_func):
        raise ArgumentTypeError(f"{name}: `forward_func` must be a model or a callable")
    if isinstance(inputs, tuple) and len(inputs) == 1:
        inputs = inputs[0]
    if not isinstance(inputs, Tensor) or inputs.dim() != 2 or inputs.is_floating_point() \
            or inputs.is_complex() or inputs.dtype == torch.bool:
        raise ArgumentTypeError(f"{name}: `inputs` must be token ids, an integer tensor (N, L)")
    ids = inputs.detach()
    shape = tuple(ids.shape)
    if deletion not in ("replace", "remove"):
        raise ArgumentValueError(f"{name}: `deletion` must be 'replace' or 'remove', got {deletion!r}")
    if deletion == "replace" and (isinstance(mask_token_id, bool) or not isinstance(mask_token_id, int)):
        raise ArgumentTypeError(f"{name}: deletion='replace' needs `mask_token_id` (an int), got {mask_token_id!r}")
    if isinstance(pad_token_id, bool) or not isinstance(pad_token_id, int):
        raise ArgumentTypeError(f"{name}: `pad_token_id` must be an int, got {pad_token_id!r}")
    check_flag(softmax, name, "softmax")
    mask = _binary(attention_mask, shape, "attention_mask", ids.device)
    special = _binary(special_tokens_mask, shape, "special_tokens_mask", ids.device)
    if mask is not None and bool((ids < 0).any()):
        raise ArgumentValueError(f"{name}: token ids must be non-negative")
    extra = () if additional_forward_args is None else (
        additional_forward_args if isinstance(additional_forward_args, tuple) else (additional_forward_args,))

    scored = _scorer(forward_func, mask is not None,
                     attention_mask.dtype if mask is not None else torch.long, softmax)
    encoded = ids if mask is None else _encode(ids, mask)
    if target is None:  # the predicted class on the full input (a single score needs none)
        with torch.no_grad():
            full = scored(encoded, *extra).reshape(shape[0], -1)
        target = full.argmax(dim=1) if full.shape[1] > 1 else None
    if not isinstance(attributions, Tensor):
        kwargs = dict(explain_kwargs or {})
        model_args = ((attention_mask,) if mask is not None else ()) + extra
        if model_args:
            kwargs["additional_forward_args"] = model_args
        attributions = resolve_attributions(forward_func, ids, attributions, target, **kwargs)
    if isinstance(attributions, tuple) and len(attributions) == 1:
        attributions = attributions[0]
    if not isinstance(attributions, Tensor):
        raise ArgumentTypeError(f"{name}: `attributions` must be a tensor (N, L), got {type(attributions).__name__}")
    a = attributions.detach()
    if a.dim() == 3 and tuple(a.shape[:2]) == shape:
        a = a.sum(dim=-1)  # per embedding dim: one value per token
    if tuple(a.shape) != shape:
        raise ArgumentValueError(f"{name}: `attributions` of shape {tuple(attributions.shape)} do not fit "
                                 f"`inputs` of shape {shape}; give (N, L) or (N, L, D)")

    call = metric_call(scored, encoded, a, target, additional_forward_args, max_examples_per_batch, name)

    real = torch.ones(shape, dtype=torch.bool, device=ids.device) if mask is None else mask
    if special is not None:
        real = real & ~special
    order = a.to(torch.float64).masked_fill(~real, float("-inf")).argsort(dim=1, descending=True, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(shape[1], device=ids.device).expand_as(order))
    n_real = real.sum(dim=1)
    ranks = torch.where(real, ranks, torch.full_like(ranks, shape[1]))
    return _Tokens(call, ids, mask, ranks, n_real, deletion, mask_token_id, pad_token_id)


def _bin_counts(tokens: _Tokens, bins: Sequence[float]) -> Tensor:
    """``(N, B)`` tokens in the top ``bin`` share of each example's real tokens (rounded up)."""
    if isinstance(bins, (int, float)):
        bins = (bins,)
    try:
        values = [float(b) for b in bins]
    except TypeError:
        raise ArgumentTypeError(f"`bins` must be a sequence of fractions, got {bins!r}") from None
    if not values or any(not 0 < b <= 1 for b in values):
        raise ArgumentValueError(f"`bins` must be fractions in (0, 1], got {bins!r}")
    shares = torch.tensor(values, dtype=torch.float64, device=tokens.n_real.device)
    # minus a hair so that 7% of 100 (7.000000000000001) is 7 tokens, not 8
    counts = torch.ceil(shares[None] * tokens.n_real[:, None].to(torch.float64) - 1e-9).long()
    return torch.minimum(counts, tokens.n_real[:, None])


def token_deletion_aopc(
    forward_func: Callable,
    inputs: Tensor,
    attributions: Any,
    target: Any = None,
    *,
    additional_forward_args: Any = None,
    attention_mask: Tensor | None = None,
    special_tokens_mask: Tensor | None = None,
    mask_token_id: int | None = None,
    deletion: str = "replace",
    pad_token_id: int = 0,
    max_k: int = 10,
    softmax: bool = True,
    return_curves: bool = False,
    explain_kwargs: dict | None = None,
    max_examples_per_batch: int | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """Area over the perturbation curve of deleting the top 1..``max_k`` tokens.

    ``AOPC = 1 / (K + 1) * sum_{k=0..K} (f(x) - f(x without its top k tokens))``
    (Samek et al., "Evaluating the visualization of what a deep neural network
    has learned", 2017; the k = 0 term is 0). An example with fewer than
    ``k`` real tokens loses them all. Higher is better. ``return_curves=True``
    also returns the ``(N, K + 1)`` scores ``f`` after deleting 0..K tokens.
    Cost: ``max_k + 1`` forwards per example. Arguments: see the module
    docstring.

    Example:
        >>> import torch
        >>> bag = torch.nn.EmbeddingBag(6, 2, mode="sum")
        >>> ids = torch.tensor([[1, 2, 3, 4]])
        >>> token_deletion_aopc(bag, ids, torch.tensor([[0.1, 0.9, 0.3, 0.2]]), mask_token_id=0).shape
        torch.Size([1])
    """
    tokens = _setup("token_deletion_aopc", forward_func, inputs, attributions, target, additional_forward_args,
                    attention_mask, special_tokens_mask, mask_token_id, pad_token_id, deletion, softmax,
                    explain_kwargs, max_examples_per_batch)
    k = positive_int(max_k, "max_k")
    steps = torch.arange(1, k + 1, device=tokens.n_real.device)
    counts = torch.minimum(steps[None], tokens.n_real[:, None])
    full, drops = tokens.drops(counts, keep_top=False)
    scores = drops.sum(dim=1) / (k + 1)
    if return_curves:
        return scores, torch.cat([full[:, None], full[:, None] - drops], dim=1)
    return scores


def token_comprehensiveness(
    forward_func: Callable,
    inputs: Tensor,
    attributions: Any,
    target: Any = None,
    *,
    additional_forward_args: Any = None,
    attention_mask: Tensor | None = None,
    special_tokens_mask: Tensor | None = None,
    mask_token_id: int | None = None,
    deletion: str = "replace",
    pad_token_id: int = 0,
    bins: Sequence[float] = ERASER_BINS,
    softmax: bool = True,
    explain_kwargs: dict | None = None,
    max_examples_per_batch: int | None = None,
) -> Tensor:
    """ERASER comprehensiveness: the score lost when the top ``k%`` tokens are deleted, averaged over ``bins``.

    DeYoung et al. (ACL 2020): ``mean_k (f(x) - f(x without its top k%))``,
    ``k%`` of an example's real tokens rounded up. Higher is better (the
    rationale carried the prediction). Cost: ``len(bins) + 1`` forwards per
    example. Arguments: see the module docstring.

    Example:
        >>> import torch
        >>> bag = torch.nn.EmbeddingBag(6, 2, mode="sum")
        >>> with torch.no_grad():
        ...     _ = bag.weight.zero_()
        ...     bag.weight[3, 0] = 5.0  # token 3 alone decides class 0
        >>> ids = torch.tensor([[1, 2, 3, 4]])
        >>> token_comprehensiveness(bag, ids, torch.tensor([[0., 0., 1., 0.]]), 0, mask_token_id=0,
        ...                         softmax=False)
        tensor([5.], dtype=torch.float64)
    """
    tokens = _setup("token_comprehensiveness", forward_func, inputs, attributions, target,
                    additional_forward_args, attention_mask, special_tokens_mask, mask_token_id, pad_token_id,
                    deletion, softmax, explain_kwargs, max_examples_per_batch)
    return tokens.drops(_bin_counts(tokens, bins), keep_top=False)[1].mean(dim=1)


def token_sufficiency(
    forward_func: Callable,
    inputs: Tensor,
    attributions: Any,
    target: Any = None,
    *,
    additional_forward_args: Any = None,
    attention_mask: Tensor | None = None,
    special_tokens_mask: Tensor | None = None,
    mask_token_id: int | None = None,
    deletion: str = "replace",
    pad_token_id: int = 0,
    bins: Sequence[float] = ERASER_BINS,
    softmax: bool = True,
    explain_kwargs: dict | None = None,
    max_examples_per_batch: int | None = None,
) -> Tensor:
    """ERASER sufficiency: the score lost when only the top ``k%`` tokens are kept, averaged over ``bins``.

    DeYoung et al. (ACL 2020): ``mean_k (f(x) - f(only the top k% of x))``;
    every other real token is deleted. Lower is better (the rationale alone
    suffices; negative when it scores higher than the full input). Cost:
    ``len(bins) + 1`` forwards per example. Arguments: see the module
    docstring.

    Example:
        >>> import torch
        >>> bag = torch.nn.EmbeddingBag(6, 2, mode="sum")
        >>> with torch.no_grad():
        ...     _ = bag.weight.zero_()
        ...     bag.weight[3, 0] = 5.0
        >>> ids = torch.tensor([[1, 2, 3, 4]])
        >>> token_sufficiency(bag, ids, torch.tensor([[0., 0., 1., 0.]]), 0, mask_token_id=0, softmax=False)
        tensor([0.], dtype=torch.float64)
    """
    tokens = _setup("token_sufficiency", forward_func, inputs, attributions, target, additional_forward_args,
                    attention_mask, special_tokens_mask, mask_token_id, pad_token_id, deletion, softmax,
                    explain_kwargs, max_examples_per_batch)
    return tokens.drops(_bin_counts(tokens, bins), keep_top=True)[1].mean(dim=1)
