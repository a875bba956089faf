"""The page's two requests, checked before any work, and what each will cost.

:func:`parse_fetch` and :func:`parse_attribute` turn a JSON body into a
:class:`Plan` or raise :class:`RequestError` naming the field at fault;
:func:`evaluations` estimates a plan's model evaluations so that the server
can keep cheap requests off the queue of heavy ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .methods import MethodSpec, RequestError, feature_groups, find_method

PREDICTIONS = ("all", "correct", "incorrect")
TARGETS = ("predicted", "label")
MAX_EXAMPLES = 32  # per request: keeps one request to seconds, not minutes


@dataclass
class Plan:
    """A checked request: which models, which method with which arguments, which examples."""

    models: list[int]
    spec: MethodSpec
    arguments: dict[str, Any]
    target: str | int = "predicted"  # for fetch
    classes: set[int] = field(default_factory=set)
    prediction: str = "all"
    count: int = 4
    examples: list[tuple[int, str | int]] = field(default_factory=list)  # for attribute


def _fields(value: Any, allowed: tuple[str, ...]) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RequestError("the request body must be a JSON object")
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        raise RequestError(f"unknown field {unknown[0]!r}; allowed: {list(allowed)}")
    return value


def _index(value: Any, name: str, size: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < size:
        raise RequestError(f"`{name}` must be an index from 0 to {size - 1}, got {value!r}")
    return value


def _models(s: dict[str, Any], n_models: int) -> list[int]:
    if "models" in s and "model" in s:
        raise RequestError("give `models` (a list) or `model` (one index), not both")
    if "model" in s:
        return [_index(s["model"], "model", n_models)]
    chosen = s.get("models")
    if chosen is None:
        return list(range(n_models))
    if not isinstance(chosen, list) or not chosen:
        raise RequestError("`models` must be a non-empty list of model indices")
    indices = [_index(m, "models", n_models) for m in chosen]
    if len(set(indices)) != len(indices):
        raise RequestError("`models` lists a model twice")
    return indices


def _target(value: Any, n_classes: int, name: str = "target") -> str | int:
    if value is None:
        return "predicted"
    if value in TARGETS:
        return value
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < n_classes:
        raise RequestError(f"`{name}` must be a class index from 0 to {n_classes - 1}, "
                           f"{TARGETS[0]!r} or {TARGETS[1]!r}; got {value!r}")
    return value


def _method(s: dict[str, Any]) -> tuple[MethodSpec, dict[str, Any]]:
    spec = find_method(s.get("method", "IntegratedGradients"))
    arguments = s.get("arguments", {})
    spec.parse_arguments(arguments)  # reject bad arguments before any work
    return spec, arguments


def parse_fetch(settings: Any, classes: list[str], n_models: int) -> Plan:
    """The checked plan of a fetch request (see docs/insights.md)."""
    s = _fields(settings, ("model", "models", "method", "arguments", "target", "classes",
                           "prediction", "num_examples"))
    models = _models(s, n_models)
    spec, arguments = _method(s)
    names = s.get("classes", [])
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise RequestError("`classes` must be a list of class names")
    unknown = [n for n in names if n not in classes]
    if unknown:
        shown = classes if len(classes) <= 20 else classes[:20] + ["..."]
        raise RequestError(f"unknown class {unknown[0]!r}; classes are {shown}")
    prediction = s.get("prediction", "all")
    if prediction not in PREDICTIONS:
        raise RequestError(f"`prediction` must be one of {list(PREDICTIONS)}")
    count = s.get("num_examples", 4)
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_EXAMPLES:
        raise RequestError(f"`num_examples` must be an integer from 1 to {MAX_EXAMPLES}")
    return Plan(models, spec, arguments, target=_target(s.get("target"), len(classes)),
                classes={classes.index(n) for n in names}, prediction=prediction, count=count)


def parse_attribute(request: Any, n_classes: int, n_models: int) -> Plan:
    """The checked plan of an attribute request (see docs/insights.md)."""
    s = _fields(request, ("examples", "model", "models", "method", "arguments"))
    models = _models(s, n_models)
    spec, arguments = _method(s)
    items = s.get("examples")
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_EXAMPLES:
        raise RequestError(f"`examples` must be a list of 1 to {MAX_EXAMPLES} items")
    wanted = []
    for item in items:
        if not isinstance(item, dict) or set(item) - {"id", "target"}:
            raise RequestError('each of `examples` must be {"id": int, "target": int|"label"|null}')
        ident = item.get("id")
        if isinstance(ident, bool) or not isinstance(ident, int):
            raise RequestError("example `id` must be an integer")
        wanted.append((ident, _target(item.get("target"), n_classes)))
    return Plan(models, spec, arguments, examples=wanted)


def evaluations(plan: Plan, shapes: list[tuple[int, ...]] | None, examples: int,
                kinds: list[str] | None = None) -> int:
    """Estimated model evaluations (forward, or forward and backward, of one example).

    Unknown input shapes (nothing fetched yet) make shape-dependent methods
    count as heavy.
    """
    args = plan.spec.parse_arguments(plan.arguments, shapes, kinds) if shapes else \
        plan.spec.parse_arguments(plan.arguments)
    per_example = _evaluations_of(plan.spec.id, args, shapes)
    return per_example * max(1, examples) * len(plan.models)


_HEAVY = 10_000


def _evaluations_of(method: str, args: dict[str, Any], shapes: list[tuple[int, ...]] | None) -> int:
    if method.startswith("NoiseTunnel["):
        inner = method[len("NoiseTunnel["):-1]
        return args.get("nt_samples", 1) * _evaluations_of(inner, args, shapes)
    if method in ("IntegratedGradients", "IDGI", "GuidedIntegratedGradients", "BlurIntegratedGradients"):
        return args.get("n_steps", 50)
    if method == "XRAI":  # IG from a black and a white baseline
        return 2 * args.get("n_steps", 50)
    if method == "RISE":
        return args.get("n_masks", 4000)
    if method == "SobolAttribution":
        return args.get("nb_design", 32) * (args.get("grid_size", 8) ** 2 + 2)
    if method == "PartitionShap":
        return args.get("max_evals", 500)
    if method == "GradientShap":
        return args.get("n_samples", 5)
    if method == "FeatureAblation":
        return 1 + feature_groups(args, shapes) if shapes else _HEAVY
    if method == "Occlusion":
        if not shapes:
            return _HEAVY
        total = 1
        strides = args.get("strides")
        for k, (shape, window) in enumerate(zip(shapes, args["sliding_window_shapes"])):
            stride = strides[k] if strides else (1,) * len(shape)
            total += math.prod(max(0, (d - w) // s) + 1 for d, w, s in zip(shape, window, stride))
        return total
    return 1  # one gradient or one modified backward pass
