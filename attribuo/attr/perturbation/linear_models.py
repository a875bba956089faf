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


# ----------------------------------------------------------------------- solvers
def _center(x: Tensor, y: Tensor, w: Tensor | None, fit_intercept: bool):
    """Weighted centring; ``w`` is normalised to sum to 1 per problem."""
    b, s, _ = x.shape
    w = torch.full((b, s), 1.0 / s, dtype=x.dtype, device=x.device) if w is None else w / w.sum(1, keepdim=True)
    if not fit_intercept:
        zeros = torch.zeros(b, x.shape[2], dtype=x.dtype, device=x.device)
        return x, y, w, zeros, torch.zeros(b, dtype=x.dtype, device=x.device)
    x_mean = (w.unsqueeze(2) * x).sum(1)
    y_mean = (w * y).sum(1)
    return x - x_mean.unsqueeze(1), y - y_mean.unsqueeze(1), w, x_mean, y_mean


def least_squares_batch(
    x: Tensor, y: Tensor, weights: Tensor | None = None, fit_intercept: bool = True, ridge: float = 0.0
) -> tuple[Tensor, Tensor]:
    """Weighted least squares for ``B`` problems at once: ``x [B, S, F]``, ``y [B, S]``.

    Minimises ``sum_s w_s (y_s - c - x_s . b)^2 + ridge * |b|^2`` per problem
    (the objective of scikit-learn's LinearRegression / Ridge with
    ``sample_weight``), in float64; rank-deficient problems get the
    minimum-norm solution. Returns ``(coef [B, F], intercept [B])``.
    """
    x64, y64 = x.double(), y.double()
    w = None if weights is None else weights.double()
    xc, yc, wn, x_mean, y_mean = _center(x64, y64, w, fit_intercept)
    root = wn.sqrt() if w is None else (w).clamp_min(0).sqrt()
    a = xc * root.unsqueeze(2)
    t = yc * root
    gram = a.transpose(1, 2) @ a
    rhs = (a.transpose(1, 2) @ t.unsqueeze(2)).squeeze(2)
    if ridge > 0:
        gram = gram + ridge * torch.eye(gram.shape[1], dtype=gram.dtype, device=gram.device)
    # minimum-norm solution through the eigen-decomposition of the (small) Gram matrix
    vals, vecs = torch.linalg.eigh(gram)
    cut = vals.amax(1, keepdim=True).clamp_min(0) * (gram.shape[1] * 1e3 * torch.finfo(gram.dtype).eps)
    inv = torch.where(vals > cut, 1.0 / vals.clamp_min(1e-300), torch.zeros_like(vals))
    coef = (vecs @ (inv * (vecs.transpose(1, 2) @ rhs.unsqueeze(2)).squeeze(2)).unsqueeze(2)).squeeze(2)
    intercept = y_mean - (x_mean * coef).sum(1)
    return coef, intercept


def _support_solution(gram: Tensor, q: Tensor, coef: Tensor, alpha: float) -> Tensor:
    """Per problem, the stationary point on the support and signs of ``coef`` [B, F]."""
    support = (coef != 0).to(gram.dtype)
    outer = support.unsqueeze(2) * support.unsqueeze(1)
    eye = torch.diag_embed(1 - support)
    system = gram * outer + eye  # rows/columns off the support become the identity
    rhs = (q - alpha * torch.sign(coef)) * support
    return torch.linalg.solve(system, rhs.unsqueeze(2)).squeeze(2) * support


def _exact_on_support(gram: Tensor, q: Tensor, coef: Tensor, alpha: float) -> Tensor:
    """1.0 for the problems whose support solution satisfies the lasso's optimality conditions."""
    try:
        exact = _support_solution(gram, q, coef, alpha)
    except RuntimeError:  # a singular support: keep iterating
        return torch.zeros(coef.shape[0], dtype=coef.dtype, device=coef.device)
    on = coef != 0
    grad = q - (gram @ exact.unsqueeze(2)).squeeze(2)  # = alpha * sign on the support, |.| <= alpha off it
    slack = alpha * (1 + 1e-9) + 1e-12
    signs_kept = torch.where(on, torch.sign(exact) == torch.sign(coef), torch.ones_like(on)).all(1)
    stationary = torch.where(on, (grad - alpha * torch.sign(coef)).abs() <= 1e-9 * (1 + alpha), grad.abs() <= slack)
    finite = torch.isfinite(exact).all(1)
    return (signs_kept & stationary.all(1) & finite).to(coef.dtype)


