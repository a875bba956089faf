"""What the Quantus-style metrics share: one checked call, explainers, batched scoring.

Every metric takes ``(forward_func or model, inputs, attributions or an
attribution method, target, ...)`` and returns one score per example. The
pieces here keep them uniform:

- :func:`metric_call` checks the arguments once: one input tensor ``x`` of
  shape ``(N, ...)``; attributions of the same shape or broadcastable to it
  (``(N, 1, H, W)`` for a ``(N, C, H, W)`` image: one value per pixel);
  ``target`` in any of Captum's forms.
- :func:`as_explainer` turns an attribution class, an instance, or a
  function into ``explain(model, inputs, target) -> attributions``, for
  metrics that explain again (robustness, randomisation).
- :meth:`MetricCall.score_copies` evaluates ``k`` modified copies of the
  batch in as few forwards as the memory budget (or
  ``max_examples_per_batch``) allows, built chunk by chunk, and returns the
  ``(N, k)`` scores of the target.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .._engine.baselines import full_baselines
from .._engine.batching import bytes_per_copy, cache_friendly_copies, chunk_ranges, chunk_size
from .._engine.call import Call, parse_call
from .._engine.errors import ArgumentTypeError, ArgumentValueError
from .._engine.model_outputs import logits_of
from ._sampling import per_example_output

Explainer = Callable[[Callable, Tensor, Any], Tensor]


@dataclass
class MetricCall:
    """A checked metric call: ``x`` ``(N, ...)``, ``attributions`` on the feature grid.

    ``attributions`` keep their own shape (``grid``): each of its entries is
    one *feature*; :meth:`spread` broadcasts a feature-grid tensor onto
    ``x``. ``call`` is the engine's call (target and extra forward args).
    """

    forward_func: Callable
    x: Tensor
    attributions: Tensor | None
    call: Call
    max_examples_per_batch: int | None = None

    @property
    def batch(self) -> int:
        return self.x.shape[0]

    @property
    def grid(self) -> tuple[int, ...]:
        """Shape of one example's features (the attributions' shape without dim 0)."""
        return tuple(self.attributions.shape[1:]) if self.attributions is not None else tuple(self.x.shape[1:])

    @property
    def n_features(self) -> int:
        n = 1
        for d in self.grid:
            n *= d
        return n

    def flat_attributions(self) -> Tensor:
        """``(N, F)`` float64 attributions, one column per feature."""
        return self.attributions.detach().reshape(self.batch, -1).to(torch.float64)

    def spread(self, features: Tensor) -> Tensor:
        """A tensor on the feature grid (``(..., N, *grid)``) broadcast to ``x``'s shape."""
        lead = features.shape[: features.dim() - self.x.dim()]
        return features.expand(*lead, *self.x.shape)

    def scores(self, inputs: Tensor | None = None) -> Tensor:
        """``(N,)`` float64 scores of the target on ``inputs`` (default: ``x``), no gradient."""
        out = self.score_copies(1, lambda start, stop: (self.x if inputs is None else inputs).unsqueeze(0))
        return out[:, 0]

    def score_copies(self, count: int, make: Callable[[int, int], Tensor]) -> Tensor:
        """``(N, count)`` float64 target scores of ``count`` modified copies of the batch.

        ``make(start, stop)`` builds copies ``start..stop-1`` as one tensor of
        shape ``(stop - start, N, ...)``; chunks follow the memory budget or
        ``max_examples_per_batch`` (a bound on copies x examples per forward).
        """
        n = self.batch
        size = chunk_size(count, bytes_per_copy((self.x,)), examples=self.max_examples_per_batch,
                          batch=n, name="max_examples_per_batch")
        if self.max_examples_per_batch is None and self.x.device.type == "cpu" and size > 1:
            size = min(size, cache_friendly_copies(self.forward_func, (self.x,), self.call.args, n))
        columns = []
        with torch.no_grad():
            for start, stop in chunk_ranges(count, size):
                k = stop - start
                copies = make(start, stop)
                if copies.shape != (k, *self.x.shape):
                    raise ArgumentValueError(
                        f"internal: copies of shape {tuple(copies.shape)}, expected {(k, *self.x.shape)}"
                    )
                out = self.call.expanded(k, inputs=(copies.reshape(k * n, *self.x.shape[1:]),)).forward(
                    self.forward_func
                )
                columns.append(per_example_output(out, n * k).view(k, n).T.to(torch.float64))
        return torch.cat(columns, dim=1) if columns else torch.zeros(n, 0, dtype=torch.float64)


