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

    # The README's order matters: baseline_dist is drawn after IG, and the
    # noise of GradientShap and NoiseTunnel comes from the same seeded stream.
    ig = attr.IntegratedGradients(model)
    attributions, delta = ig.attribute(input, baseline, target=0, return_convergence_delta=True)
    results.append(("IG Attributions", attributions))
    results.append(("IG Convergence Delta", delta))

    baseline_dist = torch.randn(10, 3) * 0.001
    gs = attr.GradientShap(model)
    attributions, delta = gs.attribute(
        input, stdevs=0.09, n_samples=4, baselines=baseline_dist, target=0,
        return_convergence_delta=True,
    )
    results.append(("GradientShap Attributions", attributions))
    results.append(("GradientShap Convergence Delta", delta))

    dl = attr.DeepLift(model)
    attributions, delta = dl.attribute(input, baseline, target=0, return_convergence_delta=True)
    results.append(("DeepLift Attributions", attributions))
    results.append(("DeepLift Convergence Delta", delta))

    dl = attr.DeepLiftShap(model)
    attributions, delta = dl.attribute(input, baseline_dist, target=0, return_convergence_delta=True)
    results.append(("DeepLiftShap Attributions", attributions))
    results.append(("DeepLiftShap Convergence Delta", delta))

    # The README passes `n_samples=4`, Captum's old name for `nt_samples`.
    nt = attr.NoiseTunnel(attr.IntegratedGradients(model))
    attributions, delta = nt.attribute(
        input, nt_type="smoothgrad", stdevs=0.02, nt_samples=4, baselines=baseline,
        target=0, return_convergence_delta=True,
    )
    results.append(("IG + SmoothGrad Attributions", attributions))
    results.append(("IG + SmoothGrad Convergence Delta", delta))
    # The README calls the selector `neuron_index`, Captum's old name for `neuron_selector`.
    nc = attr.NeuronConductance(model, model.lin1)
    results.append(("Neuron Attributions", nc.attribute(input, neuron_selector=1, target=0)))

    # The README's numbers come from Captum's earlier default method for
    # LayerConductance, riemann_trapezoid (Captum 0.9.0 defaults to gausslegendre).
    lc = attr.LayerConductance(model, model.lin1)
    attributions, delta = lc.attribute(
        input, baselines=baseline, target=0, method="riemann_trapezoid",
        return_convergence_delta=True,
    )
    results.append(("Layer Attributions", attributions))
    results.append(("Layer Convergence Delta", delta))
    del baseline
    return results


def main() -> None:
    torch.set_printoptions(precision=4)
    for label, value in readme_example():
        print(f"{label}: {value}")


if __name__ == "__main__":
    main()
