"""Randomisation checks: explanations must change when what they explain is randomised.

Quantus' randomisation metrics, batched:

- :func:`mprt`: re-initialise the model's layers one after another and
  compare the explanations with the trained model's (Adebayo et al. 2018).
- :func:`smooth_mprt`: the same with explanations averaged over noisy
  copies of the inputs, which removes the noise that shatters gradients
  (Hedström et al. 2023).
- :func:`efficient_mprt`: the growth of the explanations' complexity
  (histogram entropy) once the whole model is random (Hedström et al. 2023).
- :func:`random_logit`: compare the explanation of the target class with
  that of a random other class (Sixt et al. 2020).

These metrics explain again, so ``attributions`` must be an attribution
method (class, instance, or ``f(model, inputs, target)``). The model is
never changed: the layers are re-initialised in a deep copy, and each stage
explains the whole batch at once (in chunks of ``max_examples_per_batch``
examples when given). ``additional_forward_args`` go to the explainer as
its keyword ``additional_forward_args``.

Layers are the modules with ``reset_parameters``, in registration order
(``bottom_up``) or reversed (``top_down``), as in Quantus; with an int
``seed`` each layer is re-initialised right after ``torch.manual_seed(seed +
1)``, Quantus' own scheme, so ``seed=s`` draws the same random weights as
Quantus' ``seed=s`` (in a forked generator: the global one is untouched).
``seed=None`` draws from the global stream.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._engine.batching import bytes_per_copy, chunks
from .._engine.call import Call
from .._engine.errors import ArgumentTypeError, ArgumentValueError
from .._engine.inputs import positive_int
from .._engine.targets import Target
from ._common import (
    MetricCall,
    as_explainer,
    generator,
    metric_call,
    normalise_rows,
    per_example_targets,
)
from .complexity import discrete_entropy
from .randomization import (
    centred_ranks,
    correlate_centred,
    randomised_stages,
    reset_layers,
    spearman_correlation,
)

LAYER_ORDERS = ("top_down", "bottom_up", "independent")
Similarity = Callable[[Tensor, Tensor], Tensor]


def structural_similarity(a: Tensor, b: Tensor, win_size: int = 7) -> Tensor:
    """``(N,)`` SSIM of each row of ``a`` with the same row of ``b``, rows flattened.

    As Quantus calls ``skimage.metrics.structural_similarity`` on flattened
    explanations: a uniform 1-D window of ``win_size``, sample covariances,
    ``K1=0.01``, ``K2=0.03``, the data range ``max - min`` of both rows
    together, and the mean over the positions whose window fits (skimage's
    crop). In float64.

    Example:
        >>> import torch
        >>> a = torch.arange(10.0).reshape(1, 10)
        >>> structural_similarity(a, a)
        tensor([1.], dtype=torch.float64)
    """
    a = a.detach().reshape(a.shape[0], -1).to(torch.float64)
    b = b.detach().reshape(b.shape[0], -1).to(torch.float64)
    if a.shape != b.shape:
        raise ArgumentValueError(f"structural_similarity: shapes {tuple(a.shape)} and {tuple(b.shape)} differ")
    if isinstance(win_size, bool) or not isinstance(win_size, int) or win_size < 3 or win_size % 2 == 0:
        raise ArgumentValueError(f"structural_similarity: `win_size` must be an odd int >= 3, got {win_size!r}")
    if a.shape[1] < win_size:
        raise ArgumentValueError(f"structural_similarity: {a.shape[1]} features, fewer than the window "
                                 f"`win_size`={win_size}")
    both = torch.cat([a, b], dim=1)
    data_range = both.amax(dim=1, keepdim=True) - both.amin(dim=1, keepdim=True)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2

    # window means at the positions where the window fits, all five maps in one pass
    ux, uy, uxx, uyy, uxy = F.avg_pool1d(torch.stack([a, b, a * a, b * b, a * b], 1), win_size, stride=1).unbind(1)
    cov = win_size / (win_size - 1)
    vx = cov * (uxx - ux * ux)
    vy = cov * (uyy - uy * uy)
    vxy = cov * (uxy - ux * uy)
    s = (2 * ux * uy + c1) * (2 * vxy + c2) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.mean(dim=1)


def _pearson(a: Tensor, b: Tensor) -> Tensor:
    a = a.reshape(a.shape[0], -1).to(torch.float64)
    b = b.reshape(b.shape[0], -1).to(torch.float64)
    return correlate_centred(a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True))


def _spearman_against_reference() -> Similarity:
    """Spearman correlation that ranks the (unchanging) reference explanation only once."""
    memo: list[Any] = [None, None]

    def compare(reference: Tensor, other: Tensor) -> Tensor:
        if memo[0] is not reference:
            memo[0], memo[1] = reference, centred_ranks(reference)
        return correlate_centred(memo[1], centred_ranks(other))

    return compare


_SIMILARITIES: dict[str, Callable[[], Similarity]] = {
    "spearman": _spearman_against_reference,
    "pearson": lambda: _pearson,
    "ssim": lambda: structural_similarity,
}


def _similarity(name: str, func: Any, default: str) -> Similarity:
    func = default if func is None else func
    if func is spearman_correlation:
        func = "spearman"
    if isinstance(func, str):
        if func not in _SIMILARITIES:
            raise ArgumentValueError(f"{name}: `similarity_func` must be one of {sorted(_SIMILARITIES)} "
                                     f"or a function (a, b) -> (N,), got {func!r}")
        func = _SIMILARITIES[func]()
    if not callable(func):
        raise ArgumentTypeError(f"{name}: `similarity_func` must be a name or a function (a, b) -> (N,)")
    return lambda a, b: torch.as_tensor(func(a, b)).reshape(-1).to(torch.float64)


class _Reexplain:
    """A metric call whose attribution method is run again (on other models, inputs or targets)."""

    def __init__(self, name: str, forward_func: Any, inputs: Any, attributions: Any, target: Any,
                 additional_forward_args: Any, explain_kwargs: dict | None,
                 max_examples_per_batch: int | None, needs_module: bool = True) -> None:
        if needs_module and not isinstance(forward_func, nn.Module):
            raise ArgumentTypeError(f"{name}: `forward_func` must be an nn.Module (its layers are "
                                    f"re-initialised in a copy), got {type(forward_func).__name__}")
        if isinstance(attributions, Tensor) or (isinstance(attributions, tuple) and attributions
                                                and isinstance(attributions[0], Tensor)):
            raise ArgumentTypeError(f"{name}: `attributions` must be an attribution method (a class, an "
                                    "instance or f(model, inputs, target)): the metric explains again; "
                                    "got a tensor")
        if explain_kwargs is not None and not isinstance(explain_kwargs, dict):
            raise ArgumentTypeError(f"{name}: `explain_kwargs` must be a dict, got {type(explain_kwargs).__name__}")
        if max_examples_per_batch is not None:
            positive_int(max_examples_per_batch, "max_examples_per_batch")
        self.name = name
        self.call: MetricCall = metric_call(forward_func, inputs, None, target, additional_forward_args,
                                            max_examples_per_batch, name)
        self.method = attributions
        self.kwargs = dict(explain_kwargs or {})
        self.explain = as_explainer(attributions, **self.kwargs)  # checks the method once

    def run(self, model: Callable, call: Call) -> Tensor:
        """``(call.batch, F)`` attributions of ``model`` for the examples of ``call``."""
        explain = self.explain
        if call.args:
            explain = as_explainer(self.method, **self.kwargs, additional_forward_args=call.args)
        result = explain(model, call.inputs[0], _target_arg(call.target))
        if result.shape[0] != call.batch:
            raise ArgumentValueError(f"{self.name}: the explainer returned {result.shape[0]} rows for "
                                     f"{call.batch} examples")
        return result.detach().reshape(call.batch, -1)

    def examples(self, model: Callable, call: Call | None = None) -> Tensor:
        """``(N, F)`` attributions of the whole batch, ``max_examples_per_batch`` at a time."""
        call = self.call.call if call is None else call
        parts = [self.run(model, call.take(start, stop))
                 for start, stop in chunks(call.batch, None, examples=self.call.max_examples_per_batch,
                                           name="max_examples_per_batch")]
        return parts[0] if len(parts) == 1 else torch.cat(parts)


def _target_arg(target: Target) -> Any:
    """A parsed target back in an argument form ``attribute`` accepts."""
    if target.per_example is not None:
        idx = target.per_example
        return idx[:, 0] if idx.shape[1] == 1 else [tuple(row) for row in idx.tolist()]
    if target.shared is not None:
        return target.shared[0] if len(target.shared) == 1 else target.shared
    return None


def _layer_scores(name: str, model: nn.Module, explain: Callable[[nn.Module], Tensor],
                  compare: Similarity, layer_order: str, skip_layers: bool, seed: int | None,
                  with_original: bool) -> dict[str, Tensor]:
    """``compare(reference, explanation)`` after each randomisation stage, by layer name.

    ``reference`` explains the unchanged copy; ``"original"`` (with
    ``with_original``) compares it with a second explanation of an unchanged
    copy, made after the stages so that the stages' random draws (noise)
    do not depend on ``with_original``.
    """
    if layer_order not in LAYER_ORDERS:
        raise ArgumentValueError(f"{name}: `layer_order` must be one of {LAYER_ORDERS}, got {layer_order!r}")
    if seed is not None:
        generator(seed)  # checks the type
    names = reset_layers(model)
    if not names:
        raise ArgumentValueError(f"{name}: `forward_func` has no module with reset_parameters to randomise")
    if layer_order == "top_down":
        names = names[::-1]
    work = copy.deepcopy(model)
    scores: dict[str, Tensor] = {}
    with torch.random.fork_rng() if seed is not None else nullcontext():
        reference = explain(work)
        stages = randomised_stages(work, names, cascading=layer_order != "independent",
                                   layer_seed=None if seed is None else seed + 1)
        for i, layer in enumerate(stages):
            if not skip_layers or i == len(names) - 1:
                scores[layer] = compare(reference, explain(work))
        if with_original:
            scores = {"original": compare(reference, explain(copy.deepcopy(model))), **scores}
    return scores


def _summary(scores: dict[str, Tensor], last: bool, return_layers: bool) -> Any:
    layers = [v for k, v in scores.items() if k != "original"]
    summary = layers[-1] if last else torch.stack(layers).mean(dim=0)
    return (summary, scores) if return_layers else summary


def mprt(
    forward_func: nn.Module,
    inputs: Tensor,
    attributions: Any,
    target: Any = None,
    *,
    additional_forward_args: Any = None,
    similarity_func: str | Similarity | None = None,
    layer_order: str = "top_down",
    return_last_correlation: bool = False,
    skip_layers: bool = False,
    abs: bool = True,
    normalise: bool = True,
    return_layers: bool = False,
    explain_kwargs: dict | None = None,
    max_examples_per_batch: int | None = None,
    seed: int | None = None,
) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
    """Model parameter randomisation test (Adebayo et al., 2018): lower is better.

    The layers are re-initialised one by one (``top_down``: output side
    first, cascading; ``bottom_up``; ``independent``: each alone), and after
    each the explanation is compared (``similarity_func``: Spearman rank
    correlation by default, or ``"pearson"``, ``"ssim"``, or ``f(a, b) ->
    (N,)`` on ``(N, F)`` rows) with the trained model's, both absolute and
    normalised by their maximum (Quantus' defaults). An explanation that
    reflects what the model learned loses its similarity.

    Returns the mean over the randomised layers per example, or the last
    layer's with ``return_last_correlation`` (with ``skip_layers`` only the
    last is computed). ``return_layers=True`` returns ``(scores, {layer:
    (N,) scores})`` with an ``"original"`` entry (two explanations of the
    trained model; 1 for deterministic methods), Quantus' per-layer dict.
    Quantus' ``return_average_correlation`` averages that ``"original"``
    entry in too (it skips a key named ``"orig"``); this mean does not.
    Cost: one explanation of the batch per layer, plus one (two with
    ``return_layers``).

    Example:
        >>> import torch
        >>> from attribuo.attr import Saliency
        >>> from attribuo.metrics.randomisation import mprt
        >>> model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
        >>> scores, layers = mprt(model, torch.rand(3, 8), Saliency, 0, seed=0, return_layers=True)
        >>> scores.shape, list(layers)
        (torch.Size([3]), ['original', '2', '0'])
    """
    setup = _Reexplain("mprt", forward_func, inputs, attributions, target, additional_forward_args,
                       explain_kwargs, max_examples_per_batch)
    compare = _similarity("mprt", similarity_func, "spearman")
    scores = _layer_scores("mprt", forward_func, lambda m: normalise_rows(setup.examples(m).to(torch.float64), normalise, abs),
                           compare, layer_order, skip_layers, seed, return_layers)
    return _summary(scores, return_last_correlation or skip_layers, return_layers)


def smooth_mprt(
    forward_func: nn.Module,
    inputs: Tensor,
    attributions: Any,
    target: Any = None,
    *,
    additional_forward_args: Any = None,
    similarity_func: str | Similarity | None = None,
    layer_order: str = "bottom_up",
    nr_samples: int = 50,
    noise_magnitude: float = 0.1,
    return_last_correlation: bool = False,
    skip_layers: bool = False,
    abs: bool = True,
    normalise: bool = True,
    return_layers: bool = False,
    explain_kwargs: dict | None = None,
    max_examples_per_batch: int | None = None,
    seed: int | None = None,
) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
    """Smooth MPRT (Hedström et al., 2023): :func:`mprt` on denoised explanations; lower is better.

    Every explanation (trained model's and each stage's) is the mean over
    ``nr_samples`` copies of the inputs with Gaussian noise of standard
    deviation ``noise_magnitude * (max - min)`` of each example; the last
    copy is noise-free, as in Quantus. Explanations are made absolute and
    normalised by their root mean square (Quantus' second-moment
    normalisation, per example here). Returns as :func:`mprt`; the default
    order is ``bottom_up``. The noise is drawn with torch (``seed`` seeds its
    own generator; Quantus draws it with numpy's global one), copy by copy,
    so chunking does not change it. Cost: ``nr_samples`` explanations of the
    batch per layer plus ``nr_samples`` (twice with ``return_layers``), in
    chunks of copies of the batch that the memory budget (or
    ``max_examples_per_batch``) allows.

    Example:
        >>> import torch
        >>> from attribuo.attr import Saliency
        >>> from attribuo.metrics.randomisation import smooth_mprt
        >>> model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
        >>> smooth_mprt(model, torch.rand(3, 8), Saliency, 0, nr_samples=4, seed=0).shape
        torch.Size([3])
    """
    setup = _Reexplain("smooth_mprt", forward_func, inputs, attributions, target, additional_forward_args,
                       explain_kwargs, max_examples_per_batch)
    nr_samples = positive_int(nr_samples, "nr_samples")
    if isinstance(noise_magnitude, bool) or not isinstance(noise_magnitude, (int, float)) or noise_magnitude < 0:
        raise ArgumentValueError(f"smooth_mprt: `noise_magnitude` must be a number >= 0, got {noise_magnitude!r}")
    compare = _similarity("smooth_mprt", similarity_func, "spearman")
    x, n = setup.call.x, setup.call.batch
    dims = tuple(range(1, x.dim()))
    std = noise_magnitude * (x.amax(dim=dims, keepdim=True) - x.amin(dim=dims, keepdim=True))
    g = generator(seed, x.device)

    def smoothed(model: nn.Module) -> Tensor:
        total = None
        for start, stop in chunks(nr_samples, bytes_per_copy((x,)), examples=max_examples_per_batch,
                                  batch=n, name="max_examples_per_batch"):
            copies = torch.stack([
                x + torch.randn(x.shape, generator=g, dtype=x.dtype, device=x.device) * std
                if s < nr_samples - 1 else x
                for s in range(start, stop)
            ])
            k = stop - start
            expanded = setup.call.call.expanded(k, inputs=(copies.reshape(k * n, *x.shape[1:]),))
            part = setup.run(model, expanded).to(torch.float64).reshape(k, n, -1).sum(dim=0)
            total = part if total is None else total + part
        return normalise_rows(total / nr_samples, "second_moment" if normalise else False, abs)

    scores = _layer_scores("smooth_mprt", forward_func, smoothed, compare, layer_order, skip_layers, seed,
                           return_layers)
    return _summary(scores, return_last_correlation or skip_layers, return_layers)


def efficient_mprt(
    forward_func: nn.Module,
    inputs: Tensor,
    attributions: Any,
    target: Any = None,
    *,
    additional_forward_args: Any = None,
    n_bins: int = 100,
    complexity_func: Callable[[Tensor], Tensor] | None = None,
    layer_order: str = "bottom_up",
    abs: bool = False,
    normalise: bool = False,
    explain_kwargs: dict | None = None,
    max_examples_per_batch: int | None = None,
    seed: int | None = None,
) -> Tensor:
    """Efficient MPRT (Hedström et al., 2023): relative rise of explanation complexity; higher is better.

    ``(H_random - H_trained) / H_trained`` per example, where ``H`` is the
    entropy of a histogram of the explanation (``n_bins`` equal bins over
    its range; :func:`~attribuo.metrics.complexity.discrete_entropy`, or
    ``complexity_func(rows (N, F)) -> (N,)``) of the trained model and of
    the model with every layer re-initialised (``bottom_up`` cascade by
    default). A faithful explanation of a random model looks like noise: its
    entropy grows. Quantus' other options (rules for ``n_bins``, the extra
    model-entropy scores) are not provided; only the first and the last
    stage are explained, as Quantus' default ``skip_layers=True``. Cost: two
    explanations of the batch.

    Example:
        >>> import torch
        >>> from attribuo.attr import Saliency
        >>> from attribuo.metrics.randomisation import efficient_mprt
        >>> model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
        >>> efficient_mprt(model, torch.rand(3, 8), Saliency, 0, n_bins=4, seed=0).shape
        torch.Size([3])
    """
    setup = _Reexplain("efficient_mprt", forward_func, inputs, attributions, target, additional_forward_args,
                       explain_kwargs, max_examples_per_batch)
    if complexity_func is None:
        discrete_entropy(torch.zeros(1, 1), n_bins)  # checks n_bins

        def complexity_func(rows: Tensor) -> Tensor:
            return discrete_entropy(rows, n_bins)
    elif not callable(complexity_func):
        raise ArgumentTypeError("efficient_mprt: `complexity_func` must be a function (N, F) -> (N,)")

    def rise(reference: Tensor, randomised: Tensor) -> Tensor:
        before = torch.as_tensor(complexity_func(reference)).to(torch.float64)
        return (torch.as_tensor(complexity_func(randomised)).to(torch.float64) - before) / before

    def explain(model: nn.Module) -> Tensor:
        return normalise_rows(setup.examples(model), "second_moment" if normalise else False, abs)

    scores = _layer_scores("efficient_mprt", forward_func, explain, rise, layer_order, True, seed, False)
    return next(iter(scores.values()))


def random_logit(
    forward_func: Callable,
    inputs: Tensor,
    attributions: Any,
    target: Any = None,
    *,
    additional_forward_args: Any = None,
    similarity_func: str | Similarity | None = None,
    num_classes: int | None = None,
    abs: bool = False,
    normalise: bool = True,
    explain_kwargs: dict | None = None,
    max_examples_per_batch: int | None = None,
    seed: int | None = None,
) -> Tensor:
    """Random logit test (Sixt et al., 2020): similarity to another class's explanation; lower is better.

    For each example a class other than its target is drawn uniformly from
    the ``num_classes`` (default: the model's output width, found with one
    forward of one example) and both classes are explained; the score is
    their similarity (SSIM by default, as Quantus, on the flattened
    explanations: see :func:`structural_similarity`; or ``"spearman"``,
    ``"pearson"``, ``f(a, b) -> (N,)``), after normalising each by its
    maximum (``normalise``) and ``abs``. A class-sensitive explanation scores
    low. ``target`` must give one class index per example. The other class
    is drawn with torch (``seed``), not numpy as Quantus does. Cost: two
    explanations of the batch.

    Example:
        >>> import torch
        >>> from attribuo.attr import Saliency
        >>> from attribuo.metrics.randomisation import random_logit
        >>> model = torch.nn.Linear(16, 3)
        >>> random_logit(model, torch.rand(2, 16), Saliency, torch.tensor([0, 2]), seed=0).shape
        torch.Size([2])
    """
    setup = _Reexplain("random_logit", forward_func, inputs, attributions, target, additional_forward_args,
                       explain_kwargs, max_examples_per_batch, needs_module=False)
    compare = _similarity("random_logit", similarity_func, "ssim")
    call = setup.call.call
    y = per_example_targets(call)
    if y is None:
        raise ArgumentValueError("random_logit: `target` must be one class index per example (an int, or a "
                                 "list / 1-D tensor of N ints)")
    if num_classes is None:
        first = call.take(0, 1)
        with torch.no_grad():
            out = forward_func(*first.inputs, *first.args)
        num_classes = out.reshape(1, -1).shape[1]
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ArgumentValueError(f"random_logit: `num_classes` must be an int >= 2, got {num_classes!r}")
    if bool((y >= num_classes).any()) or bool((y < 0).any()):
        raise ArgumentValueError(f"random_logit: `target` has classes outside [0, {num_classes})")
    draw = torch.randint(0, num_classes - 1, (call.batch,), generator=generator(seed))
    draw = draw.to(y.device)
    other = draw + (draw >= y).long()  # uniform over the classes but y
    off_call = Call(call.inputs, call.was_tuple, call.batch, Target(per_example=other.unsqueeze(1)), call.args)
    own = normalise_rows(setup.examples(forward_func).to(torch.float64), normalise, abs)
    off = normalise_rows(setup.examples(forward_func, off_call).to(torch.float64), normalise, abs)
    return compare(own, off)
