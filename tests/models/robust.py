"""Small models with known adversarial directions for the robustness tests."""

from __future__ import annotations

import torch
from torch import nn


class LogisticProbs(nn.Module):
    """Outputs ``[1 - p, p]`` with ``p = sigmoid(w . x)``: the gradient of ``-log p``
    is ``-(1 - p) w``, so its sign is ``-sign(w)`` (zero where ``w`` is zero)."""

    def __init__(self, w: torch.Tensor):
        super().__init__()
        self.w = nn.Parameter(w.clone())

    def forward(self, x, scale=1.0):
        p = torch.sigmoid(scale * (x.flatten(1) @ self.w))
        return torch.stack([1 - p, p], dim=1)


class Threshold(nn.Module):
    """Class 1 scores ``x[:, 0]``, class 0 scores 0: the prediction flips at ``x = 0``."""

    def forward(self, x, offset=0.0):
        score = x[:, :1] + offset
        return torch.cat([torch.zeros_like(score), score], dim=1)
