"""FGSM / PGD / AttackComparator / MinParamPerturbation vs Captum and the floor.

A small CNN with a softmax head on 16 RGB 32x32 images. The floor of an
attack is its gradient evaluations (one ``autograd.grad`` of the summed
loss per step); the floor of the metrics is their forward calls on the
grouped perturbed batches, already built.
"""

from __future__ import annotations

import warnings

import torch
from captum import robust as captum_robust
from torch import nn

from attribuo import robust as attribuo_robust

from .harness import Case

BATCH = 16
STEPS = 10


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 8 * 8, 10), nn.Softmax(dim=1),
    ).eval()


def _grad_floor(model, x, target, steps):
    def run():
        for _ in range(steps):
            leaf = x.detach().requires_grad_()
            loss = -torch.log(model(leaf)[torch.arange(len(x)), target]).sum()
            torch.autograd.grad(loss, leaf)
    return run


def _forward_floor(model, x, copies, per_eval):
    groups = [torch.cat([x] * min(per_eval, copies - i)) for i in range(0, copies, per_eval)]

    def run():
        with torch.no_grad():
            for g in groups:
                model(g)
    return run


def _noise(x, std=0.1):
    return x + std * torch.randn_like(x)


def _accuracy(out, target):
    return (out.argmax(1) == target).float()


def cases() -> list[Case]:
    warnings.filterwarnings("ignore", message="Input Tensor")
    model = _model()
    x = torch.rand(BATCH, 3, 32, 32)
    target = torch.arange(BATCH) % 10

    def pgd(lib):
        return lambda: lib.PGD(model, lower_bound=0, upper_bound=1).perturb(
            x, 0.05, 0.01, STEPS, target, random_start=True)

    def comparator(lib, per_eval):
        def run():
            comp = lib.AttackComparator(model, _accuracy)
            comp.add_attack(_noise, "noise", num_attempts=8)
            comp.add_attack(lib.FGSM(model), "fgsm", attack_kwargs={"epsilon": 0.02},
                            additional_attack_arg_names=["target"])
            comp.evaluate(x, perturbations_per_eval=per_eval, target=target)
        return run

    def min_param(lib, per_eval):
        def run():
            search = lib.MinParamPerturbation(model, _noise, "std", 0.0, 3.0, 0.1,
                                              num_attempts=2)
            search.evaluate(x[:4], target=model(x[:4]).argmax(1),
                            perturbations_per_eval=per_eval)
        return run

    return [
        Case("FGSM", lambda: attribuo_robust.FGSM(model).perturb(x, 0.05, target),
             lambda: captum_robust.FGSM(model).perturb(x, 0.05, target),
             floor=_grad_floor(model, x, target, 1)),
        Case(f"PGD Linf {STEPS} steps, random start", pgd(attribuo_robust), pgd(captum_robust),
             floor=_grad_floor(model, x, target, STEPS)),
        Case("AttackComparator ppe=1 (8 noise + FGSM)", comparator(attribuo_robust, 1),
             comparator(captum_robust, 1), captum_best=comparator(captum_robust, 10),
             floor=_forward_floor(model, x, 10, 1)),
        Case("AttackComparator ppe=10", comparator(attribuo_robust, 10),
             comparator(captum_robust, 10)),
        Case("MinParamPerturbation linear ppe=1", min_param(attribuo_robust, 1),
             min_param(captum_robust, 1), captum_best=min_param(captum_robust, 16)),
        Case("MinParamPerturbation linear ppe=16", min_param(attribuo_robust, 16),
             min_param(captum_robust, 16)),
    ]
