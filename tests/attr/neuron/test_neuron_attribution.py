"""Neuron attribution: selector forms, references from truncated models, properties, misuse."""

import numpy as np
import pytest
import torch
from models.layer import cnn
from torch import nn

import attribuo.attr as A
from attribuo._engine.errors import ArgumentTypeError, ArgumentValueError
from attribuo.attr import NeuronDeepLift, NeuronGradient, NeuronIntegratedGradients

F64 = torch.float64


def _mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3)
    ).double().eval()


def _x(n=5, d=4, seed=1):
    return torch.rand(n, d, generator=torch.Generator().manual_seed(seed), dtype=F64) - 0.3


# ------------------------------------------------------------------ selectors
def _neuron_by_hand(model, x, pick):
    leaf = x.detach().requires_grad_()
    value = pick(model[:3](leaf))
    return torch.autograd.grad(value.sum(), leaf)[0]


@pytest.mark.parametrize(
    "selector, pick",
    [
        (2, lambda y: y[:, 2]),
        ((4,), lambda y: y[:, 4]),
        (-1, lambda y: y[:, -1]),
        ((slice(1, 4),), lambda y: y[:, 1:4].sum(1)),
        (lambda y: y[:, 0] * y[:, 1], lambda y: y[:, 0] * y[:, 1]),
    ],
    ids=["int", "tuple", "negative", "slice", "callable"],
)
def test_selector_forms(selector, pick):
    model, x = _mlp(), _x()
    got = A.NeuronGradient(model, model[2]).attribute(x, selector)
    torch.testing.assert_close(got, _neuron_by_hand(model, x, pick))


def test_multi_dim_selectors_on_a_conv_layer():
    model = cnn()
    x = torch.rand(2, 1, 8, 8, dtype=F64)
    conv = lambda t: model.conv2(model.relu1(model.conv1(t)))  # noqa: E731
    for selector, pick in [((3, 2, 5), lambda y: y[:, 3, 2, 5]),
                           ((1, slice(0, 2), slice(4, 7)), lambda y: y[:, 1, 0:2, 4:7].flatten(1).sum(1))]:
        leaf = x.clone().requires_grad_()
        expected = torch.autograd.grad(pick(conv(leaf)).sum(), leaf)[0]
        torch.testing.assert_close(A.NeuronGradient(model, model.conv2).attribute(x, selector), expected)


@pytest.mark.parametrize(
    "selector, error, match",
    [
        (1.5, ArgumentTypeError, "`neuron_selector` must be"),
        ([1], ArgumentTypeError, "`neuron_selector` must be"),
        ((1, "a"), ArgumentTypeError, "tuple entries"),
        (9, ArgumentValueError, "out of range"),
        ((1, 2), ArgumentValueError, "has 2 indices"),
        (lambda y: y[:, :2], ArgumentValueError, "one value per example"),
    ],
)
def test_bad_selectors(selector, error, match):
    model = _mlp()
    with pytest.raises(error, match=match):
        A.NeuronGradient(model, model[2]).attribute(_x(), selector)


def test_index_selector_needs_one_index_per_dim():
    model = cnn()
    with pytest.raises(ArgumentValueError, match="one index per layer dim"):
        A.NeuronIntegratedGradients(model, model.conv2).attribute(torch.rand(2, 1, 8, 8, dtype=F64), (1, 2))


def test_index_selector_on_tuple_layer_is_an_error():
    class Split(nn.Module):
        def forward(self, x):
            return x[:, :2], x[:, 2:]

    model = nn.Sequential(nn.Linear(4, 4), Split())
    with pytest.raises(ArgumentValueError, match="callable `neuron_selector`"):
        A.NeuronGradient(lambda x: model(x)[0], model[1]).attribute(torch.rand(2, 4), 0)
    got = A.NeuronGradient(lambda x: model(x)[0], model[1]).attribute(torch.rand(2, 4), lambda ys: ys[1][:, 0])
    torch.testing.assert_close(got, model[0].weight[2].detach().expand(2, 4))


# ------------------------------------------------------------------ references
def test_neuron_methods_equal_primary_methods_on_the_truncated_model():
    model, x = _mlp(), _x()
    base, dist = 0.1 * torch.ones_like(x), _x(n=4, seed=7)
    head = model[:4]  # up to the ReLU after the second linear layer
    pairs = [
        (lambda: A.NeuronGuidedBackprop(model, model[3]).attribute(x, 1),
         lambda: A.GuidedBackprop(head).attribute(x, target=1)),
        (lambda: A.NeuronDeconvolution(model, model[3]).attribute(x, 1),
         lambda: A.Deconvolution(head).attribute(x, target=1)),
        (lambda: A.NeuronDeepLift(model, model[3]).attribute(x, 1, base),
         lambda: A.DeepLift(head).attribute(x, base, target=1)),
        (lambda: A.NeuronDeepLiftShap(model, model[3]).attribute(x, 1, dist),
         lambda: A.DeepLiftShap(head).attribute(x, dist, target=1)),
        (lambda: A.NeuronIntegratedGradients(model, model[3]).attribute(x, 1, base, n_steps=20),
         lambda: A.IntegratedGradients(head).attribute(x, base, target=1, n_steps=20)),
        (lambda: A.NeuronGradientShap(model, model[3]).attribute(x, 1, dist, n_samples=6, stdevs=0.2),
         lambda: A.GradientShap(head).attribute(x, dist, n_samples=6, stdevs=0.2, target=1)),
        (lambda: A.NeuronFeatureAblation(model, model[3]).attribute(x, 1, base),
         lambda: A.FeatureAblation(head).attribute(x, base, target=1)),
    ]
    for ours, reference in pairs:
        torch.manual_seed(2)
        np.random.seed(2)
        got = ours()
        torch.manual_seed(2)
        np.random.seed(2)
        torch.testing.assert_close(got, reference())


