"""IDGI: the paper's sum written out slowly, exact completeness, closed forms, chunking, errors."""

import pytest
import torch
from models import MLP, TwoInputModel, seeded
from torch import nn

from attribuo._engine.errors import ArgumentTypeError, ArgumentValueError
from attribuo.attr.gradient.idgi import IDGI, idgi_share


def _mlp():
    return seeded(MLP(n_in=5, n_hidden=9, n_out=3, act=nn.Tanh)).double()


def _reference(model, x, b, target, grid, gradient_at="start"):
    """Yang et al. (2023), Alg. 1, one example and one interval at a time.

    On [x_j, x_{j+1}] with g the gradient at x_j (or x_{j+1}): d_i = g_i * g_i / (g . g) * (f(x_{j+1}) - f(x_j)).
    """
    out = torch.zeros_like(x)
    for i in range(x.shape[0]):
        t = grid if grid.dim() == 1 else grid[i]
        tgt = target[i] if isinstance(target, list) else target
        points = [b[i] + float(a) * (x[i] - b[i]) for a in t]

        def f(p, tgt=tgt):
            return model(p.unsqueeze(0))[0, tgt]

        for j in range(len(points) - 1):
            p = points[j if gradient_at == "start" else j + 1].clone().requires_grad_()
            (g,) = torch.autograd.grad(f(p), p)
            with torch.no_grad():
                change = f(points[j + 1]) - f(points[j])
                out[i] += g * g / (g * g).sum() * change
    return out


@pytest.mark.parametrize("method, at", [("riemann_left", "start"), ("riemann_right", "end")])
def test_matches_the_papers_sum(method, at):
    model = _mlp()
    torch.manual_seed(0)
    x, b = torch.randn(4, 5, dtype=torch.float64), torch.randn(4, 5, dtype=torch.float64) * 0.2
    target = [0, 2, 1, 2]
    got = IDGI(model).attribute(x, b, target=target, n_steps=12, method=method)
    want = _reference(model, x, b, target, torch.linspace(0, 1, 13, dtype=torch.float64), at)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_per_example_grid_matches_the_reference():
    model = _mlp()
    torch.manual_seed(1)
    x = torch.randn(3, 5, dtype=torch.float64)
    inner = torch.sort(torch.rand(3, 6, dtype=torch.float64), 1).values
    grid = torch.cat([torch.zeros(3, 1, dtype=torch.float64), inner, torch.ones(3, 1, dtype=torch.float64)], 1)
    got = IDGI(model).attribute(x, target=1, step_sampling=grid)
    torch.testing.assert_close(got, _reference(model, x, torch.zeros_like(x), 1, grid), rtol=1e-10, atol=1e-12)
    # a grid shared by the batch (the engine's path chunks) gives what the per-example route gives
    shared = IDGI(model).attribute(x, target=1, step_sampling=grid[0])
    torch.testing.assert_close(shared, IDGI(model).attribute(x, target=1, step_sampling=grid[0].expand(3, -1)))


@pytest.mark.parametrize("sampling", ["uniform", "adaptive"])
@pytest.mark.parametrize("method", ["riemann_left", "riemann_right"])
def test_completeness_is_exact(sampling, method):
    model = _mlp()
    torch.manual_seed(2)
    x, b = torch.randn(6, 5, dtype=torch.float64), torch.randn(6, 5, dtype=torch.float64)
    attr, delta = IDGI(model).attribute(
        x, b, target=2, n_steps=7, method=method, step_sampling=sampling, return_convergence_delta=True
    )
    assert delta.abs().max() < 1e-12
    f = model(x)[:, 2] - model(b)[:, 2]
    torch.testing.assert_close(attr.sum(1), f.detach(), rtol=0, atol=1e-12)


def test_single_index_model_closed_form():
    # F(x) = h(w . x): every gradient is parallel to w, so IDGI_i = w_i**2 / |w|**2 * (F(x) - F(b)) at any steps
    w = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64)

    def model(x):
        return torch.sigmoid(4 * (x @ w - 0.3)).unsqueeze(1)

    x = torch.rand(5, 4, dtype=torch.float64)
    b = torch.full_like(x, -0.5)
    change = (model(x) - model(b))[:, 0]
    want = (w * w / (w @ w)).unsqueeze(0) * change.unsqueeze(1)
    for n_steps in (1, 3):
        torch.testing.assert_close(IDGI(model).attribute(x, b, target=0, n_steps=n_steps), want)


