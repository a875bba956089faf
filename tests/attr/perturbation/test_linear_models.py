"""The batched linear-model fits behind Lime and KernelShap against sklearn and lstsq."""

import pytest
import torch
from attribuo._utils.models import lasso_batch, least_squares_batch


def test_lasso_batch_matches_tight_sklearn():
    sklearn = pytest.importorskip("sklearn.linear_model")
    torch.manual_seed(0)
    x = torch.bernoulli(torch.full((3, 60, 6), 0.5)).double()
    y = x @ torch.randn(6, dtype=torch.float64) + 0.1 * torch.randn(3, 60, dtype=torch.float64)
    w = torch.rand(3, 60, dtype=torch.float64)
    coef, intercept = lasso_batch(x, y, w, alpha=0.01)
    for b in range(3):
        ref = sklearn.Lasso(alpha=0.01, tol=1e-12, max_iter=100000).fit(x[b], y[b], sample_weight=w[b])
        torch.testing.assert_close(coef[b], torch.as_tensor(ref.coef_), atol=1e-6, rtol=0)
        assert abs(intercept[b].item() - ref.intercept_) < 1e-6


def test_least_squares_batch_matches_lstsq():
    torch.manual_seed(0)
    x = torch.randn(2, 30, 4, dtype=torch.float64)
    y = torch.randn(2, 30, dtype=torch.float64)
    w = torch.rand(2, 30, dtype=torch.float64)
    coef, intercept = least_squares_batch(x, y, w)
    for b in range(2):
        design = torch.cat([x[b], torch.ones(30, 1, dtype=torch.float64)], 1) * w[b].sqrt()[:, None]
        sol = torch.linalg.lstsq(design, y[b] * w[b].sqrt()).solution
        torch.testing.assert_close(coef[b], sol[:4])
        torch.testing.assert_close(intercept[b], sol[4])


@pytest.mark.parametrize("batch", [1, 2, 16])
def test_lasso_batch_is_the_exact_optimum_at_every_batch_size(batch):
    sklearn = pytest.importorskip("sklearn.linear_model")
    torch.manual_seed(1)
    x = torch.bernoulli(torch.full((batch, 200, 20), 0.5)).double()
    y = x @ torch.randn(20, dtype=torch.float64) * 0.05 + 0.1 * torch.randn(batch, 200, dtype=torch.float64)
    w = torch.rand(batch, 200, dtype=torch.float64)
    coef, intercept = lasso_batch(x, y, w, alpha=0.01)
    alone, _ = lasso_batch(x[-1:], y[-1:], w[-1:], alpha=0.01)
    torch.testing.assert_close(alone[0], coef[-1], atol=1e-12, rtol=0)
    ref = sklearn.Lasso(alpha=0.01, tol=1e-14, max_iter=1_000_000).fit(x[-1], y[-1], sample_weight=w[-1])
    torch.testing.assert_close(coef[-1], torch.as_tensor(ref.coef_), atol=1e-8, rtol=0)
    assert abs(intercept[-1].item() - ref.intercept_) < 1e-8
