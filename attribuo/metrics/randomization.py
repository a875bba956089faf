"""Model parameter randomisation sanity check (Adebayo et al., 2018).

An explanation that depends on what the model learned must change when the
learned weights are replaced by random ones. The check re-initialises the
model's layers, from the output side down (cascading) or one at a time, and
reports the Spearman rank correlation between the explanations of the
trained and the randomised model. It works on a deep copy: the user's model
(parameters, buffers, hooks, training mode) is never changed.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from .._engine.errors import ArgumentTypeError, ArgumentValueError
from .._engine.inputs import as_tuple, batch_size


class RandomizationResult(NamedTuple):
    """Result of :func:`model_parameter_randomization`.

    ``layers[i]`` names the layer randomised at stage ``i`` (with cascading,
    every earlier layer is random as well); ``correlations[i, b]`` is the
    Spearman correlation of example ``b``'s explanation at that stage with
    the trained model's. ``reference[b]`` correlates two explanations of the
    unchanged model: 1 for deterministic methods, the noise level for
    sampling methods such as NoiseTunnel.
    """

    layers: list[str]
    correlations: Tensor
    reference: Tensor


def spearman_correlation(a: Tensor, b: Tensor) -> Tensor:
    """Spearman rank correlation per row of ``a`` and ``b`` (ties get their average rank).

    Rows are examples: every dim after the first is flattened. A row with a
    constant explanation has no ranking and gives NaN.

    Example:
        >>> import torch
        >>> from attribuo.metrics import spearman_correlation
        >>> spearman_correlation(torch.tensor([[1., 2., 3.]]), torch.tensor([[10., 20., 5.]]))
        tensor([-0.5000])
    """
    out_dtype = a.dtype if a.is_floating_point() else torch.float64
    return correlate_centred(centred_ranks(a), centred_ranks(b)).to(out_dtype)


def centred_ranks(t: Tensor) -> Tensor:
    """``(N, F)`` float64 average ranks of each row (dims after the first flattened), minus their mean."""
    r = _average_ranks(t.reshape(t.shape[0], -1).to(torch.float64))
    return r - r.mean(dim=1, keepdim=True)


def correlate_centred(a: Tensor, b: Tensor) -> Tensor:
    """Pearson correlation of the rows of two centred ``(N, F)`` tensors."""
    return (a * b).sum(1) / (a.pow(2).sum(1) * b.pow(2).sum(1)).sqrt()


def _average_ranks(v: Tensor) -> Tensor:
    """0-based ranks within each row, tied values sharing the mean of their ranks."""
    s, order = v.sort(dim=1)
    n = v.shape[1]
    pos = torch.arange(n, device=v.device).expand_as(order)
    differs = s[:, 1:] != s[:, :-1]
    edge = torch.ones(v.shape[0], 1, dtype=torch.bool, device=v.device)
    # first and last sorted position of each run of equal values
    first = torch.where(torch.cat([edge, differs], 1), pos, 0).cummax(dim=1).values
    last = torch.where(torch.cat([differs, edge], 1), pos, n).flip(1).cummin(dim=1).values.flip(1)
    return torch.empty_like(v).scatter_(1, order, (first + last).to(v.dtype) / 2)


def _default_layers(model: nn.Module) -> list[str]:
    """Modules that own parameters, output side first (reverse registration order)."""
    names = [
        name for name, m in model.named_modules()
        if any(True for _ in m.parameters(recurse=False))
    ]
    return names[::-1]


def reset_layers(model: nn.Module) -> list[str]:
    """Modules with a ``reset_parameters`` method, in registration order (input side first).

    These are the layers Quantus' randomisation tests re-initialise.
    """
    return [name for name, m in model.named_modules() if callable(getattr(m, "reset_parameters", None))]


def randomised_stages(
    work: nn.Module, names: Sequence[str], cascading: bool = True, layer_seed: int | None = None
) -> Iterator[str]:
    """Re-initialise ``work``'s layers ``names`` one stage at a time, in place; yield each name.

    ``work`` is the caller's deep copy. With ``cascading`` each stage keeps
    the layers randomised before it; otherwise every stage starts again
    from the parameters (and buffers) ``work`` had. ``layer_seed`` reseeds
    torch's global generator before every layer (Quantus' scheme; the caller
    forks the generator), else the draws follow the current stream.
    """
    modules = dict(work.named_modules())
    original = None if cascading else copy.deepcopy(work.state_dict())
    for name in names:
        if original is not None:
            work.load_state_dict(original)
        if layer_seed is not None:
            _seed_for(work, layer_seed)
        _randomize(modules[name])
        yield name


def _seed_for(model: nn.Module, seed: int) -> None:
    """``torch.manual_seed(seed)``, or only the CPU generator's for a model on the CPU (much cheaper)."""
    if all(p.device.type == "cpu" for p in model.parameters()):
        torch.default_generator.manual_seed(seed)
    else:
        torch.manual_seed(seed)


