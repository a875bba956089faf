"""Seeded runs that chain several Lime calls stay on Captum's numbers.

Captum's fits take random draws (a DataLoader seed, nn.Linear's
initialisation); attribuo takes the same ones, so that a seeded sequence of
calls (Lime, then LimeBase with a user sampler) reproduces Captum exactly.
"""

import warnings

import pytest
import torch

captum_lime = pytest.importorskip("captum.attr._core.lime")
captum_models = pytest.importorskip("captum._utils.models.linear_model")

import attribuo._utils.models as ours_models  # noqa: E402
import attribuo.attr.lime as ours_lime  # noqa: E402


def _model(x):
    return (x * torch.tensor([3.0, -1.0, 2.0, 0.5])).sum(1) + x[:, 0] * x[:, 1]


def _sampler(original, **kwargs):
    keep = torch.bernoulli(torch.full((1, kwargs["num_interp_features"]), 0.5))
    return original * keep[0][kwargs["feature_mask"]]


def _to_interp(sample, original, **kwargs):
    return (sample != 0).float().reshape(1, -1)


def _run(lime_mod, models_mod):
    torch.manual_seed(7)
    x = torch.tensor([[1.0, 2.0, -1.0, 3.0], [0.5, -2.0, 1.0, 1.0]])
    lime = lime_mod.Lime(_model, interpretable_model=models_mod.SkLearnLasso(alpha=0.01))
    first = lime.attribute(x, target=None, n_samples=40)
    base = lime_mod.LimeBase(
        _model, models_mod.SkLearnLinearRegression(),
        lime_mod.get_exp_kernel_similarity_function("euclidean", 10.0),
        _sampler, False, None, _to_interp,
    )
    second = base.attribute(x[:1], n_samples=30, feature_mask=torch.arange(4), num_interp_features=4)
    return first, second, torch.rand(3)


def test_seeded_lime_then_limebase_matches_captum():
    pytest.importorskip("sklearn")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = _run(ours_lime, ours_models)
        theirs = _run(captum_lime, captum_models)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a.float(), b.float(), atol=1e-4, rtol=1e-4)