def test_tuple_inputs_share_one_gradient_norm():
    model = seeded(TwoInputModel()).double()
    torch.manual_seed(3)
    x1, x2 = torch.randn(3, 4, dtype=torch.float64), torch.randn(3, 3, dtype=torch.float64)
    (a1, a2), delta = IDGI(model).attribute(
        (x1, x2), target=0, additional_forward_args=(2.0,), n_steps=9, return_convergence_delta=True
    )
    assert delta.abs().max() < 1e-12

    def joined(z):
        return model(z[:, :4], z[:, 4:], 2.0)

    want = _reference(joined, torch.cat([x1, x2], 1), torch.zeros(3, 7, dtype=torch.float64), 0,
                      torch.linspace(0, 1, 10, dtype=torch.float64))
    torch.testing.assert_close(torch.cat([a1, a2], 1), want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("sampling", ["uniform", "adaptive"])
def test_batch_and_chunk_size_do_not_matter(sampling):
    model = _mlp()
    torch.manual_seed(4)
    x = torch.randn(7, 5, dtype=torch.float64)
    full = IDGI(model).attribute(x, target=1, n_steps=10, step_sampling=sampling)
    for size in (1, 5, 13):
        chunked = IDGI(model).attribute(x, target=1, n_steps=10, step_sampling=sampling, internal_batch_size=size)
        torch.testing.assert_close(chunked, full, rtol=1e-12, atol=1e-14)
    alone = torch.cat([IDGI(model).attribute(x[i : i + 1], target=1, n_steps=10, step_sampling=sampling)
                       for i in range(7)])
    torch.testing.assert_close(alone, full, rtol=1e-12, atol=1e-14)


def test_float32_inputs_and_zero_gradients():
    relu = nn.Sequential(nn.ReLU(), nn.Linear(3, 1))
    x = -torch.rand(2, 3)  # relu is flat on the whole path: every gradient is zero
    attr = IDGI(relu).attribute(x, target=0)
    assert attr.dtype == torch.float32 and torch.equal(attr, torch.zeros_like(x))
    assert not IDGI(relu).multiplies_by_inputs and IDGI(relu).has_convergence_delta()


def test_share_of_a_step():
    (share,) = idgi_share((torch.tensor([[1.0, 2.0], [0.0, 0.0]]),), torch.tensor([5.0, 3.0]))
    torch.testing.assert_close(share, torch.tensor([[1.0, 4.0], [0.0, 0.0]]))


def test_bad_arguments():
    model = _mlp()
    x = torch.randn(2, 5, dtype=torch.float64)
    idgi = IDGI(model)
    with pytest.raises(ArgumentValueError, match="method"):
        idgi.attribute(x, target=0, method="gausslegendre")
    with pytest.raises(ArgumentValueError, match="step_sampling"):
        idgi.attribute(x, target=0, step_sampling="random")
    with pytest.raises(ArgumentValueError, match="step_sampling"):
        idgi.attribute(x, target=0, step_sampling=torch.tensor([0.0, 0.5, 0.9]))
    with pytest.raises(ArgumentValueError, match="non-decreasing"):
        idgi.attribute(x, target=0, step_sampling=torch.tensor([0.0, 0.6, 0.4, 1.0]))
    with pytest.raises(ArgumentValueError, match="step_sampling"):
        idgi.attribute(x, target=0, step_sampling=torch.linspace(0, 1, 5).expand(3, 5))
    with pytest.raises(ArgumentTypeError, match="step_sampling"):
        idgi.attribute(x, target=0, step_sampling=object())
    with pytest.raises(ArgumentValueError, match="n_probes"):
        idgi.attribute(x, target=0, n_steps=4, step_sampling="adaptive", n_probes=5)
    with pytest.raises(ArgumentValueError, match="n_steps"):
        idgi.attribute(x, target=0, n_steps=0)
    with pytest.raises(ArgumentValueError, match="one value for a whole batch"):
        IDGI(lambda t: model(t)[:, 0].sum()).attribute(x)
    with pytest.raises(ArgumentTypeError, match="inputs"):
        idgi.attribute(torch.ones(2, 5, dtype=torch.long), target=0)
