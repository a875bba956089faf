"""Model and dataset factories for attribuo.scale tests (importable as PKG.MOD:FACTORY)."""

from __future__ import annotations

import os
import time

import torch
from torch import nn
from torch.utils.data import Dataset


class Digits(Dataset):
    """37 small 1x8x8 'images' with labels, deterministic."""

    def __init__(self, n: int = 37) -> None:
        gen = torch.Generator().manual_seed(0)
        self.x = torch.rand(n, 1, 8, 8, generator=gen)
        self.y = torch.randint(0, 3, (n,), generator=gen)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        return self.x[i], int(self.y[i])


class SlowNet(nn.Module):
    """A small CNN; ``SCALE_TEST_SLEEP`` seconds of sleep per forward (for the kill test)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 64, 3))

    def forward(self, x):
        delay = float(os.environ.get("SCALE_TEST_SLEEP", "0"))
        if delay:
            time.sleep(delay)
        return self.net(x)


def model() -> nn.Module:
    return SlowNet().eval()


def dataset() -> Dataset:
    return Digits()


def not_a_model():
    return 42
