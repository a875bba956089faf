"""The examples behind the Insights page: the dataset walked batch by batch, and a cache.

Examples the page has seen are kept (up to a bound) so that they can be
attributed again with another method, model or target; the last raw
attributions are kept for export. Everything here is guarded by one lock:
the server calls in from several worker threads.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .._engine.errors import ArgumentTypeError, ArgumentValueError
from .._engine.inputs import format_additional_args

CACHE_SIZE = 512  # examples kept for re-attribution
EXPORT_SIZE = 64  # (example, model) attributions kept for export
MAX_SCAN = 10_000  # batches scanned per fetch before giving up on a filter


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
class Example:
    """One example kept between requests so that it can be attributed again."""

    inputs: tuple[Tensor, ...]  # raw, batch of 1
    transformed: tuple[Tensor, ...]  # what the model sees
    baselines: tuple[Tensor, ...]
    additional_args: tuple
    label: int | None

    def on_device_of(self, model: Any) -> Example:
        """This example with its model-side tensors on the device of ``model``'s parameters."""
        param = next(iter(model.parameters()), None) if isinstance(model, torch.nn.Module) else None
        if param is None or self.transformed[0].device == param.device:
            return self
        move = lambda t: t.to(param.device) if isinstance(t, Tensor) else t  # noqa: E731
        return Example(self.inputs, tuple(map(move, self.transformed)),
                       tuple(map(move, self.baselines)), tuple(map(move, self.additional_args)),
                       self.label)


class ExampleStore:
    """Walks ``dataset`` on demand (restarting it at its end) and remembers what it handed out.

    Example:
        >>> import torch
        >>> from attribuo.insights.features import GeneralFeature
        >>> store = ExampleStore([Batch(torch.rand(3, 2), torch.tensor([0, 1, 1]))],
        ...                      [GeneralFeature("x", ["u", "v"])])
        >>> ident = store.remember(store.take())
        >>> store.get(ident).label
        0
    """

    def __init__(self, dataset: Iterable[Batch], features: list[Any]) -> None:
        self.dataset = dataset
        self.features = features
        self.lock = threading.RLock()
        self._iter: Iterator[Batch] | None = None
        self._replay: list[Batch] = []  # batches of a one-shot iterator, replayed at its end
        self._pending: deque[Example] = deque()  # rest of the current batch, shown next
        self._pulled = 0  # batches taken during the first pass over the dataset
        self._cycle: int | None = None  # batches in one pass, known once the first ends
        self._cache: OrderedDict[int, Example] = OrderedDict()
        self._exports: OrderedDict[tuple[int, int], dict[str, Any]] = OrderedDict()
        self._next_id = 0
        self.shapes: list[tuple[int, ...]] | None = None  # of the model inputs, once one is seen

    def scan(self) -> Iterator[Example]:
        """Examples not yet shown, each batch visited at most once per call (hold ``lock``)."""
        # the leftover of the last batch counts as one visited batch
        pulled = 1 if self._pending else 0
        while True:
            if not self._pending:
                if pulled >= min(self._cycle or MAX_SCAN, MAX_SCAN):
                    return  # every example was looked at
                batch = self._next_batch()
                if batch is None:
                    return
                pulled += 1
                self._pending.extend(self._split(batch))
            yield self._pending.popleft()

    def take(self) -> Example | None:
        """The next example (for tests and simple callers)."""
        with self.lock:
            return next(self.scan(), None)

    def remember(self, example: Example) -> int:
        with self.lock:
            ident = self._next_id
            self._next_id += 1
            self._cache[ident] = example
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
            return ident

    def get(self, ident: int) -> Example | None:
        with self.lock:
            return self._cache.get(ident)

    def keep_export(self, ident: int, model: int, record: dict[str, Any]) -> None:
        with self.lock:
            self._exports[(ident, model)] = record
            self._exports.move_to_end((ident, model))
            while len(self._exports) > EXPORT_SIZE:
                self._exports.popitem(last=False)

    def export(self, ident: int, model: int) -> dict[str, Any] | None:
        with self.lock:
            return self._exports.get((ident, model))

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

    def _split(self, batch: Batch) -> list[Example]:
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
            examples.append(Example(raw, tuple(transformed), tuple(baselines), ex_args, label))
        if examples and self.shapes is None:
            self.shapes = [tuple(t.shape[1:]) for t in examples[0].transformed]
        return examples
