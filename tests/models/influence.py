"""Small float64 models, datasets and saved checkpoints for the influence tests."""

from __future__ import annotations

import os

import torch
from torch import nn
from torch.utils.data import TensorDataset

DT = torch.float64


class MLP(nn.Module):
    def __init__(self, bias_last: bool = True) -> None:
        super().__init__()
        self.fc1 = nn.Linear(5, 4)
        self.act = nn.Tanh()
        self.fc2 = nn.Linear(4, 3, bias=bias_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def save_checkpoints(model: nn.Module, folder, lrs=(1.0, 0.5, 0.25), seed: int = 0) -> list[str]:
    """Perturb ``model`` and save one state dict per learning rate (key ``learning_rate``)."""
    gen = torch.Generator().manual_seed(seed)
    paths = []
    for i, lr in enumerate(lrs):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.2 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
        path = os.path.join(str(folder), f"checkpoint-{i}.pt")
        torch.save({**model.state_dict(), "learning_rate": lr}, path)
        paths.append(path)
    return paths


def plain_load(model: nn.Module, path: str) -> float:
    """A checkpoint loader Captum can use too (its default keeps ``learning_rate`` as a key)."""
    state = torch.load(path)
    lr = state.pop("learning_rate")
    model.load_state_dict(state)
    return lr


def classification_data(n_train: int = 11, n_test: int = 4, seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n_train, 5, generator=gen, dtype=DT)
    y = torch.randint(0, 3, (n_train,), generator=gen)
    xt = torch.randn(n_test, 5, generator=gen, dtype=DT)
    yt = torch.randint(0, 3, (n_test,), generator=gen)
    return TensorDataset(x, y), (xt, yt)
