"""AttributionVisualizer: models, classes, features and data behind the Insights page."""

from __future__ import annotations

import atexit
import sys
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .._engine.errors import ArgumentTypeError, ArgumentValueError
from .._engine.inputs import format_additional_args
from .features import BaseFeature
from .methods import METHODS, RequestError, describe_methods, find_method

_PREDICTIONS = ("all", "correct", "incorrect")
_MAX_EXAMPLES = 32  # per fetch: keeps one request to seconds, not minutes
_CACHE_SIZE = 512  # examples kept for re-attribution
_MAX_SCAN = 10_000  # batches scanned per fetch before giving up on a filter


class Batch:
    """A batch of examples for the visualizer (Captum's ``captum.insights.Batch``).

    Args:
        inputs: a tensor or a tuple of tensors, one per feature, dim 0 the examples.
        labels: 1-D tensor of true class indices (one per example), or None.
        additional_args: extra forward arguments, passed to the model after the inputs.

    Example:
        >>> import torch
        >>> b = Batch(torch.zeros(2, 1, 8, 8), torch.tensor([3, 5]))
        >>> b.labels.tolist()
        [3, 5]
    """

    def __init__(
        self,
        inputs: Tensor | tuple[Tensor, ...],
        labels: Tensor | None,
        additional_args: Any = None,
    ) -> None:
        self.inputs = inputs
        self.labels = labels
        self.additional_args = additional_args


@dataclass
class _Example:
    """One example kept between requests so that it can be attributed again."""

    inputs: tuple[Tensor, ...]  # raw, batch of 1
    transformed: tuple[Tensor, ...]  # what the model sees
    baselines: tuple[Tensor, ...]
    additional_args: tuple
    label: int | None


