"""PGD: stays in the Linf / L2 ball, closed form on a logistic model, masks, bad input."""

from __future__ import annotations

import pytest
import torch
from models.robust import LogisticProbs
from torch import nn

from attribuo._engine.errors import ArgumentTypeError, ArgumentValueError
from attribuo.robust import PGD
from attribuo.robust.pgd import random_point

W = torch.tensor([0.5, -2.0, 0.0, 1.5], dtype=torch.float64)
X = torch.tensor([[0.1, 0.2, 0.3, 0.4], [-0.5, 0.0, 0.5, 1.0]], dtype=torch.float64)


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3), nn.Softmax(dim=1)).double()


@pytest.mark.parametrize("random_start", [False, True])
def test_linf_stays_in_ball(random_start):
    torch.manual_seed(1)
    x = torch.randn(5, 6, dtype=torch.float64)
    adv = PGD(mlp()).perturb(x, 0.2, 0.07, 6, target=0, random_start=random_start)
    assert (adv - x).abs().max() <= 0.2 + 1e-12
    assert (adv - x).abs().max() > 0.1


@pytest.mark.parametrize("random_start", [False, True])
def test_l2_stays_in_ball(random_start):
    torch.manual_seed(2)
    x = torch.randn(5, 6, dtype=torch.float64)
    adv = PGD(mlp()).perturb(x, 0.3, 0.1, 8, target=[0, 1, 2, 0, 1],
                             random_start=random_start, norm="L2")
    norms = (adv - x).flatten(1).norm(dim=1)
    assert (norms <= 0.3 + 1e-9).all()
    assert (norms > 0.25).all()  # 8 steps of 0.1 * sign reach the border


def test_linf_closed_form_reaches_corner():
    # enough steps to hit the border: every moving element ends at x - r * sign(w)
    adv = PGD(LogisticProbs(W)).perturb(X, 0.3, 0.08, 5, target=1)
    torch.testing.assert_close(adv, X - 0.3 * torch.sign(W), atol=1e-12, rtol=0)


def test_targeted_moves_towards_target():
    adv = PGD(LogisticProbs(W)).perturb(X, 0.3, 0.08, 5, target=1, targeted=True)
    torch.testing.assert_close(adv, X + 0.3 * torch.sign(W), atol=1e-12, rtol=0)


def test_bounds_and_mask():
    mask = torch.tensor([[0.0, 1.0, 1.0, 1.0]], dtype=torch.float64)
    adv = PGD(LogisticProbs(W), lower_bound=-0.3, upper_bound=0.9).perturb(
        X, 0.5, 0.2, 4, target=1, random_start=True, mask=mask
    )
    assert adv.min() >= -0.3 and adv.max() <= 0.9
    torch.testing.assert_close(adv[:, 0], X[:, 0].clamp(-0.3, 0.9), atol=0, rtol=0)


def test_zero_steps_is_identity():
    torch.testing.assert_close(PGD(LogisticProbs(W)).perturb(X, 0.3, 0.1, 0, target=1), X)


def test_random_point_l2_is_per_example():
    torch.manual_seed(0)
    center = torch.zeros(64, 3, 5, dtype=torch.float64)
    points = random_point(center, 2.0, "L2", None)
    norms = points.flatten(1).norm(dim=1)
    assert (norms <= 2.0 + 1e-12).all()
    # radius r = 2 * U^(1/15): spread out, mostly near the border
    assert norms.std() > 0.01 and norms.median() > 1.7
    assert points.dtype == torch.float64


def test_random_point_linf_uniform_in_box():
    torch.manual_seed(0)
    points = random_point(torch.zeros(2000, 2), 0.5, "Linf", None)
    assert points.abs().max() <= 0.5
    torch.testing.assert_close(points.mean(0), torch.zeros(2), atol=0.03, rtol=0)


def test_tuple_inputs_keep_form():
    def forward(a, b):
        return LogisticProbs(W)(a + b)

    adv = PGD(forward).perturb((X, X), 0.2, 0.1, 3, target=1)
    assert isinstance(adv, tuple) and len(adv) == 2
    for a in adv:
        assert (a - X).abs().max() <= 0.2 + 1e-12


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        (dict(norm="L1"), ArgumentValueError, "norm"),
        (dict(radius=-1.0), ArgumentValueError, "radius"),
        (dict(step_num=2.5), ArgumentTypeError, "step_num"),
        (dict(step_num=-1), ArgumentValueError, "step_num"),
        (dict(step_size=None), ArgumentTypeError, "step_size"),
    ],
)
def test_bad_arguments(kwargs, error, name):
    args = dict(radius=0.3, step_size=0.1, step_num=2, target=1) | kwargs
    with pytest.raises(error, match=f"`{name}`"):
        PGD(LogisticProbs(W)).perturb(X, **args)


def test_leaves_model_and_inputs_alone():
    model = LogisticProbs(W).train()
    x = X.clone().requires_grad_()
    adv = PGD(model).perturb(x, 0.2, 0.1, 3, target=1, random_start=True)
    assert model.training and model.w.grad is None and model.w.requires_grad
    assert x.grad is None and torch.equal(x.detach(), X)
    assert not adv.requires_grad  # each step's result is detached
