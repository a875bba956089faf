"""Shapley values: sampled over permutations, or exact over all coalitions."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ..._engine.call import Call, parse_call
from ..._engine.inputs import positive_int
from ..._engine.perturb import (
    Masks,
    blend,
    evaluate_perturbations,
    feature_count,
    feature_masks,
    initial_output,
    perturbation_baselines,
    select_elements,
    spread,
    warn_missing_ids,
)
from ..base import PerturbationAttribution

TensorOrTuple = Tensor | tuple[Tensor, ...]


def coalition_values(
    forward_func: Callable,
    call: Call,
    baselines: tuple[Tensor, ...],
    masks: Masks,
    total: int,
    coalition: Callable[[int, int], Tensor],
    perturbations_per_eval: int | None = None,
    show_progress: bool = False,
    desc: str = "Shapley",
) -> tuple[Tensor, Tensor]:
    """Evaluate ``total`` coalitions: ``f`` with the chosen features from ``call.inputs``.

    ``coalition(start, stop)`` returns a ``[P, F]`` (or ``[P, N, F]``)
    boolean: which features take the input's value (the rest take the
    baseline) in coalitions ``start..stop-1``. Returns ``(f(baselines),
    values)``, with ``values[k]`` the flattened output of coalition ``k``.
    """
    inputs = call.inputs
    initial = initial_output(forward_func, call.with_inputs(baselines))
    values = torch.zeros((total, initial.numel()), dtype=_float(initial), device=initial.device)

    def make(start: int, stop: int) -> tuple[tuple[Tensor, ...], None]:
        chosen = coalition(start, stop)
        return tuple(
            blend(select_elements(chosen.to(x.device), m), x, b)
            for x, b, m in zip(inputs, baselines, masks)
        ), None

    for start, stop, rows, _ in evaluate_perturbations(
        forward_func, call, total, make, initial, perturbations_per_eval, show_progress, desc
    ):
        values[start:stop] = rows
    return initial, values


def _float(t: Tensor) -> torch.dtype:
    return t.dtype if t.is_floating_point() else torch.get_default_dtype()


def _output_shape(initial: Tensor) -> tuple[int, ...]:
    return tuple(initial.shape) if initial.dim() else (1,)


def shapley_sampling(
    forward_func: Callable,
    call: Call,
    baselines: tuple[Tensor, ...],
    masks: Masks,
    n_samples: int = 25,
    perturbations_per_eval: int | None = None,
    show_progress: bool = False,
    desc: str = "Shapley Value Sampling",
) -> tuple[Tensor, ...]:
    """Shapley Value Sampling as a pure function (behind :class:`ShapleyValueSampling`).

    Features are the ids ``0..max`` of ``masks``. For each of ``n_samples``
    random orders (``torch.randperm`` per sample, as Captum draws them) the
    features are added one at a time to a coalition that starts at the
    baselines; each feature is credited with the change in output when it
    joins. Credits are averaged over the orders. All ``n_samples * F``
    coalitions are evaluated in large batches. Results have shape
    ``f(baselines).shape + inputs[i].shape[1:]``.
    """
    count = feature_count(masks)
    warn_missing_ids(masks, count)
    perms = torch.stack([torch.randperm(count) for _ in range(n_samples)]) if n_samples else None
    if perms is None or count == 0:
        perms = torch.zeros((max(n_samples, 0), count), dtype=torch.long)
    rank = torch.argsort(perms, dim=1)
    steps = torch.arange(count)

    def coalition(start: int, stop: int) -> Tensor:
        ks = torch.arange(start, stop)
        return rank[ks // count] <= steps[ks % count][:, None]

    initial, values = coalition_values(
        forward_func, call, baselines, masks, n_samples * count, coalition,
        perturbations_per_eval, show_progress, desc,
    )
    n_out = initial.numel()
    values = values.reshape(n_samples, count, n_out)
    before = torch.cat([initial.reshape(1, 1, n_out).to(values.dtype).expand(n_samples, 1, n_out),
                        values[:, :-1]], dim=1)
    phi = torch.zeros((count, n_out), dtype=values.dtype, device=values.device)
    phi.index_add_(0, perms.reshape(-1).to(values.device), (values - before).reshape(n_samples * count, n_out))
    phi = phi / max(n_samples, 1)
    shape = _output_shape(initial)
    return tuple(spread(phi.reshape((count,) + shape), m, shape) for m in masks)


def shapley_exact(
    forward_func: Callable,
    call: Call,
    baselines: tuple[Tensor, ...],
    masks: Masks,
    perturbations_per_eval: int | None = None,
    show_progress: bool = False,
    desc: str = "Shapley Values",
) -> tuple[Tensor, ...]:
    """Exact Shapley values as a pure function (behind :class:`ShapleyValues`).

    Evaluates every coalition of the ``F`` features once (``2^F - 1``
    perturbed copies) and combines them with the Shapley weights
    ``|S|! (F - |S| - 1)! / F!``; the values sum to ``f(inputs) -
    f(baselines)`` per output. Same numbers as averaging over all ``F!``
    orders, with ``2^F`` instead of ``F * F!`` evaluations.
    """
    count = feature_count(masks)
    warn_missing_ids(masks, count)
    bits = 2 ** torch.arange(count)

    def coalition(start: int, stop: int) -> Tensor:
        ks = torch.arange(start + 1, stop + 1)
        return (ks[:, None] & bits) != 0

    initial, rest = coalition_values(
        forward_func, call, baselines, masks, 2**count - 1, coalition,
        perturbations_per_eval, show_progress, desc,
    )
    n_out = initial.numel()
    values = torch.cat([initial.reshape(1, n_out).to(rest.dtype), rest])  # index = coalition bits
    sizes = torch.tensor([bin(k).count("1") for k in range(2**count)], device=values.device)
    weight = torch.tensor(
        [math.factorial(k) * math.factorial(count - k - 1) / math.factorial(count) for k in range(count)],
        dtype=torch.float64,
    ).to(device=values.device)
    phi = torch.zeros((count, n_out), dtype=torch.float64, device=values.device)
    every = torch.arange(2**count, device=values.device)
    for f in range(count):
        without = every[(every & (1 << f)) == 0]
        gain = (values[without | (1 << f)] - values[without]).to(torch.float64)
        phi[f] = (weight[sizes[without]][:, None] * gain).sum(0)
    shape = _output_shape(initial)
    phi = phi.to(values.dtype).reshape((count,) + shape)
    return tuple(spread(phi, m, shape) for m in masks)


def _prepare(inputs: Any, baselines: Any, target: Any, additional_forward_args: Any, feature_mask: Any):
    call = parse_call(inputs, target, additional_forward_args)
    xs = call.inputs
    masks = feature_masks(xs, feature_mask, nonnegative=True)
    return call, (call, perturbation_baselines(xs, baselines), masks)


class ShapleyValueSampling(PerturbationAttribution):
    """Shapley values estimated from random feature orders (Castro et al., 2009).

    Each of ``n_samples`` random orders adds the features (groups, via
    ``feature_mask``; ids must be ``0..F-1``) one at a time to the baseline
    and credits each with the change in output. Seeded like Captum (one
    ``torch.randperm`` per sample), so the same seed gives the same orders.

    Example:
        >>> import torch
        >>> from attribuo.attr import ShapleyValueSampling
        >>> model = torch.nn.Linear(3, 1)
        >>> x = torch.rand(2, 3)
        >>> attr = ShapleyValueSampling(model).attribute(x, target=0, n_samples=5)
        >>> torch.allclose(attr, x * model.weight[0], atol=1e-5)  # exact for linear models
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
        n_samples: int = 25,
        perturbations_per_eval: int | None = None,
        show_progress: bool = False,
    ) -> TensorOrTuple:
        """Sampled Shapley values, same form as ``inputs``."""
        positive_int(n_samples, "n_samples")
        call, prepared = _prepare(inputs, baselines, target, additional_forward_args, feature_mask)
        result = shapley_sampling(
            self.forward_func,
            *prepared,
            n_samples=n_samples,
            perturbations_per_eval=perturbations_per_eval,
            show_progress=show_progress,
            desc=self.get_name(),
        )
        return call.result(result)


