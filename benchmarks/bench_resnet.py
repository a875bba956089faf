"""Gradient, layer and perturbation methods on a small residual CNN, vs Captum.

The model (built here, no torchvision): a conv-BN-ReLU stem, three stages
of two basic residual blocks (widths 16/32/64; the first block of stages 2
and 3 has stride 2 and a 1x1 conv-BN downsample on its skip), global
average pooling and a linear head to 10 classes, in eval mode. Every ReLU
is its own module, as Captum's module-hook methods need. Images are
3x64x64 (batch 1 and 4) and 3x224x224 (batch 1). Both libraries get the
same arguments, Captum's defaults otherwise. The floor of Occlusion and
FeatureAblation is plain no-grad batched forwards over every perturbed copy
built in advance.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from .bench_perturbation import _floor
from .harness import Case, paired

TARGET = 3


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu2 = nn.ReLU()
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x if self.downsample is None else self.downsample(x)
        h = self.relu1(self.bn1(self.conv1(x)))
        return self.relu2(self.bn2(self.conv2(h)) + skip)


class ResNet(nn.Module):
    def __init__(self, widths: tuple[int, ...] = (16, 32, 64), classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU())
        stages, cin = [], widths[0]
        for i, w in enumerate(widths):
            stride = 1 if i == 0 else 2
            stages.append(nn.Sequential(BasicBlock(cin, w, stride), BasicBlock(w, w, 1)))
            cin = w
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(cin, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.stages(self.stem(x))).flatten(1))


def resnet() -> ResNet:
    """The benchmark's model: seeded weights, BatchNorm statistics made non-trivial, eval mode."""
    torch.manual_seed(0)
    model = ResNet()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):  # non-identity BN so it matters to every method
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.1, 0.1)
    return model.eval()


def superpixels(size: int, cell: int) -> torch.Tensor:
    """A ``1x1xSxS`` feature mask of ``cell`` x ``cell`` squares, numbered row by row."""
    grid = torch.arange(size) // cell
    return (grid[:, None] * (size // cell) + grid[None, :]).reshape(1, 1, size, size)




def cases() -> list[Case]:
    warnings.filterwarnings("ignore")
    model = resnet()
    block = model.stages[1][0]  # first block of stage 2
    last = model.stages[2][1].conv2  # the last conv, for Grad-CAM
    out = []
    for size, batch in ((64, 1), (64, 4), (224, 1)):
        torch.manual_seed(1)
        x = torch.randn(batch, 3, size, size)
        tag = f"ResNet{size} b{batch}"
        common = {"inputs": x, "target": TARGET}
        ig_steps = {"n_steps": 20} if size == 224 else {}
        window, stride, cell = (8, 4, 8) if size == 64 else (32, 16, 32)
        n_windows = ((size - window) // stride + 1) ** 2
        mask = superpixels(size, cell)
        rows = [
            (f"Saliency {tag}", paired("Saliency", model, **common), None),
            (f"IntegratedGradients {tag}" + (" n20" if ig_steps else ""),
             paired("IntegratedGradients", model, **common, **ig_steps), None),
            (f"GuidedBackprop {tag}", paired("GuidedBackprop", model, **common), None),
            (f"DeepLift {tag}", paired("DeepLift", model, **common), None),
            (f"LayerConductance stage2 block {tag} n20",
             paired("LayerConductance", model, block, **common, n_steps=20), None),
            (f"LayerGradCam last conv {tag}", paired("LayerGradCam", model, last, **common), None),
            (f"Occlusion {tag} w3x{window}x{window} s{stride}",
             paired("Occlusion", model, **common, sliding_window_shapes=(3, window, window), strides=stride),
             _floor(model, x, n_windows)),
            (f"FeatureAblation {tag} {cell}px superpixels",
             paired("FeatureAblation", model, **common, feature_mask=mask),
             _floor(model, x, (size // cell) ** 2)),
        ]
        for name, (ours, theirs), floor in rows:
            out.append(Case(name, ours, theirs, floor=floor, repeats=3))
    return out
