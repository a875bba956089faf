"""IntegratedGradients: closed forms, completeness, baselines, chunking, errors, state."""

import numpy as np
import pytest
import torch
from models import MLP, SmallCNN, TwoInputModel, seeded
from torch import nn

from attribuo._engine.errors import ArgumentTypeError, ArgumentValueError
from attribuo.attr import IntegratedGradients

METHODS = ["riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid", "gausslegendre"]


class Quadratic(nn.Module):
    """F(x) = sum_i c_i x_i^2 per example: gradient linear in x, IG_i = c_i (x_i^2 - b_i^2)."""

    def __init__(self, c):
        super().__init__()
        self.c = c

    def forward(self, x):
        return (self.c * x * x).sum(1, keepdim=True)


def _smooth_mlp():
    return seeded(MLP(n_in=6, n_hidden=10, n_out=3, act=nn.Tanh)).double()


def _reference_ig(forward, x, b, target, alphas, weights, args=()):
    """Slow reference: one example and one step at a time."""
    out = torch.zeros_like(x)
    for i in range(x.shape[0]):
        for a, w in zip(alphas, weights):
            p = (b[i] + a * (x[i] - b[i])).unsqueeze(0).requires_grad_()
            extra = tuple(t[i : i + 1] if isinstance(t, torch.Tensor) else t for t in args)
            y = forward(p, *extra)[0, target[i] if isinstance(target, list) else target]
            (g,) = torch.autograd.grad(y, p)
            out[i] += w * g[0]
    return out * (x - b)


def _rule(method, n):
    if method == "gausslegendre":
        nodes, w = np.polynomial.legendre.leggauss(n)
        return list(0.5 * (nodes + 1)), list(0.5 * w)
    k = np.arange(n)
    alphas = {
        "riemann_left": k / n,
        "riemann_right": (k + 1) / n,
        "riemann_middle": (k + 0.5) / n,
        "riemann_trapezoid": k / (n - 1),
    }[method]
    w = np.full(n, 1 / n)
    if method == "riemann_trapezoid":
        w[0] = w[-1] = 0.5 / n
    return list(alphas), list(w)


def _total_weight(method, n):
    # Captum's trapezoid rule gives every step 1/n and halves the two ends, so
    # its weights sum to (n - 1) / n; attribuo keeps that for parity.
    return (n - 1) / n if method == "riemann_trapezoid" else 1.0


