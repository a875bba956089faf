"""FeaturePermutation: shuffle a feature across the batch, record the drop."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ..._engine.call import Call, parse_call
from ..._engine.errors import ArgumentValueError
from ..._engine.perturb import Masks, feature_masks, feature_order, initial_output
from ..base import PerturbationAttribution
from .feature_ablation import ablate

TensorOrTuple = Tensor | tuple[Tensor, ...]


def _draw_permutation(n: int) -> Tensor:
    # a random non-identity permutation of the batch, drawn as Captum draws it
    if n < 2:
        raise ArgumentValueError(f"cannot permute features with batch_size = {n}")
    perm = torch.randperm(n)
    identity = torch.arange(n)
    while bool((perm == identity).all()):
        perm = torch.randperm(n)
    return perm


def _permute_feature(x: Tensor, feature_mask: Tensor) -> Tensor:
    """Captum's default ``perm_func``: rows of ``x`` shuffled where ``feature_mask`` is set."""
    perm = _draw_permutation(x.shape[0]).to(x.device)
    return torch.where(feature_mask.to(torch.bool), x[perm], x)


def permute(
    forward_func: Callable,
    call: Call,
    masks: Masks,
    perturbations_per_eval: int | None = None,
    show_progress: bool = False,
    perm_func: Callable[[Tensor, Tensor], Tensor] | None = None,
    desc: str = "Feature Permutation",
    min_examples: int | None = 2,
) -> tuple[Tensor, ...]:
    """Permutation importance as a pure function (behind :class:`FeaturePermutation`).

    Each feature of ``masks`` is one perturbation in which its elements take
    the values of another example of the batch (a random non-identity
    permutation per feature and input, drawn in Captum's order: features
    in mask order, then inputs), or whatever ``perm_func(x, mask)`` returns.
    Returns ``f(inputs) - f(permuted)`` spread over each feature's elements.

    As in Captum, a feature is skipped (zero attribution, nothing drawn for
    it) when one of the inputs holding it has fewer than ``min_examples``
    rows along dim 0, or when all of them are empty.
    """
    inputs = call.inputs
    order = feature_order(masks)
    present = [torch.isin(order, torch.unique(m.cpu())) for m in masks]  # [input][feature]
    skipped = torch.zeros(order.numel(), dtype=torch.bool)
    nonempty = torch.zeros(order.numel(), dtype=torch.bool)
    for x, holds in zip(inputs, present):
        if min_examples is not None and x.shape[0] < min_examples:
            skipped |= holds
        if x.numel():
            nonempty |= holds
    skipped |= ~nonempty
    if bool(skipped.any()) and min_examples is not None and any(x.shape[0] < min_examples for x in inputs):
        warnings.warn(
            f"FeaturePermutation skips {int(skipped.sum())} of {order.numel()} features: they are in "
            f"an input with fewer than {min_examples} examples to permute (zero attribution)",
            stacklevel=3,
        )
    if bool(skipped.all()):
        return _zeros(forward_func, call)
    if perm_func is None or perm_func is _permute_feature:
        # draw every permutation up front; building copies then is one gather per chunk
        # each input is shuffled along its own dim 0 (a sparse index list next to the
        # batch may be longer or shorter than the batch, as in Captum)
        perms = [torch.arange(x.shape[0]).repeat(order.numel(), 1) for x in inputs]
        for k in range(order.numel()):
            for i in range(len(masks)):
                if present[i][k] and not skipped[k]:
                    perms[i][k] = _draw_permutation(inputs[i].shape[0])

        def replacement(i: int, start: int, stop: int) -> Tensor:
            idx = perms[i][start:stop].to(inputs[i].device)
            return inputs[i][idx.reshape(-1)].reshape((stop - start,) + tuple(inputs[i].shape))

    else:
        ids = [order.to(m.device) for m in masks]

        def replacement(i: int, start: int, stop: int) -> Tensor:
            rows = []
            for k in range(start, stop):
                chosen = masks[i] == ids[i][k]
                use = bool(chosen.any()) and not skipped[k]
                rows.append(perm_func(inputs[i], chosen) if use else inputs[i])
            return torch.stack(rows)

    result = ablate(forward_func, call, inputs, masks, perturbations_per_eval, show_progress, desc, replacement)
    if not bool(skipped.any()):
        return result
    # exactly zero, not a forward's rounding noise, where nothing was permuted
    dropped = order[skipped]
    return tuple(r.masked_fill(torch.isin(m, dropped.to(m.device)), 0) for r, m in zip(result, masks))


class FeaturePermutation(PerturbationAttribution):
    """Permutation feature importance (Breiman, 2001), per feature group.

    Each feature (group, via ``feature_mask``) is shuffled across the
    examples of the batch; the attribution is the drop in the target output.
    Features in an input with fewer than 2 examples get zero attribution
    (Captum's ``_min_examples_per_batch_grouped``). ``perm_func(x, mask)``
    may replace the default shuffle.

    Example:
        >>> import torch
        >>> from attribuo.attr import FeaturePermutation
        >>> model = torch.nn.Linear(3, 1)
        >>> x = torch.rand(8, 3)
        >>> FeaturePermutation(model).attribute(x, target=0).shape
        torch.Size([8, 3])
    """

    _futures_contract = True  # Captum's attribute / attribute_future split

    def __init__(
        self,
        forward_func: Callable,
        perm_func: Callable[[Tensor, Tensor], Tensor] = _permute_feature,
    ) -> None:
        super().__init__(forward_func)
        self.perm_func = perm_func
        # Captum's attribute: features in an input with fewer rows than this are skipped
        self._min_examples_per_batch_grouped: int | None = 2

    def attribute(
        self,
        inputs: TensorOrTuple,
        target: Any = None,
        additional_forward_args: Any = None,
        feature_mask: TensorOrTuple | None = None,
        perturbations_per_eval: int | None = None,
        show_progress: bool = False,
        **kwargs: Any,
    ) -> TensorOrTuple:
        """Permutation attributions, same form as ``inputs``."""
        # like Captum, only inputs[0] fixes the batch size (others may be sparse lists)
        call = parse_call(inputs, target, additional_forward_args, require_equal_batch=False)
        result = permute(
            self.forward_func,
            call,
            feature_masks(call.inputs, feature_mask),
            perturbations_per_eval,
            show_progress,
            self.perm_func,
            self.get_name(),
            self._min_examples_per_batch_grouped,
        )
        return call.result(result)


def _zeros(forward_func: Callable, call: Call) -> tuple[Tensor, ...]:
    out = initial_output(forward_func, call)
    return tuple(torch.zeros((out.numel(),) + tuple(x.shape[1:]), dtype=out.dtype, device=x.device)
                 for x in call.inputs)
