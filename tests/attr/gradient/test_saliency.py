"""Saliency and InputXGradient: reference values on a linear model, forms, the base-class API."""

import pytest
import torch
from torch import nn

from attribuo.attr import Attribution, GradientAttribution, InputXGradient, Saliency


@pytest.fixture
def linear():
    torch.manual_seed(0)
    model = nn.Linear(5, 3).double()
    x = torch.randn(4, 5, dtype=torch.float64)
    return model, x


def test_saliency_on_linear_model_is_weight(linear):
    model, x = linear
    w = model.weight.detach()
    assert torch.equal(Saliency(model).attribute(x, target=1), w[1].abs().expand(4, 5))
    assert torch.equal(Saliency(model).attribute(x, target=1, abs=False), w[1].expand(4, 5))


def test_input_x_gradient_on_linear_model_is_x_times_w(linear):
    model, x = linear
    w = model.weight.detach()
    assert torch.equal(InputXGradient(model).attribute(x, target=2), x * w[2])
    per_example = InputXGradient(model).attribute(x, target=[0, 1, 2, 0])
    assert torch.equal(per_example, x * w[[0, 1, 2, 0]])


def test_float64_in_float64_out(linear):
    model, x = linear
    assert Saliency(model).attribute(x, target=0).dtype == torch.float64


def test_tuple_in_tuple_out_and_unused_input_gets_zero():
    def f(a, b):
        return (a * 2).sum(1)

    a, b = torch.ones(2, 3), torch.ones(2, 4)
    ga, gb = Saliency(f).attribute((a, b))
    assert torch.equal(ga, torch.full((2, 3), 2.0)) and torch.equal(gb, torch.zeros(2, 4))


def test_base_class_api(linear):
    model, x = linear
    assert GradientAttribution.get_name() == "Gradient Attribution"
    assert InputXGradient.get_name() == "Input X Gradient"
    assert Saliency(model).has_convergence_delta() is False
    assert InputXGradient(model).multiplies_by_inputs and not Saliency(model).multiplies_by_inputs
    future = Saliency(model).attribute_future(x, target=0)
    assert isinstance(future, torch.futures.Future)
    assert torch.equal(future.wait(), Saliency(model).attribute(x, target=0))
    failing = Saliency(model).attribute_future(x, target=7)
    with pytest.raises(ValueError, match="`target`"):
        failing.wait()
    assert issubclass(Saliency, Attribution)


def test_compute_convergence_delta_is_completeness(linear):
    model, x = linear
    attrs = InputXGradient(model).attribute(x, target=1)
    # linear model with zero baseline: sum(x * w) == f(x) - f(0) exactly
    delta = Saliency(model).compute_convergence_delta(attrs, 0.0, x, target=1)
    torch.testing.assert_close(delta, torch.zeros(4, dtype=torch.float64))
    wrong = Saliency(model).compute_convergence_delta(attrs * 2, torch.zeros_like(x), x, target=1)
    torch.testing.assert_close(wrong, attrs.sum(1))