def _randomize(module: nn.Module) -> None:
    """Fresh random parameters for one module (its own init when it has one)."""
    with torch.no_grad():
        if callable(getattr(module, "reset_parameters", None)):
            module.reset_parameters()
            return
        for p in module.parameters(recurse=False):
            std = p.std() if p.numel() > 1 else p.abs()
            std = float(std) if torch.isfinite(std) and float(std) > 0 else 0.01
            p.normal_(0.0, std)


def _explainer(explanation: Any) -> Callable[[nn.Module, Any, dict], Any]:
    from ..attr.base import Attribution

    if isinstance(explanation, type) and issubclass(explanation, Attribution):
        return lambda model, inputs, kw: explanation(model).attribute(inputs, **kw)
    if callable(explanation):
        return lambda model, inputs, kw: explanation(model, inputs, **kw)
    raise ArgumentTypeError(
        "`explanation` must be an attribution class (e.g. Saliency) or a callable "
        f"explanation(model, inputs, **kwargs); got {type(explanation).__name__}"
    )


def _flatten(result: Any, bsz: int) -> Tensor:
    parts = as_tuple(result, "explanation output")
    return torch.cat([p.detach().reshape(bsz, -1) for p in parts], dim=1)


def model_parameter_randomization(
    model: nn.Module,
    explanation: Any,
    inputs: Tensor | tuple[Tensor, ...],
    layers: Sequence[str] | None = None,
    cascading: bool = True,
    absolute: bool = True,
    seed: int | None = None,
    **kwargs: Any,
) -> RandomizationResult:
    """Rank correlation of explanations before and after re-initialising ``model``'s layers.

    ``explanation`` is an attribution class, built as ``explanation(model)``
    and called as ``.attribute(inputs, **kwargs)``, or a function
    ``explanation(model, inputs, **kwargs)`` returning attributions.
    ``layers`` (module names from ``named_modules``) sets the order; by
    default every module with parameters, output side first. With
    ``cascading`` each stage keeps the layers randomised before it;
    otherwise each layer is randomised alone. ``absolute`` compares absolute
    attributions, as Adebayo et al. do for heat maps. Layers are reset with
    their own ``reset_parameters`` (else Gaussian noise of the weights'
    scale); ``seed`` makes the draw reproducible without touching the global
    random state. Only a deep copy of ``model`` is changed.

    Example:
        >>> import torch
        >>> from attribuo.attr import Saliency
        >>> from attribuo.metrics import model_parameter_randomization
        >>> model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
        >>> result = model_parameter_randomization(model, Saliency, torch.rand(3, 8), target=0, seed=0)
        >>> result.layers
        ['2', '0']
        >>> result.correlations.shape
        torch.Size([2, 3])
    """
    if not isinstance(model, nn.Module):
        raise ArgumentTypeError(f"`model` must be an nn.Module, got {type(model).__name__}")
    explain = _explainer(explanation)
    bsz = batch_size(as_tuple(inputs))
    modules = dict(model.named_modules())
    if isinstance(layers, str):
        raise ArgumentTypeError("`layers` must be a list of module names, not a string")
    names = _default_layers(model) if layers is None else list(layers)
    for name in names:
        if name not in modules:
            raise ArgumentValueError(
                f"`layers` names {name!r}, which is not a module of `model` "
                f"(known: {sorted(n for n in modules if n)[:20]})"
            )

    def prepare(t: Tensor) -> Tensor:
        return t.abs() if absolute else t

    work = copy.deepcopy(model)
    rng = torch.random.fork_rng() if seed is not None else nullcontext()
    with rng:
        if seed is not None:
            torch.manual_seed(seed)
        trained = prepare(_flatten(explain(work, inputs, kwargs), bsz))
        again = prepare(_flatten(explain(work, inputs, kwargs), bsz))
        reference = spearman_correlation(trained, again)
        rows = [
            spearman_correlation(trained, prepare(_flatten(explain(work, inputs, kwargs), bsz)))
            for _ in randomised_stages(work, names, cascading)
        ]
    correlations = torch.stack(rows) if rows else torch.empty(0, bsz, dtype=torch.float64)
    return RandomizationResult(names, correlations, reference)
