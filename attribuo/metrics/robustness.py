"""Robustness of explanations: do they stay put when the input barely moves?

Quantus' robustness metrics, torch-native and batched:

- :func:`max_sensitivity` / :func:`avg_sensitivity` (Yeh et al. 2019): the
  largest / mean relative change of the explanation under uniform noise;
- :func:`local_lipschitz_estimate` (Alvarez-Melis & Jaakkola 2018): the
  largest ratio of explanation change to input change under Gaussian noise;
- :func:`continuity` (Montavon et al. 2018): the same ratio along a
  horizontal translation of the image;
- :func:`relative_input_stability`, :func:`relative_output_stability`,
  :func:`relative_representation_stability` (Agarwal et al. 2022): relative
  explanation change over relative change of the input, the output logits,
  or a layer's representation.

For all of them lower is better. They explain perturbed inputs again, so
``attributions`` must be an attribution method (a class, an instance, or
``f(model, inputs, target)``); the reference explanation is that method on
the inputs (Quantus takes a given ``a_batch`` instead). Every perturbed copy
of the batch is explained in batched calls: the copies are stacked along the
batch, as many per call as the memory budget (or ``max_examples_per_batch``,
a bound on copies x examples) allows, with the target and batched
``additional_forward_args`` repeated to match. Cost: one explanation of the
batch plus ``nr_samples`` (``nr_steps``) explanations of perturbed copies,
in few calls; a forward of the copies where outputs are needed.

Differences from Quantus 0.6, on purpose:

- ``normalise`` divides each example by its own scale (Quantus: one scale
  for the whole batch), so a score never depends on the other examples. The
  two agree for one example at a time.
- Noise is drawn with torch, copy after copy (``seed``: a generator of its
  own; None: the global stream), so chunking never changes it; Quantus
  draws with numpy's global stream. ``perturb_func(x) -> x'`` replaces the
  noise: it is called once per sample, in order, on the whole ``(N, ...)``
  batch, like Quantus' ``perturb_func`` on its batch, so a function that
  replays fixed noise reproduces Quantus' scores exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .._engine.errors import ArgumentTypeError, ArgumentValueError
from .._engine.inputs import positive_int
from ._common import check_flag, check_number, per_example_targets
from ._reexplain import (
    Reexplained,
    flat_copies,
    nan_where_changed,
    noise_func,
    norm_rows,
    reduce_samples,
)


def _sensitivity(name: str, reduce: str, forward_func: Callable, inputs: Tensor, attributions: Any,
                 target: Any, additional_forward_args: Any, nr_samples: int, lower_bound: float,
                 upper_bound: float | None, perturb_func: Callable | None, similarity_func: Callable | None,
                 norm_numerator: Any, norm_denominator: Any, abs: bool, normalise: bool | str,
                 return_nan_when_prediction_changes: bool, explain_kwargs: dict | None,
                 max_examples_per_batch: int | None, seed: int | None) -> Tensor:
    rx = Reexplained(name, forward_func, inputs, attributions, target, additional_forward_args, explain_kwargs,
                     max_examples_per_batch, normalise, abs)
    nr_samples = positive_int(nr_samples, "nr_samples")
    nan_changed = check_flag(return_nan_when_prediction_changes, name, "return_nan_when_prediction_changes")
    noise = noise_func(name, perturb_func, seed, rx.mc.x.device, lower_bound=lower_bound, upper_bound=upper_bound)
    if similarity_func is not None and not callable(similarity_func):
        raise ArgumentTypeError(f"{name}: `similarity_func` must be a function (a, b) -> rows (M, F)")
    similarity = similarity_func or (lambda a, b: a - b)
    numerator = norm_rows(norm_numerator, name, "norm_numerator")
    reference = rx.reference()
    denominator = norm_rows(norm_denominator, name, "norm_denominator")(reference)  # no zero guard, as Quantus
    before = rx.outputs(rx.mc.call)[0].argmax(dim=-1) if nan_changed else None
    columns = []
    for _, expl, out, _ in rx.copies(nr_samples, lambda s: noise(rx.mc.x), forward=nan_changed):
        k, n = expl.shape[:2]
        a = reference.expand(k, *reference.shape).reshape(k * n, -1)
        diff = torch.as_tensor(similarity(a, expl.reshape(k * n, -1))).reshape(k * n, -1)
        scores = numerator(diff).reshape(k, n) / denominator
        columns.append(nan_where_changed(scores, out, before) if nan_changed else scores)
    return reduce_samples(columns, reduce if nan_changed else "nan" + reduce)


def max_sensitivity(
    forward_func: Callable,
    inputs: Tensor,
    attributions: Any,
    target: Any = None,
    *,
    additional_forward_args: Any = None,
    nr_samples: int = 200,
    lower_bound: float = 0.2,
    upper_bound: float | None = None,
    perturb_func: Callable | None = None,
    similarity_func: Callable | None = None,
    norm_numerator: Any = "fro",
    norm_denominator: Any = "fro",
    abs: bool = False,
    normalise: bool | str = False,
    return_nan_when_prediction_changes: bool = False,
    explain_kwargs: dict | None = None,
    max_examples_per_batch: int | None = None,
    seed: int | None = None,
) -> Tensor:
    """Max-sensitivity (Yeh et al., 2019): the largest relative change of the explanation; lower is better.

    ``max_j ||e(x) - e(x_j)|| / ||e(x)||`` over ``nr_samples`` copies
    ``x_j = x + U(-lower_bound, lower_bound)`` noise (``U(lower_bound,
    upper_bound)`` with ``upper_bound``; or ``perturb_func(x)``), Frobenius
    norms by default (``norm_numerator`` / ``norm_denominator``: ``"fro"``,
    ``"l1"``, ``"linf"``, an order or a function of rows), ``similarity_func(a,
    b)`` the difference by default. As Quantus: an all-zero reference gives
    inf (no guard), samples with NaN are skipped, and with
    ``return_nan_when_prediction_changes`` a sample whose predicted class
    moved makes the score NaN. :func:`~attribuo.metrics.sensitivity_max` is
    Captum's version (its random stream and chunks). Cost: ``nr_samples + 1``
    explanations of the batch, stacked in few calls.

    Example:
        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> from attribuo.attr import Saliency
        >>> from attribuo.metrics.robustness import max_sensitivity
        >>> model = torch.nn.Linear(4, 2)
        >>> max_sensitivity(model, torch.rand(3, 4), Saliency, 1, nr_samples=5, seed=0)  # constant gradient
        tensor([0., 0., 0.], dtype=torch.float64)
    """
    return _sensitivity("max_sensitivity", "max", forward_func, inputs, attributions, target,
                        additional_forward_args, nr_samples, lower_bound, upper_bound, perturb_func,
                        similarity_func, norm_numerator, norm_denominator, abs, normalise,
                        return_nan_when_prediction_changes, explain_kwargs, max_examples_per_batch, seed)


def avg_sensitivity(
    forward_func: Callable,
    inputs: Tensor,
    attributions: Any,
    target: Any = None,
    *,
    additional_forward_args: Any = None,
    nr_samples: int = 200,
    lower_bound: float = 0.2,
    upper_bound: float | None = None,
    perturb_func: Callable | None = None,
    similarity_func: Callable | None = None,
    norm_numerator: Any = "fro",
    norm_denominator: Any = "fro",
    abs: bool = False,
    normalise: bool | str = False,
    return_nan_when_prediction_changes: bool = False,
    explain_kwargs: dict | None = None,
    max_examples_per_batch: int | None = None,
    seed: int | None = None,
) -> Tensor:
    """Avg-sensitivity (Yeh et al., 2019): the mean relative change of the explanation; lower is better.

    :func:`max_sensitivity` with the mean over the samples instead of the
    maximum (NaN samples skipped unless ``return_nan_when_prediction_changes``).
    Cost: ``nr_samples + 1`` explanations of the batch, stacked in few calls.

    Example:
        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> from attribuo.attr import Saliency
        >>> from attribuo.metrics.robustness import avg_sensitivity
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
        >>> avg_sensitivity(model, torch.rand(3, 4), Saliency, 1, nr_samples=5, seed=0).shape
        torch.Size([3])
    """
    return _sensitivity("avg_sensitivity", "mean", forward_func, inputs, attributions, target,
                        additional_forward_args, nr_samples, lower_bound, upper_bound, perturb_func,
                        similarity_func, norm_numerator, norm_denominator, abs, normalise,
                        return_nan_when_prediction_changes, explain_kwargs, max_examples_per_batch, seed)


def local_lipschitz_estimate(
    forward_func: Callable,
    inputs: Tensor,
    attributions: Any,
    target: Any = None,
    *,
    additional_forward_args: Any = None,
    nr_samples: int = 200,
    perturb_mean: float = 0.0,
    perturb_std: float = 0.1,
    perturb_func: Callable | None = None,
    norm_numerator: Any = "l2",
    norm_denominator: Any = "l2",
    abs: bool = False,
    normalise: bool | str = True,
    return_nan_when_prediction_changes: bool = False,
    explain_kwargs: dict | None = None,
    max_examples_per_batch: int | None = None,
    seed: int | None = None,
) -> Tensor:
    """Local Lipschitz estimate (Alvarez-Melis & Jaakkola, 2018): lower is better.

    ``max_j ||e(x) - e(x_j)|| / (||x - x_j|| + 1e-10)`` over ``nr_samples``
    copies with Gaussian noise ``N(perturb_mean, perturb_std^2)`` (or
    ``perturb_func(x)``), Euclidean distances by default, explanations
    normalised by their maximum (Quantus' default; per example here). NaN
    samples are skipped unless ``return_nan_when_prediction_changes`` (then a
    moved prediction makes the score NaN). Cost: ``nr_samples + 1``
    explanations of the batch, stacked in few calls.

    Example:
        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> from attribuo.attr import Saliency
        >>> from attribuo.metrics.robustness import local_lipschitz_estimate
        >>> model = torch.nn.Linear(4, 2)
        >>> local_lipschitz_estimate(model, torch.rand(3, 4), Saliency, 1, nr_samples=5, seed=0)
        tensor([0., 0., 0.], dtype=torch.float64)
    """
    name = "local_lipschitz_estimate"
    rx = Reexplained(name, forward_func, inputs, attributions, target, additional_forward_args, explain_kwargs,
                     max_examples_per_batch, normalise, abs)
    nr_samples = positive_int(nr_samples, "nr_samples")
    nan_changed = check_flag(return_nan_when_prediction_changes, name, "return_nan_when_prediction_changes")
    noise = noise_func(name, perturb_func, seed, rx.mc.x.device, perturb_mean=perturb_mean, perturb_std=perturb_std)
    numerator = norm_rows(norm_numerator, name, "norm_numerator")
    denominator = norm_rows(norm_denominator, name, "norm_denominator")
    reference, x = rx.reference(), rx.mc.x
    before = rx.outputs(rx.mc.call)[0].argmax(dim=-1) if nan_changed else None
    columns = []
    for copies, expl, out, _ in rx.copies(nr_samples, lambda s: noise(x), forward=nan_changed):
        scores = numerator(expl - reference) / (denominator(flat_copies(copies) - flat_copies(x.unsqueeze(0))) + 1e-10)
        columns.append(nan_where_changed(scores, out, before) if nan_changed else scores)
    return reduce_samples(columns, "max" if nan_changed else "nanmax")


def translated(x: Tensor, shift: int, fill: Tensor) -> Tensor:
    """``x`` moved ``shift`` steps along its last dim (right when positive), ``fill`` coming in.

    ``fill`` has ``x``'s shape; the entering values are its last ``|shift|``
    columns, as Quantus pads. A shift of the whole width or more leaves only
    ``fill``.
    """
    width = x.shape[-1]
    d = min(abs(shift), width)
    if d == 0:
        return x
    pad = fill[..., width - d:]
    return torch.cat([pad, x[..., : width - d]], dim=-1) if shift > 0 else torch.cat([x[..., d:], pad], dim=-1)


def continuity(
    forward_func: Callable,
    inputs: Tensor,
    attributions: Any,
    target: Any = None,
    *,
    additional_forward_args: Any = None,
    nr_steps: int = 28,
    perturb_baseline: Any = "black",
    abs: bool = True,
    normalise: bool | str = True,
    return_nan_when_prediction_changes: bool = False,
    explain_kwargs: dict | None = None,
    max_examples_per_batch: int | None = None,
) -> Tensor:
    """Continuity (Montavon et al., 2018) as Quantus 0.6 measures it: lower is better.

    The images ``(N, C, H, W)`` (or ``(N, C, W)``) are translated
    horizontally, ``nr_steps`` times by ``-W + s * dx`` pixels (``s = 1 ..
    nr_steps``, ``dx = (2W + 1) // nr_steps``; ``dx = 0`` moves every copy
    out of the frame), the uncovered columns filled with ``perturb_baseline``
    (``"black"``: each example's minimum; ``"white"``, ``"mean"``, a number
    or a tensor). The score is ``max_s ||e(x) - e(x_s)||_1 / (||x - x_s||_2 +
    1e-9)``, the explanations absolute and normalised by their maximum
    (per example here). With ``return_nan_when_prediction_changes`` a
    translation whose predicted class is not the target makes the score NaN
    (``target``: one class per example). Quantus 0.6 translates with
    ``"black"`` whatever its ``perturb_baseline``; older Quantus versions
    correlated patch sums with outputs instead. A translation that leaves
    the image unchanged scores 0 (Quantus divides any run-to-run difference
    of the explanation by ``1e-9`` there). Cost: ``nr_steps + 1``
    explanations of the batch, stacked in few calls.

    Example:
        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> from attribuo.attr import Saliency
        >>> from attribuo.metrics.robustness import continuity
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))
        >>> continuity(model, torch.rand(2, 1, 8, 8), Saliency, 0, nr_steps=4)
        tensor([0., 0.], dtype=torch.float64)
    """
    from ._common import baseline_fill

    name = "continuity"
    rx = Reexplained(name, forward_func, inputs, attributions, target, additional_forward_args, explain_kwargs,
                     max_examples_per_batch, normalise, abs)
    x = rx.mc.x
    if x.dim() not in (3, 4):
        raise ArgumentValueError(f"{name}: `inputs` must be images (N, C, H, W) or (N, C, W), got shape "
                                 f"{tuple(x.shape)}")
    nr_steps = positive_int(nr_steps, "nr_steps")
    nan_changed = check_flag(return_nan_when_prediction_changes, name, "return_nan_when_prediction_changes")
    if isinstance(perturb_baseline, str) and perturb_baseline.lower() in ("uniform", "random"):
        raise ArgumentValueError(f"{name}: `perturb_baseline` must be 'black', 'white', 'mean', a number or a "
                                 f"tensor, got {perturb_baseline!r}")
    fill = baseline_fill(rx.mc, perturb_baseline, 1, None)(0, 1)[0].expand(x.shape)
    width = x.shape[-1]
    dx = (2 * width + 1) // nr_steps
    targets = per_example_targets(rx.mc.call) if nan_changed else None
    if nan_changed and targets is None:
        raise ArgumentValueError(f"{name}: `return_nan_when_prediction_changes` needs one target class per example")
    reference = rx.reference()
    columns = []
    make = lambda s: translated(x, -width + (s + 1) * dx, fill)  # noqa: E731
    for copies, expl, out, _ in rx.copies(nr_steps, make, forward=nan_changed):
        moved = torch.linalg.vector_norm(flat_copies(copies) - flat_copies(x.unsqueeze(0)), dim=-1)
        scores = (expl - reference).abs().sum(dim=-1) / (moved + 1e-9)
        # an unmoved copy explains the same input: only run-to-run float noise (over 1e-9) could differ
        scores = torch.where(moved == 0, torch.zeros_like(scores), scores)
        columns.append(nan_where_changed(scores, out, targets) if nan_changed else scores)
    return reduce_samples(columns, "max")


def _relative(change: Tensor, base: Tensor, eps: float) -> Tensor:
    """``(change) / (base + eps where base is 0)``: Agarwal et al.'s element-wise relative change."""
    return change / (base + (base == 0) * eps)