class AttributionVisualizer:
    """Explore a classifier's predictions and attributions in the browser.

    Args:
        models: one model or a list of models (the page picks one).
        classes: class names, in the order of the model's outputs.
        features: one :class:`BaseFeature` per model input.
        dataset: an iterable of :class:`Batch`; it is walked as the page asks
            for examples, and started again when it ends.
        score_func: applied to the model output to give class scores (e.g.
            softmax); None takes the output as the scores.
        use_label_for_attr: attribute to the predicted (or chosen) class;
            False passes no target (models with one output).

    Example:
        >>> import torch
        >>> from attribuo.insights import AttributionVisualizer, Batch
        >>> from attribuo.insights.features import GeneralFeature
        >>> model = torch.nn.Linear(2, 2)
        >>> vis = AttributionVisualizer(model, ["a", "b"], GeneralFeature("x", ["u", "v"]),
        ...                             [Batch(torch.rand(3, 2), torch.tensor([0, 1, 1]))])
        >>> out = vis.visualize({"method": "Saliency", "num_examples": 2})
        >>> len(out), out[0]["features"][0]["type"]
        (2, 'general')
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
    ) -> None:
        models = list(models) if isinstance(models, (list, tuple)) else [models]
        features = list(features) if isinstance(features, (list, tuple)) else [features]
        if not models or not all(callable(m) for m in models):
            raise ArgumentTypeError("`models` must be a model or a non-empty list of models")
        if not isinstance(classes, (list, tuple)) or not all(isinstance(c, str) for c in classes):
            raise ArgumentTypeError("`classes` must be a list of strings")
        if not features or not all(isinstance(f, BaseFeature) for f in features):
            raise ArgumentTypeError("`features` must be a BaseFeature or a list of them")
        if score_func is not None and not callable(score_func):
            raise ArgumentTypeError("`score_func` must be callable or None")
        self.models = models
        self.classes = list(classes)
        self.features = features
        self.dataset = dataset
        self.score_func = score_func
        self.use_label_for_attr = use_label_for_attr
        self._lock = threading.RLock()  # the server calls in from worker threads
        self._iter: Iterator[Batch] | None = None
        self._replay: list[Batch] = []  # batches of a one-shot iterator, replayed at its end
        self._pending: deque[_Example] = deque()  # rest of the current batch, shown next
        self._pulled = 0  # batches taken during the first pass over the dataset
        self._cycle: int | None = None  # batches in one pass, known once the first ends
        self._cache: OrderedDict[int, _Example] = OrderedDict()
        self._next_id = 0
        self._server: Any = None

    # ----- the page's two requests ---------------------------------------------------

    def get_insights_config(self) -> dict[str, Any]:
        """Classes, models, features and the methods (with argument specs) the page offers."""
        return {
            "classes": self.classes,
            "models": [type(m).__name__ for m in self.models],
            "features": [{"name": f.name, "type": f.visualization_type()} for f in self.features],
            "methods": describe_methods(),
            "selected_method": "IntegratedGradients",
            "max_examples": _MAX_EXAMPLES,
            "predictions": list(_PREDICTIONS),
        }

    def visualize(self, settings: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Fetch the next examples that pass the filters and attribute them.

        ``settings`` (all optional): ``model`` (index), ``method`` (id),
        ``arguments`` (dict), ``classes`` (names; keep examples predicted as
        one of them), ``prediction`` (``"all"``, ``"correct"``,
        ``"incorrect"``), ``num_examples`` (1 to 32).
        """
        s = _settings(settings, ("model", "method", "arguments", "classes", "prediction",
                                 "num_examples"))
        model_index = self._model_index(s.get("model", 0))
        spec = find_method(s.get("method", "IntegratedGradients"))
        arguments = s.get("arguments", {})
        spec.parse_arguments(arguments)  # reject bad arguments before any work
        wanted = self._class_filter(s.get("classes", []))
        prediction = s.get("prediction", "all")
        if prediction not in _PREDICTIONS:
            raise RequestError(f"`prediction` must be one of {list(_PREDICTIONS)}")
        count = s.get("num_examples", 4)
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= _MAX_EXAMPLES:
            raise RequestError(f"`num_examples` must be an integer from 1 to {_MAX_EXAMPLES}")
        with self._lock:
            model = self.models[model_index]
            found = self._find_examples(model, wanted, prediction, count)
            return [self._output(i, model_index, spec, arguments, None) for i in found]

    def attribute(self, request: dict[str, Any]) -> list[dict[str, Any]]:
        """Attribute examples already shown again, with another method, model or target.

        ``request``: ``examples`` (list of ``{"id": int, "target": int or null}``),
        ``model``, ``method``, ``arguments`` as for :meth:`visualize`.
        """
        s = _settings(request, ("examples", "model", "method", "arguments"))
        model_index = self._model_index(s.get("model", 0))
        spec = find_method(s.get("method", "IntegratedGradients"))
        arguments = s.get("arguments", {})
        spec.parse_arguments(arguments)
        items = s.get("examples")
        if not isinstance(items, list) or not 1 <= len(items) <= _MAX_EXAMPLES:
            raise RequestError(f"`examples` must be a list of 1 to {_MAX_EXAMPLES} items")
        wanted = []
        for item in items:
            if not isinstance(item, dict) or set(item) - {"id", "target"}:
                raise RequestError('each of `examples` must be {"id": int, "target": int|null}')
            ident, target = item.get("id"), item.get("target")
            if isinstance(ident, bool) or not isinstance(ident, int):
                raise RequestError("example `id` must be an integer")
            if target is not None and (
                isinstance(target, bool) or not isinstance(target, int)
                or not 0 <= target < len(self.classes)
            ):
                raise RequestError(f"`target` must be a class index from 0 to {len(self.classes) - 1}")
            wanted.append((ident, target))
        with self._lock:
            for ident, _ in wanted:
                if ident not in self._cache:
                    raise RequestError(f"unknown example id {ident}; fetch examples first")
            return [self._output(i, model_index, spec, arguments, t) for i, t in wanted]

    # ----- serving -------------------------------------------------------------------

    def serve(
        self,
        blocking: bool = False,
        debug: bool = False,
        port: int | None = None,
        bind_all: bool = False,
    ) -> int:
        """Start the web app and return its port (a free one when ``port`` is None).

        Binds 127.0.0.1 unless ``bind_all`` (then every interface). Non-blocking
        by default: the server runs in a background thread; ``blocking=True``
        serves until interrupted (Ctrl-C).
        """
        from .server import InsightsServer

        if self._server is not None and self._server.running:
            return self._server.port
        self._server = InsightsServer(self, port=port, bind_all=bind_all, debug=debug)
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

    def _model_index(self, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < len(self.models):
            raise RequestError(f"`model` must be an index from 0 to {len(self.models) - 1}")
        return value

    def _class_filter(self, names: Any) -> set[int]:
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise RequestError("`classes` must be a list of class names")
        unknown = [n for n in names if n not in self.classes]
        if unknown:
            raise RequestError(f"unknown class {unknown[0]!r}; classes are {self.classes}")
        return {self.classes.index(n) for n in names}

    def _next_batch(self) -> Batch | None:
        """The next batch, starting the dataset again at its end; None if it is empty."""
        if self._iter is None:
            self._iter = iter(self.dataset)
        one_shot = self._iter is self.dataset
        try:
            batch = next(self._iter)
        except StopIteration:
            if self._cycle is None:  # the first pass ended: now we know its length
                self._cycle = len(self._replay) if one_shot else self._pulled
            fresh = iter(self.dataset)
            self._iter = fresh if fresh is not self.dataset else iter(self._replay)
            batch = next(self._iter, None)
            if batch is None:
                return None
        if self._cycle is None:
            self._pulled += 1
            if one_shot and len(self._replay) < 64:
                self._replay.append(batch)  # a one-shot iterator cannot be restarted
        return batch

    def _find_examples(self, model: Any, wanted: set[int], prediction: str, count: int) -> list[int]:
        found: list[int] = []
        # each batch is looked at once per request: the leftover of the last one counts
        pulled = 1 if self._pending else 0
        while True:
            if not self._pending:
                if pulled >= min(self._cycle or _MAX_SCAN, _MAX_SCAN):
                    break  # every example was looked at: fewer match than asked for
                batch = self._next_batch()
                if batch is None:
                    break
                pulled += 1
                self._pending.extend(self._split(batch))
            example = self._pending.popleft()
            top = self._scores(model, example)[0]["index"]
            if wanted and top not in wanted:
                continue
            if prediction != "all" and example.label is not None:
                if (top == example.label) != (prediction == "correct"):
                    continue
            found.append(self._remember(example))
            if len(found) == count:
                return found
        return found

    def _split(self, batch: Batch) -> list[_Example]:
        if not isinstance(batch, Batch):
            raise ArgumentTypeError(f"`dataset` must yield Batch objects, got {type(batch).__name__}")
        inputs = batch.inputs if isinstance(batch.inputs, tuple) else (batch.inputs,)
        if len(inputs) != len(self.features):
            raise ArgumentValueError(
                f"a batch has {len(inputs)} input(s) but {len(self.features)} feature(s) were given"
            )
        n = inputs[0].shape[0]
        args = format_additional_args(batch.additional_args)
        labels = batch.labels
        examples = []
        for i in range(n):
            raw = tuple(t[i : i + 1] for t in inputs)
            transformed, baselines = [], []
            for feature, x in zip(self.features, raw):
                # transforms see one example without its batch dim, as in Captum
                x_t = x[0]
                for transform in feature.input_transforms:
                    x_t = transform(x_t)
                b = feature.baseline_transforms[0](x_t) if feature.baseline_transforms else None
                transformed.append(x_t.unsqueeze(0))
                baselines.append(torch.zeros_like(x_t).unsqueeze(0) if b is None else b.unsqueeze(0))
            ex_args = tuple(
                a[i : i + 1] if isinstance(a, Tensor) and a.dim() > 0 and a.shape[0] == n else a
                for a in args
            )
            label = None if labels is None else int(labels.reshape(-1)[i])
            examples.append(_Example(raw, tuple(transformed), tuple(baselines), ex_args, label))
        return examples

    def _remember(self, example: _Example) -> int:
        ident = self._next_id
        self._next_id += 1
        self._cache[ident] = example
        while len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)
        return ident

    def _scores(self, model: Any, example: _Example) -> list[dict[str, Any]]:
        """Top (up to 4) classes with their scores, best first."""
        example = _on_device(example, model)
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

    def _output(self, ident: int, model_index: int, spec: Any, arguments: dict,
                target: int | None) -> dict[str, Any]:
        model = self.models[model_index]
        example = _on_device(self._cache[ident], model)
        predicted = self._scores(model, example)
        if target is None:
            target = predicted[0]["index"]
        shapes = [tuple(t.shape[1:]) for t in example.transformed]
        kwargs = spec.parse_arguments(arguments, shapes)
        if spec.takes_baselines():
            kwargs["baselines"] = example.baselines
        method = spec.build(model)
        try:
            attrs = method.attribute(
                example.transformed,
                target=target if self.use_label_for_attr else None,
                additional_forward_args=example.additional_args or None,
                **kwargs,
            )
        except (ValueError, TypeError) as error:  # bad argument values for this input
            raise RequestError(f"{spec.id} failed: {error}") from error
        totals = torch.stack([a.detach().to(torch.float64).sum() for a in attrs])
        norm = totals.abs().sum()
        shares = (totals / norm if norm > 0 else torch.zeros_like(totals)).tolist()
        features = [
            f.visualize(a, x, share)._asdict()
            for f, a, x, share in zip(self.features, attrs, example.inputs, shares)
        ]
        actual = None
        if example.label is not None and 0 <= example.label < len(self.classes):
            actual = {"index": example.label, "label": self.classes[example.label]}
        return {
            "id": ident,
            "actual": actual,
            "predicted": predicted,
            "target": {"index": target, "label": self.classes[target]},
            "model": model_index,
            "method": spec.id,
            "features": features,
        }


def _interactive() -> bool:
    """A REPL or notebook kernel, where the session (not the script's end) decides."""
    return hasattr(sys, "ps1") or bool(sys.flags.interactive) or "ipykernel" in sys.modules


def _on_device(example: _Example, model: Any) -> _Example:
    """The example with its model-side tensors on the device of the model's parameters."""
    param = next(iter(model.parameters()), None) if isinstance(model, torch.nn.Module) else None
    if param is None or example.transformed[0].device == param.device:
        return example
    move = lambda t: t.to(param.device) if isinstance(t, Tensor) else t  # noqa: E731
    return _Example(example.inputs, tuple(map(move, example.transformed)),
                    tuple(map(move, example.baselines)), tuple(map(move, example.additional_args)),
                    example.label)


def _settings(value: Any, allowed: tuple[str, ...]) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RequestError("the request body must be a JSON object")
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        raise RequestError(f"unknown field {unknown[0]!r}; allowed: {list(allowed)}")
    return value


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
