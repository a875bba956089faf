"""NoiseTunnel: SmoothGrad, SmoothGrad-squared and VarGrad over any attribution method.

Noisy copies of every example are stacked into the batch (example-major:
the samples of example 0, then those of example 1, ...) and the wrapped
method runs once per group of ``nt_samples_batch_size`` samples, so a
gradient method does one batched backward pass instead of one per sample.

Random draws follow Captum's order and shapes so that the same seeds give
the same numbers: per group, one standard-normal draw per input of shape
``(batch * samples, ...)`` in the default float dtype (then scaled and cast
to the input's dtype), and baseline rows picked with
``numpy.random.choice`` when drawing from a baseline distribution.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from enum import Enum
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..._engine.batching import chunks
from ..._engine.call import Call, parse_call
from ..._engine.errors import ArgumentTypeError, ArgumentValueError
from ..._engine.inputs import positive_int, restore_form
from ..base import Attribution

TensorOrTuple = Tensor | tuple[Tensor, ...]

class NoiseTunnelType(Enum):
    """The aggregations NoiseTunnel offers (Captum's enum)."""

    smoothgrad = 1
    smoothgrad_sq = 2
    vargrad = 3


SUPPORTED_NOISE_TUNNEL_TYPES = list(NoiseTunnelType.__members__)
NT_TYPES = tuple(SUPPORTED_NOISE_TUNNEL_TYPES)


def stdevs_per_input(stdevs: Any, n_inputs: int) -> tuple[float, ...]:
    """``stdevs`` (one number or a tuple with one per input) as a tuple of floats."""
    items = stdevs if isinstance(stdevs, tuple) else (stdevs,) * n_inputs
    if len(items) != n_inputs:
        raise ArgumentValueError(
            f"`stdevs` has {len(items)} values but there are {n_inputs} inputs; "
            "give one number, or a tuple with one number per input"
        )
    for s in items:
        if isinstance(s, bool) or not isinstance(s, (int, float)):
            raise ArgumentTypeError(
                f"`stdevs` must be a number or a tuple of numbers, got {type(s).__name__}"
            )
        if s < 0:
            raise ArgumentValueError(f"`stdevs` must be non-negative, got {s}")
    return tuple(float(s) for s in items)


def noisy_samples(
    inputs: tuple[Tensor, ...], stdevs: tuple[float, ...], samples: int
) -> tuple[Tensor, ...]:
    """``samples`` noisy copies of each example, example-major, Gaussian noise of ``stdevs``."""
    out = []
    for i, (x, std) in enumerate(zip(inputs, stdevs)):
        if not x.is_floating_point() and std != 0:
            raise ArgumentTypeError(
                f"`inputs[{i}]` has dtype {x.dtype}; NoiseTunnel adds Gaussian noise of stdev {std}, "
                "so inputs must be floating point (or stdevs 0, e.g. token ids under a layer method)"
            )
        n = x.shape[0]
        # Drawn in the default dtype as Captum does, so a seed gives the same noise.
        noise = torch.randn((n * samples,) + tuple(x.shape[1:]), device=x.device).mul_(std)
        if not x.is_floating_point():  # no noise to add; the draw above keeps seeds in step
            out.append(x.repeat_interleave(samples, dim=0))
            continue
        noise = noise.to(x.dtype)
        # noise + x broadcast over the samples: the same sums as repeating x first.
        noise.view((n, samples) + tuple(x.shape[1:])).add_(x.detach().unsqueeze(1))
        out.append(noise)
    return tuple(out)


def _expand_target(target: Any, samples: int) -> Any:
    # Per-example targets follow their example into each of its samples.
    if isinstance(target, list):
        return [t for t in target for _ in range(samples)]
    if isinstance(target, Tensor) and target.numel() > 1:
        return target.repeat_interleave(samples, dim=0)
    return target


def _expand_baselines(baselines: Any, inputs: tuple[Tensor, ...], samples: int, draw: bool) -> Any:
    if baselines is None or callable(baselines):
        return baselines
    was_tuple = isinstance(baselines, tuple)
    items = baselines if was_tuple else (baselines,)
    if len(items) != len(inputs):
        raise ArgumentValueError(
            f"`baselines` has {len(items)} entries but there are {len(inputs)} inputs"
        )
    n = inputs[0].shape[0]
    out = []
    for i, (x, b) in enumerate(zip(inputs, items)):
        if not isinstance(b, Tensor):
            out.append(b)
        elif draw:
            if b.dim() == 0 or tuple(b.shape[1:]) != tuple(x.shape[1:]):
                raise ArgumentValueError(
                    f"`baselines[{i}]` of shape {tuple(b.shape)} is not a distribution of "
                    f"examples shaped like the input's {tuple(x.shape[1:])}: dim 0 must count "
                    "the baseline examples and the other dims match one input example"
                )
            rows = np.random.choice(b.shape[0], n * samples)
            out.append(b.index_select(0, torch.as_tensor(rows, device=b.device)))
        elif n > 1 and b.shape == x.shape:
            out.append(b.repeat_interleave(samples, dim=0))
        else:
            out.append(b)  # broadcast forms (number, one example, batch of one) stay
    return tuple(out) if was_tuple else out[0]


def _expand_feature_mask(mask: Any, inputs: tuple[Tensor, ...], samples: int) -> Any:
    if mask is None:
        return None
    was_tuple = isinstance(mask, tuple)
    items = mask if was_tuple else (mask,)
    out = tuple(
        m.repeat_interleave(samples, dim=0)
        if isinstance(m, Tensor) and m.dim() == x.dim() and m.shape[0] > 1
        else m
        for m, x in zip(items, inputs)
    )
    return out if was_tuple else out[0]


def expand_for_samples(
    kwargs: dict[str, Any], call: Call, samples: int, draw_baselines: bool, parsed: bool
) -> dict[str, Any]:
    """Per-example arguments of the wrapped method, expanded like the noisy batch.

    ``call`` holds the parsed ``target`` and ``additional_forward_args``;
    with ``parsed`` the wrapped method (one of attribuo's) gets them in that
    form, expanded, else in the user's form, expanded.
    """
    out = dict(kwargs)
    noisy = call.expanded(samples, interleave=True, inputs=call.inputs)  # target and args only
    if out.get("additional_forward_args") is not None:
        out["additional_forward_args"] = noisy.args
    if "target" in out:
        out["target"] = noisy.target if parsed else _expand_target(out["target"], samples)
    if "baselines" in out:
        out["baselines"] = _expand_baselines(out["baselines"], call.inputs, samples, draw_baselines)
    if "feature_mask" in out:
        out["feature_mask"] = _expand_feature_mask(out["feature_mask"], call.inputs, samples)
    return out


def _is_ours(method: Attribution) -> bool:
    # attribuo's own ``attribute`` methods take a parsed target; foreign ones get the user's form
    return getattr(type(method).attribute, "__module__", "").startswith("attribuo.")


class NoiseTunnel(Attribution):
    """Smooths any attribution method by averaging it over noisy copies of the inputs.

    ``nt_type``: ``"smoothgrad"`` (mean of the attributions, Smilkov et al.,
    2017), ``"smoothgrad_sq"`` (mean of their squares) or ``"vargrad"``
    (their variance, Adebayo et al., 2018). The wrapped method's other
    arguments are passed as keywords; per-example ones (``target`` lists and
    tensors, batched ``additional_forward_args``, ``baselines``,
    ``feature_mask``) are expanded to follow each example into its samples.
    Layer methods can be wrapped too: results then have the layer's form.

    Example:
        >>> import torch
        >>> from attribuo.attr import NoiseTunnel, Saliency
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
        >>> nt = NoiseTunnel(Saliency(model))
        >>> nt.attribute(torch.rand(2, 3), nt_type="vargrad", nt_samples=8, stdevs=0.1, target=0).shape
        torch.Size([2, 3])
    """

    def __init__(self, attribution_method: Attribution) -> None:
        if not isinstance(attribution_method, Attribution):
            raise ArgumentTypeError(
                "`attribution_method` must be an attribution method instance such as "
                f"Saliency(model), got {type(attribution_method).__name__}"
            )
        self.attribution_method = attribution_method
        self.is_delta_supported = attribution_method.has_convergence_delta()
        self._multiply_by_inputs = attribution_method.multiplies_by_inputs
        super().__init__(attribution_method.forward_func)

    def has_convergence_delta(self) -> bool:
        return self.is_delta_supported

    def attribute(
        self,
        inputs: TensorOrTuple,
        nt_type: str = "smoothgrad",
        nt_samples: int = 5,
        nt_samples_batch_size: int | None = None,
        stdevs: float | tuple[float, ...] = 1.0,
        draw_baseline_from_distrib: bool = False,
        **kwargs: Any,
    ) -> Any:
        """Aggregate the wrapped method's attributions over ``nt_samples`` noisy copies.

        ``stdevs``: the noise's standard deviation, one number or one per
        input. ``nt_samples_batch_size``: how many samples per example go
        into one call of the wrapped method (default: all at once).
        ``draw_baseline_from_distrib=True`` treats ``baselines`` as a
        distribution and draws one row per sample. ``**kwargs`` go to the
        wrapped method; with ``return_convergence_delta=True`` (for methods
        that have deltas) returns ``(attributions, delta)`` with one delta per
        noisy sample, example-major within each batch of samples.
        """
        call = parse_call(inputs, kwargs.get("target"), kwargs.get("additional_forward_args"))
        xs = call.inputs
        if nt_type not in NT_TYPES:
            raise ArgumentValueError(f"`nt_type` must be one of {NT_TYPES}, got {nt_type!r}")
        positive_int(nt_samples, "nt_samples")
        stds = stdevs_per_input(stdevs, len(xs))
        want_delta = bool(kwargs.get("return_convergence_delta", False))
        kwargs = self._checked_kwargs(kwargs, want_delta)
        parsed = _is_ours(self.attribution_method)
        groups = [
            hi - lo for lo, hi in chunks(nt_samples, None, items=nt_samples_batch_size, name="nt_samples_batch_size")
        ]
        sums: list[Tensor] = []
        sums_sq: list[Tensor] = []
        deltas: list[Tensor] = []
        attr_is_tuple = isinstance(inputs, tuple)
        expanded: dict[int, dict[str, Any]] = {}
        for k in groups:
            if k not in expanded:  # baselines are drawn once per group size, as Captum does
                expanded[k] = expand_for_samples(kwargs, call, k, draw_baseline_from_distrib, parsed)
            noisy = noisy_samples(xs, stds, k)
            result = self.attribution_method.attribute(
                noisy if isinstance(inputs, tuple) else noisy[0], **expanded[k]
            )
            if want_delta:
                result, delta = result
                deltas.append(delta)
            attr_is_tuple = isinstance(result, tuple)
            with torch.no_grad():
                for i, a in enumerate(result if attr_is_tuple else (result,)):
                    a = a.detach()
                    a = a.reshape((a.shape[0] // k, k) + tuple(a.shape[1:]))
                    _accumulate(sums, i, a.sum(1))
                    if nt_type != "smoothgrad":  # squares only where they are used
                        _accumulate(sums_sq, i, (a * a).sum(1))
        attributions = _smooth(sums, sums_sq, nt_samples, nt_type)
        attributions = restore_form(attr_is_tuple, attributions)
        if want_delta:
            return attributions, torch.cat(deltas, dim=0)
        return attributions

    def _checked_kwargs(self, kwargs: dict[str, Any], want_delta: bool) -> dict[str, Any]:
        # Checked before any random draw, so a bad call leaves the seeds untouched.
        method = type(self.attribution_method).__name__
        if "return_convergence_delta" in kwargs and not self.is_delta_supported:
            if want_delta:
                raise ArgumentValueError(
                    f"`return_convergence_delta=True` but {method} has no convergence delta"
                )
            kwargs = {k: v for k, v in kwargs.items() if k != "return_convergence_delta"}
        params = _keyword_names(self.attribution_method.attribute)
        if params is None:
            return kwargs
        for name in kwargs:
            if name not in params:
                hint = (
                    " (the number of noisy samples is `nt_samples`)" if name == "n_samples" else ""
                )
                raise ArgumentTypeError(
                    f"`{name}` is neither a NoiseTunnel argument nor one of "
                    f"{method}.attribute's{hint}"
                )
        return kwargs


def _keyword_names(method: Any) -> frozenset[str] | None:
    """The argument names ``method`` takes; None when it takes any keyword (or is opaque)."""
    try:
        params = list(inspect.signature(method).parameters.values())  # bound: no ``self``
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return frozenset(p.name for p in params)


def _accumulate(totals: list[Tensor], i: int, value: Tensor) -> None:
    if i < len(totals):
        totals[i] = totals[i] + value
    else:
        totals.append(value)


def _smooth(
    sums: Sequence[Tensor], sums_sq: Sequence[Tensor], n: int, nt_type: str
) -> tuple[Tensor, ...]:
    mean = tuple(s / n for s in sums)
    if nt_type == "smoothgrad":
        return mean
    mean_sq = tuple(s / n for s in sums_sq)
    if nt_type == "smoothgrad_sq":
        return mean_sq
    return tuple(m2 - m * m for m, m2 in zip(mean, mean_sq))
