"""Tabular Lime / KernelShap on their fast paths (16+ features) against Captum 0.9.0 under a seed.

KernelShap's coalitions are read ahead from torch's stream in bulk at 16
features and more; Lime's lasso settles by guessed supports. Both must
still give Captum's numbers under the same seed and leave the generator
where Captum leaves it.
"""

import warnings

import pytest
import torch
from torch import nn

captum_attr = pytest.importorskip("captum.attr")

import attribuo.attr as ours  # noqa: E402

warnings.filterwarnings("ignore")


def _mlp(features):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(features, 32), nn.ReLU(), nn.Linear(32, 3)).eval()


def _pair(name, model, x, seed, **kw):
    torch.manual_seed(seed)
    mine = getattr(ours, name)(model).attribute(x, **kw)
    after_mine = torch.rand(3)
    torch.manual_seed(seed)
    theirs = getattr(captum_attr, name)(model).attribute(x, **kw)
    assert torch.equal(torch.rand(3), after_mine)  # the generator left where Captum leaves it
    return mine, theirs


@pytest.mark.parametrize("features,batch,n_samples", [(20, 1, 200), (20, 3, 60), (100, 1, 600), (33, 2, 150)])
def test_kernel_shap_fast_draws_match_captum(features, batch, n_samples):
    x = torch.randn(batch, features, generator=torch.Generator().manual_seed(features))
    mine, theirs = _pair("KernelShap", _mlp(features), x, 13, target=torch.arange(batch) % 3, n_samples=n_samples)
    # Captum fits in float32 (scikit-learn on float32 data): more features lose a few more digits
    torch.testing.assert_close(mine, theirs, atol=1e-5 if features <= 24 else 5e-4, rtol=1e-4)


def test_kernel_shap_per_example_mask_matches_captum():
    x = torch.randn(2, 24, generator=torch.Generator().manual_seed(4))
    mask = torch.stack([torch.arange(24) % 18, (torch.arange(24) + 5) % 18])
    mine, theirs = _pair("KernelShap", _mlp(24), x, 9, target=2, feature_mask=mask, n_samples=50)
    torch.testing.assert_close(mine, theirs, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("features,batch,n_samples", [(20, 1, 200), (100, 1, 200), (20, 3, 80)])
def test_lime_matches_captum(features, batch, n_samples):
    # Captum's scikit-learn Lasso stops at tol=1e-4; ours is the exact optimum
    x = torch.randn(batch, features, generator=torch.Generator().manual_seed(features + 1))
    mine, theirs = _pair("Lime", _mlp(features), x, 21, target=torch.arange(batch) % 3, n_samples=n_samples)
    torch.testing.assert_close(mine, theirs, atol=2e-3, rtol=0)
