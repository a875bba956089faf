"""Axioms an explanation should satisfy (Quantus' axiomatic metrics), batched.

- :func:`completeness` (Sundararajan et al. 2017): the attributions add up
  to the change of the output between the input and a baseline;
- :func:`non_sensitivity` (Nguyen & Martinez 2020): features that do not
  move the output get no attribution, and only those;
- :func:`input_invariance` (Kindermans et al. 2017): a constant shift of the
  input, absorbed by the first layer's bias, leaves the explanation as is.

:func:`completeness` and :func:`non_sensitivity` take attributions (a
tensor, or a method to compute them); :func:`input_invariance` explains
again, so it needs a method. Quantus returns booleans for completeness and
input invariance; here they are 1.0 (holds) or 0.0, float64 as every score.
``normalise`` divides each example by its own largest absolute attribution
(Quantus: one maximum for the whole batch; the two agree example by example).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from .._engine.errors import ArgumentTypeError, ArgumentValueError
from .._engine.inputs import positive_int
from ._common import baseline_fill, check_flag, check_number, generator, scored_call
from ._reexplain import Reexplained


def _prepared(name: str, forward_func: Callable, inputs: Any, attributions: Any, target: Any,
              additional_forward_args: Any, explain_kwargs: dict | None, normalise: bool, abs: bool,
              softmax: bool, max_examples_per_batch: int | None) -> tuple[Any, Tensor]:
    check_flag(normalise, name, "normalise")
    if max_examples_per_batch is not None:
        positive_int(max_examples_per_batch, "max_examples_per_batch")
    call, a = scored_call(name, forward_func, inputs, attributions, target, additional_forward_args,
                          explain_kwargs, max_examples_per_batch, abs, softmax, normalise)
    if not call.x.is_floating_point():
        raise ArgumentTypeError(f"{name}: `inputs` must be floating point to perturb them, got {call.x.dtype}")
    return call, a


def completeness(
    forward_func: Callable,
    inputs: Tensor,
    attributions: Any,
    target: Any = None,
    *,
    additional_forward_args: Any = None,
    perturb_baseline: Any = "black",
    output_func: Callable[[Tensor], Tensor] | None = None,
    abs: bool = False,
    normalise: bool = True,
    softmax: bool = False,
    atol: float = 0.0,
    rtol: float = 0.0,
    explain_kwargs: dict | None = None,
    max_examples_per_batch: int | None = None,
    seed: int | None = None,
) -> Tensor:
    """Completeness (Sundararajan et al., 2017): 1.0 where it holds, else 0.0; higher is better.

    Holds when ``|sum(a) - output_func(f(x) - f(b))| <= atol + rtol * |..|``,
    ``b`` the whole input replaced by ``perturb_baseline`` (``"black"``: each
    example's minimum; ``"white"``, ``"mean"``, ``"uniform"``, a number or a
    tensor), ``f`` the target's output (its softmax with ``softmax``),
    ``output_func`` the identity by default. Quantus' defaults are kept:
    ``normalise=True`` (which breaks completeness for any method that has it:
    pass ``normalise=False`` to test the axiom) and exact equality
    (``atol=rtol=0``; give a tolerance for float sums, computed here in
    float64). Cost: two forwards of the batch.

    Example:
        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> from attribuo.metrics.axiomatic import completeness
        >>> model = torch.nn.Linear(3, 1)
        >>> x = torch.tensor([[1.0, 2.0, 3.0]])  # black baseline: every feature at 1.0
        >>> a = (x - 1.0) * model.weight.detach()  # exact for a linear model
        >>> completeness(model, x, a, 0, normalise=False, atol=1e-6)
        tensor([1.], dtype=torch.float64)
    """
    name = "completeness"
    call, a = _prepared(name, forward_func, inputs, attributions, target, additional_forward_args,
                        explain_kwargs, normalise, abs, softmax, max_examples_per_batch)
    atol = check_number(atol, name, "atol", 0.0)
    rtol = check_number(rtol, name, "rtol", 0.0)
    if output_func is not None and not callable(output_func):
        raise ArgumentTypeError(f"{name}: `output_func` must be a function of the output differences")
    fill = baseline_fill(call, perturb_baseline, 1, generator(seed, call.x.device))
    baseline = fill(0, 1).expand(1, *call.x.shape)
    outputs = call.score_copies(2, lambda start, stop: torch.cat([call.x.unsqueeze(0), baseline])[start:stop])
    change = outputs[:, 0] - outputs[:, 1]
    if output_func is not None:
        change = torch.as_tensor(output_func(change)).reshape(-1).to(torch.float64)
    gap = (a.sum(dim=1) - change).abs()
    return (gap <= atol + rtol * change.abs()).to(torch.float64)


def non_sensitivity(
    forward_func: Callable,
    inputs: Tensor,
    attributions: Any,
    target: Any = None,
    *,
    additional_forward_args: Any = None,
    eps: float = 1e-5,
    features_in_step: int = 1,
    perturb_baseline: Any = "black",
    abs: bool = True,
    normalise: bool = True,
    softmax: bool = True,
    explain_kwargs: dict | None = None,
    max_examples_per_batch: int | None = None,
    seed: int | None = None,
) -> Tensor:
    """Non-sensitivity (Nguyen & Martinez, 2020): the number of violations; lower is better.

    The features (entries of the attributions; a pixel for ``(N, 1, H, W)``
    attributions of a ``(N, C, H, W)`` image) are taken in groups of
    ``features_in_step`` in index order; each group alone is set to
    ``perturb_baseline``. A group violates the axiom when the output stays
    within ``eps`` but the group has attribution (some ``a >= eps``), or the
    output moves but it has none. ``softmax=True`` (Quantus' default) scores
    probabilities. Quantus counts single features (its ``features_in_step
    > 1`` fails on a shape mismatch) and treats every channel value as a
    feature of its own. Cost: ``ceil(F / features_in_step) + 1`` forwards of
    the batch, stacked in few calls.

    Example:
        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> from attribuo.metrics.axiomatic import non_sensitivity
        >>> model = torch.nn.Linear(4, 1)
        >>> with torch.no_grad():
        ...     _ = model.weight.copy_(torch.tensor([[1.0, 0.0, 2.0, 0.0]]))
        >>> x = torch.tensor([[1.0, 1.0, 1.0, 1.0]]) + torch.arange(4.0)  # black baseline 1.0
        >>> exact = (x - 1.0) * model.weight.detach()
        >>> non_sensitivity(model, x, exact, 0, softmax=False)
        tensor([0.], dtype=torch.float64)
    """
    name = "non_sensitivity"
    call, a = _prepared(name, forward_func, inputs, attributions, target, additional_forward_args,
                        explain_kwargs, normalise, abs, softmax, max_examples_per_batch)
    eps = check_number(eps, name, "eps", 0.0)
    step = positive_int(features_in_step, "features_in_step")
    n, f = a.shape
    if f == 0:
        raise ArgumentValueError(f"{name}: `inputs` have no features")
    groups = math.ceil(f / step)
    group_of = torch.arange(f, device=a.device) // step
    fill = baseline_fill(call, perturb_baseline, groups, generator(seed, call.x.device))

    def removed(start: int, stop: int) -> Tensor:
        mask = group_of.view(1, 1, f) == torch.arange(start, stop, device=a.device).view(-1, 1, 1)
        mask = call.spread(mask.expand(stop - start, n, f).reshape(stop - start, n, *call.grid))
        return torch.where(mask, fill(start, stop), call.x.unsqueeze(0))

    moved = (call.score_copies(groups, removed) - call.scores()[:, None]).abs() >= eps
    hits = torch.cat([a >= eps, torch.zeros(n, groups * step - f, dtype=torch.bool, device=a.device)], dim=1)
    attributed = hits.view(n, groups, step).any(dim=2)
    return (moved != attributed.to(moved.device)).sum(dim=1).to(torch.float64)


def first_layer(model: nn.Module) -> nn.Module:
    """The first module, in registration order, with a weight and a bias (Quantus: the first submodule)."""
    for module in model.modules():
        if isinstance(getattr(module, "weight", None), Tensor) and isinstance(getattr(module, "bias", None), Tensor):
            return module
    raise ArgumentValueError("input_invariance: `forward_func` has no layer with a bias to absorb the shift")


def shifted_model(model: nn.Module, layer: nn.Module, shift: float, example: tuple[Tensor, ...],
                  args: tuple) -> nn.Module:
    """A copy of ``model`` whose ``layer`` bias cancels a constant ``shift`` of its input.

    The copy's layer sees an input of ``shift`` everywhere (one forward of
    one example, read with a pre-hook); its response ``r`` (with bias) gives
    the new bias ``2 b - r`` per output channel, taking the smallest
    response over positions as Quantus does (exact for layers without
    padding, where every position responds alike).
    """
    names = {id(m): name for name, m in model.named_modules()}
    if id(layer) not in names:
        raise ArgumentValueError("input_invariance: `layer` must be a module of `forward_func`")
    work = copy.deepcopy(model)
    target = work.get_submodule(names[id(layer)])
    bias = getattr(target, "bias", None)
    if not isinstance(bias, Tensor):
        raise ArgumentValueError(f"input_invariance: `layer` {type(layer).__name__} has no bias to absorb the shift")
    seen: list[Tensor] = []

    def capture(module: nn.Module, inputs: tuple) -> None:
        seen.append(inputs[0])

    handle = target.register_forward_pre_hook(capture)
    try:
        with torch.no_grad():
            work(*(torch.full_like(t, shift) for t in example), *args)
    finally:
        handle.remove()
    if not seen:
        raise ArgumentValueError("input_invariance: `layer` did not run in the model's forward")
    with torch.no_grad():
        response = target(torch.full_like(seen[0], shift))[0]
        channels = bias.shape[0]
        smallest = response.reshape(channels, -1).amin(dim=1) if response.dim() > 1 else response
        bias.copy_(2 * bias - smallest)
    return work


def input_invariance(
    forward_func: nn.Module,
    inputs: Tensor,
    attributions: Any,
    target: Any = None,
    *,
    additional_forward_args: Any = None,
    input_shift: float = -1,
    layer: nn.Module | None = None,
    abs: bool = False,
    normalise: bool = False,
    atol: float = 1e-4,
    rtol: float = 1e-5,
    explain_kwargs: dict | None = None,
    max_examples_per_batch: int | None = None,
) -> Tensor:
    """Input invariance (Kindermans et al., 2017): 1.0 where the explanation is unchanged; higher is better.

    The inputs are shifted by the constant ``input_shift`` and the model by
    the opposite shift in the bias of ``layer`` (default: its first layer
    with a bias, which must see the input directly, up to reshaping), so the
    shifted model computes the same function of the shifted input. The
    explanation of the shifted pair must match the original's within
    ``atol`` and ``rtol`` (numpy's ``isclose`` defaults, as Quantus) in every
    element. The model itself is never changed (the shift is applied to a
    deep copy). Quantus 0.6's default shift leaves the first element of
    each example unshifted (its ``perturb_batch`` drops index 0), so an
    invariant method can fail there; here every element is shifted. Cost:
    two explanations of the batch.

    Example:
        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> from attribuo.attr import InputXGradient, Saliency
        >>> from attribuo.metrics.axiomatic import input_invariance
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
        >>> x = torch.rand(3, 4)
        >>> input_invariance(model, x, Saliency, 1), input_invariance(model, x, InputXGradient, 1)
        (tensor([1., 1., 1.], dtype=torch.float64), tensor([0., 0., 0.], dtype=torch.float64))
    """
    name = "input_invariance"
    rx = Reexplained(name, forward_func, inputs, attributions, target, additional_forward_args, explain_kwargs,
                     max_examples_per_batch, normalise, abs, needs_module=True)
    shift = check_number(input_shift, name, "input_shift")
    atol = check_number(atol, name, "atol", 0.0)
    rtol = check_number(rtol, name, "rtol", 0.0)
    if layer is not None and not isinstance(layer, nn.Module):
        raise ArgumentTypeError(f"{name}: `layer` must be a module of the model, got {type(layer).__name__}")
    call = rx.mc.call
    first = call.take(0, 1)
    model = shifted_model(forward_func, first_layer(forward_func) if layer is None else layer, shift,
                          first.inputs, first.args)
    reference = rx.reference()
    moved = rx.reference(model, call.with_inputs((rx.mc.x + shift,)))
    return torch.isclose(reference, moved, rtol=rtol, atol=atol).all(dim=1).to(torch.float64)