def _guarded(norm: Tensor, eps: float) -> Tensor:
    return norm + (norm == 0) * eps


def _stability(name: str, against: str, forward_func: Callable, inputs: Tensor, attributions: Any, target: Any,
               additional_forward_args: Any, nr_samples: int, eps_min: float, lower_bound: float,
               upper_bound: float | None, perturb_func: Callable | None, abs: bool, normalise: bool | str,
               return_nan_when_prediction_changes: bool, explain_kwargs: dict | None,
               max_examples_per_batch: int | None, seed: int | None, softmax: bool = False,
               layer: Any = None) -> Tensor:
    rx = Reexplained(name, forward_func, inputs, attributions, target, additional_forward_args, explain_kwargs,
                     max_examples_per_batch, normalise, abs, default_normalise="second_moment",
                     needs_module=against == "representation")
    nr_samples = positive_int(nr_samples, "nr_samples")
    eps = check_number(eps_min, name, "eps_min", 0.0)
    nan_changed = check_flag(return_nan_when_prediction_changes, name, "return_nan_when_prediction_changes")
    softmax = check_flag(softmax, name, "softmax")
    noise = noise_func(name, perturb_func, seed, rx.mc.x.device, lower_bound=lower_bound, upper_bound=upper_bound)
    layers = _layers(name, rx.model, layer) if against == "representation" else ()
    x = rx.mc.x
    reference = rx.reference()
    out_x, rep_x = rx.outputs(rx.mc.call, layers)
    before = out_x.argmax(dim=-1)
    if softmax:
        out_x = out_x.softmax(dim=-1)
    x_flat = flat_copies(x.unsqueeze(0))
    columns = []
    for copies, expl, out, rep in rx.copies(nr_samples, lambda s: noise(x), forward=True, layers=layers):
        top = torch.linalg.vector_norm(_relative(reference - expl, reference, eps), dim=-1)
        if against == "input":
            bottom = torch.linalg.vector_norm(_relative(x_flat - flat_copies(copies), x_flat, eps), dim=-1)
        elif against == "output":
            h = out.softmax(dim=-1) if softmax else out
            bottom = torch.linalg.vector_norm((out_x - h).to(torch.float64), dim=-1)
        else:
            bottom = torch.linalg.vector_norm(_relative(rep_x - rep, rep_x, eps), dim=-1)
        scores = top / _guarded(bottom, eps)
        columns.append(nan_where_changed(scores, out, before) if nan_changed else scores)
    return reduce_samples(columns, "max")


