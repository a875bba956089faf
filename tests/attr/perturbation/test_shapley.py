"""ShapleyValues and ShapleyValueSampling: efficiency, symmetry, convergence, per-example masks."""

import warnings

import pytest
import torch
from models import tabular_batch, tabular_mlp

from attribuo.attr import KernelShap, ShapleyValues, ShapleyValueSampling

warnings.filterwarnings("ignore", message=".*Feature mask.*")



def test_shapley_values_efficiency_exact():
    model, x = tabular_mlp(), tabular_batch()
    base = torch.full_like(x, 0.3)
    attr = ShapleyValues(model).attribute(x, baselines=base, target=2)
    gap = model(x)[:, 2] - model(base)[:, 2]
    torch.testing.assert_close(attr.sum(1), gap, atol=1e-12, rtol=0)


def test_shapley_values_symmetry_and_hand_value():
    f = lambda t: t.prod(1)  # noqa: E731
    attr = ShapleyValues(f).attribute(torch.tensor([[2.0, 3.0]], dtype=torch.float64), baselines=1.0)
    torch.testing.assert_close(attr, torch.tensor([[2.0, 3.0]], dtype=torch.float64))
    attr = ShapleyValues(f).attribute(torch.tensor([[2.0, 2.0]], dtype=torch.float64), baselines=1.0)
    assert attr[0, 0] == attr[0, 1]


@pytest.mark.parametrize("method", ["sampling", "kernel"])
def test_sampling_methods_converge_to_shapley_values(method):
    model, x = tabular_mlp(), tabular_batch()
    exact = ShapleyValues(model).attribute(x, target=0)
    errors = []
    for n in (10, 2000) if method == "sampling" else (30, 4000):
        torch.manual_seed(0)
        if method == "sampling":
            est = ShapleyValueSampling(model).attribute(x, target=0, n_samples=n)
        else:
            est = KernelShap(model).attribute(x, target=0, n_samples=n)
        errors.append((est - exact).abs().max().item())
    assert errors[1] < errors[0] and errors[1] < 0.02


def test_per_example_feature_mask():
    model, x = tabular_mlp(), tabular_batch(2)
    mask = torch.tensor([[0, 0, 1, 1, 2], [2, 1, 1, 0, 0]])
    attr = ShapleyValues(model).attribute(x, target=0, feature_mask=mask)
    for i in range(2):
        ref = ShapleyValues(model).attribute(x[i:i + 1], target=0, feature_mask=mask[i:i + 1])
        torch.testing.assert_close(attr[i:i + 1], ref, atol=1e-12, rtol=0)
