"""Small models, concepts and a deterministic classifier shared by the concept tests."""

from __future__ import annotations

import torch
from torch import nn

from attribuo.concept import Classifier, Concept


class TwoLayer(nn.Module):
    """``x -> lin1 -> relu -> head``; ``head`` maps the 4 features to 2 outputs."""

    def __init__(self, identity: bool = False, dtype: torch.dtype = torch.float64) -> None:
        super().__init__()
        self.lin1 = nn.Linear(4, 4).to(dtype)
        self.relu = nn.ReLU()
        self.head = nn.Linear(4, 2).to(dtype)
        if identity:
            # lin1 = identity; output 0 = h_0, output 1 = -h_0: only direction e_0 matters
            with torch.no_grad():
                self.lin1.weight.copy_(torch.eye(4))
                self.lin1.bias.zero_()
                self.head.weight.zero_()
                self.head.weight[0, 0], self.head.weight[1, 0] = 1.0, -1.0
                self.head.bias.zero_()

    def forward(self, x: torch.Tensor, scale: torch.Tensor | float = 1.0) -> torch.Tensor:
        return self.head(self.relu(self.lin1(x))) * scale


def along(direction: torch.Tensor, n: int, sign: float, seed: int, dtype=torch.float64) -> torch.Tensor:
    """``n`` points ``sign * t * direction`` (t in [1, 2]) plus small noise in every direction."""
    g = torch.Generator().manual_seed(seed)
    t = 1 + torch.rand(n, 1, generator=g, dtype=dtype)
    return sign * t * direction.to(dtype) + 0.05 * torch.randn(n, direction.numel(), generator=g, dtype=dtype)


def concept(cid: int, name: str, data: torch.Tensor, batch: int = 8) -> Concept:
    return Concept(cid, name, [data[i : i + batch] for i in range(0, len(data), batch)])


class MeanDifference(Classifier):
    """Deterministic classifier: row ``k`` = mean activation of class ``k`` minus the overall mean."""

    def __init__(self) -> None:
        self.w: torch.Tensor | None = None
        self.c: list[int] = []
        self.calls = 0

    def train_and_eval(self, dataloader, **kwargs):
        self.calls += 1
        x, y = map(torch.cat, zip(*dataloader))
        self.c = sorted(set(y.tolist()))
        self.w = torch.stack([x[y == c].mean(0) - x.mean(0) for c in self.c])
        return {"accs": torch.tensor(1.0), "kwargs": sorted(kwargs)}

    def weights(self):
        return self.w

    def classes(self):
        return self.c
