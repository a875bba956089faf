"""infidelity and sensitivity_max against Captum 0.9.0 under the same seed."""

from __future__ import annotations

import pytest
import torch
from captum.metrics import infidelity as captum_infidelity
from captum.metrics import infidelity_perturb_func_decorator as captum_decorator
from captum.metrics import sensitivity_max as captum_sensitivity_max
from models import MLP, TwoInputModel, seeded

from attribuo.attr import InputXGradient, Saliency
from attribuo.metrics import infidelity, infidelity_perturb_func_decorator, sensitivity_max

# Captum warns when max_examples_per_batch is outside [batch, batch * samples]; we clamp quietly
pytestmark = pytest.mark.filterwarnings("ignore:`max_examples_per_batch`:UserWarning")


def noise_perturb(inputs):
    """A plain perturb_func: Gaussian noise, returned as (perturbation, perturbed)."""
    if isinstance(inputs, tuple):
        noise = tuple(torch.randn_like(x) * 0.1 for x in inputs)
        return noise, tuple(x - n for x, n in zip(inputs, noise))
    noise = torch.randn_like(inputs) * 0.1
    return noise, inputs - noise


def towards_baseline(inputs, baselines):
    """Move each input a random fraction of the way to its baseline."""
    xs = inputs if isinstance(inputs, tuple) else (inputs,)
    bs = baselines if isinstance(baselines, tuple) else (baselines,)
    out = tuple(x + torch.rand_like(x) * (b - x) for x, b in zip(xs, bs))
    return out if isinstance(inputs, tuple) else out[0]


def compare(ours_fn, captum_fn, seed=0):
    torch.manual_seed(seed)
    expected = captum_fn()
    torch.manual_seed(seed)
    got = ours_fn()
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-9)
    return got


@pytest.fixture
def mlp():
    return seeded(MLP(), 1).double()


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("max_examples_per_batch", [None, 3, 8, 100])
@pytest.mark.parametrize("target", [0, [0, 2, 1, 1]])
def test_infidelity_single_input(mlp, normalize, max_examples_per_batch, target):
    torch.manual_seed(3)
    x = torch.randn(4, 6, dtype=torch.float64)
    attr = InputXGradient(mlp).attribute(x, target=target)
    kwargs = dict(target=target, n_perturb_samples=7,
                  max_examples_per_batch=max_examples_per_batch, normalize=normalize)
    compare(
        lambda: infidelity(mlp, noise_perturb, x, attr, **kwargs),
        lambda: captum_infidelity(mlp, noise_perturb, x, attr, **kwargs),
    )


@pytest.mark.parametrize("multiply_by_inputs", [True, False])
@pytest.mark.parametrize("baseline_kind", ["tensor", "number"])
def test_infidelity_decorated_with_baselines(mlp, multiply_by_inputs, baseline_kind):
    torch.manual_seed(4)
    x = torch.randn(3, 6, dtype=torch.float64)
    baselines = torch.randn(3, 6, dtype=torch.float64) if baseline_kind == "tensor" else 0.5
    attr = Saliency(mlp).attribute(x, target=1, abs=False)
    ours = infidelity_perturb_func_decorator(multiply_by_inputs)(towards_baseline)
    theirs = captum_decorator(multiply_by_inputs)(towards_baseline)
    kwargs = dict(baselines=baselines, target=1, n_perturb_samples=5, max_examples_per_batch=7)
    compare(
        lambda: infidelity(mlp, ours, x, attr, **kwargs),
        lambda: captum_infidelity(mlp, theirs, x, attr, **kwargs),
    )


@pytest.mark.parametrize("normalize", [False, True])
def test_infidelity_tuple_inputs_and_additional_args(normalize):
    model = seeded(TwoInputModel(), 2).double()
    torch.manual_seed(5)
    x1 = torch.randn(3, 4, dtype=torch.float64)
    x2 = torch.randn(3, 3, dtype=torch.float64)
    attr = InputXGradient(model).attribute((x1, x2), target=torch.tensor([0, 1, 2]),
                                           additional_forward_args=(2.0,))
    kwargs = dict(additional_forward_args=(2.0,), target=torch.tensor([0, 1, 2]),
                  n_perturb_samples=6, max_examples_per_batch=12, normalize=normalize)
    got = compare(
        lambda: infidelity(model, noise_perturb, (x1, x2), attr, **kwargs),
        lambda: captum_infidelity(model, noise_perturb, (x1, x2), attr, **kwargs),
    )
    assert got.shape == (3,)


@pytest.mark.parametrize("max_examples_per_batch", [None, 4, 9])
@pytest.mark.parametrize("norm_ord", ["fro", float("inf")])
def test_sensitivity_max_default_perturbation_float32(max_examples_per_batch, norm_ord):
    # Captum's default noise is float32 on the CPU: same stream as ours for float32 inputs
    model = seeded(MLP(), 5)
    torch.manual_seed(6)
    x = torch.randn(3, 6)
    explain = Saliency(model).attribute
    kwargs = dict(target=[0, 1, 2], n_perturb_samples=5, norm_ord=norm_ord,
                  max_examples_per_batch=max_examples_per_batch, perturb_radius=0.3)
    torch.manual_seed(0)
    expected = captum_sensitivity_max(explain, x, **kwargs)
    torch.manual_seed(0)
    got = sensitivity_max(explain, x, **kwargs)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert bool((got > 0).any())  # ReLU kinks within the radius: the maps do move


def scaled_noise(inputs, radius):
    xs = inputs if isinstance(inputs, tuple) else (inputs,)
    out = tuple(x + radius * torch.randn_like(x) for x in xs)
    return out if isinstance(inputs, tuple) else out[0]


def test_sensitivity_max_tuple_inputs_custom_perturbation_float64():
    model = seeded(TwoInputModel(), 7).double()
    torch.manual_seed(8)
    x = (torch.randn(4, 4, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64))
    explain = InputXGradient(model).attribute
    kwargs = dict(perturb_func=scaled_noise, perturb_radius=0.5, n_perturb_samples=7,
                  max_examples_per_batch=10, target=torch.tensor([0, 1, 2, 0]),
                  additional_forward_args=(torch.tensor([[1.0], [2.0], [0.5], [1.5]],
                                                        dtype=torch.float64),))
    compare(
        lambda: sensitivity_max(explain, x, **kwargs),
        lambda: captum_sensitivity_max(explain, x, **kwargs),
    )
