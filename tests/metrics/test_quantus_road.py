"""ROAD and its noisy linear imputation: Quantus 0.6 parity, the imputation's defining property,
known answers, chunk invariance and argument errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from models import seeded
from torch import nn

from attribuo._engine.errors import ArgumentTypeError, ArgumentValueError
from attribuo.metrics.road import noisy_linear_imputation, road

quantus = pytest.importorskip("quantus")
from quantus.functions.perturb_func import noisy_linear_imputation as quantus_imputation  # noqa: E402

NEIGHBOURS = [(dr, dc, 1 / 6 if dr == 0 or dc == 0 else 1 / 12)
              for dr in (-1, 0, 1) for dc in (-1, 0, 1) if (dr, dc) != (0, 0)]


@pytest.fixture(autouse=True)
def quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@pytest.fixture
def linear_batch():
    torch.manual_seed(0)
    model = seeded(nn.Sequential(nn.Flatten(), nn.Linear(144, 3)), 3)
    x, a = torch.rand(6, 1, 12, 12), torch.randn(6, 1, 12, 12)
    return model, x, a, torch.tensor([0, 0, 2, 1, 2, 0])


def test_road_matches_quantus_without_noise(linear_batch):
    model, x, a, y = linear_batch
    theirs = quantus.ROAD(noise=0.0, disable_warnings=True)(
        model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=a.numpy(), device="cpu")
    scores, curves = road(model, x, a, y, noise=0.0, return_curves=True)
    assert list(theirs) == list(range(1, 100, 2))
    np.testing.assert_allclose(curves.mean(0).numpy(), np.array(list(theirs.values())), atol=1e-12)
    torch.testing.assert_close(scores, curves.mean(1))
    assert 0 < float(curves.mean()) < 1  # the curves do move


@pytest.mark.parametrize("channels,shape", [(1, (7, 9)), (3, (6, 6))])
def test_imputation_matches_quantus(channels, shape):
    torch.manual_seed(1)
    x = torch.rand(4, channels, *shape, dtype=torch.float64)
    removed = torch.rand(4, *shape) < torch.tensor([0.05, 0.3, 0.6, 0.95]).view(4, 1, 1)
    removed[:, 0, 0] = False
    ours = noisy_linear_imputation(x, removed, noise=0.0)
    for i in range(4):
        pixels = np.nonzero(removed[i].reshape(-1).numpy())[0]
        theirs = quantus_imputation(x[i].numpy(), pixels, noise=0.0)
        np.testing.assert_allclose(ours[i].numpy(), theirs, rtol=1e-10, atol=1e-12)


def test_imputed_pixels_are_their_neighbours_mean_plus_noise():
    torch.manual_seed(2)
    x = torch.rand(3, 2, 10, 10, dtype=torch.float64)
    removed = torch.rand(3, 10, 10) < 0.5
    saved = x.clone()
    clean = noisy_linear_imputation(x, removed, noise=0.0)
    torch.testing.assert_close(x, saved)  # the caller's tensor is left alone
    torch.testing.assert_close(clean[~removed.unsqueeze(1).expand_as(x)], x[~removed.unsqueeze(1).expand_as(x)])
    for m, r, c in torch.nonzero(removed).tolist():
        total = weight = 0.0
        for dr, dc, w in NEIGHBOURS:
            if 0 <= r + dr < 10 and 0 <= c + dc < 10:
                total, weight = total + w * clean[m, :, r + dr, c + dc], weight + w
        torch.testing.assert_close(clean[m, :, r, c], total / weight)
    gen = torch.Generator().manual_seed(0)
    noisy = noisy_linear_imputation(x, removed, noise=0.5, generator=gen)
    jitter = (noisy - clean)[removed.unsqueeze(1).expand_as(x)]
    assert abs(float(jitter.std()) - 0.5) < 0.05 and abs(float(jitter.mean())) < 0.05


def spikes(n: int = 10, seed: int = 3):
    """Three unit spikes in the left half of empty 8x8 images; class 0 iff the left half sums past 1.5."""
    torch.manual_seed(seed)
    x = torch.zeros(n, 1, 8, 8)
    for i in range(n):
        cells = torch.randperm(8)[:3]  # one spike per 2x2 cell of the left half: never adjacent
        x[i, 0, cells // 2 * 2, cells % 2 * 2] = 1.0

    def model(t):
        left = t[..., :4].sum(dim=(1, 2, 3))
        return torch.stack([left, torch.full_like(left, 1.5)], dim=1)

    return model, x


def test_exact_attribution_beats_random():
    model, x = spikes()
    exact, random = x * (torch.arange(8) < 4), torch.rand_like(x)
    morf_exact = road(model, x, exact, 0, seed=0)
    morf_random = road(model, x, random, 0, seed=0)
    assert bool((morf_exact < 0.1).all()) and bool((morf_exact < morf_random).all())
    lerf_exact = road(model, x, exact, 0, order="lerf", seed=0)
    assert bool((lerf_exact > road(model, x, random, 0, order="lerf", seed=0)).all())
    assert bool((lerf_exact > 0.9).all())


def test_chunking_seed_and_predicted_target(linear_batch):
    model, x, a, y = linear_batch
    kw = {"percentages": [10, 40, 70], "noise": 0.2, "seed": 5, "return_curves": True}
    whole = road(model, x, a, y, **kw)
    for size in (1, 7):
        chunked = road(model, x, a, y, max_examples_per_batch=size, **kw)
        torch.testing.assert_close(chunked, whole)
    predicted = model(x).argmax(1)
    torch.testing.assert_close(road(model, x, a, **kw), road(model, x, a, predicted, **kw))
    # per-channel attributions are summed per pixel
    rgb = torch.cat([a, 2 * a, -a], dim=1)
    model3 = nn.Sequential(nn.Conv2d(3, 1, 1), model)
    torch.testing.assert_close(road(model3, x.repeat(1, 3, 1, 1), rgb, y, **kw),
                               road(model3, x.repeat(1, 3, 1, 1), 2 * a, y, **kw))


def test_bad_arguments_name_themselves(linear_batch):
    model, x, a, y = linear_batch
    cases = [
        (ArgumentValueError, "percentages", lambda: road(model, x, a, y, percentages=[10, 100])),
        (ArgumentTypeError, "percentages", lambda: road(model, x, a, y, percentages="10")),
        (ArgumentValueError, "noise", lambda: road(model, x, a, y, noise=-1.0)),
        (ArgumentValueError, "order", lambda: road(model, x, a, y, order="top")),
        (ArgumentValueError, "inputs", lambda: road(nn.Linear(4, 2), torch.ones(2, 4), torch.ones(2, 4), 0)),
        (ArgumentValueError, "class scores", lambda: road(lambda t: t.sum(dim=(1, 2, 3)), x, a)),
        (ArgumentValueError, "attributions", lambda: road(model, x, a[..., :6], y)),
        (ArgumentValueError, "removed", lambda: noisy_linear_imputation(x, torch.ones(6, 12, 12).bool())),
        (ArgumentValueError, "removed", lambda: noisy_linear_imputation(x, torch.ones(6, 4, 4).bool())),
    ]
    for error, word, run in cases:
        with pytest.raises(error, match=word):
            run()