def metric_call(
    forward_func: Callable,
    inputs: Any,
    attributions: Tensor | None,
    target: Any = None,
    additional_forward_args: Any = None,
    max_examples_per_batch: int | None = None,
    name: str = "metric",
) -> MetricCall:
    """Check a metric's common arguments (see the module docstring)."""
    if not callable(forward_func):
        raise ArgumentTypeError(f"{name}: `forward_func` must be a model or a callable, got "
                                f"{type(forward_func).__name__}")
    if isinstance(inputs, tuple) and len(inputs) == 1:
        inputs = inputs[0]
    if not isinstance(inputs, Tensor):
        raise ArgumentTypeError(f"{name}: `inputs` must be one tensor (N, ...), got {type(inputs).__name__}")
    call = parse_call(inputs, target, additional_forward_args)
    x = call.inputs[0]
    if attributions is not None:
        attributions = as_attribution_tensor(attributions, x, name)
    return MetricCall(forward_func, x, attributions, call, max_examples_per_batch)


def as_attribution_tensor(attributions: Any, x: Tensor, name: str = "metric") -> Tensor:
    """One attribution tensor for ``x``: the same shape, or broadcastable to it with batch N."""
    if isinstance(attributions, tuple) and len(attributions) == 1:
        attributions = attributions[0]
    if not isinstance(attributions, Tensor):
        raise ArgumentTypeError(f"{name}: `attributions` must be a tensor, got {type(attributions).__name__}")
    a = attributions.detach()
    if a.dim() == x.dim() - 1 and x.dim() >= 3 and a.shape == x.shape[:1] + x.shape[2:]:
        a = a.unsqueeze(1)  # (N, H, W) for (N, C, H, W): one value per pixel
    # per dim: equal, or 1 to share (a plain loop: broadcast_shapes costs more than the metric)
    ok = a.dim() == x.dim() and a.shape[0] == x.shape[0] and all(
        d == e or d == 1 for d, e in zip(a.shape[1:], x.shape[1:]))
    if not ok:
        raise ArgumentValueError(
            f"{name}: `attributions` of shape {tuple(a.shape)} do not fit `inputs` of shape "
            f"{tuple(x.shape)}; give the same shape, or size 1 in dims to share (e.g. (N, 1, H, W))"
        )
    return a.to(x.device)


def as_explainer(explain: Any, **explain_kwargs: Any) -> Explainer:
    """``explain(model, inputs, target) -> attributions`` from what a user may pass.

    - an attribution class (``Saliency``): built on the model each call;
    - an instance (``Saliency(model)``): used as is for its own model, and
      rebuilt with the same class (default arguments) for another model;
    - a function ``f(model, inputs, target)`` (Quantus' ``explain_func`` form
      with keyword ``targets`` is accepted too).

    ``explain_kwargs`` go to ``attribute`` (e.g. ``n_steps``).

    Example:
        >>> import torch
        >>> from attribuo.attr import Saliency
        >>> model = torch.nn.Linear(3, 2)
        >>> explain = as_explainer(Saliency, abs=False)
        >>> explain(model, torch.ones(4, 3), 1).shape
        torch.Size([4, 3])
    """
    if isinstance(explain, type):
        if not hasattr(explain, "attribute"):
            raise ArgumentTypeError(f"`explain` class {explain.__name__} has no `attribute` method")

        def from_class(model: Callable, inputs: Tensor, target: Any) -> Tensor:
            return _single(explain(model).attribute(inputs, target=target, **explain_kwargs))

        return from_class
    if hasattr(explain, "attribute") and hasattr(explain, "forward_func"):
        own = explain.forward_func

        def from_instance(model: Callable, inputs: Tensor, target: Any) -> Tensor:
            method = explain if model is own else type(explain)(model)
            return _single(method.attribute(inputs, target=target, **explain_kwargs))

        return from_instance
    if callable(explain):
        try:
            params = inspect.signature(explain).parameters
        except (TypeError, ValueError):
            params = {}
        quantus_style = "targets" in params and "target" not in params

        def from_function(model: Callable, inputs: Tensor, target: Any) -> Tensor:
            if quantus_style:
                return _single(explain(model=model, inputs=inputs, targets=target, **explain_kwargs))
            return _single(explain(model, inputs, target, **explain_kwargs))

        return from_function
    raise ArgumentTypeError(
        "`explain` must be an attribution class, an attribution instance or a function "
        f"(model, inputs, target) -> attributions; got {type(explain).__name__}"
    )


