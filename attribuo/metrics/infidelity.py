"""Infidelity (Yeh et al., 2019): how well attributions predict the output change.

For perturbations ``I`` drawn by ``perturb_func`` the metric is
``E[(sum(attr * I) - (f(x) - f(x - I)))^2]``, estimated per example from
``n_perturb_samples`` draws.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from .._engine.call import parse_call
from .._engine.errors import ArgumentTypeError, ArgumentValueError
from .._engine.inputs import (
    as_tuple,
)
from ._sampling import (
    check_attributions,
    check_perturbed,
    per_example_output,
    sample_chunks,
)

TensorOrTuple = Tensor | tuple[Tensor, ...]


def _safe_div(num: Tensor, den: Tensor | float) -> Tensor:
    # a zero denominator counts as 1: the perturbation is then taken as is
    if isinstance(den, Tensor):
        return num / torch.where(den != 0, den, torch.ones_like(den))
    return num / (den if den != 0 else 1.0)


def infidelity_perturb_func_decorator(multiply_by_inputs: bool = True) -> Callable:
    """Turn a function that returns perturbed inputs into an infidelity ``perturb_func``.

    The decorated function takes ``inputs`` (and ``baselines`` when they are
    given) and returns only the perturbed inputs; the wrapper adds the
    perturbations ``I = inputs - perturbed``, divided by ``inputs - baselines``
    when ``multiply_by_inputs`` is True (the right choice for attributions that
    are multiplied by the input, such as IntegratedGradients or InputXGradient).

    Example:
        >>> import torch
        >>> from attribuo.metrics import infidelity_perturb_func_decorator
        >>> @infidelity_perturb_func_decorator(multiply_by_inputs=False)
        ... def noisy(inputs):
        ...     return inputs - 0.1
        >>> perturbation, perturbed = noisy(torch.ones(2, 3))
        >>> perturbation[0]
        tensor([[0.1000, 0.1000, 0.1000],
                [0.1000, 0.1000, 0.1000]])
    """

    def decorate(perturb_func: Callable) -> Callable:
        def perturb(inputs: TensorOrTuple, baselines: Any = None) -> tuple:
            if baselines is None:
                perturbed = perturb_func(inputs)
            else:
                perturbed = perturb_func(inputs, baselines)
            xs = as_tuple(inputs)
            pert = as_tuple(perturbed, "perturbed inputs")
            bases = baselines if isinstance(baselines, tuple) else (baselines,) * len(xs)
            if multiply_by_inputs:
                diffs = tuple(
                    _safe_div(x - p, x if b is None else x - b)
                    for x, p, b in zip(xs, pert, bases)
                )
            else:
                diffs = tuple(x - p for x, p in zip(xs, pert))
            return diffs, pert

        perturb.__name__ = getattr(perturb_func, "__name__", "perturb")
        perturb.__doc__ = perturb_func.__doc__
        return perturb

    return decorate


def _expand_baselines(baselines: Any, inputs: tuple[Tensor, ...], times: int) -> Any:
    """Baselines for the expanded batch: per-example tensors repeat with their example."""
    if baselines is None:
        return None
    items = baselines if isinstance(baselines, tuple) else (baselines,)
    if len(items) != len(inputs):
        raise ArgumentValueError(
            f"`baselines` has {len(items)} entries but there are {len(inputs)} inputs"
        )
    out = []
    for i, b in enumerate(items):
        if not isinstance(b, (Tensor, int, float)) or isinstance(b, bool):
            raise ArgumentTypeError(
                f"`baselines` entries must be tensors or numbers, got {type(b).__name__}"
            )
        n = inputs[i].shape[0]
        if isinstance(b, Tensor) and b.dim() > 0 and b.shape[0] == n and n > 1:
            b = b.repeat_interleave(times, dim=0)
        out.append(b)
    return out[0] if len(inputs) == 1 and len(out) == 1 else tuple(out)


def infidelity(
    forward_func: Callable,
    perturb_func: Callable,
    inputs: TensorOrTuple,
    attributions: TensorOrTuple,
    baselines: Any = None,
    additional_forward_args: Any = None,
    target: Any = None,
    n_perturb_samples: int = 10,
    max_examples_per_batch: int | None = None,
    normalize: bool = False,
) -> Tensor:
    """Infidelity of ``attributions`` for ``forward_func`` at ``inputs``, one value per example.

    ``perturb_func(inputs[, baselines])`` receives the inputs repeated
    ``n`` times per example (``repeat_interleave``; a tensor for one input, a
    tuple for several) and returns ``(perturbations, perturbed_inputs)``.
    Chunks of at most ``max_examples_per_batch`` expanded examples are
    evaluated at once; chunking, random-number use and results match
    Captum's for the same seed. ``normalize=True`` rescales the attributions
    by the least-squares factor ``beta`` first, which makes the metric
    invariant to their scale.

    Example:
        >>> import torch
        >>> from attribuo.attr import InputXGradient
        >>> from attribuo.metrics import infidelity
        >>> model = torch.nn.Linear(4, 1)
        >>> x = torch.rand(3, 4)
        >>> def perturb(inputs):
        ...     noise = torch.randn_like(inputs)
        ...     return noise, inputs - noise
        >>> attr = model.weight * torch.ones_like(x)  # exact for a linear model
        >>> infidelity(model, perturb, x, attr, target=0).abs().max() < 1e-10
        tensor(True)
    """
    call = parse_call(inputs, target, additional_forward_args)
    xs, bsz = call.inputs, call.batch
    attrs = as_tuple(attributions, "attributions")
    check_attributions(xs, attrs)
    if not callable(perturb_func):
        raise ArgumentTypeError("`perturb_func` must be callable")
    chunks = sample_chunks(n_perturb_samples, bsz, max_examples_per_batch)
    flat_attrs = [a.reshape(bsz, 1, -1) for a in attrs]

    sums: list[Tensor] | None = None
    with torch.no_grad():
        f_inputs = per_example_output(call.forward(forward_func), bsz)
        for k in chunks:
            samples = call.expanded(k, interleave=True)
            expanded = samples.inputs
            call_inputs = expanded[0] if len(expanded) == 1 else expanded
            bases = _expand_baselines(baselines, xs, k)
            out = perturb_func(call_inputs) if bases is None else perturb_func(call_inputs, bases)
            if not isinstance(out, tuple) or len(out) != 2:
                raise ArgumentTypeError(
                    "`perturb_func` must return a pair (perturbations, perturbed_inputs)"
                )
            perts = as_tuple(out[0], "perturbations")
            perturbed = as_tuple(out[1], "perturbed inputs")
            check_perturbed(xs, perts, "perturbations", bsz * k)
            check_perturbed(xs, perturbed, "perturbed inputs", bsz * k)
            f_pert = samples.with_inputs(perturbed).forward(forward_func)
            f_diff = f_inputs[:, None] - per_example_output(f_pert, bsz * k).view(bsz, k)
            # sum(attr * I) per sample without materialising repeated attributions
            attr_dot = sum(
                (p.reshape(bsz, k, -1) * a).sum(-1) for p, a in zip(perts, flat_attrs)
            )
            if normalize:
                terms = [
                    attr_dot.pow(2).sum(1),
                    (attr_dot * f_diff).sum(1),
                    f_diff.pow(2).sum(1),
                ]
            else:
                terms = [(attr_dot - f_diff).pow(2).sum(1)]
            sums = terms if sums is None else [s + t for s, t in zip(sums, terms)]

    assert sums is not None  # at least one chunk always runs
    if normalize:
        aa, af, ff = sums
        beta = _safe_div(af, aa)
        values = beta * beta * aa - 2 * beta * af + ff
    else:
        values = sums[0]
    return values / n_perturb_samples
