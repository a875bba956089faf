"""GradientShap: a slow reference of its random draws, closed forms, chunking, errors."""

import numpy as np
import pytest
import torch
from models import MLP, TwoInputModel, seeded
from torch import nn

from attribuo._engine.errors import ArgumentTypeError, ArgumentValueError
from attribuo.attr import GradientShap, IntegratedGradients


def _smooth_mlp():
    return seeded(MLP(n_in=6, n_hidden=10, n_out=3, act=nn.Tanh)).double()


def _reference(model, inputs, dists, n_samples, stdevs, target, args=()):
    """Slow reference of GradientShap's documented draws, one sample at a time.

    Draw order (Captum's): per input, baseline rows with numpy.random.choice
    (batch * n_samples, example-major); per input, standard normal noise of
    shape (batch * n_samples, ...) from torch; then one numpy uniform per
    noisy sample for the point on the path.
    """
    n = inputs[0].shape[0]
    rows = [np.random.choice(d.shape[0], n * n_samples) for d in dists]
    noise = [
        (torch.randn((n * n_samples,) + tuple(x.shape[1:])) * s).double()
        for x, s in zip(inputs, stdevs)
    ]
    alpha = np.random.uniform(0.0, 1.0, n * n_samples)
    attrs = [torch.zeros_like(x) for x in inputs]
    deltas = []
    for i in range(n):
        for k in range(n_samples):
            j = i * n_samples + k
            noisy = [x[i] + e[j] for x, e in zip(inputs, noise)]
            base = [d[r[j]] for d, r in zip(dists, rows)]
            pts = [
                (alpha[j] * v + (1 - alpha[j]) * b).unsqueeze(0).requires_grad_()
                for v, b in zip(noisy, base)
            ]
            extra = tuple(a[i : i + 1] if isinstance(a, torch.Tensor) else a for a in args)
            t = target[i] if isinstance(target, list) else target
            grads = torch.autograd.grad(model(*pts, *extra)[0, t], pts)
            contrib = [(v - b) * g[0] for v, b, g in zip(noisy, base, grads)]
            for acc, c in zip(attrs, contrib):
                acc[i] += c / n_samples
            with torch.no_grad():
                gap = (
                    model(*[v.unsqueeze(0) for v in noisy], *extra)[0, t]
                    - model(*[b.unsqueeze(0) for b in base], *extra)[0, t]
                )
            deltas.append(sum(c.sum() for c in contrib) - gap)
    return attrs, torch.stack(deltas)


def _seed(s=11):
    torch.manual_seed(s)
    np.random.seed(s)


