"""AttributionVisualizer: models, classes, features and data behind the Insights page."""

from __future__ import annotations

import atexit
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from .._engine.errors import ArgumentTypeError, ArgumentValueError
from .features import BaseFeature
from .methods import METHODS, RequestError, describe_methods
from .progress import Progress, checked_forwards
from .requests import (
    MAX_EXAMPLES,
    PREDICTIONS,
    TARGETS,
    Plan,
    evaluations,
    parse_attribute,
    parse_fetch,
)
from .store import Batch, Example, ExampleStore


class AttributionVisualizer:
    """Explore a classifier's predictions and attributions in the browser.

    Args:
        models: one model or a list of models (shown side by side).
        classes: class names, in the order of the model's outputs.
        features: one :class:`BaseFeature` per model input.
        dataset: an iterable of :class:`Batch`; it is walked as the page asks
            for examples, and started again when it ends.
        score_func: applied to the model output to give class scores (e.g.
            softmax); None takes the output as the scores.
        use_label_for_attr: attribute to the predicted (or chosen) class;
            False passes no target (models with one output).
        model_names: names shown for the models (default: their class
            names, numbered where two are the same).

    Example:
        >>> import torch
        >>> from attribuo.insights import AttributionVisualizer, Batch
        >>> from attribuo.insights.features import GeneralFeature
        >>> model = torch.nn.Linear(2, 2)
        >>> vis = AttributionVisualizer(model, ["a", "b"], GeneralFeature("x", ["u", "v"]),
        ...                             [Batch(torch.rand(3, 2), torch.tensor([0, 1, 1]))])
        >>> out = vis.visualize({"method": "Saliency", "num_examples": 2})
        >>> len(out), out[0]["features"][0]["type"], out[0]["results"][0]["method"]
        (2, 'general', 'Saliency')
        >>> # vis.serve() starts the web app; vis.render() shows it in a notebook.
    """

    def __init__(
        self,
        models: torch.nn.Module | list[torch.nn.Module],
        classes: list[str],
        features: BaseFeature | list[BaseFeature],
        dataset: Iterable[Batch],
        score_func: Callable | None = None,
        use_label_for_attr: bool = True,
        model_names: list[str] | None = None,
    ) -> None:
        models = list(models) if isinstance(models, (list, tuple)) else [models]
        features = list(features) if isinstance(features, (list, tuple)) else [features]
        if not models or not all(callable(m) for m in models):
            raise ArgumentTypeError("`models` must be a model or a non-empty list of models")
        if not isinstance(classes, (list, tuple)) or not all(isinstance(c, str) for c in classes):
            raise ArgumentTypeError("`classes` must be a list of strings")
        if not classes:
            raise ArgumentValueError("`classes` must name at least one class")
        if not features or not all(isinstance(f, BaseFeature) for f in features):
            raise ArgumentTypeError("`features` must be a BaseFeature or a list of them")
        if score_func is not None and not callable(score_func):
            raise ArgumentTypeError("`score_func` must be callable or None")
        self.models = models
        self.model_names = _model_names(models, model_names)
        self.classes = list(classes)
        self.features = features
        self.dataset = dataset
        self.score_func = score_func
        self.use_label_for_attr = use_label_for_attr
        self._store = ExampleStore(dataset, features)
        self._server: Any = None

    # ----- the page's requests ----------------------------------------------------------

    def get_insights_config(self) -> dict[str, Any]:
        """Classes, models, features and the methods (with argument specs) the page offers."""
        return {
            "classes": self.classes,
            "models": list(self.model_names),
            "features": [{"name": f.name, "type": f.visualization_type()} for f in self.features],
            "methods": describe_methods(self.models),
            "selected_method": "IntegratedGradients",
            "max_examples": MAX_EXAMPLES,
            "predictions": list(PREDICTIONS),
            "targets": list(TARGETS),
        }

    def visualize(self, settings: dict[str, Any] | None = None,
                  progress: Progress | None = None) -> list[dict[str, Any]]:
        """Fetch the next examples that pass the filters and attribute them.

        ``settings`` (all optional): ``models`` (indices, default all; or
        ``model``, one index), ``method`` (id), ``arguments`` (dict),
        ``target`` (``"predicted"``, ``"label"`` or a class index),
        ``classes`` (names; keep examples the first model predicts as one of
        them), ``prediction`` (``"all"``, ``"correct"``, ``"incorrect"``),
        ``num_examples`` (1 to 32). ``progress`` (used by the server) counts
        the work done and can cancel it. Each example has one entry in
        ``results`` per model; its top-level fields repeat the first.
        """
        plan = self._checked(parse_fetch(settings, self.classes, len(self.models)))
        progress = progress or Progress()
        progress.start(plan.count * len(plan.models))
        found = self._find_examples(plan, progress)
        progress.start(len(found) * len(plan.models))
        # the filter already scored each example with the first model: not run again
        return [self._explain(ident, example, plan, plan.target, progress, {plan.models[0]: top})
                for ident, example, top in found]

    def attribute(self, request: dict[str, Any], progress: Progress | None = None) -> list[dict[str, Any]]:
        """Attribute examples already shown again, with another method, models or target.

        ``request``: ``examples`` (list of ``{"id": int, "target": int,
        "label", "predicted" or null}``), ``models``/``model``, ``method``,
        ``arguments`` as for :meth:`visualize`.
        """
        plan = self._checked(parse_attribute(request, len(self.classes), len(self.models)))
        wanted = []
        for ident, target in plan.examples:
            example = self._store.get(ident)
            if example is None:
                raise RequestError(f"unknown example id {ident}; fetch examples first")
            wanted.append((ident, example, target))
        progress = progress or Progress()
        progress.start(len(wanted) * len(plan.models))
        return [self._explain(ident, example, plan, target, progress) for ident, example, target in wanted]

    def estimate_cost(self, kind: str, request: dict[str, Any] | None) -> int:
        """Model evaluations a ``"fetch"`` or ``"attribute"`` request will take (no work done).

        Raises :class:`RequestError` for a request that would be refused.
        """
        if kind == "fetch":
            plan = parse_fetch(request, self.classes, len(self.models))
            examples = plan.count
        elif kind == "attribute":
            plan = parse_attribute(request, len(self.classes), len(self.models))
            examples = len(plan.examples)
        else:
            raise RequestError(f"`kind` must be 'fetch' or 'attribute', got {kind!r}")
        self._checked(plan)
        return evaluations(plan, self._store.shapes, examples, self._kinds())

    def export(self, ident: int, model_index: int) -> dict[str, Any]:
        """The last attribution of example ``ident`` by model ``model_index``, with raw values."""
        record = self._store.export(ident, model_index)
        if record is None:
            raise RequestError(
                f"no attribution of example {ident} by model {model_index} is kept; fetch or "
                "recompute it first"
            )
        return record

    def serve(
        self,
        blocking: bool = False,
        debug: bool = False,
        port: int | None = None,
        bind_all: bool = False,
        allowed_hosts: Iterable[str] = (),
    ) -> int:
        """Start the web app and return its port (a free one when ``port`` is None).

        Binds 127.0.0.1 unless ``bind_all`` (then every interface). Non-blocking
        by default: the server runs in a background thread; ``blocking=True``
        serves until interrupted (Ctrl-C). ``allowed_hosts``: host names
        (besides IP addresses and ``localhost``) the app answers to, e.g. the
        name of this machine when others reach it with ``bind_all``.
        """
        from .server import InsightsServer

        if self._server is not None and self._server.running:
            return self._server.port
        self._server = InsightsServer(self, port=port, bind_all=bind_all, debug=debug,
                                      allowed_hosts=tuple(allowed_hosts))
        print(f"\nattribuo Insights is running at {self._server.url}\n", flush=True)
        if blocking:
            self._server.run()
        else:
            self._server.start()
            if not _interactive():  # a script that calls serve() keeps serving, as in Captum
                atexit.register(self._server.wait)
        return self._server.port

    def stop(self) -> None:
        """Stop a server started with :meth:`serve` (non-blocking)."""
        if self._server is not None:
            self._server.stop()
            self._server = None

    def render(self, height: int = 800) -> Any:
        """Serve the app (if not yet) and show it in a notebook as an iframe.

        In a Jupyter kernel the frame is displayed; elsewhere the object with
        its ``html`` and ``url`` is returned (notebooks display it too).
        """
        port = self.serve()
        frame = _Frame(f"http://127.0.0.1:{port}/", height)
        try:
            from IPython import get_ipython
            from IPython.display import display
        except ImportError:
            return frame
        shell = get_ipython()
        if shell is None or not shell.has_trait("kernel"):
            return frame
        display(frame)
        return None


    # ----- internals -----------------------------------------------------------------

    def _kinds(self) -> list[str]:
        return [f.visualization_type() for f in self.features]

    def _checked(self, plan: Plan) -> Plan:
        for index in plan.models:
            if not plan.spec.suits(self.models[index]):
                raise RequestError(f"method `{plan.spec.id}` needs {plan.spec.needs}; model "
                                   f"{self.model_names[index]!r} is not one")
        return plan

    def _find_examples(self, plan: Plan, progress: Progress) -> list[tuple[int, Example, list]]:
        """``(id, example, its top classes by the first model)`` of the examples that pass."""
        model = self.models[plan.models[0]]
        found = []
        with self._store.lock:  # one request walks the dataset at a time
            for example in self._store.scan():
                progress.check()
                predicted = self._scores(model, example)
                top = predicted[0]["index"]
                if plan.classes and top not in plan.classes:
                    continue
                if plan.prediction != "all" and example.label is not None:
                    if (top == example.label) != (plan.prediction == "correct"):
                        continue
                found.append((self._store.remember(example), example, predicted))
                if len(found) == plan.count:
                    break
        return found

    def _scores(self, model: Any, example: Example) -> list[dict[str, Any]]:
        """Top (up to 4) classes with their scores, best first."""
        example = example.on_device_of(model)
        with torch.no_grad():
            out = model(*example.transformed, *example.additional_args)
            if self.score_func is not None:
                out = self.score_func(out)
        out = out.detach().reshape(-1).to(torch.float64).cpu()
        if out.numel() == 1:  # one output: its rounded value is the class
            index = int(out.round().clamp(0, len(self.classes) - 1))
            return [{"index": index, "label": self.classes[index], "score": float(out)}]
        if out.numel() != len(self.classes):
            raise ArgumentValueError(
                f"the model gives {out.numel()} scores per example but {len(self.classes)} "
                "classes were given"
            )
        scores, indices = out.topk(min(4, out.numel()))
        return [
            {"index": int(i), "label": self.classes[int(i)], "score": float(s)}
            for s, i in zip(scores, indices)
        ]

    def _explain(self, ident: int, example: Example, plan: Plan, target: str | int,
                 progress: Progress, known: dict[int, list] | None = None) -> dict[str, Any]:
        """One example attributed by each model of the plan (one result per model)."""
        actual = None
        if example.label is not None and 0 <= example.label < len(self.classes):
            actual = {"index": example.label, "label": self.classes[example.label]}
        results = []
        for model_index in plan.models:
            progress.check()
            predicted = (known or {}).get(model_index)
            results.append(self._result(ident, example, model_index, plan, target, actual, progress,
                                        predicted))
            progress.advance()
        first = results[0]
        return {"id": ident, "actual": actual, "results": results,
                **{k: first[k] for k in ("predicted", "target", "model", "method", "features")}}

    def _result(self, ident: int, example: Example, model_index: int, plan: Plan,
                target: str | int, actual: dict | None, progress: Progress,
                predicted: list | None = None) -> dict[str, Any]:
        started = time.perf_counter()
        model = self.models[model_index]
        example = example.on_device_of(model)
        if predicted is None:
            predicted = self._scores(model, example)
        if target == "label" and actual is not None:
            chosen = {"index": actual["index"], "label": actual["label"], "kind": "label"}
        elif isinstance(target, int):
            chosen = {"index": target, "label": self.classes[target], "kind": "class"}
        else:  # the prediction (also when a label was asked for but the example has none)
            top = predicted[0]
            chosen = {"index": top["index"], "label": top["label"], "kind": "predicted"}
        spec = plan.spec
        shapes = [tuple(t.shape[1:]) for t in example.transformed]
        kwargs = spec.parse_arguments(plan.arguments, shapes, self._kinds())
        used = {k: _jsonable(v) for k, v in kwargs.items()}
        if spec.takes_baselines():
            kwargs["baselines"] = example.baselines
        method = spec.build(model)
        try:
            with checked_forwards(progress):
                attrs = method.attribute(
                    example.transformed,
                    target=chosen["index"] if self.use_label_for_attr else None,
                    additional_forward_args=example.additional_args or None,
                    **kwargs,
                )
        except (ValueError, TypeError) as error:  # bad argument values for this input
            raise RequestError(f"{spec.id} failed: {error}") from error
        attrs = tuple(a.detach().cpu() for a in attrs)
        totals = torch.stack([a.to(torch.float64).sum() for a in attrs])
        norm = totals.abs().sum()
        shares = (totals / norm if norm > 0 else torch.zeros_like(totals)).tolist()
        features = [
            f.visualize(a, x, share)._asdict()
            for f, a, x, share in zip(self.features, attrs, example.inputs, shares)
        ]
        result = {
            "model": model_index,
            "model_name": self.model_names[model_index],
            "predicted": predicted,
            "target": chosen,
            "method": spec.id,
            "method_label": spec.label,
            "arguments": used,
            "features": features,
            "mass": float(sum(a.to(torch.float64).abs().sum() for a in attrs)),
            "seconds": round(time.perf_counter() - started, 4),
        }
        self._store.keep_export(ident, model_index, {
            "id": ident, "actual": actual,
            **{k: result[k] for k in ("model", "model_name", "predicted", "target", "method",
                                      "arguments")},
            "features": [
                {"name": f.name, "type": f.visualization_type(), "shape": list(a.shape[1:]),
                 "attribution": a[0].to(torch.float64).tolist(),
                 "input": x[0].to(torch.float64).tolist() if isinstance(x, Tensor) else None}
                for f, a, x in zip(self.features, attrs, example.transformed)
            ],
        })
        return result


