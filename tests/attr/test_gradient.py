"""Reference values and behaviour of the plain and modified-gradient methods."""

import pytest
import torch
from models import FunctionalReLUModel, ModuleReLUModel, seeded
from torch import nn

from attribuo.attr import (
    Attribution,
    Deconvolution,
    GradientAttribution,
    GuidedBackprop,
    InputXGradient,
    LayerAttribution,
    Saliency,
)


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


@pytest.mark.parametrize("spelling", ["F.relu", "torch.relu", "Tensor.relu", "inplace", "reused"])
@pytest.mark.parametrize("method", [GuidedBackprop, Deconvolution])
def test_modified_relu_rules_see_every_spelling(spelling, method):
    model = seeded(FunctionalReLUModel(spelling))
    reference = ModuleReLUModel(model)
    torch.manual_seed(3)
    x = torch.randn(6, 6)
    expected = method(reference).attribute(x, target=1)
    got = method(model).attribute(x, target=1)
    torch.testing.assert_close(got, expected, atol=0, rtol=0)
    # and it really differs from the plain gradient, so the rule was applied
    assert not torch.allclose(got, Saliency(model).attribute(x, target=1, abs=False))


def test_guided_backprop_closed_form_one_hidden_layer():
    # f(x) = v . relu(W x): guided gradient = W^T (relu(v) * 1[Wx > 0])
    torch.manual_seed(0)
    W, v = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    x = torch.randn(5, 3, dtype=torch.float64)

    def f(inp):
        return (torch.relu(inp @ W.T) * v).sum(1)

    hidden = x @ W.T
    guided = ((hidden > 0) * v.clamp(min=0)) @ W
    deconv = (v.clamp(min=0) * torch.ones_like(hidden)) @ W
    torch.testing.assert_close(GuidedBackprop(f).attribute(x), guided)
    torch.testing.assert_close(Deconvolution(f).attribute(x), deconv)


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


def test_interpolate():
    layer_attr = torch.arange(4.0).reshape(1, 1, 2, 2)
    up = LayerAttribution.interpolate(layer_attr, (4, 4))
    assert up.shape == (1, 1, 4, 4) and torch.equal(up[0, 0, :2, :2], torch.zeros(2, 2))
    with pytest.raises(ValueError, match="`interpolate_dims`"):
        LayerAttribution.interpolate(layer_attr, (4, 4, 4))
