"""IntegratedGradients, GradientShap and NoiseTunnel(Saliency) vs Captum and the floor.

A small CNN on a batch of 16 RGB 32x32 images. The floor is one
``torch.autograd.grad`` of the summed target output with respect to the
batch expanded as the method expands it (50 steps, 5 samples), with the
expanded inputs already built: no method can do less.

GradientShap and NoiseTunnel must also draw their Gaussian noise (the same
torch draw as Captum, about 0.6 ms per call here on one thread), take the
absolute value / multiply by ``input - baseline`` and average over samples;
that work is not in the floor, so they sit a few percent above it. On one
CPU thread a hand-written minimal SmoothGrad (noise + grad + abs + mean)
takes the same time as ``NoiseTunnel(Saliency)``.
"""

from __future__ import annotations

import numpy as np
import torch
from captum import attr as captum_attr
from torch import nn

from attribuo import attr as attribuo_attr

from .harness import Case

BATCH = 16
N_STEPS = 50
N_SAMPLES = 5


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Linear(32 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


def _floor(model: nn.Module, expanded: torch.Tensor, target: int):
    def run():
        leaf = expanded.detach().requires_grad_()
        return torch.autograd.grad(model(leaf)[:, target].sum(), leaf)

    return run


def _seeded(fn):
    def run():
        torch.manual_seed(0)
        np.random.seed(0)
        return fn()

    return run


def cases() -> list[Case]:
    torch.manual_seed(0)
    model = SmallCNN().eval()
    x = torch.randn(BATCH, 3, 32, 32)
    dist = torch.randn(20, 3, 32, 32)
    target = 3

    ig_a, ig_c = attribuo_attr.IntegratedGradients(model), captum_attr.IntegratedGradients(model)
    gs_a, gs_c = attribuo_attr.GradientShap(model), captum_attr.GradientShap(model)
    nt_a = attribuo_attr.NoiseTunnel(attribuo_attr.Saliency(model))
    nt_c = captum_attr.NoiseTunnel(captum_attr.Saliency(model))
    steps_expanded = x.repeat(N_STEPS, 1, 1, 1)
    samples_expanded = x.repeat_interleave(N_SAMPLES, 0)

    return [
        Case(
            f"IntegratedGradients n_steps={N_STEPS}, batch {BATCH}",
            lambda: ig_a.attribute(x, target=target, n_steps=N_STEPS),
            lambda: ig_c.attribute(x, target=target, n_steps=N_STEPS),
            floor=_floor(model, steps_expanded, target),
        ),
        Case(
            f"GradientShap n_samples={N_SAMPLES}, batch {BATCH}",
            _seeded(
                lambda: gs_a.attribute(x, dist, n_samples=N_SAMPLES, stdevs=0.1, target=target)
            ),
            _seeded(
                lambda: gs_c.attribute(x, dist, n_samples=N_SAMPLES, stdevs=0.1, target=target)
            ),
            floor=_floor(model, samples_expanded, target),
            repeats=20,
        ),
        Case(
            f"NoiseTunnel(Saliency) nt_samples={N_SAMPLES}, batch {BATCH}",
            _seeded(lambda: nt_a.attribute(x, nt_samples=N_SAMPLES, stdevs=0.1, target=target)),
            _seeded(lambda: nt_c.attribute(x, nt_samples=N_SAMPLES, stdevs=0.1, target=target)),
            floor=_floor(model, samples_expanded, target),
            repeats=20,
        ),
    ]
