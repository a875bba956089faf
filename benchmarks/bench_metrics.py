"""infidelity and sensitivity_max vs Captum, plus the batched deletion curve vs its floor.

A small CNN on a batch of 16 RGB 32x32 images. For infidelity the floor is
one forward over all perturbed copies (built in advance); for the deletion
curve, one forward over all ``steps x batch`` flipped copies.
"""

from __future__ import annotations

import torch
from captum import metrics as captum_metrics
from torch import nn

from attribuo import metrics
from attribuo.attr import Saliency

from .harness import Case

BATCH = 16
SAMPLES = 32


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


def perturb(inputs):
    noise = torch.randn_like(inputs) * 0.05
    return noise, inputs - noise


def cases() -> list[Case]:
    torch.manual_seed(0)
    model = SmallCNN().eval()
    x = torch.rand(BATCH, 3, 32, 32)
    attr = Saliency(model).attribute(x, target=3, abs=False)
    expanded = x.repeat_interleave(SAMPLES, 0)

    def infid_floor():
        with torch.no_grad():
            return model(expanded)[:, 3]

    explain = Saliency(model).attribute
    steps = 32
    flipped = x.repeat(steps + 1, 1, 1, 1)

    def deletion_floor():
        with torch.no_grad():
            return model(flipped)[:, 3]

    return [
        Case(
            "infidelity (32 samples, one batch)",
            lambda: metrics.infidelity(model, perturb, x, attr, target=3, n_perturb_samples=SAMPLES),
            lambda: captum_metrics.infidelity(model, perturb, x, attr, target=3,
                                              n_perturb_samples=SAMPLES),
            floor=infid_floor,
        ),
        Case(
            "infidelity (32 samples, 64 per batch)",
            lambda: metrics.infidelity(model, perturb, x, attr, target=3, n_perturb_samples=SAMPLES,
                                       max_examples_per_batch=64),
            lambda: captum_metrics.infidelity(model, perturb, x, attr, target=3,
                                              n_perturb_samples=SAMPLES, max_examples_per_batch=64),
            floor=infid_floor,
        ),
        Case(
            "sensitivity_max (Saliency, 8 samples)",
            lambda: metrics.sensitivity_max(explain, x, target=3, n_perturb_samples=8),
            lambda: captum_metrics.sensitivity_max(explain, x, target=3, n_perturb_samples=8),
        ),
        Case(
            "deletion_curve (32 steps; Captum has none: floor only)",
            lambda: metrics.deletion_curve(model, x, attr, target=3, n_steps=steps),
            deletion_floor,
            floor=deletion_floor,
            repeats=3,
        ),
    ]