def _model_names(models: list[Any], names: list[str] | None) -> list[str]:
    if names is not None:
        if (not isinstance(names, (list, tuple)) or len(names) != len(models)
                or not all(isinstance(n, str) and n for n in names)):
            raise ArgumentTypeError(f"`model_names` must be {len(models)} non-empty strings, one per model")
        if len(set(names)) != len(names):
            raise ArgumentValueError("`model_names` must be different from each other")
        return list(names)
    base = [type(m).__name__ for m in models]
    seen: dict[str, int] = {}
    out = []
    for name in base:
        seen[name] = seen.get(name, 0) + 1
        out.append(f"{name} #{seen[name]}" if base.count(name) > 1 else name)
    return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Tensor):  # a feature mask: say how it groups, not every entry
        return {"shape": list(value.shape[1:]), "groups": int(value.unique().numel())}
    return value


def _interactive() -> bool:
    """A REPL or notebook kernel, where the session (not the script's end) decides."""
    return hasattr(sys, "ps1") or bool(sys.flags.interactive) or "ipykernel" in sys.modules


class _Frame:
    """An iframe pointing at the served page; notebooks display it via ``_repr_html_``."""

    def __init__(self, url: str, height: int) -> None:
        self.url = url
        self.html = (
            f'<iframe src="{url}" width="100%" height="{int(height)}" '
            'style="border:1px solid #ccc" title="attribuo Insights"></iframe>'
        )

    def _repr_html_(self) -> str:
        return self.html


__all__ = ["AttributionVisualizer", "Batch", "METHODS"]
