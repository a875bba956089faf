"""Small models shared by the tests (plain modules, no torchvision); per-family fixtures are in the submodules."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MLP(nn.Module):
    def __init__(self, n_in: int = 6, n_hidden: int = 8, n_out: int = 3, act: type = nn.ReLU):
        super().__init__()
        self.fc1 = nn.Linear(n_in, n_hidden)
        self.act = act()
        self.fc2 = nn.Linear(n_hidden, n_out)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class SmallCNN(nn.Module):
    def __init__(self, channels: int = 1, n_out: int = 4):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, 4, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.fc = nn.Linear(6 * 4 * 4, n_out)

    def forward(self, x):
        x = self.pool(self.relu1(self.conv1(x)))
        x = self.relu2(self.conv2(x))
        return self.fc(x.flatten(1))


class TwoInputModel(nn.Module):
    """Two tensor inputs plus a non-tensor ``scale`` argument."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 5)
        self.b = nn.Linear(3, 5)
        self.relu = nn.ReLU()
        self.out = nn.Linear(5, 3)

    def forward(self, x1, x2, scale=1.0):
        return self.out(self.relu(self.a(x1) + self.b(x2))) * scale


class SequenceOutputModel(nn.Module):
    """Output of shape [batch, 4, 3]: a 3-D output needing tuple targets."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(5, 12)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.fc(x)).reshape(-1, 4, 3) * 2.0


class FunctionalReLUModel(nn.Module):
    """The MLP's computation with F.relu / torch.relu / Tensor.relu instead of modules."""

    def __init__(self, spelling: str):
        super().__init__()
        self.fc1 = nn.Linear(6, 8)
        self.fc2 = nn.Linear(8, 8)
        self.fc3 = nn.Linear(8, 3)
        self.spelling = spelling
        self.shared = nn.ReLU()

    def relu(self, x):
        if self.spelling == "F.relu":
            return F.relu(x)
        if self.spelling == "torch.relu":
            return torch.relu(x)
        if self.spelling == "Tensor.relu":
            return x.relu()
        if self.spelling == "inplace":
            return F.relu(x, inplace=True)
        return self.shared(x)  # one module reused twice

    def forward(self, x):
        return self.fc3(self.relu(self.fc2(self.relu(self.fc1(x)))))


class ModuleReLUModel(nn.Module):
    """Reference twin of FunctionalReLUModel with distinct ReLU modules."""

    def __init__(self, source: FunctionalReLUModel):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = source.fc1, source.fc2, source.fc3
        self.r1, self.r2 = nn.ReLU(), nn.ReLU()

    def forward(self, x):
        return self.fc3(self.r2(self.fc2(self.r1(self.fc1(x)))))


def seeded(model: nn.Module, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    for p in model.parameters():
        nn.init.normal_(p, std=0.5)
    return model.eval()


def tabular_mlp(inputs: int = 5, outputs: int = 3) -> nn.Module:
    """A seeded float64 MLP on tabular features (the perturbation tests' model)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(inputs, 8), nn.Tanh(), nn.Linear(8, outputs)).double()


def tabular_batch(n: int = 4, f: int = 5) -> torch.Tensor:
    """A seeded float64 batch of ``n`` examples with ``f`` features."""
    torch.manual_seed(1)
    return torch.randn(n, f, dtype=torch.float64)
