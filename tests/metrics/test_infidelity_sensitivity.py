"""infidelity and sensitivity_max: closed forms, invariances and errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from attribuo._engine.errors import ArgumentTypeError, ArgumentValueError
from attribuo.attr import InputXGradient, Saliency
from attribuo.metrics import infidelity, infidelity_perturb_func_decorator, sensitivity_max


def linear(n_in=5, n_out=2, seed=0):
    torch.manual_seed(seed)
    return nn.Linear(n_in, n_out).double()


def shift_perturb(inputs):
    """Deterministic: perturbation 0.1 * (1 + x), no random numbers."""
    pert = 0.1 * (1 + inputs)
    return pert, inputs - pert


def test_infidelity_zero_for_exact_linear_attributions():
    model = linear()
    x = torch.randn(4, 5, dtype=torch.float64)
    attr = InputXGradient(model).attribute(x, target=1)

    @infidelity_perturb_func_decorator(multiply_by_inputs=True)
    def perturb(inputs):
        return inputs * torch.rand_like(inputs)

    values = infidelity(model, perturb, x, attr, target=1, n_perturb_samples=20)
    torch.testing.assert_close(values, torch.zeros(4, dtype=torch.float64), atol=1e-24, rtol=0)


def test_infidelity_hand_computed_with_deterministic_perturbation():
    model = linear()
    x = torch.randn(3, 5, dtype=torch.float64)
    attr = torch.randn(3, 5, dtype=torch.float64)
    values = infidelity(model, shift_perturb, x, attr, target=0, n_perturb_samples=4)
    pert = 0.1 * (1 + x)
    expected = ((attr * pert).sum(1) - (model(x) - model(x - pert))[:, 0]) ** 2
    torch.testing.assert_close(values, expected.detach())


def test_infidelity_normalize_is_scale_invariant_and_never_larger():
    model = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 1)).double()
    x = torch.randn(3, 5, dtype=torch.float64)
    attr = Saliency(model).attribute(x, abs=False)
    plain = infidelity(model, shift_perturb, x, attr, normalize=True)
    scaled = infidelity(model, shift_perturb, x, 7.5 * attr, normalize=True)
    torch.testing.assert_close(plain, scaled)
    # beta is the least-squares scale, so it can only reduce the error
    assert bool((plain <= infidelity(model, shift_perturb, x, attr) + 1e-12).all())


@pytest.mark.parametrize("max_examples_per_batch", [1, 3, 6, 40])
def test_infidelity_chunking_invariance(max_examples_per_batch):
    model = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 2)).double()
    x = torch.randn(3, 5, dtype=torch.float64)
    attr = torch.randn(3, 5, dtype=torch.float64)
    ref = infidelity(model, shift_perturb, x, attr, target=[0, 1, 0], n_perturb_samples=5)
    got = infidelity(model, shift_perturb, x, attr, target=[0, 1, 0], n_perturb_samples=5,
                     max_examples_per_batch=max_examples_per_batch)
    torch.testing.assert_close(got, ref)


def test_infidelity_errors_name_the_argument():
    model = linear()
    x = torch.randn(2, 5, dtype=torch.float64)
    with pytest.raises(ArgumentValueError, match="attributions"):
        infidelity(model, shift_perturb, x, torch.zeros(2, 4), target=0)
    with pytest.raises(ArgumentValueError, match="n_perturb_samples"):
        infidelity(model, shift_perturb, x, x, target=0, n_perturb_samples=0)
    with pytest.raises(ArgumentValueError, match="perturb_func"):
        infidelity(model, lambda t: (t[:1], t[:1]), x, x, target=0)
    with pytest.raises(ArgumentTypeError, match="pair"):
        infidelity(model, lambda t: t, x, x, target=0)
    with pytest.raises(ArgumentValueError, match="target"):
        infidelity(model, shift_perturb, x, x)  # two outputs, no target


def test_sensitivity_max_zero_for_constant_gradient():
    model = linear()
    x = torch.randn(4, 5, dtype=torch.float64)
    values = sensitivity_max(Saliency(model).attribute, x, target=1)
    torch.testing.assert_close(values, torch.zeros(4, dtype=torch.float64))


def test_sensitivity_max_hand_computed():
    # explanation x**2, perturbation x + r * k for the k-th draw: the largest shift wins
    draws = iter(range(1, 100))

    def perturb(inputs, radius):
        return inputs + radius * next(draws)

    x = torch.tensor([[1.0, 2.0], [-1.0, 0.5]], dtype=torch.float64)
    values = sensitivity_max(lambda t: t**2, x, perturb_func=perturb, perturb_radius=0.1,
                             n_perturb_samples=3, max_examples_per_batch=2)
    # chunks of 1 sample per example: draws 1, 2, 3 -> shift 0.3 is the largest
    expected = ((x + 0.3) ** 2 - x**2).norm(dim=1) / (x**2).norm(dim=1)
    torch.testing.assert_close(values, expected)


@pytest.mark.parametrize("max_examples_per_batch", [None, 2, 5])
def test_sensitivity_max_expands_per_example_kwargs(max_examples_per_batch):
    seen = []

    def explain(inputs, target, additional_forward_args, baselines):
        seen.append((inputs.shape[0], len(target), additional_forward_args[0].shape[0],
                     baselines.shape[0]))
        scale = torch.tensor(target, dtype=inputs.dtype)[:, None] + additional_forward_args[0]
        return (inputs - baselines) * scale

    x = torch.randn(2, 3, dtype=torch.float64)
    target, extra, base = [1, 2], torch.ones(2, 1, dtype=torch.float64), torch.zeros(2, 3)
    sensitivity_max(explain, x, perturb_func=lambda t: t + 0.01, n_perturb_samples=3,
                    max_examples_per_batch=max_examples_per_batch, target=target,
                    additional_forward_args=(extra,), baselines=base.double())
    for rows, *others in seen:
        assert others == [rows] * 3
    assert target == [1, 2] and extra.shape == (2, 1)  # the user's kwargs are untouched


def test_sensitivity_max_errors():
    x = torch.randn(2, 3)
    with pytest.raises(ArgumentTypeError, match="explanation_func"):
        sensitivity_max(None, x)
    with pytest.raises(ArgumentValueError, match="max_examples_per_batch"):
        sensitivity_max(lambda t: t, x, max_examples_per_batch=0)
    with pytest.raises(ArgumentValueError, match="perturb"):
        sensitivity_max(lambda t: t, x, perturb_func=lambda t: t[:, :2])


def test_metric_submodule_paths_expose_module_helpers():
    # Captum code imports default_perturb_func from the sensitivity module itself
    from attribuo.metrics._core.sensitivity import default_perturb_func, sensitivity_max

    from attribuo.metrics.sensitivity import default_perturb_func as direct

    assert default_perturb_func is direct and callable(sensitivity_max)
    x = torch.zeros(4, 3, dtype=torch.float64)
    noisy = default_perturb_func(x, 0.1)
    assert noisy.dtype == torch.float64 and bool((noisy.abs() <= 0.1).all())
