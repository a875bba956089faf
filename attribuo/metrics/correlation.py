"""Faithfulness by correlation: does removing what the attributions call important hurt?

Quantus' perturbation-correlation metrics, torch-native and batched:

- :func:`faithfulness_correlation` (Bhatt et al. 2020): random subsets;
- :func:`faithfulness_estimate` (Alvarez-Melis & Jaakkola 2018): groups in
  order of attribution;
- :func:`monotonicity` (Arya et al. 2019): adding features to a baseline;
- :func:`monotonicity_correlation` (Nguyen & Martinez 2020);
- :func:`sensitivity_n` (Ancona et al. 2018): random subsets of size n;
- :func:`sufficiency` (Dasgupta et al. 2022): similar explanations, same
  prediction.

A *feature* is one entry of the attributions: with attributions shaped like
the inputs every element is one (as in Quantus); with ``(N, 1, H, W)`` for
``(N, C, H, W)`` images a pixel is one, its channels removed together
(Quantus broadcasts such attributions to the input and treats every channel
value as a feature of its own).

``perturb_baseline`` says what a removed feature becomes, per example as in
Quantus: ``"black"`` / ``"white"`` / ``"mean"`` the minimum / maximum / mean
of the example, ``"uniform"`` one value drawn from U(0, 1) per example and
perturbed copy (as Quantus' batched perturbations), ``"random"`` (which
Quantus 0.6 refuses) a U(0, 1) draw per element and copy, a number, or a
tensor of the inputs' shape or one example's (``baselines``' rules).

``softmax=True`` scores the softmax of the output instead of the output,
with Quantus' default per metric (True for :func:`monotonicity`,
:func:`monotonicity_correlation` and :func:`sensitivity_n`).

Quantus divides the attributions by the batch's largest absolute value
(``normalise=True``) before ``abs``; no score here changes when all the
batch's attributions are scaled by one positive number (correlations,
orders, distances normalised by their maximum): no ``normalise`` argument.

All perturbed copies of the batch go through
:meth:`~attribuo.metrics._common.MetricCall.score_copies`: as few forwards
as the memory budget or ``max_examples_per_batch`` allows. Random draws use
torch (``seed``: a generator of its own; None: the global one), not numpy,
so they differ from Quantus' (:func:`faithfulness_correlation` takes
explicit ``subsets`` to reproduce them).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from .._engine.batching import bytes_per_copy, chunks
from .._engine.errors import ArgumentTypeError, ArgumentValueError
from .._engine.forward import run_forward
from .._engine.inputs import positive_int
from .._engine.model_outputs import logits_of
from ._common import (
    Baseline,
    MetricCall,
    baseline_fill,
    generator,
    scored_call,
)
from .randomization import spearman_correlation


def _prepare(name: str, forward_func: Callable, inputs: Any, attributions: Any, target: Any,
             additional_forward_args: Any, explain_kwargs: dict | None, absolute: bool,
             max_examples_per_batch: int | None, softmax: bool = False) -> tuple[MetricCall, Tensor]:
    """The checked call (scoring probabilities with ``softmax``) and its ``(N, F)`` float64 attributions."""
    call, a = scored_call(name, forward_func, inputs, attributions, target, additional_forward_args,
                          explain_kwargs, max_examples_per_batch, absolute, softmax)
    if a.shape[1] == 0:
        raise ArgumentValueError(f"{name}: `inputs` have no features")
    return call, a


def _is_random(perturb_baseline: Baseline) -> bool:
    return isinstance(perturb_baseline, str) and perturb_baseline.lower() in ("uniform", "random")


def _replaced(call: MetricCall, removed: Tensor, values: Tensor) -> Tensor:
    """``x`` with the features in ``removed`` ``(k, N, F)`` set to ``values``, one copy per row of ``removed``."""
    mask = call.spread(removed.view(removed.shape[0], call.batch, *call.grid))
    return torch.where(mask, values, call.x.unsqueeze(0))


def pearson_rows(a: Tensor, b: Tensor) -> Tensor:
    """Pearson correlation of each row of ``a`` with the same row of ``b`` (NaN for a constant row).

    Example:
        >>> import torch
        >>> pearson_rows(torch.tensor([[1., 2., 3.], [1., 1., 1.]]), torch.tensor([[2., 4., 7.], [1., 2., 3.]]))
        tensor([0.9934,    nan], dtype=torch.float64)
    """
    a, b = a.to(torch.float64), b.to(torch.float64)
    constant = (a == a[:, :1]).all(dim=1) | (b == b[:, :1]).all(dim=1)
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    r = (a * b).sum(dim=1) / (a.pow(2).sum(dim=1) * b.pow(2).sum(dim=1)).sqrt()
    return torch.where(constant, torch.full_like(r, float("nan")), r)


def _step_of(a: Tensor, features_in_step: int, descending: bool) -> tuple[Tensor, int]:
    """``(N, F)`` step of each feature and the number of steps: features ranked by attribution
    (ties in index order), ``features_in_step`` a step (the last may hold fewer)."""
    order = a.argsort(dim=1, descending=descending, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(a.shape[1], device=a.device).expand_as(order))
    return ranks // features_in_step, math.ceil(a.shape[1] / features_in_step)


def _step_sums(a: Tensor, step_of: Tensor, steps: int) -> Tensor:
    """``(N, steps)`` total attribution of the features of each step."""
    return torch.zeros(a.shape[0], steps, dtype=a.dtype, device=a.device).scatter_add_(1, step_of, a)


def _in_step(step_of: Tensor, start: int, stop: int, cumulative: bool = False) -> Tensor:
    """``(stop - start, N, F)``: the features of steps ``start..stop-1`` (or of all steps up to each)."""
    s = torch.arange(start, stop, device=step_of.device).view(-1, 1, 1)
    return step_of.unsqueeze(0) <= s if cumulative else step_of.unsqueeze(0) == s


def faithfulness_correlation(
    forward_func: Callable,
    inputs: Tensor,
    attributions: Any,
    target: Any = None,
    *,
    additional_forward_args: Any = None,
    nr_runs: int = 100,
    subset_size: int = 224,
    perturb_baseline: Baseline = "black",
    abs: bool = False,
    subsets: Tensor | None = None,
    softmax: bool = False,
    explain_kwargs: dict | None = None,
    max_examples_per_batch: int | None = None,
    seed: int | None = None,
) -> Tensor:
    """Pearson correlation between the attribution of random subsets and the score lost by removing them.

    Bhatt, Weller & Moura, "Evaluating and aggregating feature-based model
    explanations" (IJCAI 2020). For each of ``nr_runs`` runs, ``subset_size``
    features drawn at random (without replacement) are set to
    ``perturb_baseline``; the per-example correlation of their summed
    attribution with ``f(x) - f(x_perturbed)`` over the runs is the score,
    in [-1, 1], higher is better. NaN when the summed attributions (or the
    score changes) are the same in every run.

    ``subsets`` (a ``(nr_runs, N, subset_size)`` integer tensor of feature
    indices, features flattened in the attributions' order) replaces the
    random draws, e.g. to reproduce Quantus' numpy draws. Cost:
    ``nr_runs + 1`` forwards per example, batched.

    Example:
        >>> import torch
        >>> model = torch.nn.Linear(6, 1)
        >>> x = torch.randn(3, 6)
        >>> exact = x * model.weight.detach()  # a linear model's exact contributions
        >>> faithfulness_correlation(model, x, exact, 0, nr_runs=20, subset_size=2, seed=0,
        ...                          perturb_baseline=0.0)
        tensor([1.0000, 1.0000, 1.0000], dtype=torch.float64)
    """
    call, a = _prepare("faithfulness_correlation", forward_func, inputs, attributions, target,
                       additional_forward_args, explain_kwargs, abs, max_examples_per_batch, softmax)
    n, f = a.shape
    gen = generator(seed, call.x.device)
    if subsets is None:
        nr_runs = positive_int(nr_runs, "nr_runs")
        subset_size = positive_int(subset_size, "subset_size")
        if subset_size >= f:
            raise ArgumentValueError(
                f"faithfulness_correlation: `subset_size` ({subset_size}) must be smaller than the "
                f"number of features ({f})"
            )
        idx = torch.stack([torch.rand(n, f, generator=gen, device=a.device).topk(subset_size, dim=1).indices
                           for _ in range(nr_runs)])
    else:
        idx = _checked_subsets(subsets, n, f).to(a.device)
        nr_runs = idx.shape[0]
    fill = baseline_fill(call, perturb_baseline, nr_runs, gen)

    def make(start: int, stop: int) -> Tensor:
        removed = torch.zeros(stop - start, n, f, dtype=torch.bool, device=a.device)
        removed.scatter_(2, idx[start:stop], True)
        return _replaced(call, removed, fill(start, stop))

    deltas = call.scores()[:, None] - call.score_copies(nr_runs, make)
    sums = a.unsqueeze(0).expand(nr_runs, n, f).gather(2, idx).sum(dim=2).T
    return pearson_rows(sums, deltas)


def _checked_subsets(subsets: Any, n: int, f: int) -> Tensor:
    if not isinstance(subsets, Tensor) or subsets.is_floating_point() or subsets.dtype == torch.bool:
        raise ArgumentTypeError("`subsets` must be an integer tensor (nr_runs, N, subset_size) of feature indices")
    if subsets.dim() != 3 or subsets.shape[1] != n or 0 in subsets.shape:
        raise ArgumentValueError(f"`subsets` must have shape (nr_runs, N={n}, subset_size), got {tuple(subsets.shape)}")
    if bool((subsets < 0).any()) or bool((subsets >= f).any()):
        raise ArgumentValueError(f"`subsets` must hold feature indices in [0, {f})")
    if bool((subsets.sort(dim=2).values.diff(dim=2) == 0).any()):
        raise ArgumentValueError("`subsets` must not repeat a feature within one subset")
    return subsets.long()


def faithfulness_estimate(
    forward_func: Callable,
    inputs: Tensor,
    attributions: Any,
    target: Any = None,
    *,
    additional_forward_args: Any = None,
    features_in_step: int = 1,
    perturb_baseline: Baseline = "black",
    abs: bool = False,
    softmax: bool = False,
    explain_kwargs: dict | None = None,
    max_examples_per_batch: int | None = None,
    seed: int | None = None,
) -> Tensor:
    """Pearson correlation between the attribution of feature groups and the score lost by removing each.

    Alvarez-Melis & Jaakkola, "Towards robust interpretability with
    self-explaining neural networks" (NeurIPS 2018). Features are taken in
    order of decreasing attribution, ``features_in_step`` at a time; each
    group alone is set to ``perturb_baseline``, and the score is the
    per-example correlation of the groups' summed attribution with
    ``f(x) - f(x_perturbed)``; in [-1, 1], higher is better. Cost:
    ``ceil(F / features_in_step) + 1`` forwards per example, batched.

    Example:
        >>> import torch
        >>> model = torch.nn.Linear(4, 1)
        >>> x = torch.randn(2, 4)
        >>> faithfulness_estimate(model, x, x * model.weight.detach(), 0, perturb_baseline=0.0)
        tensor([1.0000, 1.0000], dtype=torch.float64)
    """
    call, a = _prepare("faithfulness_estimate", forward_func, inputs, attributions, target,
                       additional_forward_args, explain_kwargs, abs, max_examples_per_batch, softmax)
    step_of, steps = _step_of(a, positive_int(features_in_step, "features_in_step"), descending=True)
    fill = baseline_fill(call, perturb_baseline, steps, generator(seed, call.x.device))

    def make(start: int, stop: int) -> Tensor:
        return _replaced(call, _in_step(step_of, start, stop), fill(start, stop))

    deltas = call.scores()[:, None] - call.score_copies(steps, make)
    return pearson_rows(_step_sums(a, step_of, steps), deltas)


def monotonicity(
    forward_func: Callable,
    inputs: Tensor,
    attributions: Any,
    target: Any = None,
    *,
    additional_forward_args: Any = None,
    features_in_step: int = 1,
    perturb_baseline: Baseline = "black",
    abs: bool = True,
    softmax: bool = True,
    explain_kwargs: dict | None = None,
    max_examples_per_batch: int | None = None,
    seed: int | None = None,
) -> Tensor:
    """1.0 if the score never falls while features are added to a baseline in order of attribution, else 0.0.

    Arya et al., "One explanation does not fit all" (2019; AIX360's
    monotonicity). Starting from ``perturb_baseline`` everywhere, the
    features are put back, ``features_in_step`` at a time, least attributed
    first; the score after every step must be non-decreasing. Higher (1.0) is
    better. Cost: ``ceil(F / features_in_step)`` forwards per example,
    batched.

    Quantus 0.6's Monotonicity replaces the baseline with itself (its
    perturbation reads the baseline from the array it perturbs), so it
    returns True for any attribution; this is the algorithm it intends.

    Example:
        >>> import torch
        >>> model = torch.nn.Linear(4, 1)
        >>> with torch.no_grad():
        ...     _ = model.weight.copy_(torch.tensor([[1., -2., 3., 4.]]))
        >>> x = torch.ones(1, 4)
        >>> exact = x * model.weight.detach()
        >>> monotonicity(model, x, exact, 0, perturb_baseline=0.0, abs=False, softmax=False)
        tensor([1.], dtype=torch.float64)
        >>> monotonicity(model, x, exact, 0, perturb_baseline=0.0, softmax=False)  # |-2| after 1: falls
        tensor([0.], dtype=torch.float64)
    """
    call, a = _prepare("monotonicity", forward_func, inputs, attributions, target,
                       additional_forward_args, explain_kwargs, abs, max_examples_per_batch, softmax)
    step_of, steps = _step_of(a, positive_int(features_in_step, "features_in_step"), descending=False)
    # one baseline for the whole walk (one uniform draw per example)
    fill = baseline_fill(call, perturb_baseline, 1, generator(seed, call.x.device))

    def make(start: int, stop: int) -> Tensor:
        return _replaced(call, ~_in_step(step_of, start, stop, cumulative=True), fill(0, 1))

    scores = call.score_copies(steps, make)
    return (scores.diff(dim=1) >= 0).all(dim=1).to(torch.float64)


def monotonicity_correlation(
    forward_func: Callable,
    inputs: Tensor,
    attributions: Any,
    target: Any = None,
    *,
    additional_forward_args: Any = None,
    nr_samples: int = 100,
    features_in_step: int = 1,
    perturb_baseline: Baseline = "uniform",
    abs: bool = True,
    softmax: bool = True,
    explain_kwargs: dict | None = None,
    max_examples_per_batch: int | None = None,
    seed: int | None = None,
) -> Tensor:
    """Spearman correlation between the attribution of feature groups and the score variance their removal causes.

    Nguyen & Martinez, "On quantitative aspects of model interpretability"
    (2020). Features are taken in order of increasing attribution,
    ``features_in_step`` at a time; each group alone is set to
    ``perturb_baseline`` ``nr_samples`` times, and the mean squared change of
    the score measures how much the group matters. The score is the
    per-example rank correlation of the groups' summed attribution with that
    change; in [-1, 1], higher is better.

    Quantus also divides the change by ``f(x)^2`` (its ``eps`` guards small
    scores): a factor per example, which leaves the rank correlation as it
    is, so it is left out. A deterministic baseline gives the same copy every
    sample, so it is evaluated once. Cost: ``ceil(F / features_in_step) *
    nr_samples + 1`` forwards per example (``nr_samples`` only for
    ``"uniform"``), batched.

    Example:
        >>> import torch
        >>> model = torch.nn.Linear(5, 1)
        >>> x = torch.randn(2, 5)
        >>> exact = (x * model.weight.detach()).abs()
        >>> monotonicity_correlation(model, x, exact, 0, perturb_baseline=0.0, softmax=False)
        tensor([1., 1.], dtype=torch.float64)
    """
    call, a = _prepare("monotonicity_correlation", forward_func, inputs, attributions, target,
                       additional_forward_args, explain_kwargs, abs, max_examples_per_batch, softmax)
    n = call.batch
    samples = positive_int(nr_samples, "nr_samples") if _is_random(perturb_baseline) else 1
    step_of, steps = _step_of(a, positive_int(features_in_step, "features_in_step"), descending=False)
    fill = baseline_fill(call, perturb_baseline, steps * samples, generator(seed, call.x.device))

    def make(start: int, stop: int) -> Tensor:
        # copy c is sample c % samples of step c // samples
        step = torch.arange(start, stop, device=a.device) // samples
        removed = step_of.unsqueeze(0) == step.view(-1, 1, 1)
        return _replaced(call, removed, fill(start, stop))

    y = call.scores()
    changes = (call.score_copies(steps * samples, make).view(n, steps, samples) - y.view(n, 1, 1)).pow(2).mean(2)
    return spearman_correlation(_step_sums(a, step_of, steps), changes)


def sensitivity_n(
    forward_func: Callable,
    inputs: Tensor,
    attributions: Any,
    target: Any = None,
    *,
    additional_forward_args: Any = None,
    n_max_percentage: float = 0.8,
    features_in_step: int = 1,
    nr_samples: int = 10,
    perturb_baseline: Baseline = "black",
    abs: bool = False,
    return_curves: bool = False,
    softmax: bool = True,
    explain_kwargs: dict | None = None,
    max_examples_per_batch: int | None = None,
    seed: int | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """Mean over subset sizes n of the correlation between subsets' attribution and the score they carry.

    Ancona et al., "Towards better understanding of gradient-based
    attribution methods for deep neural networks" (ICLR 2018). For each
    size ``n = features_in_step * k``, ``k = 1..K`` with ``K =
    int(n_max_percentage * F // features_in_step)``, ``nr_samples`` random
    subsets of ``n`` features are set to ``perturb_baseline``; the
    per-example Pearson correlation (over the subsets) of their summed
    attribution with ``f(x) - f(x_perturbed)`` is the curve at ``n``. The
    score is the curve's mean over n (NaNs, from subsets whose sums are all
    equal, left out); in [-1, 1], higher is better. ``return_curves=True``
    also returns the ``(N, K)`` curves.

    Quantus 0.6's SensitivityN differs: it removes the top-n features (one
    cumulative deletion per n, no random subsets) and correlates across the
    examples of the batch, one number per n, not per example. Here it is the
    paper's per-example sampling. Random subsets: copy ``c`` (sample
    ``c % nr_samples`` of the ``c // nr_samples``-th size) takes the ``n``
    smallest of ``torch.rand(N, F, dtype=torch.float64)`` from a generator
    seeded with ``s + c``, ``s`` one draw from the seed's (or the global)
    generator. Cost: ``K * nr_samples + 1`` forwards per example, batched.

    Example:
        >>> import torch
        >>> model = torch.nn.Linear(8, 1)
        >>> x = torch.randn(2, 8)
        >>> scores, curves = sensitivity_n(model, x, x * model.weight.detach(), 0, perturb_baseline=0.0,
        ...                                nr_samples=5, seed=0, return_curves=True, softmax=False)
        >>> scores.round(decimals=6), curves.shape
        (tensor([1., 1.], dtype=torch.float64), torch.Size([2, 6]))
    """
    call, a = _prepare("sensitivity_n", forward_func, inputs, attributions, target,
                       additional_forward_args, explain_kwargs, abs, max_examples_per_batch, softmax)
    n, f = a.shape
    step = positive_int(features_in_step, "features_in_step")
    samples = positive_int(nr_samples, "nr_samples")
    if samples < 2:
        raise ArgumentValueError("sensitivity_n: `nr_samples` must be at least 2 to correlate over subsets")
    if isinstance(n_max_percentage, bool) or not isinstance(n_max_percentage, (int, float)) \
            or not 0 < n_max_percentage <= 1:
        raise ArgumentValueError(f"`n_max_percentage` must be a number in (0, 1], got {n_max_percentage!r}")
    sizes_count = int(n_max_percentage * f // step)
    if sizes_count < 1:
        raise ArgumentValueError(f"sensitivity_n: no subset size fits: {n_max_percentage} * {f} features is "
                                 f"less than `features_in_step` ({step})")
    gen = generator(seed, a.device)
    first_seed = int(torch.randint(0, 2**62, (1,), generator=gen, device=a.device))
    copies = sizes_count * samples
    fill = baseline_fill(call, perturb_baseline, copies, gen)
    sums = torch.empty(n, copies, dtype=torch.float64, device=a.device)

    def make(start: int, stop: int) -> Tensor:
        removed = torch.zeros(stop - start, n, f, dtype=torch.bool, device=a.device)
        draw = torch.Generator(device=a.device)
        for c in range(start, stop):
            draw.manual_seed(first_seed + c)
            # the n smallest of the draw, found by selection (topk and sorts are ten times slower
            # on CPU); float64 draws leave ties at the n-th value out of reach
            keys = torch.rand(n, f, generator=draw, device=a.device, dtype=torch.float64)
            chosen = keys <= keys.kthvalue(step * (c // samples + 1), dim=1, keepdim=True).values
            removed[c - start] = chosen
            sums[:, c] = (a * chosen).sum(dim=1)
        return _replaced(call, removed, fill(start, stop))

    deltas = call.scores()[:, None] - call.score_copies(copies, make)
    curves = pearson_rows(sums.view(-1, samples), deltas.reshape(-1, samples)).view(n, sizes_count)
    scores = curves.nanmean(dim=1)
    return (scores, curves) if return_curves else scores


_DISTANCES = ("seuclidean", "euclidean", "sqeuclidean", "cityblock", "cosine")


def sufficiency(
    forward_func: Callable,
    inputs: Tensor,
    attributions: Any,
    target: Any = None,
    *,
    additional_forward_args: Any = None,
    threshold: float = 0.6,
    distance_func: str | Callable[[Tensor, Tensor], Tensor] = "seuclidean",
    abs: bool = True,
    explain_kwargs: dict | None = None,
    max_examples_per_batch: int | None = None,
) -> Tensor:
    """Share of the examples with a similar explanation that get the same predicted class.

    Dasgupta, Frost & Moshkovitz, "Framework for evaluating faithfulness of
    local explanations" (ICML 2022). Distances between the examples'
    attributions (``distance_func``: ``"seuclidean"`` (standardised as in
    scipy's ``cdist``), ``"euclidean"``, ``"sqeuclidean"``, ``"cityblock"``,
    ``"cosine"``, or ``f(a, b) -> (N, N)`` on ``(N, F)`` float64 rows) are
    divided by the largest; two examples are similar below ``threshold``.
    An example's score is the fraction of the other similar examples whose
    predicted class (argmax of the output) is its own; 0 with no similar
    example. In [0, 1], higher is better. The examples of one call form the
    group (Quantus: each batch of its ``batch_size``, 64); ``target`` is not
    used. Cost: one forward per example.

    Unlike scipy, a feature the same in every example (zero variance) adds
    nothing to the standardised distance, not NaN to every distance.

    Example:
        >>> import torch
        >>> model = torch.nn.Linear(3, 2)
        >>> x = torch.randn(4, 3)
        >>> a = torch.tensor([[1., 0., 0.], [1., 0., 0.], [0., 0., 1.], [0., 0., 1.]])
        >>> sufficiency(model, x, a, distance_func="euclidean").shape
        torch.Size([4])
    """
    call, a = _prepare("sufficiency", forward_func, inputs, attributions, target,
                       additional_forward_args, explain_kwargs, abs, max_examples_per_batch)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise ArgumentTypeError(f"`threshold` must be a number, got {type(threshold).__name__}")
    d = _distances(a, distance_func)
    finite = d[torch.isfinite(d)].abs()
    if finite.numel() and float(finite.max()) > 0:
        d = d / finite.max()
    similar = (d <= threshold) & ~torch.eye(call.batch, dtype=torch.bool, device=d.device)
    classes = _predicted_classes(call)
    count = similar.sum(dim=1).to(torch.float64)
    hits = (similar & (classes[:, None] == classes[None, :])).sum(dim=1).to(torch.float64)
    return torch.where(count > 0, hits / count.clamp(min=1), torch.zeros_like(hits))


def _distances(a: Tensor, how: Any) -> Tensor:
    n = a.shape[0]
    if callable(how):
        d = how(a, a)
        if not isinstance(d, Tensor) or d.shape != (n, n):
            raise ArgumentValueError(f"`distance_func` must return an ({n}, {n}) tensor of distances")
        return d.to(torch.float64)
    if not isinstance(how, str) or how.lower() not in _DISTANCES:
        raise ArgumentValueError(f"`distance_func` must be one of {_DISTANCES} or a callable, got {how!r}")
    how = how.lower()
    if how == "cosine":
        unit = a / a.norm(dim=1, keepdim=True)
        return 1 - unit @ unit.T
    if how == "seuclidean":
        # scipy's cdist(X, X) takes the variance of X stacked on itself (ddof=1)
        var = 2 * (a - a.mean(dim=0)).pow(2).sum(dim=0) / max(2 * n - 1, 1)
        a = a * torch.where(var > 0, var.rsqrt(), torch.zeros_like(var))
    d = torch.cdist(a, a, p=1.0 if how == "cityblock" else 2.0, compute_mode="donot_use_mm_for_euclid_dist")
    return d.pow(2) if how == "sqeuclidean" else d


def _predicted_classes(call: MetricCall) -> Tensor:
    """Argmax of the model's output per example, in chunks of at most ``max_examples_per_batch``."""
    parts = []
    with torch.no_grad():
        for start, stop in chunks(call.batch, bytes_per_copy((call.x[:1],)), examples=call.max_examples_per_batch,
                                  name="max_examples_per_batch"):
            part = call.call.take(start, stop)
            out = logits_of(run_forward(call.forward_func, part.inputs, None, part.args))
            parts.append(out.reshape(stop - start, -1).argmax(dim=1))
    return torch.cat(parts)
