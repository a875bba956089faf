"""Max-sensitivity (Yeh et al., 2019): how much an explanation moves under small input noise."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from .._engine.errors import ArgumentTypeError
from .._engine.inputs import as_tuple, batch_size, is_tuple, restore_form
from ._sampling import check_perturbed, sample_chunks

TensorOrTuple = Tensor | tuple[Tensor, ...]


def default_perturb_func(inputs: TensorOrTuple, perturb_radius: float = 0.02) -> TensorOrTuple:
    """Add noise drawn uniformly from ``[-perturb_radius, perturb_radius]`` to every input.

    The noise has the device and dtype of each input (for float32 CPU inputs
    it uses the random stream exactly as Captum's default does).

    Example:
        >>> import torch
        >>> from attribuo.metrics.sensitivity import default_perturb_func
        >>> x = torch.zeros(2, 3)
        >>> bool((default_perturb_func(x, 0.1).abs() <= 0.1).all())
        True
    """
    xs = as_tuple(inputs)
    noisy = tuple(uniform_noise(x, -perturb_radius, perturb_radius) for x in xs)
    return restore_form(is_tuple(inputs), noisy)


def uniform_noise(x: Tensor, low: float, high: float, generator: torch.Generator | None = None) -> Tensor:
    """``x`` plus noise drawn uniformly from ``[low, high)``, in ``x``'s dtype and device.

    With ``generator=None`` the draws come from torch's global stream, as
    Captum's default perturbation draws them; the robustness metrics pass
    their own seeded generator.

    Example:
        >>> import torch
        >>> from attribuo.metrics.sensitivity import uniform_noise
        >>> noisy = uniform_noise(torch.zeros(2, 3), 0.1, 0.2)
        >>> bool(((noisy >= 0.1) & (noisy < 0.2)).all())
        True
    """
    return x + torch.empty(x.shape, dtype=x.dtype, device=x.device).uniform_(low, high, generator=generator)


def _takes_radius(func: Callable) -> bool:
    try:
        return len(inspect.signature(func).parameters) > 1
    except (TypeError, ValueError):
        return False


def _expand_kwargs(kwargs: dict, bsz: int, times: int) -> dict:
    """Per-example keyword arguments repeated for ``times`` samples per example."""
    out = dict(kwargs)

    def expand(value: Any, require_batch: bool) -> Any:
        if isinstance(value, Tensor) and value.dim() > 0:
            if not require_batch or (value.shape[0] == bsz and bsz > 1):
                return value.repeat_interleave(times, dim=0)
        return value

    if out.get("target") is not None:
        target = out["target"]
        if isinstance(target, list):
            out["target"] = [t for t in target for _ in range(times)]
        elif isinstance(target, Tensor) and target.numel() > 1:
            out["target"] = target.repeat_interleave(times, dim=0)
    if out.get("additional_forward_args") is not None:
        args = out["additional_forward_args"]
        if isinstance(args, tuple):
            out["additional_forward_args"] = tuple(expand(a, False) for a in args)
        else:
            out["additional_forward_args"] = expand(args, False)
    for key in ("baselines", "feature_mask"):
        value = out.get(key)
        if isinstance(value, tuple):
            out[key] = tuple(expand(v, True) for v in value)
        elif value is not None:
            out[key] = expand(value, True)
    return out


def sensitivity_max(
    explanation_func: Callable,
    inputs: TensorOrTuple,
    perturb_func: Callable = default_perturb_func,
    perturb_radius: float = 0.02,
    n_perturb_samples: int = 10,
    norm_ord: str = "fro",
    max_examples_per_batch: int | None = None,
    **kwargs: Any,
) -> Tensor:
    """Largest relative change of an explanation over ``n_perturb_samples`` perturbations.

    For each example: ``max_j ||expl(x) - expl(x_j)|| / ||expl(x)||`` where
    ``x_j = perturb_func(x, perturb_radius)`` (or ``perturb_func(x)`` when it
    takes one argument), with the norm ``norm_ord`` over all input tensors
    together. ``kwargs`` go to ``explanation_func``; ``target``,
    ``additional_forward_args``, ``baselines`` and ``feature_mask`` given per
    example are repeated to match the perturbed batch. Chunking and random
    numbers match Captum's for the same seed.

    Example:
        >>> import torch
        >>> from attribuo.attr import Saliency
        >>> from attribuo.metrics import sensitivity_max
        >>> model = torch.nn.Linear(4, 2)
        >>> x = torch.rand(3, 4)
        >>> sensitivity_max(Saliency(model).attribute, x, target=1)  # constant gradient
        tensor([0., 0., 0.])
    """
    if not callable(explanation_func):
        raise ArgumentTypeError("`explanation_func` must be callable")
    if not callable(perturb_func):
        raise ArgumentTypeError("`perturb_func` must be callable")
    xs = as_tuple(inputs)
    bsz = batch_size(xs)
    chunks = sample_chunks(n_perturb_samples, bsz, max_examples_per_batch)
    with_radius = _takes_radius(perturb_func)
    was_tuple = is_tuple(inputs)
    expanded_kwargs: dict[int, dict] = {}

    with torch.no_grad():
        expl = as_tuple(explanation_func(inputs, **kwargs), "explanation_func output")
        flat = torch.cat([e.reshape(bsz, -1) for e in expl], dim=1)
        norm = torch.norm(flat, p=norm_ord, dim=1, keepdim=True)
        norm = torch.where(norm == 0, torch.ones_like(norm), norm)
        best: Tensor | None = None
        for k in chunks:
            expanded = restore_form(was_tuple, tuple(x.repeat_interleave(k, dim=0) for x in xs))
            noisy = perturb_func(expanded, perturb_radius) if with_radius else perturb_func(expanded)
            check_perturbed(xs, as_tuple(noisy, "perturbed inputs"), "perturbed inputs", bsz * k)
            if k not in expanded_kwargs:
                expanded_kwargs[k] = _expand_kwargs(kwargs, bsz, k)
            expl_noisy = as_tuple(explanation_func(noisy, **expanded_kwargs[k]), "explanation_func output")
            diff = torch.cat(
                [
                    (en.reshape(bsz, k, -1) - e.reshape(bsz, 1, -1)).reshape(bsz * k, -1)
                    for en, e in zip(expl_noisy, expl)
                ],
                dim=1,
            )
            rel = torch.norm(diff, p=norm_ord, dim=1).view(bsz, k) / norm
            chunk_max = rel.max(dim=1).values
            best = chunk_max if best is None else torch.maximum(best, chunk_max)
    assert best is not None
    return best