class ShapleyValues(ShapleyValueSampling):
    """Exact Shapley values over all coalitions of the features.

    Cost grows as ``2^F`` forward copies (Captum evaluates ``F * F!``), so
    group features with ``feature_mask`` when there are more than ~16.

    Example:
        >>> import torch
        >>> from attribuo.attr import ShapleyValues
        >>> f = lambda x: x.prod(1)
        >>> x = torch.tensor([[2.0, 3.0]])
        >>> ShapleyValues(f).attribute(x, baselines=1.0)
        tensor([[2., 3.]])
    """

    def attribute(  # type: ignore[override]
        self,
        inputs: TensorOrTuple,
        baselines: Any = None,
        target: Any = None,
        additional_forward_args: Any = None,
        feature_mask: TensorOrTuple | None = None,
        perturbations_per_eval: int | None = None,
        show_progress: bool = False,
    ) -> TensorOrTuple:
        """Exact Shapley values, same form as ``inputs``."""
        call, prepared = _prepare(inputs, baselines, target, additional_forward_args, feature_mask)
        count = feature_count(prepared[2])
        if count >= 16:
            warnings.warn(
                f"ShapleyValues evaluates 2^{count} coalitions; consider grouping features "
                "with `feature_mask` or using ShapleyValueSampling",
                stacklevel=2,
            )
        result = shapley_exact(
            self.forward_func, *prepared,
            perturbations_per_eval=perturbations_per_eval,
            show_progress=show_progress,
            desc=self.get_name(),
        )
        return call.result(result)