def _single(result: Any) -> Tensor:
    if isinstance(result, tuple) and len(result) == 1:
        result = result[0]
    if isinstance(result, tuple):  # (attributions, delta)
        result = result[0]
    if not isinstance(result, Tensor):
        raise ArgumentTypeError(f"the explainer must return a tensor, got {type(result).__name__}")
    return result.detach()


def resolve_attributions(forward_func: Callable, inputs: Tensor, attributions: Any, target: Any,
                         **explain_kwargs: Any) -> Tensor:
    """``attributions`` as given (a tensor), or computed by the method or function given."""
    if isinstance(attributions, Tensor) or (isinstance(attributions, tuple) and attributions
                                            and isinstance(attributions[0], Tensor)):
        return attributions
    return as_explainer(attributions, **explain_kwargs)(forward_func, inputs, target)


def per_example_targets(call: Call) -> Tensor | None:
    """The target as ``(N,)`` class indices when it is one index per example (else None).

    Metrics that move the target (random logit) or compare classes need it.
    """
    target = call.target
    if target.per_example is not None and target.per_example.shape[1:] == (1,):
        return target.per_example.reshape(-1)
    if target.shared is not None and len(target.shared) == 1:
        return torch.full((call.batch,), int(target.shared[0]), dtype=torch.long, device=call.inputs[0].device)
    return None


def generator(seed: int | None, device: torch.device | str = "cpu") -> torch.Generator | None:
    """A seeded generator (None: torch's global one), so a metric's draws can be repeated."""
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ArgumentTypeError(f"`seed` must be an int or None, got {seed!r}")
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g


# ----- attributions prepared as Quantus prepares them, baselines, softmax ------------------

def normalise_rows(flat: Tensor, normalise: bool | str, absolute: bool) -> Tensor:
    """``(N, F)`` attributions normalised per row, then made absolute, as Quantus prepares them.

    ``normalise``: ``True`` or ``"max"`` divides by the row's largest
    absolute value (Quantus' ``normalise_by_max``); ``"second_moment"`` by
    the square root of the row's mean square (Quantus'
    ``normalise_by_average_second_moment_estimate``); ``False`` leaves the
    values. Rows that are all zero stay as they are.
    """
    if normalise is True or normalise == "max":
        scale = flat.abs().amax(dim=1, keepdim=True)
    elif normalise == "second_moment":
        scale = flat.pow(2).mean(dim=1, keepdim=True).sqrt()
    elif normalise is False or normalise is None:
        scale = None
    else:
        raise ArgumentValueError(f"`normalise` must be True, False, 'max' or 'second_moment', got {normalise!r}")
    if scale is not None:
        flat = flat / torch.where(scale == 0, torch.ones_like(scale), scale)
    return flat.abs() if absolute else flat


def prepared_attributions(
    name: str, forward_func: Callable, inputs: Any, attributions: Any, target: Any,
    additional_forward_args: Any, explain_kwargs: dict | None, normalise: bool | str, absolute: bool,
) -> tuple[Any, Tensor]:
    """The checked call and its ``(N, F)`` float64 attributions, normalised and made absolute.

    ``attributions`` may be a tensor or a method (computed on the inputs).
    """
    if isinstance(inputs, tuple) and len(inputs) == 1:
        inputs = inputs[0]
    if not isinstance(attributions, Tensor) and not (isinstance(attributions, tuple) and attributions):
        if not isinstance(inputs, Tensor):
            raise ArgumentTypeError(f"{name}: `inputs` must be one tensor (N, ...), got {type(inputs).__name__}")
        kwargs = dict(explain_kwargs or {})
        if additional_forward_args is not None:
            kwargs["additional_forward_args"] = additional_forward_args
        attributions = resolve_attributions(forward_func, inputs, attributions, target, **kwargs)
    call = metric_call(forward_func, inputs, attributions, target, additional_forward_args, name=name)
    return call, normalise_rows(call.flat_attributions(), normalise, absolute)


def check_flag(value: Any, name: str, what: str) -> bool:
    """``value`` if it is a bool; :class:`ArgumentTypeError` naming ``what`` otherwise."""
    if not isinstance(value, bool):
        raise ArgumentTypeError(f"{name}: `{what}` must be True or False, got {value!r}")
    return value