@pytest.mark.parametrize("method", METHODS)
def test_linear_model_closed_form(method):
    torch.manual_seed(0)
    model = nn.Linear(5, 3).double()
    x, b = torch.randn(4, 5, dtype=torch.float64), torch.randn(4, 5, dtype=torch.float64)
    attr = IntegratedGradients(model).attribute(x, b, target=2, n_steps=7, method=method)
    expected = _total_weight(method, 7) * (x - b) * model.weight[2].detach()
    torch.testing.assert_close(attr, expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("method", ["gausslegendre", "riemann_middle"])
def test_quadratic_closed_form_for_rules_exact_on_linear_gradients(method):
    torch.manual_seed(0)
    c = torch.randn(4, dtype=torch.float64)
    x, b = torch.randn(3, 4, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64)
    attr = IntegratedGradients(Quadratic(c)).attribute(x, b, n_steps=5, method=method)
    torch.testing.assert_close(attr, c * (x * x - b * b), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("method, error", [("riemann_left", -1), ("riemann_right", 1)])
def test_quadratic_one_sided_riemann_error_is_known(method, error):
    # For a gradient linear along the path, left/right sums miss by -/+ c (x - b)^2 / n.
    torch.manual_seed(0)
    c = torch.randn(4, dtype=torch.float64)
    x, b = torch.randn(3, 4, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64)
    attr = IntegratedGradients(Quadratic(c)).attribute(x, b, n_steps=5, method=method)
    expected = c * (x * x - b * b) + error * c * (x - b) ** 2 / 5
    torch.testing.assert_close(attr, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("method", METHODS)
def test_matches_slow_reference_with_per_example_target_and_args(method):
    model = seeded(TwoInputModel()).double()
    torch.manual_seed(1)
    x1, x2 = torch.randn(3, 4, dtype=torch.float64), torch.randn(3, 3, dtype=torch.float64)
    b1 = torch.randn(3, 4, dtype=torch.float64)
    target = [2, 0, 1]
    attr = IntegratedGradients(model).attribute(
        (x1, x2), (b1, 0.5), target=target, additional_forward_args=(2.0,), n_steps=6, method=method
    )
    alphas, weights = _rule(method, 6)

    def f1(p, x2_row):
        return model(p, x2_row, 2.0)

    # reference: integrate over both inputs jointly, one example at a time
    ref1, ref2 = torch.zeros_like(x1), torch.zeros_like(x2)
    b2 = torch.full_like(x2, 0.5)
    for i in range(3):
        for a, w in zip(alphas, weights):
            p1 = (b1[i] + a * (x1[i] - b1[i])).unsqueeze(0).requires_grad_()
            p2 = (b2[i] + a * (x2[i] - b2[i])).unsqueeze(0).requires_grad_()
            g1, g2 = torch.autograd.grad(model(p1, p2, 2.0)[0, target[i]], (p1, p2))
            ref1[i] += w * g1[0]
            ref2[i] += w * g2[0]
    torch.testing.assert_close(attr[0], ref1 * (x1 - b1), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(attr[1], ref2 * (x2 - b2), rtol=1e-6, atol=1e-6)
    assert isinstance(attr, tuple) and len(attr) == 2


def test_tensor_additional_arg_is_expanded_with_the_steps():
    class Gated(nn.Module):
        def forward(self, x, gate):
            return torch.tanh(x * gate).sum(1, keepdim=True)

    torch.manual_seed(2)
    x, gate = torch.randn(4, 3, dtype=torch.float64), torch.rand(4, 3, dtype=torch.float64)
    model = Gated()
    attr = IntegratedGradients(model).attribute(x, additional_forward_args=gate, n_steps=8)
    alphas, weights = _rule("gausslegendre", 8)
    ref = _reference_ig(model, x, torch.zeros_like(x), 0, alphas, weights, (gate,))
    torch.testing.assert_close(attr, ref, rtol=1e-10, atol=1e-12)


def test_delta_shrinks_with_n_steps_and_is_small_at_defaults():
    model = _smooth_mlp()
    torch.manual_seed(3)
    x = torch.randn(5, 6, dtype=torch.float64) * 2
    ig = IntegratedGradients(model)
    deltas = [
        ig.attribute(x, target=1, n_steps=n, method="riemann_right", return_convergence_delta=True)[
            1
        ]
        .abs()
        .max()
        .item()
        for n in (4, 16, 64, 256)
    ]
    assert all(a > b for a, b in zip(deltas, deltas[1:])), deltas
    model32 = _smooth_mlp().float()
    attr, delta = IntegratedGradients(model32).attribute(
        x.float(), target=1, return_convergence_delta=True
    )
    assert delta.shape == (5,) and delta.abs().max() < 1e-3
    # delta is exactly what it claims: sum of attributions minus the output difference
    with torch.no_grad():
        gap = model32(x.float())[:, 1] - model32(torch.zeros_like(x.float()))[:, 1]
    torch.testing.assert_close(delta, attr.sum(1) - gap)


def test_baseline_forms_agree():
    model = _smooth_mlp()
    torch.manual_seed(4)
    x = torch.randn(3, 6, dtype=torch.float64)
    row = torch.randn(6, dtype=torch.float64)
    ig = IntegratedGradients(model)
    full = ig.attribute(x, row.expand(3, 6).clone(), target=0)
    torch.testing.assert_close(ig.attribute(x, row, target=0), full, rtol=0, atol=0)
    torch.testing.assert_close(ig.attribute(x, row.unsqueeze(0), target=0), full, rtol=0, atol=0)
    zeros = ig.attribute(x, torch.zeros(3, 6, dtype=torch.float64), target=0)
    torch.testing.assert_close(ig.attribute(x, None, target=0), zeros, rtol=0, atol=0)
    torch.testing.assert_close(ig.attribute(x, 0, target=0), zeros, rtol=0, atol=0)
    torch.testing.assert_close(
        ig.attribute(x, 0.25, target=0), ig.attribute(x, torch.full_like(x, 0.25), target=0)
    )


def test_tuple_baselines_mix_forms():
    model = seeded(TwoInputModel()).double()
    torch.manual_seed(5)
    x = (torch.randn(3, 4, dtype=torch.float64), torch.randn(3, 3, dtype=torch.float64))
    row = torch.randn(3, dtype=torch.float64)
    ig = IntegratedGradients(model)
    mixed = ig.attribute(x, (0.5, row), target=1)
    explicit = ig.attribute(x, (torch.full_like(x[0], 0.5), row.expand(3, 3)), target=1)
    for a, b in zip(mixed, explicit):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("method", METHODS)
def test_result_does_not_depend_on_internal_batch_size(method, monkeypatch):
    model = seeded(SmallCNN()).double()
    torch.manual_seed(6)
    x = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    ig = IntegratedGradients(model)
    one_go = ig.attribute(x, target=[0, 1, 2], n_steps=10, method=method, internal_batch_size=30)
    for size in (1, 3, 4, 7, 29, 1000):
        got = ig.attribute(x, target=[0, 1, 2], n_steps=10, method=method, internal_batch_size=size)
        torch.testing.assert_close(got, one_go, rtol=1e-12, atol=1e-13)
    # default: chunked by the memory budget (here about one step per forward)
    monkeypatch.setenv("ATTRIBUO_MEMORY_BUDGET_MB", str(x.numel() * 8 * 1.5 / 2**20))
    torch.testing.assert_close(
        ig.attribute(x, target=[0, 1, 2], n_steps=10, method=method), one_go, rtol=1e-12, atol=1e-13
    )


def test_multiply_by_inputs_false_gives_the_path_average_gradient():
    model = _smooth_mlp()
    torch.manual_seed(7)
    x, b = torch.randn(4, 6, dtype=torch.float64), torch.randn(4, 6, dtype=torch.float64)
    local = IntegratedGradients(model, multiply_by_inputs=False)
    glob = IntegratedGradients(model)
    assert not local.multiplies_by_inputs and glob.multiplies_by_inputs
    torch.testing.assert_close(
        local.attribute(x, b, target=2) * (x - b), glob.attribute(x, b, target=2), rtol=0, atol=0
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_follows_inputs(dtype):
    model = _smooth_mlp().to(dtype)
    x = torch.randn(2, 6, dtype=dtype)
    attr, delta = IntegratedGradients(model).attribute(x, target=0, return_convergence_delta=True)
    assert attr.dtype == dtype and delta.dtype == dtype


def test_properties_and_name():
    ig = IntegratedGradients(_smooth_mlp())
    assert ig.has_convergence_delta()
    assert IntegratedGradients.get_name() == "Integrated Gradients"


@pytest.mark.parametrize(
    "kwargs, error, name",
    [
        ({"n_steps": 0}, ArgumentValueError, "n_steps"),
        ({"n_steps": 2.5}, ArgumentValueError, "n_steps"),
        ({"method": "simpson"}, ArgumentValueError, "method"),
        ({"internal_batch_size": 0}, ArgumentValueError, "internal_batch_size"),
        ({"baselines": torch.zeros(2, 5)}, ArgumentValueError, "baselines"),
        ({"baselines": "zero"}, ArgumentTypeError, "baselines"),
        ({"target": 7}, ArgumentValueError, "target"),
    ],
)
def test_bad_arguments_are_named(kwargs, error, name):
    model = _smooth_mlp()
    x = torch.randn(3, 6, dtype=torch.float64)
    kwargs = {"target": 0, **kwargs}
    with pytest.raises(error, match=f"`{name}"):
        IntegratedGradients(model).attribute(x, **kwargs)


def test_integer_inputs_are_rejected_with_a_hint():
    with pytest.raises(ArgumentTypeError, match="floating"):
        IntegratedGradients(nn.Embedding(5, 2)).attribute(torch.tensor([[1, 2]]))


def test_model_and_inputs_untouched_also_on_error():
    model = seeded(SmallCNN()).double()
    model.train()
    model.conv2.weight.requires_grad_(False)
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    before = x.clone()
    for target in (1, 99):
        try:
            IntegratedGradients(model).attribute(x, target=target, n_steps=4)
        except ArgumentValueError:
            assert target == 99
    assert model.training and all(m.training for m in model.modules())
    assert not model.conv2.weight.requires_grad and model.conv1.weight.requires_grad
    assert all(not m._forward_hooks and not m._backward_hooks for m in model.modules())
    assert torch.equal(x, before) and not x.requires_grad and x.grad is None
