"""attribuo.robust against Captum 0.9.0: same calls, same seed, same numbers."""

from __future__ import annotations

from collections import namedtuple

import pytest
import torch
from captum.robust import FGSM as CFGSM
from captum.robust import PGD as CPGD
from captum.robust import AttackComparator as CAttackComparator
from captum.robust import MinParamPerturbation as CMinParam
from models import MLP, TwoInputModel, seeded
from torch import nn

from attribuo.robust import FGSM, PGD, AttackComparator, MinParamPerturbation

# Captum warns that it sets requires_grad on the inputs it attacks
pytestmark = pytest.mark.filterwarnings("ignore:Input Tensor:UserWarning")


def softmax_mlp():
    return nn.Sequential(seeded(MLP(6, 8, 3)), nn.Softmax(dim=1)).double()


class SoftmaxTwoInput(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = seeded(TwoInputModel()).double()

    def forward(self, x1, x2, scale=1.0):
        return torch.softmax(self.net(x1, x2, scale), dim=1)


def run_both(ours, theirs, seed=0):
    torch.manual_seed(seed)
    expected = theirs()
    torch.manual_seed(seed)
    got = ours()
    return got, expected


def assert_same(got, expected, atol=1e-12):
    if isinstance(expected, (tuple, list)):
        # Captum rebuilds the metric's namedtuple class: compare by name and fields
        assert type(got).__name__ == type(expected).__name__
        assert getattr(got, "_fields", None) == getattr(expected, "_fields", None)
        assert len(got) == len(expected)
        for g, e in zip(got, expected):
            assert_same(g, e, atol)
    elif isinstance(expected, dict):
        assert set(got) == set(expected)
        for key in expected:
            assert_same(got[key], expected[key], atol)
    elif isinstance(expected, torch.Tensor):
        torch.testing.assert_close(got, expected, atol=atol, rtol=0)
    else:
        assert got == expected


X = torch.linspace(-1, 1, 24, dtype=torch.float64).reshape(4, 6)
LABELS = torch.tensor([0, 2, 1, 0])


@pytest.mark.parametrize("target", [1, [0, 2, 1, 0], LABELS])
@pytest.mark.parametrize("targeted", [False, True])
def test_fgsm_default_loss(target, targeted):
    model = softmax_mlp()
    mask = (torch.arange(6) % 2 == 0).double().expand(4, 6)
    got, expected = run_both(
        lambda: FGSM(model, lower_bound=-0.9, upper_bound=0.9).perturb(
            X, 0.15, target, targeted=targeted, mask=mask
        ),
        lambda: CFGSM(model, lower_bound=-0.9, upper_bound=0.9).perturb(
            X, 0.15, target, targeted=targeted, mask=mask
        ),
    )
    assert_same(got, expected)


def test_fgsm_custom_loss_tuple_inputs():
    model = seeded(TwoInputModel()).double()
    x1 = torch.linspace(-1, 1, 12, dtype=torch.float64).reshape(3, 4)
    x2 = torch.linspace(1, -2, 9, dtype=torch.float64).reshape(3, 3)
    loss = nn.CrossEntropyLoss(reduction="none")
    labels = torch.tensor([0, 1, 2])
    got, expected = run_both(
        lambda: FGSM(model, loss).perturb((x1, x2), 0.2, labels, additional_forward_args=2.0),
        lambda: CFGSM(model, loss).perturb((x1, x2), 0.2, labels, additional_forward_args=2.0),
    )
    assert isinstance(got, tuple)
    assert_same(got, expected)


@pytest.mark.parametrize("norm", ["Linf", "L2"])
@pytest.mark.parametrize("random_start", [False, True])
def test_pgd(norm, random_start):
    model = softmax_mlp()
    # Captum's L2 random start broadcasts its radii over the last dim, right only for batch 1
    x = X[:1] if (norm == "L2" and random_start) else X
    target = 1 if x.shape[0] == 1 else LABELS
    kwargs = dict(radius=0.3, step_size=0.05, step_num=7, target=target,
                  random_start=random_start, norm=norm)
    got, expected = run_both(
        lambda: PGD(model, lower_bound=-1.0, upper_bound=1.0).perturb(x, **kwargs),
        lambda: CPGD(model, lower_bound=-1.0, upper_bound=1.0).perturb(x, **kwargs),
        seed=3,
    )
    assert_same(got, expected)


def test_pgd_targeted_masked_tuple():
    model = SoftmaxTwoInput()
    x1 = torch.linspace(-1, 1, 12, dtype=torch.float64).reshape(3, 4)
    x2 = torch.linspace(1, -2, 9, dtype=torch.float64).reshape(3, 3)
    masks = (torch.tensor([[1.0, 0.0, 1.0, 1.0]], dtype=torch.float64), torch.ones(3, 3).double())
    kwargs = dict(radius=0.25, step_size=0.1, step_num=4, target=2, targeted=True,
                  random_start=True, mask=masks, additional_forward_args=(0.5,))
    got, expected = run_both(
        lambda: PGD(model).perturb((x1, x2), **kwargs),
        lambda: CPGD(model).perturb((x1, x2), **kwargs),
        seed=5,
    )
    assert_same(got, expected)


Metrics = namedtuple("Metrics", ["accuracy", "top_prob"])


def accuracy(out, labels, target=None):
    return (out.argmax(1) == labels).float()


def two_metrics(out, labels, target=None):
    return Metrics((out.argmax(1) == labels).float().mean().item(), out.max(1).values)


def noise(x, std=0.3):
    return x + std * torch.randn_like(x)


@pytest.mark.parametrize("per_eval", [1, 3])
@pytest.mark.parametrize("metric", [accuracy, two_metrics])
def test_attack_comparator(per_eval, metric):
    model = softmax_mlp()

    def build(cls_comp, cls_fgsm, cls_pgd):
        comp = cls_comp(model, metric, preproc_fn=lambda x: x * 0.9)
        comp.add_attack(noise, "noise", num_attempts=3, attack_kwargs={"std": 0.4})
        comp.add_attack(cls_fgsm(model), "fgsm", apply_before_preproc=False,
                        attack_kwargs={"epsilon": 0.3}, additional_attack_arg_names=["target"])
        comp.add_attack(cls_pgd(model), "pgd", num_attempts=2,
                        attack_kwargs={"radius": 0.3, "step_size": 0.1, "step_num": 3,
                                       "random_start": True},
                        additional_attack_arg_names=["target"])
        batches = []
        for i in range(2):
            x = X + 0.1 * i
            labels = (LABELS + i) % 3
            batches.append(comp.evaluate(x, perturbations_per_eval=per_eval,
                                         labels=labels, target=labels))
        return batches, comp.summary()

    (got, got_summary), (expected, expected_summary) = run_both(
        lambda: build(AttackComparator, FGSM, PGD),
        lambda: build(CAttackComparator, CFGSM, CPGD),
    )
    assert_same(got, expected, atol=1e-6)
    assert_same(got_summary, expected_summary, atol=1e-6)
    if metric is two_metrics:
        assert type(got_summary["Original"]["mean"]).__name__ == "Metrics"


def scaled_noise(x, std):
    return x + std * torch.randn_like(x)


@pytest.mark.parametrize("mode", ["linear", "binary"])
@pytest.mark.parametrize("per_eval", [1, 4])
def test_min_param_random_attack(mode, per_eval):
    model = softmax_mlp()
    x = X[:2]
    target = model(x).argmax(1)

    def run(cls):
        search = cls(model, scaled_noise, "std", 0.0, 3.0, 0.05, mode=mode, num_attempts=3)
        return search.evaluate(x, target=target, perturbations_per_eval=per_eval)

    (got_x, got_v), (exp_x, exp_v) = run_both(lambda: run(MinParamPerturbation),
                                              lambda: run(CMinParam), seed=11)
    assert exp_v is not None
    assert got_v == exp_v
    assert_same(got_x, exp_x)


@pytest.mark.parametrize("mode", ["linear", "binary"])
def test_min_param_fgsm_epsilon(mode):
    model = softmax_mlp()
    x = X[1:2]
    target = int(model(x).argmax(1))

    def run(cls_min, cls_fgsm):
        search = cls_min(model, cls_fgsm(model), "epsilon", 0.0, 2.0, 0.01, mode=mode,
                         preproc_fn=lambda t: t + 0.0, apply_before_preproc=True)
        return search.evaluate(x, target=target, attack_kwargs={"target": target},
                               perturbations_per_eval=5)

    (got_x, got_v), (exp_x, exp_v) = run_both(lambda: run(MinParamPerturbation, FGSM),
                                              lambda: run(CMinParam, CFGSM))
    assert exp_v is not None
    assert got_v == exp_v
    assert_same(got_x, exp_x)
