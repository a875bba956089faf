"""TracIn vs Captum: influence and self influence on a small MLP.

Model 32 -> 64 -> 10 (tanh), 512 training and 64 test examples, 3 saved
checkpoints, training batches of 64. Captum's default TracInCP takes one
``autograd.grad`` per example and reloads every checkpoint for every
training batch; its best setting is ``sample_wise_grads_per_batch=True``.
The floor is, per checkpoint, one batched forward and backward of the loss
over the training and test sets (an ordinary gradient, not per-example).
"""

from __future__ import annotations

import os
import tempfile

import torch
from captum import influence as captum_influence
from torch import nn
from torch.utils.data import TensorDataset

from attribuo import influence as attribuo_influence

from .harness import Case


def _setup():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.Tanh(), nn.Linear(64, 10))
    folder = tempfile.mkdtemp()
    paths = []
    for i in range(3):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.05 * torch.randn_like(p))
        paths.append(os.path.join(folder, f"ckpt-{i}.pt"))
        torch.save(model.state_dict(), paths[-1])
    train = TensorDataset(torch.randn(512, 32), torch.randint(0, 10, (512,)))
    test = (torch.randn(64, 32), torch.randint(0, 10, (64,)))
    return model, paths, train, test


def cases() -> list[Case]:
    model, paths, train, test = _setup()
    none, total = nn.CrossEntropyLoss(reduction="none"), nn.CrossEntropyLoss(reduction="sum")

    def tracin(lib, **kw):
        loss = total if kw.get("sample_wise_grads_per_batch") else none
        return lib.TracInCP(model, train, paths, loss_fn=loss, batch_size=64, **kw)

    def fast(lib):
        return lib.TracInCPFast(model, model[2], train, paths, loss_fn=total, batch_size=64)

    a_cp, c_cp = tracin(attribuo_influence), tracin(captum_influence)
    c_best = tracin(captum_influence, sample_wise_grads_per_batch=True)
    a_fast, c_fast = fast(attribuo_influence), fast(captum_influence)
    x_all = torch.cat([train.tensors[0], test[0]])
    y_all = torch.cat([train.tensors[1], test[1]])

    def floor():
        for path in paths:
            model.load_state_dict(torch.load(path))
            loss = total(model(x_all), y_all)
            torch.autograd.grad(loss, list(model.parameters()))

    return [
        Case("TracInCP influence (512 train x 64 test, 3 ckpts)", lambda: a_cp.influence(test),
             lambda: c_cp.influence(test), lambda: c_best.influence(test), floor, repeats=3),
        Case("TracInCP top-5 proponents", lambda: a_cp.influence(test, k=5),
             lambda: c_cp.influence(test, k=5), lambda: c_best.influence(test, k=5), floor, repeats=3),
        Case("TracInCP self_influence (512)", lambda: a_cp.self_influence(),
             lambda: c_cp.self_influence(), lambda: c_best.self_influence(), floor, repeats=3),
        Case("TracInCPFast influence (last layer)", lambda: a_fast.influence(test),
             lambda: c_fast.influence(test), None, floor, repeats=3),
    ]
