"""FGSM: closed forms on a logistic model, bounds, masks, forms and bad input."""

from __future__ import annotations

import pytest
import torch
from models.robust import LogisticProbs
from torch import nn

from attribuo._engine.errors import ArgumentTypeError, ArgumentValueError
from attribuo.robust import FGSM, Perturbation

W = torch.tensor([0.5, -2.0, 0.0, 1.5], dtype=torch.float64)
X = torch.tensor([[0.1, 0.2, 0.3, 0.4], [-0.5, 0.0, 0.5, 1.0]], dtype=torch.float64)


@pytest.mark.parametrize("targeted", [False, True])
@pytest.mark.parametrize("target", [1, 0])
def test_closed_form_direction(targeted, target):
    # d(-log p_1)/dx has sign -sign(w); d(-log p_0)/dx has sign +sign(w).
    # Untargeted climbs the loss, targeted descends it; w = 0 leaves the element alone.
    direction = -torch.sign(W) if target == 1 else torch.sign(W)
    if targeted:
        direction = -direction
    got = FGSM(LogisticProbs(W)).perturb(X, 0.25, target, targeted=targeted)
    torch.testing.assert_close(got, X + 0.25 * direction, atol=0, rtol=0)
    assert got.dtype == torch.float64


def test_untargeted_lowers_true_class_probability():
    model = LogisticProbs(W)
    adv = FGSM(model).perturb(X, 0.1, target=1)
    assert (model(adv)[:, 1] < model(X)[:, 1]).all()


def test_clips_to_bounds():
    got = FGSM(LogisticProbs(W), lower_bound=-0.2, upper_bound=0.45).perturb(X, 0.3, 1)
    expected = (X - 0.3 * torch.sign(W)).clamp(-0.2, 0.45)
    torch.testing.assert_close(got, expected, atol=0, rtol=0)


def test_mask_freezes_elements():
    mask = torch.tensor([[1, 0, 1, 0]])  # broadcasts over the batch
    got = FGSM(LogisticProbs(W)).perturb(X, 0.25, 1, mask=mask)
    torch.testing.assert_close(got, X - 0.25 * torch.sign(W) * mask, atol=0, rtol=0)


def test_per_example_targets_and_additional_args():
    model = LogisticProbs(W)
    got = FGSM(model).perturb(X, 0.1, [1, 0], additional_forward_args=-1.0)
    # scale -1 flips the logit, so class 1 now moves along +sign(w), class 0 along -sign(w)
    expected = torch.stack([X[0] + 0.1 * torch.sign(W), X[1] - 0.1 * torch.sign(W)])
    torch.testing.assert_close(got, expected, atol=0, rtol=0)


def test_tuple_inputs_keep_form_and_unused_input_stays():
    def forward(a, b):
        return LogisticProbs(W)(a)  # b is unused: zero gradient, no move

    b = torch.ones(2, 3, dtype=torch.float64)
    got = FGSM(forward).perturb((X, b), 0.2, 1)
    assert isinstance(got, tuple) and len(got) == 2
    torch.testing.assert_close(got[0], X - 0.2 * torch.sign(W), atol=0, rtol=0)
    torch.testing.assert_close(got[1], b, atol=0, rtol=0)


def test_batch_mean_loss_matches_per_example_loss():
    # a scalar (mean) loss has the same gradient signs as per-example losses
    torch.manual_seed(0)
    model = nn.Linear(4, 3).double()
    x = torch.randn(5, 4, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 1, 0])
    mean = FGSM(model, nn.CrossEntropyLoss()).perturb(x, 0.1, y)
    per = FGSM(model, nn.CrossEntropyLoss(reduction="none")).perturb(x, 0.1, y)
    torch.testing.assert_close(mean, per, atol=0, rtol=0)
    assert not torch.equal(mean, x)


def test_leaves_inputs_and_model_alone():
    model = LogisticProbs(W).train()
    x = X.clone()
    FGSM(model).perturb(x, 0.3, 1)
    assert torch.equal(x, X) and not x.requires_grad
    assert model.training and model.w.grad is None


def test_is_a_perturbation_and_callable():
    attack = FGSM(LogisticProbs(W))
    assert isinstance(attack, Perturbation)
    torch.testing.assert_close(attack(X, 0.1, 1), attack.perturb(X, 0.1, 1))


@pytest.mark.parametrize(
    ("call", "error", "name"),
    [
        (lambda a: a.perturb([X], 0.1, 1), ArgumentTypeError, "inputs"),
        (lambda a: a.perturb(X.long(), 0.1, 1), ArgumentTypeError, "inputs"),
        (lambda a: a.perturb(X, "big", 1), ArgumentTypeError, "epsilon"),
        (lambda a: a.perturb(X, 0.1, 1, mask=torch.ones(3, 4)), ArgumentValueError, "mask"),
        (lambda a: a.perturb(X, 0.1, 1, mask=(torch.ones(4), torch.ones(4))), ArgumentValueError, "mask"),
        (lambda a: a.perturb(X, 0.1, None), ArgumentValueError, "target"),
        (lambda a: a.perturb(X, 0.1, 5), ArgumentValueError, "target"),
    ],
)
def test_bad_arguments(call, error, name):
    with pytest.raises(error, match=f"`{name}"):
        call(FGSM(LogisticProbs(W)))


def test_bad_constructor_arguments():
    with pytest.raises(ArgumentValueError, match="`lower_bound`"):
        FGSM(LogisticProbs(W), lower_bound=1.0, upper_bound=0.0)
    with pytest.raises(ArgumentTypeError, match="`forward_func`"):
        FGSM("model")
    with pytest.raises(ArgumentTypeError, match="`loss_func`"):
        FGSM(LogisticProbs(W), loss_func=3)


def test_input_that_requires_grad_keeps_its_flags():
    x = X.clone().requires_grad_()
    FGSM(LogisticProbs(W)).perturb(x, 0.1, 1)
    assert x.requires_grad and x.grad is None