def _layers(name: str, model: nn.Module, layer: Any) -> list[nn.Module]:
    """The modules whose outputs form the representation (Quantus' default: every non-container one)."""
    if layer is None:
        return [m for m in model.modules() if not isinstance(m, (type(model), nn.Sequential))]
    chosen = [layer] if isinstance(layer, nn.Module) else list(layer) if isinstance(layer, (list, tuple)) else None
    if not chosen or not all(isinstance(m, nn.Module) for m in chosen):
        raise ArgumentTypeError(f"{name}: `layer` must be a module of the model (or a list of them), got "
                                f"{type(layer).__name__}")
    own = {id(m) for m in model.modules()}
    if any(id(m) not in own for m in chosen):
        raise ArgumentValueError(f"{name}: `layer` must be a module of `forward_func`")
    return chosen


_STABILITY_DOC = """

    Noise: ``nr_samples`` copies ``x + U(lower_bound, upper_bound)`` (Quantus'
    defaults: 0.02 and 0.2, positive shifts only), or ``perturb_func(x)``.
    Relative changes divide element-wise by the unperturbed value, ``eps_min``
    standing in for zeros (and for a zero denominator norm). As Quantus, a
    sample whose predicted class moved makes the score NaN
    (``return_nan_when_prediction_changes=True``). ``normalise=True`` divides
    explanations by their root mean square (Quantus' second-moment
    normalisation, per example here). Cost: ``nr_samples + 1`` explanations
    of the batch stacked in few calls, and a forward of the copies.
"""


