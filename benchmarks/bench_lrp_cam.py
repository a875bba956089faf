"""LRP, LayerGradCam and GuidedGradCam vs Captum, and the floor.

A small CNN (conv-BN-ReLU, pooling, linear) on 16 RGB 32x32 images. The
floor for LRP and GradCAM is one forward and one ``autograd.grad`` of the
target output w.r.t. the inputs: LRP is a modified backward pass, so no
implementation can do less.
"""

from __future__ import annotations

import torch
from captum import attr as captum_attr
from torch import nn

from attribuo import attr as attribuo_attr

from .harness import Case

BATCH = 16


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.AdaptiveAvgPool2d(4)
        self.fc = nn.Linear(32 * 16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.pool1(self.relu1(self.bn1(self.conv1(x))))
        return self.fc(torch.flatten(self.pool2(self.relu2(self.conv2(h))), 1))


def _floor(model: nn.Module, x: torch.Tensor, target: int):
    def run():
        leaf = x.detach().requires_grad_()
        return torch.autograd.grad(model(leaf)[:, target].sum(), leaf)

    return run


def cases() -> list[Case]:
    torch.manual_seed(0)
    model = Net().eval()
    x = torch.randn(BATCH, 3, 32, 32)
    floor = _floor(model, x, 3)
    return [
        Case(
            "LRP (epsilon)",
            lambda: attribuo_attr.LRP(model).attribute(x, target=3),
            lambda: captum_attr.LRP(model).attribute(x, target=3),
            floor=floor,
        ),
        Case(
            "LayerLRP conv2",
            lambda: attribuo_attr.LayerLRP(model, model.conv2).attribute(x, target=3),
            lambda: captum_attr.LayerLRP(model, model.conv2).attribute(x, target=3),
            floor=floor,
        ),
        Case(
            "LayerGradCam conv2",
            lambda: attribuo_attr.LayerGradCam(model, model.conv2).attribute(x, target=3),
            lambda: captum_attr.LayerGradCam(model, model.conv2).attribute(x, target=3),
            floor=floor,
        ),
        Case(
            "GuidedGradCam conv2",
            lambda: attribuo_attr.GuidedGradCam(model, model.conv2).attribute(x, target=3),
            lambda: captum_attr.GuidedGradCam(model, model.conv2).attribute(x, target=3),
            floor=floor,
        ),
    ]
