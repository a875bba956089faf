"""KernelSHAP: Shapley values from a weighted linear regression on coalitions."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .lime import Lime
from .linear_models import SkLearnLinearRegression
from .torch_stream import (
    NORMAL_MARGIN,
    Stream,
    categorical,
    categorical_words,
    mirror_available,
    normal_words,
    normals,
)

TensorOrTuple = Tensor | tuple[Tensor, ...]

_ENDPOINT_WEIGHT = 1000000.0  # the all-in and all-out coalitions, pinned almost exactly


def kernel_shap_samples(
    groups: int, n_samples: int, count: int, device: torch.device, after_each: Callable[[], None] | None = None
) -> Tensor:
    """Coalitions ``[G, S, F]`` (bool) distributed by the Shapley kernel, drawn as Captum draws them.

    The first two samples are all features and no features; each other
    picks a size ``k`` with probability proportional to ``(F - 1) / (k (F -
    k))`` and then the ``k`` features with the largest of ``F`` standard
    normal draws, so every sample can be weighted 1. Groups (examples) are
    drawn one after another, one sample at a time, from torch's global
    generator as Captum's per-example loop does, so a seed gives Captum's
    coalitions; ``after_each()`` runs after each group's samples (the draws
    Captum's fit of one surrogate makes). With 16 features or more the
    draws of a group are computed in bulk (:mod:`.torch_stream`); the
    result and the generator's final state are those of the one-by-one calls.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> kernel_shap_samples(2, 5, 20, torch.device("cpu")).shape
        torch.Size([2, 5, 20])
    """
    out = torch.zeros((groups, n_samples, count), dtype=torch.bool)
    out[:, 0] = True
    rest = n_samples - 2
    if rest > 0 and count > 1:
        k = torch.arange(count, dtype=torch.float)
        probs = torch.tensor(count - 1) / (k * (count - k))
        probs[0] = 0.0
        probs = (probs / probs.sum()).reshape(1, -1)  # what Categorical(probs).sample() draws from
        # the normals of fewer than 16 features come from torch's scalar path (cached pairs)
        draw = _draw_in_bulk if count >= 16 and mirror_available() else _draw_stepwise
    for g in range(groups):
        if rest > 0 and count > 1:
            out[g, 2:] = draw(probs, rest, count)
        elif rest > 0:
            out[g, 2::2] = True  # a single feature: alternate between the two coalitions
        if after_each is not None:
            after_each()
    return out.to(device)


def _members(drawn: Tensor, sizes: Tensor) -> Tensor:
    """The features above the ``(F - k)``-th smallest draw of each row: the ``k`` largest."""
    ranks = torch.argsort(torch.argsort(drawn, dim=1), dim=1)
    return ranks >= drawn.shape[1] - sizes.reshape(-1, 1)


def _draw_stepwise(probs: Tensor, rest: int, count: int, generator: torch.Generator | None = None) -> Tensor:
    """``rest`` coalitions ``[rest, F]`` by Captum's own calls (a size, then F normals, per sample)."""
    sizes, values = [], []
    for _ in range(rest):
        sizes.append(torch.multinomial(probs, 1, True, generator=generator))
        values.append(torch.randn(1, count, generator=generator))
    return _members(torch.cat(values), torch.cat(sizes))


def _draw_in_bulk(probs: Tensor, rest: int, count: int) -> Tensor:
    """The coalitions of :func:`_draw_stepwise`, from the generator's words read ahead in bulk."""
    stream = Stream.from_torch()
    size_words = categorical_words(count)
    per = size_words + normal_words(count)
    words = stream.words(rest * per).reshape(rest, per)
    sizes, sure = categorical(words[:, :size_words], probs[0].double().numpy())
    values = normals(words[:, size_words:], count)
    sure &= (sizes >= 1) & (sizes < count)
    sizes = np.clip(sizes, 1, count - 1)
    # the size-th largest must stand clear of the next: rounding cannot swap them
    ordered = np.sort(values, axis=1)
    rows = np.arange(rest)
    threshold = ordered[rows, count - sizes - 1]
    sure &= ordered[rows, count - sizes] - threshold > NORMAL_MARGIN
    chosen = torch.from_numpy(values > threshold[:, None])  # the k largest, where sure
    for s in np.flatnonzero(~sure).tolist():  # rare: redrawn by torch itself from that sample's words
        at = Stream(stream.state)  # the state the draws started from
        at.words(s * per)
        chosen[s] = _draw_stepwise(probs, 1, count, at.generator())[0]
    stream.to_torch()
    return chosen


