"""Classifiers that separate concepts in activation space; their weights are the CAVs."""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from .._engine.errors import ArgumentValueError
from ..attr.perturbation.linear_models import SkLearnSGDClassifier, _sklearn_module


class Classifier(ABC):
    """What TCAV needs of a concept classifier.

    ``train_and_eval(dataloader, **kwargs)`` trains on ``(activations,
    concept ids)`` batches from ``dataloader`` and returns a dict of
    statistics (or None); ``weights()`` returns a ``[classes, features]``
    tensor whose rows follow ``classes()``, the concept id of each row.

    Example:
        >>> import torch
        >>> from attribuo.concept import Classifier
        >>> class MeanDifference(Classifier):
        ...     def __init__(self):
        ...         self.w, self.c = None, None
        ...     def train_and_eval(self, dataloader, **kwargs):
        ...         x, y = map(torch.cat, zip(*dataloader))
        ...         self.c = sorted(set(y.tolist()))
        ...         self.w = torch.stack([x[y == c].mean(0) - x.mean(0) for c in self.c])
        ...         return {}
        ...     def weights(self):
        ...         return self.w
        ...     def classes(self):
        ...         return self.c
        >>> clf = MeanDifference()
        >>> _ = clf.train_and_eval([(torch.tensor([[1.0], [3.0]]), torch.tensor([0, 1]))])
        >>> clf.weights().tolist(), clf.classes()
        ([[-1.0], [1.0]], [0, 1])
    """

    @abstractmethod
    def __init__(self) -> None:
        pass

    @abstractmethod
    def train_and_eval(self, dataloader: DataLoader, **kwargs: Any) -> dict | None:
        """Train on the ``(inputs, labels)`` batches of ``dataloader``; return statistics or None."""

    @abstractmethod
    def weights(self) -> Tensor:
        """The trained ``[classes, features]`` weights, rows in the order of :meth:`classes`."""

    @abstractmethod
    def classes(self) -> list[int]:
        """The label (concept id) of each row of :meth:`weights`."""


