"""Call expansion and path quadrature against slow, one-point-at-a-time references."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from attribuo._engine.batching import chunk_size, chunks
from attribuo._engine.call import parse_call
from attribuo._engine.paths import (
    PATH_METHODS,
    integrate_path_gradients,
    path_weights,
    site_path_evaluations,
)


class ScaledMLP(nn.Module):
    """Two inputs and a batched extra argument, so every expansion is exercised."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Linear(3, 5).double()
        self.b = nn.Linear(2, 5).double()
        self.hidden = nn.Tanh()
        self.head = nn.Linear(5, 4).double()

    def forward(self, x, y, scale, offset):
        return self.head(self.hidden(self.a(x) + self.b(y))) * scale + offset


def _batch(n: int = 3):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 3, generator=g, dtype=torch.float64)
    y = torch.randn(n, 2, generator=g, dtype=torch.float64)
    scale = torch.rand(n, 1, generator=g, dtype=torch.float64) + 0.5
    return x, y, scale


def test_expanded_tiles_inputs_targets_and_batched_args():
    x, y, scale = _batch()
    call = parse_call((x, y), [0, 3, 1], (scale, 2.0))
    tiled = call.expanded(2)
    assert tiled.batch == 6
    assert torch.equal(tiled.inputs[0], torch.cat([x, x]))
    assert tiled.target.per_example.flatten().tolist() == [0, 3, 1, 0, 3, 1]
    assert torch.equal(tiled.args[0], torch.cat([scale, scale])) and tiled.args[1] == 2.0
    inter = call.expanded(2, interleave=True)
    assert torch.equal(inter.inputs[1], y.repeat_interleave(2, 0))
    assert inter.target.per_example.flatten().tolist() == [0, 0, 3, 3, 1, 1]
    assert torch.equal(inter.args[0], scale.repeat_interleave(2, 0))
    # the same expansion again reuses the expanded target and arguments
    assert call.expanded(2, interleave=True).args[0] is inter.args[0]
    given = (torch.zeros(6, 3, dtype=torch.float64), torch.zeros(6, 2, dtype=torch.float64))
    assert call.expanded(2, inputs=given).inputs is given
    assert call.expanded(1) is call


def test_take_and_with_inputs_keep_examples_aligned():
    x, y, scale = _batch(4)
    call = parse_call((x, y), torch.tensor([0, 1, 2, 3]), (scale, "text"))
    part = call.take(1, 3)
    assert part.batch == 2 and torch.equal(part.inputs[0], x[1:3])
    assert part.target.per_example.flatten().tolist() == [1, 2]
    assert torch.equal(part.args[0], scale[1:3]) and part.args[1] == "text"
    other = call.with_inputs((y[:, :1].expand(4, 3), y), args=())
    assert other.batch == 4 and other.args == () and other.target is call.target


def _reference_path_gradients(model, starts, ends, alphas, weights, target, args):
    """One point and one example at a time, with plain autograd."""
    totals = [torch.zeros_like(e) for e in ends]
    for i in range(ends[0].shape[0]):
        for a, w in zip(alphas, weights):
            point = [(s[i : i + 1] + a * (e[i : i + 1] - s[i : i + 1])).requires_grad_() for s, e in zip(starts, ends)]
            extra = [t[i : i + 1] if isinstance(t, torch.Tensor) and t.dim() else t for t in args]
            out = model(*point, *extra)[0, target[i]]
            for total, g in zip(totals, torch.autograd.grad(out, point)):
                total[i] += w * g[0]
    return totals


@pytest.mark.parametrize("method", PATH_METHODS)
@pytest.mark.parametrize("internal_batch_size", [None, 1, 3, 7, 1000])
def test_path_gradients_match_reference_whatever_the_chunking(method, internal_batch_size):
    model = ScaledMLP()
    x, y, scale = _batch()
    target = [2, 0, 3]
    call = parse_call((x, y), target, (scale, 0.25))
    starts = (torch.zeros_like(x), torch.full_like(y, 0.5))
    alphas, weights = path_weights(method, 9)
    got = integrate_path_gradients(model, call, starts, alphas, weights, internal_batch_size)
    expected = _reference_path_gradients(model, starts, (x, y), alphas, weights, target, (scale, 0.25))
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-12)


def test_gauss_legendre_is_exact_for_polynomials():
    # d/dx of x^4 along 0 -> x integrates to x^3; 3 Gauss-Legendre points are exact to degree 5
    x = torch.tensor([[0.5, -2.0]], dtype=torch.float64)
    alphas, weights = path_weights("gausslegendre", 3)
    (got,) = integrate_path_gradients(lambda t: (t**4).sum(1), parse_call(x), (torch.zeros_like(x),), alphas, weights)
    torch.testing.assert_close(got, x**3, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("internal_batch_size", [None, 2, 5])
def test_site_path_gradients_match_reference(internal_batch_size):
    model = ScaledMLP()
    x, y, scale = _batch()
    call = parse_call((x, y), 1, (scale, 0.0))
    starts = (torch.zeros_like(x), torch.zeros_like(y))
    alphas, _ = path_weights("riemann_left", 6)
    evaluations = list(
        site_path_evaluations(model, model.hidden, call, starts, alphas, internal_batch_size=internal_batch_size)
    )
    assert [lo for lo, *_ in evaluations] == sorted(lo for lo, *_ in evaluations)
    grads = torch.cat([g[0] for _, _, g, _ in evaluations])  # [steps, batch, 5]
    values = torch.cat([v[0] for _, _, _, v in evaluations])
    for k, a in enumerate(alphas):
        px, py = a * x, a * y
        hidden = model.hidden(model.a(px) + model.b(py)).detach().requires_grad_()
        out = (model.head(hidden) * scale)[:, 1].sum()
        (expected,) = torch.autograd.grad(out, hidden)
        torch.testing.assert_close(grads[k], expected, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(values[k], hidden.detach(), rtol=1e-12, atol=1e-12)


def test_chunk_size_requests_and_budget(monkeypatch):
    assert chunk_size(10, None) == 10  # not budgeted: all at once
    assert chunk_size(10, None, examples=7, batch=3) == 2
    assert chunk_size(10, None, examples=2, batch=3) == 1  # at least one item
    assert chunk_size(0, 8) == 1
    monkeypatch.setenv("ATTRIBUO_MEMORY_BUDGET_MB", "1")
    assert chunk_size(100, 1 << 18) == 4  # 1 MiB over 256 KiB items
    assert list(chunks(5, 1 << 19)) == [(0, 2), (2, 4), (4, 5)]
    with pytest.raises(ValueError, match="`max_examples_per_batch`"):
        chunk_size(5, 8, examples=0, name="max_examples_per_batch")
    with pytest.raises(ValueError, match="`perturbations_per_eval`"):
        chunk_size(5, 8, items=True, name="perturbations_per_eval")
