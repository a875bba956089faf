"""Insights on a logistic regression for scikit-learn's breast-cancer data.

569 tumours, 30 measured columns (radius, texture, ... each as mean, standard
error and worst value), two classes: malignant or benign. The data ships with
scikit-learn and the model is trained when the example is built (Newton's
method: deterministic, a few milliseconds), so nothing is downloaded. Run ``python -m attribuo.insights.example --example tabular``.

Inputs are standardised with the training part's mean and standard
deviation, so a value is "standard deviations from the average tumour" and
the zero baseline *is* the average tumour: an attribution says how much a
column moves the prediction away from the average.

Example:
    >>> from attribuo.insights.tabular_example import build_visualizer
    >>> vis = build_visualizer()
    >>> vis.classes, len(vis.features[0].categories)
    (['malignant', 'benign'], 30)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .features import GeneralFeature
from .visualizer import AttributionVisualizer, Batch

SPLIT_SEED = 0
TEST_FRACTION = 0.3
WEIGHT_DECAY = 1e-2  # a little L2: the 30 columns are strongly correlated
CLASSES = ["malignant", "benign"]  # scikit-learn's target order: 0 malignant, 1 benign


@dataclass(frozen=True)
class CancerData:
    """The standardised split: ``x_*`` are z-scores of the training part, ``y_*`` class indices.

    ``mean`` and ``std`` turn a z-score back into the measured value:
    ``x * std + mean``.
    """

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    columns: list[str]
    mean: Tensor
    std: Tensor


def cancer_split() -> CancerData:
    """A fixed, stratified split of ``load_breast_cancer``; the test part is held out.

    Example:
        >>> data = cancer_split()
        >>> data.x_train.shape, data.x_test.shape
        (torch.Size([398, 30]), torch.Size([171, 30]))
    """
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    raw = load_breast_cancer()
    x = torch.tensor(raw.data, dtype=torch.float32)
    y = torch.tensor(raw.target, dtype=torch.int64)
    idx_train, idx_test = train_test_split(
        torch.arange(len(y)).numpy(), test_size=TEST_FRACTION, random_state=SPLIT_SEED,
        stratify=y.numpy(),
    )
    idx_train, idx_test = torch.as_tensor(idx_train), torch.as_tensor(idx_test)
    # statistics of the training part only: the held-out part must not leak into them
    mean, std = x[idx_train].mean(0), x[idx_train].std(0)
    scale = lambda t: (t - mean) / std  # noqa: E731
    return CancerData(scale(x[idx_train]), y[idx_train], scale(x[idx_test]), y[idx_test],
                      [str(c) for c in raw.feature_names], mean, std)


class CancerLogistic(nn.Module):
    """Logistic regression with two logits (one per class): 30 z-scores -> 2 logits.

    Linear, so gradient methods are exact: Integrated Gradients from the zero
    baseline gives ``x * (w[target])`` per column.

    Example:
        >>> CancerLogistic()(torch.zeros(1, 30)).tolist()
        [[0.0, 0.0]]
    """

    def __init__(self, n_features: int = 30) -> None:
        super().__init__()
        self.linear = nn.Linear(n_features, 2)
        nn.init.zeros_(self.linear.weight)  # untrained: both classes alike
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x)


def train(data: CancerData | None = None, weight_decay: float = WEIGHT_DECAY,
          steps: int = 25) -> CancerLogistic:
    """Fit :class:`CancerLogistic` on the training part (cross-entropy + L2), in eval mode.

    Two-class softmax regression is logistic regression on the logit
    difference, so it is fitted by Newton's method in float64 (exact and
    deterministic, milliseconds) and split evenly between the two logits:
    the minimum of ``cross-entropy + weight_decay * |weight|^2``.

    Example:
        >>> train().linear.weight.shape
        torch.Size([2, 30])
    """
    data = data or cancer_split()
    x = data.x_train.to(torch.float64)
    x = torch.cat([x, torch.ones(len(x), 1, dtype=torch.float64)], 1)  # last column: the bias
    y = data.y_train.to(torch.float64)
    # |W0|^2 + |W1|^2 = |v|^2 / 2 for the difference v = W1 - W0 at the (symmetric) optimum
    penalty = torch.full((x.shape[1],), weight_decay, dtype=torch.float64)
    penalty[-1] = 0.0  # the bias is not penalised
    v = torch.zeros(x.shape[1], dtype=torch.float64)
    for _ in range(steps):
        p = torch.sigmoid(x @ v)
        grad = x.T @ (p - y) / len(y) + penalty * v
        hess = (x.T * (p * (1 - p))) @ x / len(y) + torch.diag(penalty)
        step = torch.linalg.solve(hess, grad)
        v = v - step
        if float(step.abs().max()) < 1e-12:
            break
    model = CancerLogistic(data.x_train.shape[1])
    with torch.no_grad():
        half = (v / 2).to(torch.float32)
        model.linear.weight.copy_(torch.stack([-half[:-1], half[:-1]]))
        model.linear.bias.copy_(torch.stack([-half[-1], half[-1]]))
    return model.eval().requires_grad_(False)


def accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    """Share of rows of ``x`` whose top logit is ``y``.

    Example:
        >>> data = cancer_split()
        >>> accuracy(train(data), data.x_test, data.y_test) >= 0.93
        True
    """
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def build_visualizer(batch_size: int = 8) -> AttributionVisualizer:
    """An :class:`AttributionVisualizer` over the held-out tumours (one bar per column).

    Example:
        >>> vis = build_visualizer()
        >>> out = vis.visualize({"method": "IntegratedGradients", "num_examples": 1})
        >>> len(out[0]["features"][0]["modified"])
        30
    """
    data = cancer_split()
    model = train(data)
    dataset = [
        Batch(data.x_test[i : i + batch_size], data.y_test[i : i + batch_size])
        for i in range(0, len(data.y_test), batch_size)
    ]
    return AttributionVisualizer(
        models=[model],
        classes=list(CLASSES),
        features=[GeneralFeature("Tumour (z-scores)", data.columns)],
        dataset=dataset,
        score_func=lambda out: torch.softmax(out, dim=1),
    )


__all__ = ["CancerData", "CancerLogistic", "accuracy", "build_visualizer", "cancer_split", "train"]