def relative_input_stability(
    forward_func: Callable,
    inputs: Tensor,
    attributions: Any,
    target: Any = None,
    *,
    additional_forward_args: Any = None,
    nr_samples: int = 200,
    eps_min: float = 1e-6,
    lower_bound: float = 0.02,
    upper_bound: float | None = 0.2,
    perturb_func: Callable | None = None,
    abs: bool = False,
    normalise: bool | str = False,
    return_nan_when_prediction_changes: bool = True,
    explain_kwargs: dict | None = None,
    max_examples_per_batch: int | None = None,
    seed: int | None = None,
) -> Tensor:
    """Relative input stability (Agarwal et al., 2022): lower is better.

    ``max_j ||(e(x) - e(x_j)) / e(x)|| / ||(x - x_j) / x||``.{doc}
    Example:
        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> from attribuo.attr import Saliency
        >>> from attribuo.metrics.robustness import relative_input_stability
        >>> model = torch.nn.Linear(4, 2)
        >>> relative_input_stability(model, torch.rand(3, 4), Saliency, 1, nr_samples=5, seed=0,
        ...                          return_nan_when_prediction_changes=False)
        tensor([0., 0., 0.], dtype=torch.float64)
    """
    return _stability("relative_input_stability", "input", forward_func, inputs, attributions, target,
                      additional_forward_args, nr_samples, eps_min, lower_bound, upper_bound, perturb_func, abs,
                      normalise, return_nan_when_prediction_changes, explain_kwargs, max_examples_per_batch, seed)


