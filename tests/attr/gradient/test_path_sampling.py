"""Non-uniform step grids and NonUniformIntegratedGradients; no leftover state for the IG variants."""

import numpy as np
import pytest
import torch
from models import MLP, SmallCNN, seeded
from torch import nn

from attribuo._engine.errors import ArgumentTypeError, ArgumentValueError
from attribuo.attr import IntegratedGradients
from attribuo.attr.gradient.blur_ig import BlurIntegratedGradients
from attribuo.attr.gradient.guided_ig import GuidedIntegratedGradients
from attribuo.attr.gradient.idgi import IDGI
from attribuo.attr.gradient.path_sampling import NonUniformIntegratedGradients, adaptive_grid

W = torch.tensor([1.5, -1.0, 2.0, 0.5], dtype=torch.float64)


def _sharp(x):
    """F(x) = sigmoid(25 (w . x - 1)): the output changes on a short stretch of the path."""
    return torch.sigmoid(25 * (x @ W - 1.0)).unsqueeze(1)


def _exact_ig(x, b):
    # F depends on x through w . x only, so along the line IG_i = w_i (x_i - b_i) / (w . (x - b)) * (F(x) - F(b))
    d = x - b
    return W * d / (d @ W).unsqueeze(1) * (_sharp(x) - _sharp(b))


def _inputs(n=6):
    torch.manual_seed(0)
    return torch.rand(n, 4, dtype=torch.float64) * 0.8 + 0.2


def test_adaptive_grid_places_steps_by_output_change():
    outputs = torch.tensor([[0.0, 0.0, 0.0, 3.0, 4.0], [1.0, 1.0, 1.0, 1.0, 1.0]], dtype=torch.float64)
    grid = adaptive_grid(outputs, 12)
    assert grid.shape == (2, 13) and (grid[:, 0] == 0).all() and (grid[:, -1] == 1).all()
    assert (grid[:, 1:] > grid[:, :-1]).all()
    counts = [[int(((grid[i] >= j / 4) & (grid[i] < (j + 1) / 4)).sum()) for j in range(4)] for i in range(2)]
    # one step per interval, the other 8 by the cube roots of the changes 3 and 1; evenly where nothing changes
    assert counts == [[1, 1, 6, 4], [3, 3, 3, 3]]


def test_adaptive_beats_uniform_on_a_sharp_model():
    x = _inputs()
    b = torch.zeros_like(x)
    exact = _exact_ig(x, b)
    nuig = NonUniformIntegratedGradients(_sharp)
    errors = {s: (nuig.attribute(x, b, target=0, n_steps=24, step_sampling=s) - exact).abs().max()
              for s in ("uniform", "adaptive")}
    assert errors["adaptive"] < errors["uniform"] / 5
    _, delta = nuig.attribute(x, b, target=0, n_steps=24, return_convergence_delta=True)
    assert delta.abs().max() < 0.03


def test_adaptive_rule_is_exact_for_linear_gradients():
    # F = sum_i c_i x_i**2: the gradient is linear along the path and IG_i = c_i (x_i**2 - b_i**2)
    c = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64)

    def quadratic(x):
        return (c * x * x).sum(1, keepdim=True)

    x, b = _inputs(4), torch.full((4, 4), 0.1, dtype=torch.float64)
    got = NonUniformIntegratedGradients(quadratic).attribute(x, b, target=0, n_steps=7, n_probes=3)
    torch.testing.assert_close(got, c * (x * x - b * b))


