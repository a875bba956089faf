"""Localisation metrics against Quantus 0.6, slow references and known answers."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from attribuo._engine.errors import ArgumentTypeError, ArgumentValueError
from attribuo.attr import InputXGradient, Saliency
from attribuo.metrics.localisation import (
    attribution_localisation,
    auc,
    pointing_game,
    relevance_mass_accuracy,
    relevance_rank_accuracy,
    top_k_intersection,
)

quantus = pytest.importorskip("quantus")

N = 6


@pytest.fixture(scope="module")
def data():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(256, 3)).eval()
    x = torch.rand(N, 1, 8, 8)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    a = torch.randn(N, 1, 8, 8)
    # every example has the same largest |a|: Quantus' batch-wide normalisation is then ours
    a = a / a.abs().amax(dim=(1, 2, 3), keepdim=True)
    masks = torch.zeros(N, 1, 8, 8)
    masks[:, :, 2:5, 1:6] = 1
    masks[3, :, :, :4] = 1
    masks[4, :, 6:, :] = 1
    return model, x, y, a, masks


def _quantus(metric, model, x, y, a, masks):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = metric(model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=a.numpy(),
                     s_batch=masks.numpy(), device="cpu")
    return np.asarray(out, dtype=np.float64)


PARITY = [
    (pointing_game, quantus.PointingGame, {}),
    (top_k_intersection, quantus.TopKIntersection, {"k": 10}),
    (top_k_intersection, quantus.TopKIntersection, {"k": 10, "concept_influence": True, "abs": True}),
    (relevance_mass_accuracy, quantus.RelevanceMassAccuracy, {}),
    (relevance_mass_accuracy, quantus.RelevanceMassAccuracy, {"abs": True}),
    (relevance_rank_accuracy, quantus.RelevanceRankAccuracy, {}),
    (attribution_localisation, quantus.AttributionLocalisation, {}),
    (attribution_localisation, quantus.AttributionLocalisation, {"abs": False, "positive_attributions": True}),
    (auc, quantus.AUC, {}),
    (auc, quantus.AUC, {"abs": True}),
]


@pytest.mark.parametrize("ours, theirs, options", PARITY,
                         ids=[f"{p[0].__name__}-{i}" for i, p in enumerate(PARITY)])
def test_parity_with_quantus(data, ours, theirs, options):
    model, x, y, a, masks = data
    expected = _quantus(theirs(disable_warnings=True, **options), model, x, y, a, masks)
    got = ours(model, x, a, y, masks=masks, **options)
    assert got.dtype == torch.float64 and got.shape == (N,)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-6)


def test_attribution_localisation_weighted_share_of_features(data):
    """Quantus divides the mask size by x_batch[2:].size ((N-2) C H W); here by H W."""
    model, x, y, a, masks = data
    expected = _quantus(quantus.AttributionLocalisation(weighted=True, disable_warnings=True),
                        model, x, y, a, masks)
    got = attribution_localisation(model, x, a, y, masks=masks, weighted=True)
    np.testing.assert_allclose(got.numpy(), expected * (N - 2), rtol=1e-5)
    plain = attribution_localisation(model, x, a, y, masks=masks)
    torch.testing.assert_close(got, plain * masks.flatten(1).mean(1).double())


def test_pointing_game_weighted_and_ties_against_reference(data):
    """Quantus 0.6 fails on weighted=True (boolean array); the paper's weight is 1 - mask share."""
    model, x, y, a, masks = data
    a = a.clone()
    a[0, 0, 0, 0] = a[0].max()  # a tie for the maximum, outside the mask
    a[0, 0, 3, 3] = a[0].max()  # and one inside: a hit
    got = pointing_game(model, x, a, y, masks=masks, weighted=True)
    for i in range(N):
        flat, m = a[i].flatten(), masks[i].flatten().bool()
        hit = any(m[j] for j in range(flat.numel()) if flat[j] == flat.max())
        assert float(got[i]) == pytest.approx(float(hit) * (1 - m.float().mean().item()))
    assert got[0] > 0


def test_empty_mask_gives_nan_and_full_mask_auc_nan(data):
    model, x, y, a, masks = data
    masks = masks.clone()
    masks[1] = 0
    masks[2] = 1
    for metric in (pointing_game, relevance_mass_accuracy, relevance_rank_accuracy,
                   attribution_localisation, auc):
        got = metric(model, x, a, y, masks=masks)
        assert torch.isnan(got[1]) and torch.isfinite(got[0]), metric.__name__
    assert torch.isnan(top_k_intersection(model, x, a, y, masks=masks, k=5)[1])
    assert torch.isnan(auc(model, x, a, y, masks=masks)[2])  # no negatives: undefined, as scikit-learn


