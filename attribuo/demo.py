"""The README example: Captum's ToyModel through attribuo's methods.

Run with ``python -m attribuo.demo``. With the seeds of the README example
the printed numbers match the ones in Captum's README.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class ToyModel(nn.Module):
    """The two-layer model of Captum's README, with its fixed weights."""

    def __init__(self) -> None:
        super().__init__()
        self.lin1 = nn.Linear(3, 3)
        self.relu = nn.ReLU()
        self.lin2 = nn.Linear(3, 2)
        self.lin1.weight = nn.Parameter(torch.arange(-4.0, 5.0).view(3, 3))
        self.lin1.bias = nn.Parameter(torch.zeros(1, 3))
        self.lin2.weight = nn.Parameter(torch.arange(-3.0, 3.0).view(2, 3))
        self.lin2.bias = nn.Parameter(torch.ones(1, 2))

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return self.lin2(self.relu(self.lin1(input)))


def readme_example() -> list[tuple[str, object]]:
    """Run the README example; returns ``(label, value)`` pairs in print order."""
    from attribuo import attr

    model = ToyModel()
    model.eval()
    torch.manual_seed(123)
    np.random.seed(123)
    input = torch.rand(2, 3)
    baseline = torch.zeros(2, 3)
    results: list[tuple[str, object]] = [("Input", input)]

    results.append(("Saliency", attr.Saliency(model).attribute(input, target=0)))
    results.append(("InputXGradient", attr.InputXGradient(model).attribute(input, target=0)))
    results.append(("GuidedBackprop", attr.GuidedBackprop(model).attribute(input, target=0)))
    results.append(("Deconvolution", attr.Deconvolution(model).attribute(input, target=0)))
    # Further methods of the README (IG, GradientShap, DeepLift, NoiseTunnel,
    # neuron and layer conductance) are appended here as they land.
    del baseline
    return results


def main() -> None:
    torch.set_printoptions(precision=4)
    for label, value in readme_example():
        print(f"{label}: {value}")


if __name__ == "__main__":
    main()
