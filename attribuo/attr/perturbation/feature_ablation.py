"""FeatureAblation: replace each feature (group) by a baseline, record the drop."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ..._engine.call import Call, parse_call
from ..._engine.perturb import (
    FeatureElements,
    Masks,
    evaluate_perturbations,
    feature_masks,
    feature_order,
    initial_output,
    perturbation_baselines,
    positions,
    replace_elements,
    spread,
)
from ..base import PerturbationAttribution

TensorOrTuple = Tensor | tuple[Tensor, ...]
Replacement = Callable[[int, int, int], Tensor]


def ablate(
    forward_func: Callable,
    call: Call,
    baselines: tuple[Tensor, ...],
    masks: Masks,
    perturbations_per_eval: int | None = None,
    show_progress: bool = False,
    desc: str = "Feature Ablation",
    replacement: Replacement | None = None,
) -> tuple[Tensor, ...]:
    """Feature ablation as a pure function (the algorithm behind FeatureAblation).

    Every distinct id of ``masks`` (normalised by ``feature_masks``; an id
    shared by several inputs is one feature) is one perturbation: its
    elements take the value of ``baselines`` (or of ``replacement(i, start,
    stop)``, which returns ``[P, N, ...]`` values for input ``i`` and
    perturbations ``start..stop-1``, as FeaturePermutation does). The
    attribution of an element is ``f(inputs) - f(perturbed)`` for its
    feature, one value per output, with ``inputs``, ``target`` and extra
    arguments those of ``call``: the result for input ``i`` has shape
    ``[f(inputs).numel(), *inputs[i].shape[1:]]``, which is the input's shape
    when the forward function returns one scalar per example.

    Layer and neuron variants call this with ``forward_func`` bound to their
    site (a model whose layer output is replaced by ``inputs``, or a neuron
    objective).

    Example:
        >>> import torch
        >>> from attribuo._engine.call import parse_call
        >>> x = torch.tensor([[1.0, 2.0]])
        >>> ablate(lambda t: t.sum(1), parse_call(x), (torch.zeros_like(x),),
        ...        (torch.tensor([[0, 1]]),))[0]
        tensor([[1., 2.]])
    """
    inputs = call.inputs
    initial = initial_output(forward_func, call)
    order = feature_order(masks)
    index = positions(masks, order)
    total = order.numel()
    flat_initial = initial.reshape(1, -1)
    diffs = torch.zeros((total, flat_initial.shape[1]), dtype=initial.dtype, device=initial.device)

    # each feature's elements found once; a chunk of features is then a slice of them
    elements = [FeatureElements(idx) for idx in index]

    def make(start: int, stop: int) -> tuple[tuple[Tensor, ...], None]:
        copies = []
        for i, x in enumerate(inputs):
            p, e, rows = elements[i].chunk(start, stop)
            values = baselines[i] if replacement is None else replacement(i, start, stop)
            copies.append(replace_elements(x, stop - start, p, e, rows, values))
        return tuple(copies), None

    for start, stop, rows, _ in evaluate_perturbations(
        forward_func, call, total, make, initial, perturbations_per_eval, show_progress, desc
    ):
        wider = torch.promote_types(diffs.dtype, rows.dtype)
        if wider != diffs.dtype:  # an integer model on copies made float by a fractional baseline
            diffs = diffs.to(wider)
        diffs[start:stop] = flat_initial - rows.to(diffs.dtype)
    return tuple(spread(diffs, idx, (flat_initial.shape[1],)) for idx in index)


class FeatureAblation(PerturbationAttribution):
    """Attribution by ablation: each feature is replaced by a baseline in turn.

    By default every scalar of every input is its own feature; ``feature_mask``
    groups elements (same id = ablated together, also across the inputs of a
    tuple). An element's attribution is the drop in the target output when
    its feature is ablated. Copies are built and evaluated many per forward
    call; ``perturbations_per_eval`` fixes the count, otherwise a memory
    budget does (results do not depend on it).

    A forward function that returns one scalar for the whole batch is
    supported: attributions then have a first dimension of 1.

    Example:
        >>> import torch
        >>> from attribuo.attr import FeatureAblation
        >>> model = torch.nn.Linear(4, 2)
        >>> x = torch.rand(3, 4)
        >>> attr = FeatureAblation(model).attribute(x, target=1)
        >>> torch.allclose(attr, x * model.weight[1], atol=1e-6)
        True
    """

    _futures_contract = True  # Captum's attribute / attribute_future split

    def attribute(
        self,
        inputs: TensorOrTuple,
        baselines: Any = None,
        target: Any = None,
        additional_forward_args: Any = None,
        feature_mask: TensorOrTuple | None = None,
        perturbations_per_eval: int | None = None,
        show_progress: bool = False,
        **kwargs: Any,
    ) -> TensorOrTuple:
        """Ablation attributions, same form as ``inputs``."""
        # like Captum, only inputs[0] fixes the batch size (others may be sparse lists)
        call = parse_call(inputs, target, additional_forward_args, require_equal_batch=False)
        xs = call.inputs
        result = ablate(
            self.forward_func,
            call,
            perturbation_baselines(xs, baselines),
            feature_masks(xs, feature_mask),
            perturbations_per_eval,
            show_progress,
            self.get_name(),
        )
        return call.result(result)