@pytest.mark.parametrize("stdevs", [0.0, 0.3])
def test_matches_slow_reference_single_input(stdevs):
    model = _smooth_mlp()
    torch.manual_seed(0)
    x, dist = torch.randn(3, 6, dtype=torch.float64), torch.randn(7, 6, dtype=torch.float64)
    _seed()
    attr, delta = GradientShap(model).attribute(
        x, dist, n_samples=4, stdevs=stdevs, target=[0, 2, 1], return_convergence_delta=True
    )
    _seed()
    (ref,), ref_delta = _reference(model, (x,), (dist,), 4, (stdevs,), [0, 2, 1])
    torch.testing.assert_close(attr, ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(delta, ref_delta, rtol=1e-10, atol=1e-12)
    assert delta.shape == (12,)


def test_matches_slow_reference_tuple_inputs_per_input_stdevs_and_args():
    model = seeded(TwoInputModel()).double()
    torch.manual_seed(1)
    x = (torch.randn(2, 4, dtype=torch.float64), torch.randn(2, 3, dtype=torch.float64))
    dist = (torch.randn(5, 4, dtype=torch.float64), torch.randn(9, 3, dtype=torch.float64))
    _seed(3)
    attr, delta = GradientShap(model).attribute(
        x,
        dist,
        n_samples=3,
        stdevs=(0.1, 0.5),
        target=1,
        additional_forward_args=(2.0,),
        return_convergence_delta=True,
    )
    _seed(3)
    ref, ref_delta = _reference(model, x, dist, 3, (0.1, 0.5), 1, (2.0,))
    assert isinstance(attr, tuple) and len(attr) == 2
    for a, r in zip(attr, ref):
        torch.testing.assert_close(a, r, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(delta, ref_delta, rtol=1e-10, atol=1e-12)


def test_linear_model_closed_form_and_zero_delta():
    torch.manual_seed(2)
    model = nn.Linear(5, 2).double()
    x = torch.randn(4, 5, dtype=torch.float64)
    c = torch.randn(5, dtype=torch.float64)
    dist = c.expand(6, 5).clone()  # every baseline row is c
    attr, delta = GradientShap(model).attribute(
        x, dist, n_samples=5, target=1, return_convergence_delta=True
    )
    torch.testing.assert_close(attr, (x - c) * model.weight[1].detach())
    torch.testing.assert_close(delta, torch.zeros(20, dtype=torch.float64), rtol=0, atol=1e-12)


def test_tends_to_integrated_gradients_with_one_baseline_and_many_samples():
    # One baseline, no noise: GradientShap is Monte Carlo over the path point of IG.
    model = _smooth_mlp()
    torch.manual_seed(3)
    x, b = torch.randn(2, 6, dtype=torch.float64), torch.randn(1, 6, dtype=torch.float64)
    _seed()
    gs = GradientShap(model).attribute(x, b, n_samples=3000, target=0)
    ig = IntegratedGradients(model).attribute(x, b, target=0)
    torch.testing.assert_close(gs, ig, rtol=0.05, atol=0.01)


@pytest.mark.parametrize("size", [1, 5, 7, 1000])
def test_result_does_not_depend_on_internal_batch_size(size, monkeypatch):
    model = _smooth_mlp()
    torch.manual_seed(4)
    x, dist = torch.randn(3, 6, dtype=torch.float64), torch.randn(5, 6, dtype=torch.float64)

    def run(**kw):
        _seed(5)
        return GradientShap(model).attribute(
            x, dist, n_samples=6, stdevs=0.2, target=2, return_convergence_delta=True, **kw
        )

    ref_attr, ref_delta = run()
    attr, delta = run(internal_batch_size=size)
    torch.testing.assert_close(attr, ref_attr, rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(delta, ref_delta, rtol=1e-12, atol=1e-13)
    # and chunked by a tiny memory budget
    monkeypatch.setenv("ATTRIBUO_MEMORY_BUDGET_MB", "0.0001")
    attr, _ = run()
    torch.testing.assert_close(attr, ref_attr, rtol=1e-12, atol=1e-13)


def test_callable_baselines_with_and_without_inputs():
    model = _smooth_mlp()
    torch.manual_seed(6)
    x, dist = torch.randn(2, 6, dtype=torch.float64), torch.randn(4, 6, dtype=torch.float64)
    _seed()
    expected = GradientShap(model).attribute(x, dist, target=0)
    _seed()
    assert torch.equal(GradientShap(model).attribute(x, lambda: dist, target=0), expected)
    seen = []

    def from_inputs(inp):
        seen.append(inp)
        return dist

    _seed()
    assert torch.equal(GradientShap(model).attribute(x, from_inputs, target=0), expected)
    assert seen[0] is x


def test_multiply_by_inputs_false():
    torch.manual_seed(7)
    model = nn.Linear(5, 2).double()
    x, dist = torch.randn(3, 5, dtype=torch.float64), torch.randn(4, 5, dtype=torch.float64)
    gs = GradientShap(model, multiply_by_inputs=False)
    assert not gs.multiplies_by_inputs and gs.has_convergence_delta()
    _seed()
    attr = gs.attribute(x, dist, n_samples=3, stdevs=0.5, target=0)
    torch.testing.assert_close(attr, model.weight[0].detach().expand(3, 5))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_follows_inputs(dtype):
    model = _smooth_mlp().to(dtype)
    x, dist = torch.randn(2, 6, dtype=dtype), torch.randn(3, 6, dtype=torch.float32)
    attr, delta = GradientShap(model).attribute(
        x, dist, stdevs=0.1, target=0, return_convergence_delta=True
    )
    assert attr.dtype == dtype and delta.dtype == dtype


@pytest.mark.parametrize(
    "kwargs, error, name",
    [
        ({"baselines": torch.zeros(4, 5)}, ArgumentValueError, "baselines"),
        ({"baselines": 0.0}, ArgumentTypeError, "baselines"),
        ({"n_samples": 0}, ArgumentValueError, "n_samples"),
        ({"stdevs": -1.0}, ArgumentValueError, "stdevs"),
        ({"stdevs": (0.1, 0.2)}, ArgumentValueError, "stdevs"),
        ({"internal_batch_size": 0}, ArgumentValueError, "internal_batch_size"),
        ({"target": 5}, ArgumentValueError, "target"),
    ],
)
def test_bad_arguments_are_named(kwargs, error, name):
    model = _smooth_mlp()
    x = torch.randn(3, 6, dtype=torch.float64)
    kwargs = {"baselines": torch.zeros(4, 6, dtype=torch.float64), "target": 0, **kwargs}
    with pytest.raises(error, match=f"`{name}"):
        GradientShap(model).attribute(x, **kwargs)


def test_model_and_inputs_untouched():
    model = _smooth_mlp()
    model.train()
    model.fc1.weight.requires_grad_(False)
    x = torch.randn(2, 6, dtype=torch.float64)
    dist = torch.randn(3, 6, dtype=torch.float64)
    before, dist_before = x.clone(), dist.clone()
    GradientShap(model).attribute(x, dist, stdevs=0.1, target=0, return_convergence_delta=True)
    assert model.training and not model.fc1.weight.requires_grad and model.fc2.weight.requires_grad
    assert torch.equal(x, before) and torch.equal(dist, dist_before) and x.grad is None