def test_auc_with_ties_matches_scikit_learn(data):
    model, x, y, a, masks = data
    rounded = (a * 2).round() / 2  # many ties
    got = auc(model, x, rounded, y, masks=masks)
    for i in range(N):
        expected = roc_auc_score(masks[i].flatten().numpy(), rounded[i].flatten().numpy())
        assert float(got[i]) == pytest.approx(expected, abs=1e-12)


def test_rank_accuracy_against_reference(data):
    model, x, y, a, masks = data
    got = relevance_rank_accuracy(model, x, a, y, masks=masks)
    for i in range(N):
        flat, m = a[i].flatten(), masks[i].flatten().bool()
        k = int(m.sum())
        top = sorted(range(flat.numel()), key=lambda j: -float(flat[j]))[:k]
        assert float(got[i]) == pytest.approx(sum(bool(m[j]) for j in top) / k)


def test_known_answer_exact_beats_random():
    """A linear model that ignores its last 4 inputs: the exact attribution points at the first 4."""
    torch.manual_seed(1)
    model = nn.Linear(8, 2)
    with torch.no_grad():
        model.weight[:, 4:] = 0
    x = torch.rand(32, 8) + 0.5
    target = 0
    exact = InputXGradient(model).attribute(x, target=target).abs()
    random = torch.rand(32, 8)
    masks = torch.zeros(32, 8, dtype=torch.bool)
    masks[:, :4] = True
    for metric, options in [(pointing_game, {}), (top_k_intersection, {"k": 4}),
                            (relevance_mass_accuracy, {}), (relevance_rank_accuracy, {}),
                            (attribution_localisation, {}), (auc, {})]:
        good = metric(model, x, exact, target, masks=masks, **options).mean()
        bad = metric(model, x, random, target, masks=masks, **options).mean()
        assert good > bad, metric.__name__
        assert good == pytest.approx(1.0), metric.__name__


def test_batch_invariance_and_method_and_mask_forms(data):
    model, x, y, a, masks = data
    for metric in (pointing_game, relevance_mass_accuracy, relevance_rank_accuracy,
                   attribution_localisation, auc):
        full = metric(model, x, a * torch.arange(1, N + 1).view(N, 1, 1, 1), y, masks=masks)
        part = metric(model, x[2:4], a[2:4] * torch.tensor([7.0, 0.5]).view(2, 1, 1, 1), y[2:4],
                      masks=masks[2:4])
        torch.testing.assert_close(full[2:4], part, rtol=1e-6, atol=1e-9)
    # (N, H, W) masks and bool masks; a method instead of a tensor
    from_method = relevance_mass_accuracy(model, x, Saliency, y, masks=masks[:, 0].bool())
    from_tensor = relevance_mass_accuracy(model, x, Saliency(model).attribute(x, target=y), y, masks=masks)
    torch.testing.assert_close(from_method, from_tensor)
    # a one-channel mask shared by three-channel attributions
    x3 = x.expand(N, 3, 8, 8)
    a3 = a.expand(N, 3, 8, 8)
    torch.testing.assert_close(auc(model, x3, a3, y, masks=masks), auc(model, x, a, y, masks=masks))


def test_max_size_warns(data):
    model, x, y, a, masks = data
    with pytest.warns(UserWarning, match="max_size"):
        attribution_localisation(model, x, a, y, masks=masks, max_size=0.1)


def test_bad_arguments(data):
    model, x, y, a, masks = data
    with pytest.raises(ArgumentTypeError, match="masks"):
        pointing_game(model, x, a, y, masks=masks.numpy())
    with pytest.raises(ArgumentValueError, match="masks"):
        pointing_game(model, x, a, y, masks=masks[:, :, :4])
    with pytest.raises(ArgumentValueError, match="masks"):
        auc(model, x, a, y, masks=masks[:3])
    with pytest.raises(ArgumentValueError, match="0/1"):
        auc(model, x, a, y, masks=masks * 2)
    with pytest.raises(ArgumentValueError, match="masks"):  # a 3-channel mask for 1-channel attributions
        auc(model, x, a, y, masks=masks.expand(N, 3, 8, 8))
    with pytest.raises(ArgumentValueError, match="`k`"):
        top_k_intersection(model, x, a, y, masks=masks)  # Quantus' default k=1000 > 64 features
    with pytest.raises(ArgumentValueError, match="`k`"):
        top_k_intersection(model, x, a, y, masks=masks, k=True)
    with pytest.raises(ArgumentValueError, match="attributions"):
        auc(model, x, a[:, :, :4], y, masks=masks)
    with pytest.raises(ArgumentValueError, match="normalise"):
        auc(model, x, a, y, masks=masks, normalise="sum")
    with pytest.raises(TypeError, match="masks"):
        auc(model, x, a, y)
