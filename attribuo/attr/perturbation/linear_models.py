"""Interpretable (surrogate) models for Lime and KernelShap.

The same classes as ``captum._utils.models``: a :class:`Model` interface
(``fit(dataloader)``, ``representation()``), :class:`LinearModel` and its
scikit-learn and SGD-trained variants. The regressions Lime and KernelShap
use by default also offer ``fit_batch(x, y, weights)``, which fits many
independent problems (one per example) at once in closed form (least
squares, ridge) or by a batched coordinate descent (lasso), so a batch of
examples is explained without a Python loop over examples.

Example:
    >>> import torch
    >>> from torch.utils.data import DataLoader, TensorDataset
    >>> from attribuo.attr.perturbation.linear_models import SkLearnLinearRegression
    >>> x = torch.rand(50, 3)
    >>> y = x @ torch.tensor([1.0, -2.0, 0.5]) + 3
    >>> model = SkLearnLinearRegression()
    >>> _ = model.fit(DataLoader(TensorDataset(x, y), batch_size=50))
    >>> torch.allclose(model.representation(), torch.tensor([[1.0, -2.0, 0.5]]), atol=1e-4)
    True
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from functools import reduce
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from ..._engine.errors import ArgumentValueError
from .linear_solvers import lasso_batch, least_squares_batch

__all__ = [
    "Model",
    "LinearModel",
    "SGDLinearModel",
    "SGDLasso",
    "SGDRidge",
    "SGDLinearRegression",
    "SkLearnLinearModel",
    "SkLearnLasso",
    "SkLearnRidge",
    "SkLearnLinearRegression",
    "SkLearnLogisticRegression",
    "SkLearnSGDClassifier",
    "lasso_batch",
    "least_squares_batch",
]

# Captum's classes live in a package (captum._utils.models.linear_model...); a __path__
# lets those sub-paths import here too (attribuo._compat maps them to this module)
__path__: list[str] = []


class Model(ABC):
    """What Lime needs of an interpretable model: ``fit`` and ``representation``."""

    @abstractmethod
    def fit(self, train_data: DataLoader, **kwargs: Any) -> dict | None:
        """Fit to ``(x, y)`` or ``(x, y, sample_weight)`` batches of ``train_data``."""

    @abstractmethod
    def representation(self) -> Tensor:
        """The fitted model as a tensor (a linear model's weights, ``[outputs, features]``)."""

    @abstractmethod
    def __call__(self, x: Any) -> Any:
        """Predict."""


# ------------------------------------------------------------------- model classes
class LinearModel(nn.Module, Model):
    """A linear model ``y = W x + b`` (optionally after a norm), trained by ``train_fn``.

    ``train_fn(model, dataloader=..., construct_kwargs=..., **fit_kwargs)``
    builds the parameters with ``_construct_model_params`` and fits them.
    """

    SUPPORTED_NORMS: list[str | None] = [None, "batch_norm", "layer_norm"]

    def __init__(self, train_fn: Callable, **kwargs: Any) -> None:
        super().__init__()
        self.norm: nn.Module | None = None
        self.linear: nn.Linear | None = None
        self.train_fn = train_fn
        self.construct_kwargs = kwargs

    def _construct_model_params(
        self,
        in_features: int | None = None,
        out_features: int | None = None,
        norm_type: str | None = None,
        affine_norm: bool = False,
        bias: bool = True,
        weight_values: Tensor | None = None,
        bias_value: Tensor | None = None,
        classes: Tensor | None = None,
    ) -> None:
        if norm_type not in self.SUPPORTED_NORMS:
            raise ArgumentValueError(f"`norm_type` {norm_type!r} not supported; use {self.SUPPORTED_NORMS}")
        if weight_values is not None:
            in_features = weight_values.shape[-1]
            out_features = 1 if weight_values.dim() == 1 else weight_values.shape[0]
        if in_features is None or out_features is None:
            raise ArgumentValueError("give `in_features` and `out_features`, or `weight_values`")
        if norm_type == "batch_norm":
            self.norm = nn.BatchNorm1d(in_features, eps=1e-8, affine=affine_norm)
        elif norm_type == "layer_norm":
            self.norm = nn.LayerNorm(in_features, eps=1e-8, elementwise_affine=affine_norm)
        else:
            self.norm = None
        # a randomly initialised layer even when the values come next: Captum does the same,
        # and the draws it takes keep seeded runs (e.g. Lime then LimeBase) on Captum's numbers
        self.linear = nn.Linear(in_features, out_features, bias=bias)
        if weight_values is not None:
            self.linear.weight.data = weight_values.reshape(out_features, in_features)
        if bias_value is not None:
            if not bias:
                raise ArgumentValueError("`bias_value` given but `bias` is False")
            self.linear.bias.data = bias_value
        self.linear.classes = classes

    def fit(self, train_data: DataLoader, **kwargs: Any) -> dict:
        """Fit with the model's ``train_fn``."""
        return self.train_fn(self, dataloader=train_data, construct_kwargs=self.construct_kwargs, **kwargs)

    def forward(self, x: Tensor) -> Tensor:
        if self.linear is None:
            raise RuntimeError("the model has not been fitted")
        if self.norm is not None:
            x = self.norm(x)
        return self.linear(x)

    def representation(self) -> Tensor:
        """The weights, ``[out_features, in_features]``."""
        if self.linear is None:
            raise RuntimeError("the model has not been fitted")
        return self.linear.weight.detach()

    def bias(self) -> Tensor | None:
        if self.linear is None or self.linear.bias is None:
            return None
        return self.linear.bias.detach()

    def classes(self) -> Tensor | None:
        if self.linear is None or getattr(self.linear, "classes", None) is None:
            return None
        return self.linear.classes.detach()

    # batched fitting: subclasses with a closed form / batched solver override
    fit_batch: Callable[..., Tensor] | None = None

    def _store(self, coef: Tensor, intercept: Tensor) -> None:
        # batched fits: the caller (Lime) draws Captum's random numbers itself, so the
        # layer is built without the random initialisation _construct_model_params does
        weight = coef.reshape(1, -1).float()
        self.norm = None
        self.linear = nn.utils.skip_init(nn.Linear, weight.shape[1], 1, bias=True)
        self.linear.weight.data = weight
        self.linear.bias.data = intercept.reshape(1).float()
        self.linear.classes = None


def _collect(dataloader: DataLoader) -> tuple[Tensor, Tensor, Tensor | None]:
    xs, ys, ws = [], [], []
    for batch in dataloader:
        if len(batch) == 3:
            x, y, w = batch
            ws.append(w)
        else:
            x, y = batch
        xs.append(x)
        ys.append(y)
    return torch.cat(xs), torch.cat(ys), (torch.cat(ws) if ws else None)


def _sklearn_module():
    try:
        import sklearn
        import sklearn.linear_model  # noqa: F401
    except ImportError:
        return None
    return sklearn


def sklearn_train_linear_model(
    model: LinearModel,
    dataloader: DataLoader,
    construct_kwargs: dict[str, Any],
    sklearn_trainer: str = "linear_model.Lasso",
    norm_input: bool = False,
    **fit_kwargs: Any,
) -> dict[str, float]:
    """Fit ``model`` with the scikit-learn estimator named ``sklearn_trainer``."""
    sklearn = _sklearn_module()
    if sklearn is None:
        raise ImportError(f"{type(model).__name__} needs scikit-learn (pip install scikit-learn)")
    x, y, w = _collect(dataloader)
    x, y = x.cpu().numpy(), y.cpu().numpy()
    w = None if w is None else w.cpu().numpy().reshape(-1)
    if norm_input:
        mean, std = x.mean(0), x.std(0)
        x = (x - mean) / std
    estimator_cls = reduce(getattr, sklearn_trainer.split("."), sklearn)
    estimator = estimator_cls(**construct_kwargs)
    start = time.time()
    estimator.fit(x, y, sample_weight=w, **fit_kwargs)
    took = time.time() - start
    coef = torch.as_tensor(estimator.coef_, dtype=torch.float32)
    outputs = coef.shape[0] if coef.dim() > 1 else 1
    model._construct_model_params(
        norm_type=None,
        weight_values=coef.reshape(outputs, -1),
        bias_value=torch.as_tensor(estimator.intercept_, dtype=torch.float32).reshape(-1),
        classes=torch.as_tensor(estimator.classes_) if hasattr(estimator, "classes_") else None,
    )
    return {"train_time": took}


class SkLearnLinearModel(LinearModel):
    """A linear model fitted by a scikit-learn estimator (``sklearn_module``, e.g. ``"linear_model.Ridge"``)."""

    def __init__(self, sklearn_module: str, **kwargs: Any) -> None:
        super().__init__(train_fn=sklearn_train_linear_model, **kwargs)
        self.sklearn_module = sklearn_module

    def fit(self, train_data: DataLoader, **kwargs: Any) -> dict:
        return super().fit(train_data, sklearn_trainer=self.sklearn_module, **kwargs)


class _BatchFitFallback(SkLearnLinearModel):
    """``fit`` falls back on the model's own ``fit_batch`` when scikit-learn is not installed."""

    def fit(self, train_data: DataLoader, **kwargs: Any) -> dict:
        if _sklearn_module() is not None:
            return super().fit(train_data, **kwargs)
        x, y, w = _collect(train_data)
        self.fit_batch(x.unsqueeze(0), y.reshape(1, -1), None if w is None else w.reshape(1, -1))
        return {}


class SkLearnLasso(_BatchFitFallback):
    """Lasso (``alpha`` as in ``sklearn.linear_model.Lasso``); Lime's default model.

    ``fit_batch`` fits many problems together by coordinate descent (no
    scikit-learn needed); ``fit`` uses scikit-learn when installed.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(sklearn_module="linear_model.Lasso", **kwargs)

    def fit_batch(self, x: Tensor, y: Tensor, weights: Tensor | None = None) -> Tensor:
        """Coefficients ``[B, F]`` of ``B`` independent weighted lasso fits."""
        kw = self.construct_kwargs
        coef, intercept = lasso_batch(
            x, y, weights, alpha=float(kw.get("alpha", 1.0)),
            fit_intercept=kw.get("fit_intercept", True), max_iter=int(kw.get("max_iter", 1000)),
        )
        self._store(coef[-1], intercept[-1])
        return coef


class SkLearnLinearRegression(_BatchFitFallback):
    """Ordinary / weighted least squares (KernelShap's model); ``fit_batch`` in closed form."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(sklearn_module="linear_model.LinearRegression", **kwargs)

    def fit_batch(self, x: Tensor, y: Tensor, weights: Tensor | None = None) -> Tensor:
        """Coefficients ``[B, F]`` of ``B`` independent weighted least-squares fits."""
        coef, intercept = least_squares_batch(
            x, y, weights, fit_intercept=self.construct_kwargs.get("fit_intercept", True)
        )
        self._store(coef[-1], intercept[-1])
        return coef


class SkLearnRidge(SkLearnLinearModel):
    """Ridge regression (``alpha`` as in ``sklearn.linear_model.Ridge``); ``fit_batch`` in closed form."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(sklearn_module="linear_model.Ridge", **kwargs)

    def fit_batch(self, x: Tensor, y: Tensor, weights: Tensor | None = None) -> Tensor:
        """Coefficients ``[B, F]`` of ``B`` independent weighted ridge fits."""
        w = torch.ones_like(y) if weights is None else weights
        coef, intercept = least_squares_batch(
            x, y, w, fit_intercept=self.construct_kwargs.get("fit_intercept", True),
            ridge=float(self.construct_kwargs.get("alpha", 1.0)),
        )
        self._store(coef[-1], intercept[-1])
        return coef


class SkLearnLogisticRegression(SkLearnLinearModel):
    """``sklearn.linear_model.LogisticRegression`` as an interpretable model."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(sklearn_module="linear_model.LogisticRegression", **kwargs)


class SkLearnSGDClassifier(SkLearnLinearModel):
    """``sklearn.linear_model.SGDClassifier`` as an interpretable model."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(sklearn_module="linear_model.SGDClassifier", **kwargs)


def sgd_train_linear_model(
    model: LinearModel,
    dataloader: DataLoader,
    construct_kwargs: dict[str, Any],
    max_epoch: int = 100,
    initial_lr: float = 0.01,
    alpha: float = 1.0,
    reg_term: int | None = 1,
    patience: int = 10,
    threshold: float = 1e-4,
    init_scheme: str = "zeros",
    **_: Any,
) -> dict[str, float]:
    """Fit ``model`` by SGD on ``1/2 weighted MSE + alpha * |W|_reg_term``.

    Stops after ``max_epoch`` passes or when the epoch loss has not improved
    by ``threshold`` for ``patience`` epochs.
    """
    first = next(iter(dataloader))
    x0, y0 = first[0], first[1]
    model._construct_model_params(
        in_features=x0.shape[1], out_features=y0.shape[1] if y0.dim() == 2 else 1, **construct_kwargs
    )
    assert model.linear is not None
    with torch.no_grad():
        if init_scheme == "xavier":
            nn.init.xavier_uniform_(model.linear.weight)
        else:
            model.linear.weight.zero_()
        if model.linear.bias is not None:
            model.linear.bias.zero_()
    model.train()
    optim = torch.optim.SGD(model.parameters(), lr=initial_lr)
    best, stale, epoch = float("inf"), 0, 0
    start = time.time()
    with torch.enable_grad():
        for epoch in range(max_epoch):  # noqa: B007
            total = 0.0
            for batch in dataloader:
                x, y = batch[0], batch[1].reshape(batch[0].shape[0], -1)
                w = batch[2].reshape(x.shape[0], -1) if len(batch) == 3 else None
                err = (model(x) - y) ** 2
                loss = (err.mean() if w is None else (w / w.sum() * err).sum()) / 2
                if reg_term is not None:
                    loss = loss + alpha * torch.norm(model.linear.weight, p=reg_term)
                optim.zero_grad()
                loss.backward()
                optim.step()
                total += float(loss)
            if total < best - threshold:
                best, stale = total, 0
            else:
                stale += 1
                if stale >= patience:
                    break
    model.eval()
    return {"train_time": time.time() - start, "train_loss": best, "train_epoch": epoch}


class SGDLinearModel(LinearModel):
    """A linear model trained by SGD in PyTorch (no scikit-learn)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(train_fn=sgd_train_linear_model, **kwargs)


class SGDLasso(SGDLinearModel):
    """SGD-trained linear model with an L1 penalty."""

    def fit(self, train_data: DataLoader, **kwargs: Any) -> dict:
        return super().fit(train_data, reg_term=1, **kwargs)


class SGDRidge(SGDLinearModel):
    """SGD-trained linear model with an L2 penalty."""

    def fit(self, train_data: DataLoader, **kwargs: Any) -> dict:
        return super().fit(train_data, reg_term=2, **kwargs)


class SGDLinearRegression(SGDLinearModel):
    """SGD-trained linear model without a penalty."""

    def fit(self, train_data: DataLoader, **kwargs: Any) -> dict:
        return super().fit(train_data, reg_term=None, **kwargs)
