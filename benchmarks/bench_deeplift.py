"""DeepLift and DeepLiftShap vs Captum and the floor.

A small CNN (conv-ReLU-maxpool twice, then a linear head) on a batch of 16
RGB 32x32 images. DeepLift evaluates inputs and baselines together, so the
floor is one ``torch.autograd.grad`` of the summed target output with
respect to a batch of ``2 * 16`` examples (``2 * 16 * B`` for DeepLiftShap
with ``B`` baselines), already built.
"""

from __future__ import annotations

import torch
from captum import attr as captum_attr
from torch import nn

from attribuo import attr as attribuo_attr

from .harness import Case, quiet

BATCH = 16
N_BASELINES = 4


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.head = nn.Linear(32 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


def _floor(model: nn.Module, expanded: torch.Tensor, target: int):
    def run():
        leaf = expanded.detach().requires_grad_()
        return torch.autograd.grad(model(leaf)[:, target].sum(), leaf)

    return run



def cases() -> list[Case]:
    torch.manual_seed(0)
    model = SmallCNN().eval()
    x = torch.randn(BATCH, 3, 32, 32)
    base = 0.1 * torch.randn(BATCH, 3, 32, 32)
    dist = 0.1 * torch.randn(N_BASELINES, 3, 32, 32)
    target = 3

    dl_a, dl_c = attribuo_attr.DeepLift(model), captum_attr.DeepLift(model)
    ds_a, ds_c = attribuo_attr.DeepLiftShap(model), captum_attr.DeepLiftShap(model)
    pairs = torch.cat((x, base))
    shap_pairs = torch.cat((x.repeat_interleave(N_BASELINES, 0), dist.repeat(BATCH, 1, 1, 1)))

    return [
        Case(
            f"DeepLift, batch {BATCH}",
            quiet(lambda: dl_a.attribute(x, base, target=target)),
            quiet(lambda: dl_c.attribute(x, base, target=target)),
            floor=_floor(model, pairs, target),
        ),
        Case(
            f"DeepLiftShap {N_BASELINES} baselines, batch {BATCH}",
            quiet(lambda: ds_a.attribute(x, dist, target=target)),
            quiet(lambda: ds_c.attribute(x, dist, target=target)),
            floor=_floor(model, shap_pairs, target),
            repeats=3,
        ),
    ]