def check_number(value: Any, name: str, what: str, low: float | None = None) -> float:
    """``value`` as a float if it is a (non-bool) number, at least ``low`` when given."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (low is not None and value < low):
        bound = "" if low is None else f" >= {low}"
        raise ArgumentValueError(f"{name}: `{what}` must be a number{bound}, got {value!r}")
    return float(value)


def scored_call(
    name: str, forward_func: Callable, inputs: Any, attributions: Any, target: Any,
    additional_forward_args: Any, explain_kwargs: dict | None, max_examples_per_batch: int | None,
    absolute: bool, softmax: bool, normalise: bool | str = False,
) -> tuple[MetricCall, Tensor]:
    """The call the perturbation metrics score, and its ``(N, F)`` float64 attributions.

    The attributions are prepared as :func:`prepared_attributions` does; the
    call evaluates ``max_examples_per_batch`` examples per forward at most
    and, with ``softmax``, scores the softmax of the output.
    """
    call, a = prepared_attributions(name, forward_func, inputs, attributions, target,
                                    additional_forward_args, explain_kwargs, normalise,
                                    check_flag(absolute, name, "abs"))
    call.max_examples_per_batch = max_examples_per_batch
    if check_flag(softmax, name, "softmax"):
        call.forward_func = softmaxed(call.forward_func)
    return call, a


def _no_model(forward_func: Any) -> Callable:
    """Metrics of the attributions alone accept ``forward_func=None`` when given a tensor."""
    return forward_func if forward_func is not None else _unused_model


def _unused_model(*args: Any) -> Any:
    raise ArgumentTypeError("`forward_func` is None: give a model to compute attributions from a method")


Baseline = str | float | int | Tensor


def softmaxed(forward_func: Callable) -> Callable:
    """``forward_func`` with a softmax over the last dim of its output (logits of a ModelOutput too)."""

    def probabilities(*args: Any) -> Tensor:
        logits = logits_of(forward_func(*args))
        if logits.dim() < 2:
            raise ArgumentValueError("softmax=True needs class scores (N, C) from the model; pass softmax=False")
        return logits.softmax(dim=-1)

    probabilities.wraps_forward = forward_func  # lets the engine probe the model's activations
    return probabilities


def baseline_fill(call: MetricCall, perturb_baseline: Baseline, copies: int,
                  gen: torch.Generator | None) -> Callable[[int, int], Tensor]:
    """``fill(start, stop)``: values for copies ``start..stop-1``, broadcastable to ``(k, N, *x.shape[1:])``.

    Random values are fixed per copy whatever the chunks: ``"uniform"`` draws ``(copies, N)`` up
    front, ``"random"`` draws copy ``c``'s from a generator seeded with ``s + c`` (``s`` from ``gen``).
    """
    x = call.x
    n, tail = call.batch, (1,) * (x.dim() - 1)
    if not x.is_floating_point():
        raise ArgumentTypeError(f"`inputs` must be floating point to perturb them, got {x.dtype}")
    if isinstance(perturb_baseline, str):
        kind = perturb_baseline.lower()
        flat = x.detach().reshape(n, -1)
        if kind in ("black", "white", "mean"):
            value = flat.amin(dim=1) if kind == "black" else flat.amax(dim=1) if kind == "white" else flat.mean(dim=1)
            return _constant(value.view(1, n, *tail))
        if kind == "uniform":
            draws = torch.rand((copies, n), generator=gen, device=x.device, dtype=x.dtype).view(copies, n, *tail)
            return lambda start, stop: draws[start:stop]
        if kind == "random":
            first = int(torch.randint(0, 2**62, (1,), generator=gen, device=x.device))

            def per_element(start: int, stop: int) -> Tensor:
                draw = torch.Generator(device=x.device)
                return torch.stack([torch.rand(x.shape, generator=draw.manual_seed(first + c), device=x.device,
                                               dtype=x.dtype) for c in range(start, stop)])

            return per_element
        raise ArgumentValueError(
            f"`perturb_baseline` must be 'black', 'white', 'mean', 'uniform', 'random', a number or a "
            f"tensor, got {perturb_baseline!r}"
        )
    if isinstance(perturb_baseline, bool) or not isinstance(perturb_baseline, (int, float, Tensor)):
        raise ArgumentTypeError(
            f"`perturb_baseline` must be a string, a number or a tensor, got {type(perturb_baseline).__name__}"
        )
    return _constant(full_baselines((x,), perturb_baseline, "perturb_baseline")[0].unsqueeze(0))


def _constant(values: Tensor) -> Callable[[int, int], Tensor]:
    return lambda start, stop: values