def relative_output_stability(
    forward_func: Callable,
    inputs: Tensor,
    attributions: Any,
    target: Any = None,
    *,
    additional_forward_args: Any = None,
    nr_samples: int = 200,
    eps_min: float = 1e-6,
    lower_bound: float = 0.02,
    upper_bound: float | None = 0.2,
    perturb_func: Callable | None = None,
    abs: bool = False,
    normalise: bool | str = False,
    softmax: bool = False,
    return_nan_when_prediction_changes: bool = True,
    explain_kwargs: dict | None = None,
    max_examples_per_batch: int | None = None,
    seed: int | None = None,
) -> Tensor:
    """Relative output stability (Agarwal et al., 2022): lower is better.

    ``max_j ||(e(x) - e(x_j)) / e(x)|| / ||h(x) - h(x_j)||`` with ``h`` the
    model's outputs (logits; probabilities with ``softmax=True``).{doc}
    Example:
        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> from attribuo.attr import Saliency
        >>> from attribuo.metrics.robustness import relative_output_stability
        >>> model = torch.nn.Linear(4, 2)
        >>> relative_output_stability(model, torch.rand(3, 4), Saliency, 1, nr_samples=5, seed=0,
        ...                           return_nan_when_prediction_changes=False)
        tensor([0., 0., 0.], dtype=torch.float64)
    """
    return _stability("relative_output_stability", "output", forward_func, inputs, attributions, target,
                      additional_forward_args, nr_samples, eps_min, lower_bound, upper_bound, perturb_func, abs,
                      normalise, return_nan_when_prediction_changes, explain_kwargs, max_examples_per_batch, seed,
                      softmax=softmax)


