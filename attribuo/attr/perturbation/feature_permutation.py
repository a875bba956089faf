"""FeaturePermutation: shuffle a feature across the batch, record the drop."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ..._engine.call import Call, parse_call
from ..._engine.perturb import Masks, feature_masks, feature_order, initial_output
from ..base import PerturbationAttribution
from .feature_ablation import ablate

TensorOrTuple = Tensor | tuple[Tensor, ...]


def _draw_permutation(n: int) -> Tensor:
    # a random non-identity permutation of the batch, drawn as Captum draws it
    perm = torch.randperm(n)
    identity = torch.arange(n)
    while bool((perm == identity).all()):
        perm = torch.randperm(n)
    return perm


def _permute_feature(x: Tensor, feature_mask: Tensor) -> Tensor:
    """Captum's default ``perm_func``: rows of ``x`` shuffled where ``feature_mask`` is set."""
    if x.shape[0] < 2:
        raise ValueError("cannot permute features with batch_size = 1")
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
) -> tuple[Tensor, ...]:
    """Permutation importance as a pure function (behind :class:`FeaturePermutation`).

    Each feature of ``masks`` is one perturbation in which its elements take
    the values of another example of the batch (a random non-identity
    permutation per feature and input, drawn in Captum's order: features
    in mask order, then inputs), or whatever ``perm_func(x, mask)`` returns.
    Returns ``f(inputs) - f(permuted)`` spread over each feature's elements.
    """
    inputs = call.inputs
    n = call.batch
    if n < 2:
        warnings.warn(
            "FeaturePermutation needs at least 2 examples to permute; every feature is "
            "skipped and gets zero attribution",
            stacklevel=3,
        )
        return _zeros(forward_func, call)
    order = feature_order(masks)
    if perm_func is None or perm_func is _permute_feature:
        # draw every permutation up front; building copies then is one gather per chunk
        # each input is shuffled along its own dim 0 (a sparse index list next to the
        # batch may be longer or shorter than the batch, as in Captum)
        sizes = [x.shape[0] for x in inputs]
        perms = [torch.arange(size).repeat(order.numel(), 1) for size in sizes]
        present = [torch.isin(order, torch.unique(m.cpu())) for m in masks]
        for k in range(order.numel()):
            for i in range(len(masks)):
                if present[i][k] and sizes[i] >= 2:
                    perms[i][k] = _draw_permutation(sizes[i])

        def replacement(i: int, start: int, stop: int) -> Tensor:
            idx = perms[i][start:stop].to(inputs[i].device)
            return inputs[i][idx.reshape(-1)].reshape((stop - start,) + tuple(inputs[i].shape))

        return ablate(forward_func, call, inputs, masks, perturbations_per_eval, show_progress, desc,
                      replacement)

    ids = [order.to(m.device) for m in masks]

    def custom(i: int, start: int, stop: int) -> Tensor:
        rows = []
        for k in range(start, stop):
            chosen = masks[i] == ids[i][k]
            rows.append(perm_func(inputs[i], chosen) if bool(chosen.any()) else inputs[i])
        return torch.stack(rows)

    return ablate(forward_func, call, inputs, masks, perturbations_per_eval, show_progress, desc, custom)


class FeaturePermutation(PerturbationAttribution):
    """Permutation feature importance (Breiman, 2001), per feature group.

    Each feature (group, via ``feature_mask``) is shuffled across the
    examples of the batch; the attribution is the drop in the target output.
    The batch must hold at least 2 examples. ``perm_func(x, mask)`` may
    replace the default shuffle.

    Example:
        >>> import torch
        >>> from attribuo.attr import FeaturePermutation
        >>> model = torch.nn.Linear(3, 1)
        >>> x = torch.rand(8, 3)
        >>> FeaturePermutation(model).attribute(x, target=0).shape
        torch.Size([8, 3])
    """

    def __init__(
        self,
        forward_func: Callable,
        perm_func: Callable[[Tensor, Tensor], Tensor] = _permute_feature,
    ) -> None:
        super().__init__(forward_func)
        self.perm_func = perm_func

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
        )
        return call.result(result)


def _zeros(forward_func: Callable, call: Call) -> tuple[Tensor, ...]:
    out = initial_output(forward_func, call)
    return tuple(torch.zeros((out.numel(),) + tuple(x.shape[1:]), dtype=out.dtype, device=x.device)
                 for x in call.inputs)