def test_uniform_is_the_midpoint_rule_and_a_pair_is_any_rule():
    model = seeded(MLP(n_in=4, n_hidden=6, n_out=2, act=nn.Tanh)).double()
    x = _inputs(3)
    nuig = NonUniformIntegratedGradients(model)
    ig = IntegratedGradients(model)
    torch.testing.assert_close(nuig.attribute(x, target=1, n_steps=8, step_sampling="uniform"),
                               ig.attribute(x, target=1, n_steps=8, method="riemann_middle"), rtol=1e-6, atol=1e-9)
    nodes, weights = np.polynomial.legendre.leggauss(6)
    pair = (torch.tensor((nodes + 1) / 2), torch.tensor(weights / 2))
    torch.testing.assert_close(nuig.attribute(x, target=1, step_sampling=pair),
                               ig.attribute(x, target=1, n_steps=6, method="gausslegendre"))
    # per-example points and weights against a slow loop
    alphas = torch.rand(3, 5, dtype=torch.float64)
    w = torch.rand(3, 5, dtype=torch.float64)
    got = nuig.attribute(x, target=1, step_sampling=(alphas, w))
    want = torch.zeros_like(x)
    for i in range(3):
        for a, wk in zip(alphas[i], w[i]):
            p = (a * x[i]).unsqueeze(0).requires_grad_()
            want[i] += wk * torch.autograd.grad(model(p)[0, 1], p)[0][0]
    torch.testing.assert_close(got, want * x)
    unscaled = NonUniformIntegratedGradients(model, multiply_by_inputs=False).attribute(x, target=1, step_sampling=(alphas, w))
    torch.testing.assert_close(unscaled, want)


def test_adaptive_does_not_depend_on_batch_or_chunks():
    x = _inputs(5)
    nuig = NonUniformIntegratedGradients(_sharp)
    full = nuig.attribute(x, target=0, n_steps=15, n_probes=5)
    torch.testing.assert_close(nuig.attribute(x, target=0, n_steps=15, n_probes=5, internal_batch_size=3), full)
    alone = torch.cat([nuig.attribute(x[i : i + 1], target=0, n_steps=15, n_probes=5) for i in range(5)])
    torch.testing.assert_close(alone, full)


def test_bad_sampling_arguments():
    nuig = NonUniformIntegratedGradients(_sharp)
    x = _inputs(2)
    with pytest.raises(ArgumentValueError, match="alphas, weights"):
        nuig.attribute(x, target=0, step_sampling=(torch.rand(3),))
    with pytest.raises(ArgumentValueError, match="same shape"):
        nuig.attribute(x, target=0, step_sampling=(torch.rand(3), torch.rand(4)))
    with pytest.raises(ArgumentValueError, match=r"\[0, 1\]"):
        nuig.attribute(x, target=0, step_sampling=(torch.tensor([0.5, 1.5]), torch.ones(2)))
    with pytest.raises(ArgumentValueError, match="batch"):
        nuig.attribute(x, target=0, step_sampling=(torch.rand(3, 2), torch.rand(3, 2)))
    with pytest.raises(ArgumentTypeError, match="alphas"):
        nuig.attribute(x, target=0, step_sampling=("a", torch.ones(1)))
    with pytest.raises(ArgumentValueError, match="n_probes"):
        nuig.attribute(x, target=0, n_steps=3, n_probes=4)


METHODS = {
    "IDGI": (IDGI, {"n_steps": 4}),
    "IDGI-adaptive": (IDGI, {"n_steps": 4, "step_sampling": "adaptive"}),
    "GuidedIntegratedGradients": (GuidedIntegratedGradients, {"n_steps": 4}),
    "BlurIntegratedGradients": (BlurIntegratedGradients, {"n_steps": 4, "max_sigma": 2.0}),
    "NonUniformIntegratedGradients": (NonUniformIntegratedGradients, {"n_steps": 4}),
}


def _state(model, x):
    return (
        [(len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks)) for m in model.modules()],
        [m.training for m in model.modules()],
        [p.requires_grad for p in model.parameters()],
        [p.detach().clone() for p in model.parameters()],
        x.clone(), x.requires_grad,
    )


def _same(a, b):
    assert a[0] == b[0] and a[1] == b[1] and a[2] == b[2] and a[5] == b[5]
    assert all(torch.equal(p, q) for p, q in zip(a[3], b[3])) and torch.equal(a[4], b[4])


@pytest.mark.parametrize("name", sorted(METHODS))
def test_no_leftover_state(name):
    cls, kwargs = METHODS[name]
    model = seeded(SmallCNN())
    model.train()
    model.conv2.weight.requires_grad_(False)
    x = torch.randn(3, 1, 8, 8)
    before = _state(model, x)
    attr = cls(model).attribute(x, target=1, **kwargs)
    assert attr.shape == x.shape and torch.isfinite(attr).all()
    _same(before, _state(model, x))
    with pytest.raises((ValueError, TypeError)):
        cls(model).attribute(x, target=99, **kwargs)
    _same(before, _state(model, x))