def train_test_split(
    x: Tensor, y: Tensor, test_split: float = 0.33
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Shuffle with Python's ``random`` and split: ``(x_train, x_test, y_train, y_test)``.

    The first ``int(test_split * n)`` shuffled examples form the test set.
    The permutation is the one ``random.shuffle`` gives a list of ``n``
    items, so seeding ``random`` reproduces Captum's split.
    """
    order = list(range(len(x)))
    random.shuffle(order)
    cut = int(test_split * len(order))
    test, train = torch.tensor(order[:cut], dtype=torch.long), torch.tensor(order[cut:], dtype=torch.long)
    return x[train], x[test], y[train], y[test]


def _fit_squared_hinge(
    x: Tensor, y: Tensor, classes: list[int], alpha: float, max_iter: int, tol: float
) -> tuple[Tensor, Tensor]:
    """Linear SVM (squared hinge + ``alpha/2 |w|^2``, one-vs-rest) by L-BFGS; deterministic.

    Used when scikit-learn is missing. Binary problems get one row (class
    ``classes[1]`` positive), like scikit-learn.
    """
    x = x.double()
    rows = 1 if len(classes) == 2 else len(classes)
    positive = classes[1:] if rows == 1 else classes
    signs = torch.stack([(y == c).double() * 2 - 1 for c in positive], dim=1)  # [n, rows]
    w = torch.zeros(x.shape[1], rows, dtype=x.dtype, requires_grad=True)
    b = torch.zeros(rows, dtype=x.dtype, requires_grad=True)
    optim = torch.optim.LBFGS([w, b], max_iter=max_iter, tolerance_grad=tol * 1e-3,
                              tolerance_change=1e-12, line_search_fn="strong_wolfe")

    def loss() -> Tensor:
        optim.zero_grad()
        margin = (1 - signs * (x @ w + b)).clamp_min(0)
        value = (margin**2).mean(0).sum() + 0.5 * alpha * (w**2).sum()
        value.backward()
        return value

    with torch.enable_grad():
        optim.step(loss)
    return w.detach().T.float(), b.detach().float()


class DefaultClassifier(Classifier):
    """TCAV's default classifier: a linear SVM trained on a random train split.

    ``train_and_eval`` keeps all activations in memory, shuffles them with
    Python's ``random``, holds out ``test_split_ratio`` of them, fits
    scikit-learn's ``SGDClassifier(alpha=0.01, max_iter=1000, tol=1e-3)``
    (as Captum does, so seeding ``random`` and ``numpy.random`` reproduces
    Captum's CAVs) and returns ``{"accs": test accuracy}``. Without
    scikit-learn a deterministic squared-hinge linear SVM fitted by L-BFGS
    is used instead (same kind of boundary, not the same numbers). For
    large concept sets write your own :class:`Classifier`.

    Example:
        >>> import torch
        >>> from attribuo.concept import DefaultClassifier
        >>> _ = torch.manual_seed(0)
        >>> x = torch.cat([torch.randn(20, 3) + 4, torch.randn(20, 3) - 4])
        >>> y = torch.tensor([0] * 20 + [1] * 20)
        >>> clf = DefaultClassifier()
        >>> clf.train_and_eval([(x, y)])["accs"].item()
        1.0
        >>> clf.weights().shape
        torch.Size([2, 3])
    """

    def __init__(self) -> None:
        self.lm = SkLearnSGDClassifier(alpha=0.01, max_iter=1000, tol=1e-3)
        self._weights: Tensor | None = None
        self._bias: Tensor | None = None
        self._classes: list[int] = []

    def train_and_eval(
        self, dataloader: DataLoader, test_split_ratio: float = 0.33, **kwargs: Any
    ) -> dict | None:
        """Fit on a shuffled train split; return ``{"accs": accuracy on the test split}``."""
        if not 0 <= test_split_ratio < 1:
            raise ArgumentValueError(f"`test_split_ratio` must be in [0, 1), got {test_split_ratio}")
        xs, ys = [], []
        for batch in dataloader:
            xs.append(batch[0])
            ys.append(batch[1])
        if not xs:
            raise ArgumentValueError("`dataloader` gave no batches to train the concept classifier on")
        x, y = torch.cat(xs), torch.cat(ys)
        device = x.device
        x_train, x_test, y_train, y_test = train_test_split(x.cpu(), y.cpu(), test_split_ratio)
        classes = sorted(set(y_train.tolist()))
        if len(classes) < 2:
            raise ArgumentValueError(
                "the concept classifier needs examples of at least two concepts in its train "
                f"split, got concept ids {classes}; give every concept more examples"
            )
        if _sklearn_module() is not None:
            self.lm.fit(DataLoader(TensorDataset(x_train, y_train), batch_size=len(x_train)))
            weights, bias = self.lm.representation(), self.lm.bias()
            classes = [int(c) for c in self.lm.classes()]
        else:
            weights, bias = _fit_squared_hinge(x_train, y_train, classes, 0.01, 1000, 1e-3)
        self._weights, self._bias, self._classes = weights.to(device), bias.to(device), classes
        return {"accs": self._accuracy(x_test.to(device), y_test.to(device))}

    def _accuracy(self, x: Tensor, y: Tensor) -> Tensor:
        if len(x) == 0:
            return torch.tensor(float("nan"))
        scores = x.to(self._weights.dtype) @ self._weights.T + self._bias
        labels = torch.tensor(self._classes, device=x.device)
        if scores.shape[1] == 1:  # binary: the one row scores the second class
            picked = labels[(scores[:, 0] > 0).long()]
        else:
            picked = labels[scores.argmax(1)]
        return (picked == y.long()).float().mean()

    def weights(self) -> Tensor:
        """``[classes, features]`` weights; a binary problem's one row ``w`` becomes ``[-w, w]``."""
        if self._weights is None:
            raise ArgumentValueError("the classifier has no weights yet; call `train_and_eval` first")
        if self._weights.shape[0] == 1:
            return torch.stack([-self._weights[0], self._weights[0]])
        return self._weights

    def classes(self) -> np.ndarray:
        """The concept id of each row of :meth:`weights` (sorted)."""
        return np.array(self._classes)