def relative_representation_stability(
    forward_func: nn.Module,
    inputs: Tensor,
    attributions: Any,
    target: Any = None,
    *,
    additional_forward_args: Any = None,
    layer: nn.Module | Sequence[nn.Module] | None = None,
    nr_samples: int = 200,
    eps_min: float = 1e-6,
    lower_bound: float = 0.02,
    upper_bound: float | None = 0.2,
    perturb_func: Callable | None = None,
    abs: bool = False,
    normalise: bool | str = False,
    return_nan_when_prediction_changes: bool = True,
    explain_kwargs: dict | None = None,
    max_examples_per_batch: int | None = None,
    seed: int | None = None,
) -> Tensor:
    """Relative representation stability (Agarwal et al., 2022): lower is better.

    ``max_j ||(e(x) - e(x_j)) / e(x)|| / ||(L(x) - L(x_j)) / L(x)||`` with
    ``L`` the output of ``layer`` (a module of the model, or a list of them,
    concatenated), read with a forward hook during a forward of its own (the
    hook is removed on every exit). ``layer=None`` takes every module that is
    not a container, as Quantus' default (Quantus names layers by
    ``layer_names`` / ``layer_indices``).{doc}
    Example:
        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> from attribuo.attr import Saliency
        >>> from attribuo.metrics.robustness import relative_representation_stability
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
        >>> relative_representation_stability(model, torch.rand(3, 4), Saliency, 1, layer=model[0],
        ...                                   nr_samples=5, seed=0).shape
        torch.Size([3])
    """
    return _stability("relative_representation_stability", "representation", forward_func, inputs, attributions,
                      target, additional_forward_args, nr_samples, eps_min, lower_bound, upper_bound, perturb_func,
                      abs, normalise, return_nan_when_prediction_changes, explain_kwargs, max_examples_per_batch,
                      seed, layer=layer)


for _f in (relative_input_stability, relative_output_stability, relative_representation_stability):
    _f.__doc__ = _f.__doc__.replace("{doc}", _STABILITY_DOC)
