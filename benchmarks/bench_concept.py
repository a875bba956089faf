"""TCAV vs Captum: CAV training at two conv layers plus TCAV scores.

Three concepts of 4 batches of 16 RGB 16x16 images, 16 inputs, layers
``conv1`` and ``conv2`` of a small CNN; each call starts from an empty CAV
folder, so activations are computed and classifiers trained every time.
"mean-diff" uses a cheap deterministic classifier so the library's own work
shows; "default" uses each library's default classifier (scikit-learn's
SGDClassifier, seeded alike). The floor is one no-grad forward per concept
batch plus one forward and backward over the inputs.
"""

from __future__ import annotations

import random
import shutil
import tempfile

import numpy as np
import torch
from captum import concept as captum_concept
from torch import nn

from attribuo import concept as attribuo_concept

from .harness import Case


class CNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.head = nn.Linear(16 * 16 * 16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.relu2(self.conv2(self.relu1(self.conv1(x)))).flatten(1))


class MeanDiff:
    """Row k = class-k mean activation minus the overall mean."""

    def train_and_eval(self, dataloader, **kwargs):
        x, y = map(torch.cat, zip(*dataloader))
        self.c = sorted(set(y.tolist()))
        self.w = torch.stack([x[y == c].mean(0) - x.mean(0) for c in self.c])
        return {}

    def weights(self):
        return self.w

    def classes(self):
        return self.c


def cases() -> list[Case]:
    torch.manual_seed(0)
    model = CNN().eval()
    data = [[torch.randn(16, 3, 16, 16) + 0.5 * k for _ in range(4)] for k in range(3)]
    inputs = torch.randn(16, 3, 16, 16)

    def run(lib, default: bool):
        def call():
            root = tempfile.mkdtemp()
            try:
                random.seed(0)
                np.random.seed(0)
                cs = [lib.Concept(k, f"c{k}", batches) for k, batches in enumerate(data)]
                sets = [[cs[0], cs[1]], [cs[0], cs[2]], [cs[1], cs[2]]]
                kw = {} if default else {"classifier": MeanDiff()}
                tcav = lib.TCAV(model, ["conv1", "conv2"], save_path=root, **kw)
                return tcav.interpret(inputs, sets, target=3)
            finally:
                shutil.rmtree(root)

        return call

    def floor():
        with torch.no_grad():
            for batches in data:
                for b in batches:
                    model(b)
        x = inputs.clone().requires_grad_()
        torch.autograd.grad(model(x)[:, 3].sum(), x)

    return [
        Case("TCAV 2 conv layers, 3 sets, mean-diff", run(attribuo_concept, False),
             run(captum_concept, False), floor=floor, repeats=3),
        Case("TCAV 2 conv layers, 3 sets, default classifier", run(attribuo_concept, True),
             run(captum_concept, True), floor=floor, repeats=3),
    ]
