"""Summaries of attributions over many batches: Summarizer and ClassSummarizer.

Feed tensors (or tuples of tensors, one summary per position) one at a time
and read running statistics (see :mod:`attribuo.attr.utils.stat`) at any point,
without keeping the tensors.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from typing import Any, Generic, TypeVar

import torch
from torch import Tensor

from ..._engine.errors import ArgumentValueError
from .stat import Stat, StatValue

Summary = dict[str, StatValue | None]
KeyType = TypeVar("KeyType")


def _update_order(stats: list[Stat]) -> tuple[list[Stat], list[int]]:
    """All stats needed by ``stats`` (dependencies first) and the positions of ``stats``.

    Equal stats are one; the caller's instance wins over an implied one, so
    a custom ``name`` given to e.g. ``Mean(name="avg")`` is kept.
    """
    preferred: dict[Stat, Stat] = {}
    for s in stats:
        preferred.setdefault(s, s)
    ordered: list[Stat] = []
    placed: set[Stat] = set()

    def place(s: Stat) -> None:
        if s in placed:
            return
        for dep in s.dependencies():
            place(preferred.get(dep, dep))
        placed.add(s)
        ordered.append(s)

    for s in preferred.values():
        place(s)
    index = {s: i for i, s in enumerate(ordered)}
    return ordered, [index[s] for s in preferred]


class SummarizerSingleTensor:
    """Running statistics of one stream of tensors.

    ``stats`` must be in update order (dependencies first); ``summary`` shows
    those at ``summary_stats_indices``. Prefer :class:`Summarizer`, which
    works the order out.

    Example:
        >>> import torch
        >>> from attribuo.attr import Count, Mean, SummarizerSingleTensor
        >>> s = SummarizerSingleTensor([Count(), Mean()], [1])
        >>> s.update(torch.tensor(2.0)); s.update(torch.tensor(4.0))
        >>> float(s.summary["mean"])
        3.0
    """

    def __init__(self, stats: list[Stat], summary_stats_indices: list[int]) -> None:
        self._stats = stats
        self._stat_to_stat = {s: s for s in stats}
        self._summary_stats = [stats[i] for i in summary_stats_indices]
        for s in stats:
            s._other_stats = self
            s.init()

    def update(self, x: Tensor) -> None:
        """Feed one tensor to every statistic."""
        for s in self._stats:
            s.update(x)

    def get(self, stat: Stat) -> Stat | None:
        """This summarizer's instance equal to ``stat`` (same class and parameters), or None."""
        return self._stat_to_stat.get(stat)

    @property
    def summary(self) -> Summary:
        """``{stat.name: current value}`` of the summary stats."""
        return {s.name: s.get() for s in self._summary_stats}


class Summarizer:
    """Running statistics of attributions, one summary per input position.

    Example:
        >>> import torch
        >>> from attribuo.attr import Summarizer, Mean, Var
        >>> s = Summarizer([Mean(), Var()])
        >>> for x in (torch.tensor([1.0, 2.0]), torch.tensor([3.0, 2.0])):
        ...     s.update(x)
        >>> s.summary["mean"].tolist(), s.summary["variance"].tolist()
        ([2.0, 2.0], [1.0, 0.0])
    """

    def __init__(self, stats: list[Stat]) -> None:
        if isinstance(stats, Stat):
            raise ArgumentValueError("`stats` must be a list of Stat objects, e.g. [Mean(), Var()]")
        self._summarizers: list[SummarizerSingleTensor] = []
        self._is_inputs_tuple: bool | None = None
        self._stats, self._summary_stats_indicies = _update_order(list(stats))

    def _copy_stats(self) -> list[Stat]:
        return copy.deepcopy(self._stats)

    def update(self, x: float | Tensor | tuple[float | Tensor, ...]) -> None:
        """Add one tensor (or one tensor per position of a tuple) to the summaries."""
        is_tuple = isinstance(x, tuple)
        if self._is_inputs_tuple is None:
            self._is_inputs_tuple = is_tuple
        elif self._is_inputs_tuple != is_tuple:
            raise ArgumentValueError(
                "`x` must keep its form: this summarizer was fed "
                f"{'tuples' if self._is_inputs_tuple else 'single tensors'} before"
            )
        values = x if is_tuple else (x,)
        for i, value in enumerate(values):
            if i >= len(self._summarizers):
                self._summarizers.append(
                    SummarizerSingleTensor(self._copy_stats(), self._summary_stats_indicies)
                )
            if not isinstance(value, Tensor):
                value = torch.tensor(value, dtype=torch.float)
            self._summarizers[i].update(value)

    @property
    def summary(self) -> Summary | list[Summary] | None:
        """``{name: value}`` (a list of them for tuple inputs); None before any update."""
        if not self._summarizers:
            return None
        out = [s.summary for s in self._summarizers]
        return out if self._is_inputs_tuple else out[0]


def _label_key(label: Any) -> Any:
    # a 0-dim tensor label becomes its Python value, so equal labels share a summary
    return label.item() if isinstance(label, Tensor) and label.dim() == 0 else label


class ClassSummarizer(Summarizer, Generic[KeyType]):
    """A :class:`Summarizer` that also keeps one summary per class label.

    ``update(x, labels)`` splits the batch ``x`` (dim 0) by ``labels`` (one
    label for all, or one per example); ``summary`` covers every example and
    ``class_summaries`` maps each label to its own summary.

    Example:
        >>> import torch
        >>> from attribuo.attr import ClassSummarizer, Mean
        >>> s = ClassSummarizer([Mean()])
        >>> s.update(torch.tensor([[1.0], [3.0], [5.0]]), labels=["a", "b", "a"])
        >>> s.class_summaries["a"][0]["mean"].tolist()
        [3.0]
    """

    def __init__(self, stats: list[Stat]) -> None:
        super().__init__(stats)
        self.summaries: dict[KeyType, Summarizer] = defaultdict(lambda: Summarizer(stats=stats))

    def update(self, x: Tensor | tuple[Tensor, ...], labels: Any = None) -> None:  # type: ignore[override]
        """Add a batch; with ``labels`` each example also goes to its class's summary."""
        if labels is None:
            super().update(x)
            return
        xs = x if isinstance(x, tuple) else (x,)
        is_seq = isinstance(labels, list) or (isinstance(labels, Tensor) and labels.dim() > 0)
        per_example = is_seq and len(labels) > 1
        batch = xs[0].shape[0]
        if per_example:
            for i, t in enumerate(xs):
                if t.shape[0] != len(labels):
                    raise ArgumentValueError(
                        f"`labels` has {len(labels)} entries but `x[{i}]` has batch size "
                        f"{t.shape[0]}; give one label, or one per example"
                    )
        single = labels[0] if is_seq else labels
        for i in range(batch):
            label = _label_key(labels[i] if per_example else single)
            self.summaries[label].update(tuple(t[i] for t in xs))
            super().update(tuple(t[i].clone() for t in xs))

    @property
    def class_summaries(self) -> dict[KeyType, Summary | list[Summary] | None]:
        """``{label: summary}`` for every label seen."""
        return {key: value.summary for key, value in self.summaries.items()}
