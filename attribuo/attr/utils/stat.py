"""Running statistics for :class:`~attribuo.attr.Summarizer` (Captum's ``Stat`` family).

A statistic sees one tensor at a time (``update``) and reports its current
value (``get``). Statistics may depend on others (``Var`` on ``MSE`` and
``Count``); a summarizer creates the dependencies, updates them first and
shares them, so ``[Mean(), Var(), StdDev()]`` keeps one running mean.
Mean and variance use Welford's update, which stays accurate when values
are large and close together.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import torch
from torch import Tensor

if TYPE_CHECKING:
    from .summarizer import SummarizerSingleTensor

StatValue = Tensor | int | float
_S = TypeVar("_S", bound="Stat")


class Stat:
    """A statistic updated one tensor at a time.

    Two stats are equal (and hash alike) when they have the same class and
    parameters, so a summarizer can share one instance between the stats
    that need it. ``name`` is the key of the value in a summary.

    Example:
        >>> import torch
        >>> from attribuo.attr import Summarizer, Max
        >>> s = Summarizer([Max()])
        >>> s.update(torch.tensor([1.0, 5.0])); s.update(torch.tensor([3.0, 2.0]))
        >>> s.summary["max"].tolist()
        [3.0, 5.0]
    """

    def __init__(self, name: str | None = None, **kwargs: Any) -> None:
        self.params: dict[str, Any] = kwargs
        self._name = name
        self._other_stats: SummarizerSingleTensor | None = None

    def dependencies(self) -> list[Stat]:
        """Stats this one reads; they are updated before it."""
        return []

    def init(self) -> None:
        """Called once the summarizer holds every dependency (look them up here)."""

    def _get_stat(self, stat: _S) -> _S | None:
        if self._other_stats is None:
            raise RuntimeError(f"{type(self).__name__} is not attached to a summarizer")
        return self._other_stats.get(stat)

    def update(self, x: Tensor) -> None:
        raise NotImplementedError

    def get(self) -> StatValue | None:
        raise NotImplementedError

    def __hash__(self) -> int:
        return hash((type(self), frozenset(self.params.items())))

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Stat)
            and type(self) is type(other)
            and frozenset(self.params.items()) == frozenset(other.params.items())
        )

    def __ne__(self, other: object) -> bool:
        return not self == other

    @property
    def name(self) -> str:
        """Key in a summary: the given name, else the lower-case class name (+ params)."""
        if self._name is not None:
            return self._name
        base = type(self).__name__.lower()
        return f"{base}({self.params})" if self.params else base

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class Count(Stat):
    """Number of updates so far (None before the first).

    Example:
        >>> from attribuo.attr import Summarizer, Count
        >>> s = Summarizer([Count()]); s.update(1.0); s.update(2.0)
        >>> s.summary["count"]
        2
    """

    def __init__(self, name: str | None = None) -> None:
        super().__init__(name=name)
        self.n: int | None = None

    def update(self, x: Tensor) -> None:
        self.n = (self.n or 0) + 1

    def get(self) -> int | None:
        return self.n


class Mean(Stat):
    """Running element-wise mean (integer inputs give float64).

    Example:
        >>> import torch
        >>> from attribuo.attr import Summarizer, Mean
        >>> s = Summarizer([Mean()]); s.update(torch.tensor(1.0)); s.update(torch.tensor(2.0))
        >>> float(s.summary["mean"])
        1.5
    """

    def __init__(self, name: str | None = None) -> None:
        super().__init__(name=name)
        self.rolling_mean: Tensor | None = None
        self.n: Count | None = None

    def dependencies(self) -> list[Stat]:
        return [Count()]

    def init(self) -> None:
        self.n = self._get_stat(Count())

    def update(self, x: Tensor) -> None:
        if self.rolling_mean is None:
            self.rolling_mean = x.clone() if x.is_floating_point() else x.double()
            return
        count = self.n.get() if self.n is not None else None
        self.rolling_mean = self.rolling_mean + (x - self.rolling_mean) / count

    def get(self) -> Tensor | None:
        return self.rolling_mean


class MSE(Stat):
    """Sum of squared deviations from the mean, ``sum_i (x_i - mean)^2`` (Welford's M2).

    Example:
        >>> import torch
        >>> from attribuo.attr import Summarizer, MSE
        >>> s = Summarizer([MSE()])
        >>> for v in (1.0, 2.0, 3.0): s.update(torch.tensor(v))
        >>> float(s.summary["mse"])
        2.0
    """

    def __init__(self, name: str | None = None) -> None:
        super().__init__(name=name)
        self.prev_mean: Tensor | None = None
        self.mse: Tensor | None = None
        self.mean: Mean | None = None

    def dependencies(self) -> list[Stat]:
        return [Mean()]

    def init(self) -> None:
        self.mean = self._get_stat(Mean())

    def update(self, x: Tensor) -> None:
        # the mean has already taken x in; prev_mean is the one before it
        mean = self.mean.get() if self.mean is not None else None
        if mean is None:
            return
        if self.prev_mean is not None:
            term = (x - self.prev_mean) * (x - mean)
            self.mse = term if self.mse is None else self.mse + term
        self.prev_mean = mean.clone()

    def get(self) -> Tensor | None:
        if self.mse is None and self.prev_mean is not None:
            return torch.zeros_like(self.prev_mean)  # one value seen: no spread yet
        return self.mse


class Var(Stat):
    """Variance ``MSE / (n - order)``: ``order=0`` population, ``order=1`` sample variance.

    Returned in float64; zeros while ``n <= order``.

    Example:
        >>> import torch
        >>> from attribuo.attr import Summarizer, Var
        >>> s = Summarizer([Var(order=1)])
        >>> for v in (1.0, 2.0, 3.0): s.update(torch.tensor(v))
        >>> float(s.summary["sample_variance"])
        1.0
    """

    def __init__(self, name: str | None = None, order: int = 0) -> None:
        if name is None:
            name = {0: "variance", 1: "sample_variance"}.get(order, f"variance({order})")
        super().__init__(name=name, order=order)
        self.order = order
        self.mse_stat: MSE | None = None
        self.n_stat: Count | None = None

    def dependencies(self) -> list[Stat]:
        return [MSE(), Count()]

    def init(self) -> None:
        self.mse_stat = self._get_stat(MSE())
        self.n_stat = self._get_stat(Count())

    def update(self, x: Tensor) -> None:
        pass  # derived from MSE and Count

    def get(self) -> Tensor | None:
        mse = self.mse_stat.get() if self.mse_stat is not None else None
        if mse is None:
            return None
        n = self.n_stat.get() if self.n_stat is not None else None
        if n is None or n <= self.order:
            return torch.zeros_like(mse)
        return mse.to(torch.float64) / (n - self.order)


class StdDev(Stat):
    """Standard deviation, the square root of :class:`Var` of the same ``order``.

    Example:
        >>> import torch
        >>> from attribuo.attr import Summarizer, StdDev
        >>> s = Summarizer([StdDev()])
        >>> for v in (1.0, 3.0): s.update(torch.tensor(v))
        >>> float(s.summary["std_dev"])
        1.0
    """

    def __init__(self, name: str | None = None, order: int = 0) -> None:
        if name is None:
            name = {0: "std_dev", 1: "sample_std_dev"}.get(order, f"std_dev({order})")
        super().__init__(name=name, order=order)
        self.order = order
        self.var_stat: Var | None = None

    def dependencies(self) -> list[Stat]:
        return [Var(order=self.order)]

    def init(self) -> None:
        self.var_stat = self._get_stat(Var(order=self.order))

    def update(self, x: Tensor) -> None:
        pass  # derived from Var

    def get(self) -> Tensor | None:
        var = self.var_stat.get() if self.var_stat is not None else None
        return None if var is None else var.sqrt()


class GeneralAccumFn(Stat):
    """Fold ``result = fn(result, x)`` over the updates (first update: ``x`` itself).

    Example:
        >>> import torch
        >>> from attribuo.attr import Summarizer
        >>> from attribuo.attr.utils.stat import GeneralAccumFn
        >>> s = Summarizer([GeneralAccumFn(torch.mul, name="product")])
        >>> for v in (2.0, 3.0): s.update(torch.tensor(v))
        >>> float(s.summary["product"])
        6.0
    """

    def __init__(self, fn: Callable[[Tensor, Tensor], Tensor], name: str | None = None) -> None:
        super().__init__(name=name)
        self.result: Tensor | None = None
        self.fn = fn

    def update(self, x: Tensor) -> None:
        self.result = x if self.result is None else self.fn(self.result, x)

    def get(self) -> Tensor | None:
        return self.result


class Min(GeneralAccumFn):
    """Element-wise running minimum (``min_fn`` may replace ``torch.min``)."""

    def __init__(self, name: str | None = None, min_fn: Callable[[Tensor, Tensor], Tensor] = torch.min) -> None:
        super().__init__(name=name, fn=min_fn)


class Max(GeneralAccumFn):
    """Element-wise running maximum (``max_fn`` may replace ``torch.max``)."""

    def __init__(self, name: str | None = None, max_fn: Callable[[Tensor, Tensor], Tensor] = torch.max) -> None:
        super().__init__(name=name, fn=max_fn)


class Sum(GeneralAccumFn):
    """Element-wise running sum (``add_fn`` may replace ``torch.add``)."""

    def __init__(self, name: str | None = None, add_fn: Callable[[Tensor, Tensor], Tensor] = torch.add) -> None:
        super().__init__(name=name, fn=add_fn)


def CommonStats() -> list[Stat]:  # noqa: N802 -- Captum's name
    """Mean, sample variance, sample standard deviation, min and max.

    Example:
        >>> from attribuo.attr import CommonStats
        >>> [s.name for s in CommonStats()]
        ['mean', 'sample_variance', 'sample_std_dev', 'min', 'max']
    """
    return [Mean(), Var(order=1), StdDev(order=1), Min(), Max()]