def lasso_batch(
    x: Tensor,
    y: Tensor,
    weights: Tensor | None = None,
    alpha: float = 1.0,
    fit_intercept: bool = True,
    max_iter: int = 1000,
    tol: float = 1e-8,
) -> tuple[Tensor, Tensor]:
    """Weighted lasso for ``B`` problems at once by cyclic coordinate descent.

    Minimises ``1 / (2 sum w) * sum_s w_s (y_s - c - x_s . b)^2 + alpha |b|_1``
    per problem -- scikit-learn's ``Lasso(alpha).fit(x, y, sample_weight=w)``
    -- on the weighted Gram matrix, in float64, until the duality gap is
    below ``tol`` times the weighted variance of ``y`` (much tighter than
    scikit-learn's default 1e-4) or ``max_iter`` sweeps. Every four sweeps
    the support and signs of each iterate are tried: where the stationary
    point on them satisfies the optimality conditions it is the exact
    optimum, and that problem is done (so one example costs a few sweeps, not
    a thousand). Problems that have converged stop changing. Returns
    ``(coef [B, F], intercept [B])``.
    """
    x64, y64 = x.double(), y.double()
    xc, yc, w, x_mean, y_mean = _center(x64, y64, None if weights is None else weights.double(), fit_intercept)
    wx = xc * w.unsqueeze(2)
    gram = wx.transpose(1, 2) @ xc  # [B, F, F]
    q = (wx * yc.unsqueeze(2)).sum(1)  # [B, F]
    yy = (w * yc * yc).sum(1)
    b, f = q.shape
    # coordinates live in rows ([F, B]) so each update touches contiguous memory
    coef = torch.zeros((f, b), dtype=q.dtype, device=q.device)
    # a copy: for one problem the transpose is already contiguous and would alias q
    resid = q.transpose(0, 1).clone(memory_format=torch.contiguous_format)  # x^T W (y - x coef)
    columns = gram.permute(2, 1, 0).contiguous()  # columns[j] = gram[:, :, j].T  [F, B]
    diag = torch.diagonal(gram, dim1=1, dim2=2).transpose(0, 1).contiguous()
    inv = torch.where(diag > 0, 1.0 / diag.clamp_min(1e-300), torch.zeros_like(diag))
    active = torch.ones(b, dtype=q.dtype, device=q.device)
    limit = tol * yy.clamp_min(torch.finfo(torch.float64).tiny)
    for sweep in range(max_iter):
        for j in range(f):
            c_j = coef[j]
            rho = torch.addcmul(resid[j], diag[j], c_j)
            new = (rho - rho.clamp(-alpha, alpha)) * inv[j]  # soft threshold
            step = (new - c_j) * active
            resid.addcmul_(columns[j], step, value=-1.0)
            c_j += step
        if sweep % 4 == 3 or sweep == max_iter - 1:
            # Once the signs have settled, the lasso optimum solves one small linear system.
            solved = _exact_on_support(gram, q, coef.transpose(0, 1), alpha) * active
            if bool(solved.any()):
                exact = _support_solution(gram, q, coef.transpose(0, 1), alpha)
                keep = solved.bool()
                coef[:, keep] = exact.transpose(0, 1)[:, keep]
                active = active * (1 - solved)
                if not bool(active.any()):
                    break
            # duality gap of the current iterate (Gram form)
            ct = coef.transpose(0, 1)
            fit = (q * ct).sum(1)
            quad = (ct.unsqueeze(1) @ gram @ ct.unsqueeze(2)).reshape(b)
            rr = yy - 2 * fit + quad
            primal = 0.5 * rr + alpha * ct.abs().sum(1)
            scale = torch.clamp(alpha / resid.abs().amax(0).clamp_min(1e-300), max=1.0)
            dual = scale * (yy - fit) - 0.5 * scale * scale * rr
            active = active * ((primal - dual) > limit).to(active.dtype)
            if not bool(active.any()):
                break
    coef = coef.transpose(0, 1).contiguous()
    intercept = y_mean - (x_mean * coef).sum(1)
    return coef, intercept


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