def test_neuron_input_is_previous_output():
    model, x = _mlp(), _x()
    at_input = A.NeuronGradient(model, model[3]).attribute(x, 2, attribute_to_neuron_input=True)
    at_output = A.NeuronGradient(model, model[2]).attribute(x, 2)
    torch.testing.assert_close(at_input, at_output)


def test_neuron_feature_ablation_closed_form():
    model, x = _mlp(), _x()
    got = A.NeuronFeatureAblation(model, model[0]).attribute(x, 3)
    torch.testing.assert_close(got, x * model[0].weight[3].detach())


# ------------------------------------------------------------------ properties
def test_neuron_integrated_gradients_is_complete():
    model, x = _mlp(), _x()
    attr = A.NeuronIntegratedGradients(model, model[1]).attribute(x, 4, n_steps=100)
    with torch.no_grad():
        change = model[:2](x)[:, 4] - model[:2](torch.zeros_like(x))[:, 4]
    torch.testing.assert_close(attr.sum(1), change, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", ["riemann_trapezoid", "gausslegendre"])
def test_neuron_conductances_add_up_to_integrated_gradients(method):
    # Every path from the inputs to the output passes the layer, so by the
    # chain rule the conductances of all its neurons sum to integrated gradients.
    model, x = _mlp(), _x()
    base = 0.2 * torch.ones_like(x)
    total = sum(
        A.NeuronConductance(model, model[2]).attribute(x, j, base, target=[0, 2, 1, 1, 0], n_steps=16, method=method)
        for j in range(5)
    )
    ig = A.IntegratedGradients(model).attribute(x, base, target=[0, 2, 1, 1, 0], n_steps=16, method=method)
    torch.testing.assert_close(total, ig)


def test_neuron_conductance_without_multiplying():
    model, x = _mlp(), _x()
    base = torch.zeros_like(x)
    local = A.NeuronConductance(model, model[2], multiply_by_inputs=False).attribute(x, 3, base, target=1)
    glob = A.NeuronConductance(model, model[2]).attribute(x, 3, base, target=1)
    torch.testing.assert_close(local * x, glob)


def test_no_state_left_behind():
    model = cnn()
    model.train()
    model.conv1.weight.requires_grad_(False)
    x = torch.rand(2, 1, 8, 8, dtype=F64)
    x0 = x.clone()
    for cls, extra in [(A.NeuronConductance, {"target": 0}), (A.NeuronIntegratedGradients, {}),
                       (A.NeuronDeepLift, {}), (A.NeuronGuidedBackprop, {}), (A.NeuronFeatureAblation, {})]:
        cls(model, model.conv2).attribute(x, (1, 2, 2), **extra)
        with pytest.raises(ValueError):
            cls(model, model.conv2).attribute(x, (9, 2, 2), **extra)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert model.training and not model.conv1.weight.requires_grad and model.conv2.weight.requires_grad
    assert torch.equal(x, x0) and not x.requires_grad


def _relu_net():
    torch.manual_seed(1)
    lin = nn.Linear(3, 4).double()
    return nn.Sequential(lin, nn.ReLU()), lin


def test_callable_selector_may_return_batch_total_for_gradients():
    net, lin = _relu_net()
    x = torch.rand(5, 3, dtype=torch.float64)
    # sum over the whole batch: per-example gradient is that of each example's sum
    total = NeuronGradient(net, lin).attribute(x, lambda out: out.sum())
    per_example = NeuronGradient(net, lin).attribute(x, lambda out: out.sum(1))
    torch.testing.assert_close(total, per_example)
    torch.testing.assert_close(total, lin.weight.sum(0).expand(5, 3))
    ig_total = NeuronIntegratedGradients(net, net[1]).attribute(x, lambda out: out.sum())
    ig_rows = NeuronIntegratedGradients(net, net[1]).attribute(x, lambda out: out.sum(1))
    torch.testing.assert_close(ig_total, ig_rows)


class _PoolNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4, bias=False).double()
        self.pool = nn.MaxPool1d(4)

    def forward(self, x):
        return self.pool(self.lin(x).unsqueeze(1)).squeeze(1)


def test_index_selector_with_size_one_trailing_dims():
    net = _PoolNet()
    x = torch.rand(2, 4, dtype=torch.float64)
    # pool output is [batch, 1, 1]; index 0 leaves one neuron of shape (1,)
    short = NeuronDeepLift(net, net.pool).attribute(x, 0)
    full = NeuronDeepLift(net, net.pool).attribute(x, (0, 0))
    torch.testing.assert_close(short, full)
