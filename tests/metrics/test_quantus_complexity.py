"""Complexity metrics against Quantus 0.6, numpy/scipy references and known answers."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.stats
import torch
from torch import nn

from attribuo._engine.errors import ArgumentTypeError, ArgumentValueError
from attribuo.attr import InputXGradient, Saliency
from attribuo.metrics.complexity import (
    complexity,
    discrete_entropy,
    effective_complexity,
    sparseness,
)

quantus = pytest.importorskip("quantus")

N = 6


@pytest.fixture(scope="module")
def data():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(256, 3)).eval()
    x = torch.rand(N, 3, 8, 8)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    a = torch.randn(N, 3, 8, 8) * torch.rand(N, 3, 8, 8).pow(3)
    a = a / a.abs().amax(dim=(1, 2, 3), keepdim=True)  # one shared maximum: Quantus' batch normalisation = ours
    return model, x, y, a


def _quantus(metric, model, x, y, a):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = metric(model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=a.numpy(), device="cpu")
    return np.asarray(out, dtype=np.float64)


PARITY = [
    (sparseness, quantus.Sparseness, {}),
    (complexity, quantus.Complexity, {}),
    (effective_complexity, quantus.EffectiveComplexity, {}),
    (effective_complexity, quantus.EffectiveComplexity, {"eps": 0.2}),
    (sparseness, quantus.Sparseness, {"normalise": False}),
]


@pytest.mark.parametrize("ours, theirs, options", PARITY,
                         ids=[f"{p[0].__name__}-{i}" for i, p in enumerate(PARITY)])
def test_parity_with_quantus(data, ours, theirs, options):
    model, x, y, a = data
    expected = _quantus(theirs(disable_warnings=True, **options), model, x, y, a)
    got = ours(model, x, a, y, **options)
    assert got.dtype == torch.float64 and got.shape == (N,)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6, atol=1e-7)


def test_per_example_normalisation_is_quantus_one_example_at_a_time(data):
    """Quantus normalises by the batch's maximum; ours by each example's (Quantus on one example)."""
    model, x, y, a = data
    scaled = a * torch.tensor([1.0, 10.0, 0.1, 3.0, 1.0, 0.5]).view(N, 1, 1, 1)
    got = effective_complexity(model, x, scaled, y, eps=0.2)
    one_by_one = np.concatenate([
        _quantus(quantus.EffectiveComplexity(eps=0.2, disable_warnings=True), model, x[i:i + 1], y[i:i + 1],
                 scaled[i:i + 1])
        for i in range(N)
    ])
    np.testing.assert_array_equal(got.numpy(), one_by_one)
    batched = _quantus(quantus.EffectiveComplexity(eps=0.2, disable_warnings=True), model, x, y, scaled)
    assert not np.array_equal(batched, one_by_one)  # Quantus' score depends on the other examples
    torch.testing.assert_close(got, effective_complexity(model, x, a, y, eps=0.2))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_discrete_entropy_matches_numpy_histogram(dtype):
    torch.manual_seed(3)
    rows = torch.randn(5, 300, dtype=dtype).pow(3)
    rows[1] = 2.5  # constant: one bin
    rows[2, :10] = rows[2].max()  # values on the last edge
    for bins in (7, 100):
        got = discrete_entropy(rows, bins)
        expected = [scipy.stats.entropy(np.histogram(r, bins=bins)[0]) for r in rows.numpy()]
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12, atol=1e-12)


def test_known_answer_exact_is_simpler_than_random():
    """A linear model that ignores half its inputs: exact attributions are zero there."""
    torch.manual_seed(1)
    model = nn.Linear(16, 2)
    with torch.no_grad():
        model.weight[:, 8:] = 0
    x = torch.rand(32, 16) + 0.5
    exact = InputXGradient(model).attribute(x, target=1)
    random = torch.randn(32, 16)
    assert (sparseness(model, x, exact, 1) > sparseness(model, x, random, 1)).float().mean() > 0.9
    assert complexity(model, x, exact, 1).mean() < complexity(model, x, random, 1).mean()
    assert bool((effective_complexity(model, x, exact, 1) <= 8).all())
    assert effective_complexity(model, x, random, 1).mean() > 12


def test_method_and_batch_invariance(data):
    model, x, y, a = data
    torch.testing.assert_close(sparseness(model, x, Saliency, y),
                               sparseness(model, x, Saliency(model).attribute(x, target=y), y))
    for metric in (sparseness, complexity, effective_complexity):
        torch.testing.assert_close(metric(model, x, a, y)[1:3], metric(model, x[1:3], a[1:3] * 4, y[1:3]))
    # tensor attributions need no model
    assert complexity(None, x, a).shape == (N,)


def test_edge_values():
    zeros = torch.zeros(2, 5)
    assert torch.isnan(complexity(None, zeros, zeros)).all()  # 0 / 0, as Quantus
    torch.testing.assert_close(sparseness(None, zeros, zeros), torch.zeros(2, dtype=torch.float64))
    one_hot = torch.eye(4)
    torch.testing.assert_close(sparseness(None, one_hot, one_hot), torch.full((4,), 0.75, dtype=torch.float64),
                               atol=1e-6, rtol=0)


def test_bad_arguments(data):
    model, x, y, a = data
    with pytest.raises(ArgumentTypeError, match="eps"):
        effective_complexity(model, x, a, y, eps="small")
    with pytest.raises(ArgumentValueError, match="normalise"):
        sparseness(model, x, a, y, normalise="l2")
    with pytest.raises(ArgumentValueError, match="attributions"):
        complexity(model, x, a[:, :, :3], y)
    with pytest.raises(ArgumentTypeError, match="inputs"):
        complexity(model, [x], a, y)
    with pytest.raises(ArgumentValueError, match="n_bins"):
        discrete_entropy(a.flatten(1), 0)
    with pytest.raises(ArgumentTypeError, match="forward_func"):
        sparseness(None, x, Saliency, y)