def kernel_shap_weights(samples: Tensor) -> Tensor:
    """Regression weights: ``1e6`` for the empty and full coalitions, 1 otherwise."""
    size = samples.sum(2)
    ends = (size == 0) | (size == samples.shape[2])
    return torch.where(ends, _ENDPOINT_WEIGHT, 1.0).to(torch.float64)


class KernelShap(Lime):
    """Kernel SHAP (Lundberg & Lee, 2017): Shapley values by weighted least squares.

    Coalitions of features (``feature_mask`` groups) are sampled from the
    Shapley kernel, the model is evaluated on them in large batches, and a
    linear model is fitted by weighted least squares in closed form -- for
    every example of the batch at once. On a linear model the result equals
    the exact Shapley values whatever the samples.

    Example:
        >>> import torch
        >>> from attribuo.attr import KernelShap
        >>> model = torch.nn.Linear(4, 1)
        >>> x = torch.rand(2, 4)
        >>> attr = KernelShap(model).attribute(x, target=0, n_samples=50)
        >>> torch.allclose(attr, x * model.weight[0], atol=1e-3)
        True
    """

    def __init__(self, forward_func: Callable) -> None:
        super().__init__(
            forward_func,
            interpretable_model=SkLearnLinearRegression(),
            similarity_func=self.kernel_shap_similarity_kernel,
            perturb_func=self.kernel_shap_perturb_generator,
        )
        self.inf_weight = _ENDPOINT_WEIGHT

    def attribute(  # type: ignore[override]
        self,
        inputs: TensorOrTuple,
        baselines: Any = None,
        target: Any = None,
        additional_forward_args: Any = None,
        feature_mask: TensorOrTuple | None = None,
        n_samples: int = 25,
        perturbations_per_eval: int | None = None,
        return_input_shape: bool = True,
        show_progress: bool = False,
    ) -> TensorOrTuple:
        """Kernel SHAP values, spread over the inputs (or ``[N, F]`` coefficients)."""
        return self._attribute(inputs, baselines, target, additional_forward_args, feature_mask,
                               n_samples, perturbations_per_eval, return_input_shape, show_progress)

    def _fast(self) -> bool:
        return True

    def _samples(self, groups: int, n_samples: int, count: int, device: torch.device) -> Tensor:
        return kernel_shap_samples(groups, n_samples, count, device, self._fit_draws(count))

    def _weights(self, samples: Tensor) -> Tensor:
        return kernel_shap_weights(samples)

    # Captum's per-sample hooks, kept for code that calls them directly
    def kernel_shap_similarity_kernel(self, _: Any, __: Any, interpretable_sample: Tensor, **kwargs: Any) -> Tensor:
        """Weight of one coalition: ``1e6`` when empty or full, else 1."""
        selected = int(interpretable_sample.sum(dim=1).item())
        ends = selected in (0, int(kwargs["num_interp_features"]))
        return torch.tensor([self.inf_weight if ends else 1.0])

    def kernel_shap_perturb_generator(self, original_inp: Any, **kwargs: Any) -> Iterator[Tensor]:
        """Yield coalitions ``[1, F]``: all, none, then draws from the Shapley kernel."""
        count = int(kwargs["num_interp_features"])
        device = (original_inp if isinstance(original_inp, Tensor) else original_inp[0]).device
        yield torch.ones(1, count, dtype=torch.long, device=device)
        yield torch.zeros(1, count, dtype=torch.long, device=device)
        while True:
            yield kernel_shap_samples(1, 3, count, device)[0, 2:].long()
