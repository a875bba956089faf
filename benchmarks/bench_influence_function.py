"""Influence functions and DataLoaderAttribution vs Captum.

Influence functions: MLP 8 -> 16 -> 4 (tanh, 212 parameters), 256 training
and 32 test examples, batches of 64. A case builds the instance (Hessian or
Arnoldi iteration) and computes the (32, 256) influence matrix. Captum forms
the Hessian with one backward per parameter per batch; attribuo with
``torch.func.hessian``. The floor is the exact Hessian by batched double
backward plus one batched gradient per example set.

DataLoaderAttribution: MLP 16 -> 32 -> 2, 512 examples in batches of 64, 16
features, mean output as the metric, 4 perturbations per pass (identical
work in both: 1 + 4 traversals); the floor is the same forwards with no
attribution machinery. Run with OMP_NUM_THREADS=1 on a shared CPU: a contended
multi-threaded LAPACK turns a 2 ms 212x212 eigendecomposition into 2 s.
"""

from __future__ import annotations

import os
import tempfile

import torch
from captum.attr import DataLoaderAttribution as CaptumDLA
from captum.attr import FeatureAblation as CaptumFA
from captum.influence._core.arnoldi_influence_function import (
    ArnoldiInfluenceFunction as CaptumArnoldi,
)
from captum.influence._core.influence_function import NaiveInfluenceFunction as CaptumNaive
from torch import nn
from torch.func import functional_call, grad, hessian, vmap
from torch.utils.data import DataLoader, TensorDataset

from attribuo.attr import DataLoaderAttribution, FeatureAblation
from attribuo.influence import ArnoldiInfluenceFunction, NaiveInfluenceFunction

from .harness import Case


def _influence_setup():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 4))
    path = os.path.join(tempfile.mkdtemp(), "ckpt.pt")
    torch.save(model.state_dict(), path)
    train = TensorDataset(torch.randn(256, 8), torch.randint(0, 4, (256,)))
    test = (torch.randn(32, 8), torch.randint(0, 4, (32,)))
    return model, path, train, test


def _floor(model, train, test, loss):
    params = {k: v.detach() for k, v in model.named_parameters()}
    x, y = train.tensors

    def total(p, xb, yb):
        return loss(functional_call(model, p, (xb,)), yb).sum()

    def one(p, xi, yi):
        return total(p, xi[None], yi[None])

    def run():
        for s in range(0, 256, 64):
            hessian(total)(params, x[s:s + 64], y[s:s + 64])
        vmap(grad(one), in_dims=(None, 0, 0))(params, x, y)
        vmap(grad(one), in_dims=(None, 0, 0))(params, *test)

    return run


def cases() -> list[Case]:
    model, path, train, test = _influence_setup()
    loss = nn.CrossEntropyLoss(reduction="none")
    kw = dict(loss_fn=loss, batch_size=64, projection_dim=20)
    akw = dict(kw, arnoldi_dim=30)
    out = [
        Case(
            "NaiveInfluenceFunction MLP 212 params, 256x32",
            lambda: NaiveInfluenceFunction(model, train, path, **kw).influence(test),
            lambda: CaptumNaive(model, train, path, **kw).influence(test),
            floor=_floor(model, train, test, loss),
            repeats=3,
        ),
        Case(
            "ArnoldiInfluenceFunction MLP 212 params, arnoldi_dim 30",
            lambda: ArnoldiInfluenceFunction(model, train, path, **akw).influence(test),
            lambda: CaptumArnoldi(model, train, path, **akw).influence(test),
            repeats=3,
        ),
    ]

    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 2))
    loader = DataLoader(TensorDataset(torch.randn(512, 16)), batch_size=64)
    metric = dict(to_metric=lambda o: o.mean(0), perturbations_per_pass=4)

    def floor():
        with torch.no_grad():
            for (xb,) in loader:  # the unperturbed traversal
                net(xb)
            for _ in range(4):  # 16 features, 4 per traversal
                for (xb,) in loader:
                    for _ in range(4):
                        net(xb)

    out.append(
        Case(
            "DataLoaderAttribution MLP 16 features, 512 examples",
            lambda: DataLoaderAttribution(FeatureAblation(net)).attribute(loader, **metric),
            lambda: CaptumDLA(CaptumFA(net)).attribute(loader, **metric),
            floor=floor,
            repeats=3,
        )
    )
    return out
