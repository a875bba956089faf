"""Small float64 models for the LRP and CAM tests (shared by tests/attr and tests/parity)."""

from __future__ import annotations

import torch
from torch import nn


def _randomise_norms(model: nn.Module, seed: int = 1) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g, dtype=m.running_mean.dtype) * 0.3)
            m.running_var.copy_(torch.rand(n, generator=g, dtype=m.running_var.dtype) + 0.5)
            with torch.no_grad():
                m.weight.copy_(torch.rand(n, generator=g, dtype=m.weight.dtype) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g, dtype=m.bias.dtype) * 0.2)
    return model


def mlp(bias: bool = True, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(6, 10, bias=bias),
        nn.ReLU(),
        nn.Dropout(0.3),
        nn.Linear(10, 8, bias=bias),
        nn.ReLU(),
        nn.Linear(8, 3, bias=bias),
    ).double().eval()


class ResCNN(nn.Module):
    """Conv-BN-ReLU, a residual block (conv-BN-ReLU-conv-BN + skip), pooling, linear.

    ``adder`` is the module used for the residual sum (Captum needs its own
    ``Addition_Module``); without one the sum is the ``+`` operator.
    """

    def __init__(self, adder: nn.Module | None = None, bias: bool = True, norm: bool = True, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv1 = nn.Conv2d(2, 4, 3, padding=1, bias=bias)
        self.bn1 = nn.BatchNorm2d(4) if norm else nn.Identity()
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1, bias=bias)
        self.bn2 = nn.BatchNorm2d(4) if norm else nn.Identity()
        self.relu2 = nn.ReLU()
        self.conv3 = nn.Conv2d(4, 4, 3, padding=1, bias=bias)
        self.bn3 = nn.BatchNorm2d(4) if norm else nn.Identity()
        self.adder = adder
        self.relu3 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.avg = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 3, bias=bias)
        _randomise_norms(self.double().eval())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.relu1(self.bn1(self.conv1(x)))
        r = self.bn3(self.conv3(self.relu2(self.bn2(self.conv2(h)))))
        h = self.adder(r, h) if self.adder is not None else r + h
        h = self.avg(self.pool(self.relu3(h)))
        return self.fc(torch.flatten(h, 1))


class SmallCNN(nn.Module):
    """features -> [N, C, H, W] map; head = global average pool + linear (for CAM tests)."""

    def __init__(self, channels: int = 4, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv1 = nn.Conv2d(1, 3, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(3, channels, 3)
        self.relu2 = nn.ReLU()
        self.head = nn.Linear(channels, 3)
        self.double().eval()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu2(self.conv2(self.relu1(self.conv1(x))))

    def classify(self, a: torch.Tensor) -> torch.Tensor:
        # square of the pooled features: gradients vary with position-free pooled values
        pooled = a.mean((2, 3))
        return self.head(pooled) + 0.1 * self.head(pooled) ** 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.features(x))
