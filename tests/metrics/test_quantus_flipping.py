"""Pixel flipping, region perturbation, selectivity, IROF: Quantus 0.6 parity, slow references,
known answers, chunk invariance and argument errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from models import SmallCNN, seeded
from torch import nn

from attribuo._engine.errors import ArgumentTypeError, ArgumentValueError
from attribuo.attr import Saliency
from attribuo.metrics.flipping import irof, pixel_flipping, region_perturbation, selectivity

quantus = pytest.importorskip("quantus")


@pytest.fixture(autouse=True)
def quantus_on_numpy2(monkeypatch):
    # Quantus 0.6 calls np.trapz, which numpy 2.4 removed; np.trapezoid is the same rule
    monkeypatch.setattr(np, "trapz", np.trapezoid, raising=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def batch(channels: int, n: int = 5, seed: int = 0, per_pixel: bool = False):
    torch.manual_seed(seed)
    x = torch.rand(n, channels, 8, 8)
    a = torch.randn(n, 1 if per_pixel else channels, 8, 8)
    y = torch.randint(0, 4, (n,))
    return seeded(SmallCNN(channels), seed + 1), x, a, y


def q_call(metric, model, x, a, y, softmax=True):
    out = metric(model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=a.numpy(), device="cpu",
                 softmax=softmax)
    return np.asarray(out, dtype=np.float64)


def close(ours, theirs, tol=2e-5):
    np.testing.assert_allclose(ours.numpy(), theirs, rtol=tol, atol=tol)


# --- parity with Quantus --------------------------------------------------------------------


@pytest.mark.parametrize("channels,step,baseline,softmax", [
    (1, 1, "black", True), (3, 4, "white", False), (3, 8, 0.25, True),
])
def test_pixel_flipping_matches_quantus(channels, step, baseline, softmax):
    model, x, a, y = batch(channels)
    q = quantus.PixelFlipping(features_in_step=step, perturb_baseline=baseline, disable_warnings=True)
    curves_q = q_call(q, model, x, a, y, softmax)
    area, curves = pixel_flipping(model, x, a, y, features_in_step=step, perturb_baseline=baseline,
                                  softmax=softmax, return_curves=True)
    close(curves, curves_q)
    close(area, np.trapezoid(curves_q, axis=1))
    q.return_auc_per_sample = True
    close(area, q_call(q, model, x, a, y, softmax))


def test_pixel_flipping_per_pixel_attributions_count_pixels():
    # one value per pixel of an RGB image: our step of 2 pixels is Quantus' step of 6 elements
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 6 * 6, 8), nn.Tanh(), nn.Linear(8, 3)).eval()
    x, a, y = torch.rand(4, 3, 6, 6), torch.randn(4, 1, 6, 6), torch.tensor([0, 1, 2, 1])
    theirs = q_call(quantus.PixelFlipping(features_in_step=6, disable_warnings=True), model, x, a, y)
    _, curves = pixel_flipping(model, x, a, y, features_in_step=2, return_curves=True)
    close(curves, theirs)


@pytest.mark.parametrize("channels,patch,order,baseline", [
    (1, 3, "morf", "black"), (3, 3, "lerf", "white"), (3, 4, "morf", -0.5), (1, 5, "lerf", 0.0),
])
def test_region_perturbation_matches_quantus(channels, patch, order, baseline):
    model, x, a, y = batch(channels, seed=2, per_pixel=channels == 3 and patch == 4)
    q = quantus.RegionPerturbation(patch_size=patch, order=order, regions_evaluation=5,
                                   perturb_baseline=baseline, disable_warnings=True)
    curves_q = q_call(q, model, x, a, y, softmax=False)
    area, curves = region_perturbation(model, x, a, y, patch_size=patch, order=order, regions_evaluation=5,
                                       perturb_baseline=baseline, softmax=False, return_curves=True)
    close(curves, curves_q)
    close(area, np.trapezoid(curves_q, axis=1))


@pytest.mark.parametrize("channels,patch", [(1, 3), (3, 2)])
def test_selectivity_matches_quantus(channels, patch):
    model, x, a, y = batch(channels, seed=3)
    q = quantus.Selectivity(patch_size=patch, disable_warnings=True)
    curves_q = q_call(q, model, x, a, y)
    area, curves = selectivity(model, x, a, y, patch_size=patch, return_curves=True)
    close(curves, curves_q)
    close(area, np.trapezoid(curves_q, axis=1))


def test_time_series_patches_match_quantus():
    torch.manual_seed(4)
    model = nn.Sequential(nn.Flatten(), nn.Linear(2 * 10, 3)).eval()
    x, a, y = torch.rand(4, 2, 10), torch.randn(4, 2, 10), torch.tensor([0, 1, 2, 0])
    q = quantus.RegionPerturbation(patch_size=3, regions_evaluation=10, disable_warnings=True)
    _, curves = region_perturbation(model, x, a, y, patch_size=3, return_curves=True)
    close(curves, q_call(q, model, x, a, y))


class PoolNet(nn.Module):
    """Any image size: a convolution, a 2x2 average pool and a linear read-out."""

    def __init__(self, channels: int = 1, n_out: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(channels, 4, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc = nn.Linear(16, n_out)

    def forward(self, x):
        return self.fc(self.pool(torch.relu(self.conv(x))).flatten(1))


@pytest.mark.parametrize("method", ["slic", "felzenszwalb"])
def test_irof_matches_quantus(method):
    # 16x16 noise: felzenszwalb gives 2 to 5 segments, so shorter curves are padded in Quantus
    torch.manual_seed(5)
    x, a, y = torch.rand(6, 1, 16, 16), torch.randn(6, 1, 16, 16), torch.tensor([0, 1, 2, 0, 1, 2])
    model = seeded(PoolNet(), 5)
    q = quantus.IROF(segmentation_method=method, perturb_baseline=0.0, return_aggregate=False,
                     disable_warnings=True)
    theirs = q_call(q, model, x, a, y)
    aoc, curves = irof(model, x, a, y, segmentation_method=method, perturb_baseline=0.0, return_curves=True)
    # Quantus pads shorter curves with zeros: half the last value more comes off their area
    lengths = (~curves.isnan()).sum(1)
    last = curves[torch.arange(6), lengths - 1]
    padded = torch.where(lengths < lengths.max(), last / 2, 0.0)
    close(aoc - padded, theirs)
    assert curves.shape[1] == int(lengths.max())


# --- slow references where the definitions differ ------------------------------------------


def slow_flipping(model, x, groups, values, target):
    """One example, one step, one forward at a time: ``groups[b]`` lists the element sets removed."""
    rows = []
    for b in range(x.shape[0]):
        cur, row = x[b].clone().reshape(-1), []
        for step, elements in enumerate(groups[b]):
            cur[elements] = values[b][step]
            row.append(float(model(cur.view(1, *x.shape[1:]))[0, target[b]]))
        rows.append(torch.tensor(row, dtype=torch.float64))
    return rows


def test_mean_baseline_is_each_examples_mean():
    # Quantus recomputes the mean of the partly flipped array before each step; ours is fixed
    model, x, a, y = batch(1, n=3, seed=6)
    order = torch.argsort(a.reshape(3, -1), dim=1, descending=True)
    groups = [[order[b, i:i + 16] for i in range(0, 64, 16)] for b in range(3)]
    means = [[float(x[b].mean())] * 4 for b in range(3)]
    _, curves = pixel_flipping(model, x, a, y, features_in_step=16, perturb_baseline="mean",
                               softmax=False, return_curves=True)
    torch.testing.assert_close(curves, torch.stack(slow_flipping(model, x, groups, means, y)), rtol=1e-5,
                               atol=1e-5)


def test_irof_mean_baseline_matches_slow_reference():
    model, x, a, y = batch(1, n=3, seed=7)
    sm = nn.Sequential(model, nn.Softmax(-1))
    segments = torch.stack([torch.randint(0, 5 + b, (8, 8)) for b in range(3)])
    groups, values = [], []
    for b in range(3):
        labels = segments[b].reshape(-1)
        means = torch.stack([a[b, 0].reshape(-1)[labels == s].mean() for s in range(int(labels.max()) + 1)])
        groups.append([torch.nonzero(labels == s)[:, 0] for s in torch.argsort(means, descending=True)])
        values.append([float(x[b].mean())] * len(groups[-1]))
    ref = slow_flipping(sm, x, groups, values, y)
    full = sm(x)[torch.arange(3), y].double()
    aoc, curves = irof(model, x, a, y, segments=segments, return_curves=True)
    for b in range(3):
        r = ref[b] / full[b]
        torch.testing.assert_close(curves[b, :len(r)], r, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(aoc[b], len(r) - torch.trapezoid(r), rtol=1e-5, atol=1e-6,
                                   check_dtype=False)


def test_uniform_baseline_draws_one_value_per_step():
    model, x, a, y = batch(1, n=2, seed=8)
    first = pixel_flipping(model, x, a, y, features_in_step=16, perturb_baseline="uniform", seed=3)
    torch.testing.assert_close(first, pixel_flipping(model, x, a, y, features_in_step=16,
                                                     perturb_baseline="uniform", seed=3))
    # read out the values the 16 pixels of one step got: all the same, one draw per example and step
    order = torch.argsort(a.reshape(2, -1), 1, descending=True)

    def value_of(pixel):  # the input's value at a given pixel of each example
        return lambda t: t.reshape(t.shape[0], -1).gather(1, pixel.repeat(t.shape[0] // 2, 1))

    for step in range(4):
        values = [pixel_flipping(value_of(order[:, 16 * step + j:16 * step + j + 1]), x, a, 0,
                                 features_in_step=16, perturb_baseline="uniform", seed=3, softmax=False,
                                 return_curves=True)[1][:, step] for j in (0, 5, 15)]
        assert bool(((values[0] >= 0) & (values[0] < 1)).all())
        torch.testing.assert_close(values[0], values[1])
        torch.testing.assert_close(values[0], values[2])
        assert float(values[0][0]) != float(values[0][1])


# --- known answers --------------------------------------------------------------------------


@pytest.fixture
def half_blind():
    """A linear score reading only the left half of 1x8x8 images (positive weights)."""
    torch.manual_seed(9)
    w = torch.rand(1, 8, 8) + 0.5
    w[:, :, 4:] = 0
    lin = nn.Linear(64, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.stack([w.reshape(-1), torch.zeros(64)]))
        lin.bias.zero_()
    model = nn.Sequential(nn.Flatten(), lin).eval()
    x = torch.rand(8, 1, 8, 8) + 0.1
    return model, x, w * x, torch.rand(8, 1, 8, 8)


@pytest.mark.parametrize("metric,kwargs,better", [
    (pixel_flipping, {"features_in_step": 4}, "lower"),
    (region_perturbation, {"patch_size": 2, "regions_evaluation": 8}, "higher"),
    (selectivity, {"patch_size": 2}, "lower"),
    (irof, {"segments": torch.arange(16).view(4, 4).repeat_interleave(2, 0).repeat_interleave(2, 1)
            .expand(8, 8, 8), "perturb_baseline": 0.0}, "higher"),
])
def test_exact_attribution_beats_random(half_blind, metric, kwargs, better):
    model, x, exact, random = half_blind
    good, bad = (metric(model, x, a, 0, softmax=False, **kwargs) for a in (exact, random))
    assert bool((good < bad).all()) if better == "lower" else bool((good > bad).all())


def test_lerf_and_random_orders(half_blind):
    model, x, exact, _ = half_blind
    kw = {"patch_size": 2, "regions_evaluation": 16, "softmax": False}
    morf = region_perturbation(model, x, exact, 0, order="morf", **kw)
    lerf = region_perturbation(model, x, exact, 0, order="lerf", **kw)
    rand = region_perturbation(model, x, exact, 0, order="random", seed=1, **kw)
    assert bool((morf > rand).all() and (rand > lerf).all())
    torch.testing.assert_close(rand, region_perturbation(model, x, exact, 0, order="random", seed=1, **kw))


# --- batching, methods, inputs left alone ---------------------------------------------------


@pytest.mark.parametrize("max_examples_per_batch", [1, 7])
def test_chunking_and_batch_size_do_not_change_scores(max_examples_per_batch):
    model, x, a, y = batch(3, n=4, seed=10, per_pixel=True)
    calls = [
        (pixel_flipping, model, {"features_in_step": 8, "perturb_baseline": "uniform", "seed": 2}),
        (region_perturbation, model, {"patch_size": 3, "order": "random", "seed": 2}),
        (selectivity, model, {"patch_size": 2, "perturb_baseline": "random", "seed": 2}),
        (irof, model, {"segmentation_method": "slic"}),
    ]
    for metric, m, kw in calls:
        whole = metric(m, x, a, y, **kw)
        torch.testing.assert_close(metric(m, x, a, y, max_examples_per_batch=max_examples_per_batch, **kw), whole)
        if "seed" not in kw:  # per-example draws aside, an example scores the same in a smaller batch
            torch.testing.assert_close(metric(m, x[1:3], a[1:3], y[1:3], **kw), whole[1:3])
    torch.testing.assert_close(pixel_flipping(model, x[:2], a[:2], y[:2], features_in_step=8),
                               pixel_flipping(model, x, a, y, features_in_step=8)[:2])


def test_per_channel_attributions_pool_into_patches_and_segments():
    # a patch's relevance sums its channels, a segment's averages them
    model, x, a, y = batch(3, n=3, seed=13)
    segments = torch.randint(0, 6, (3, 8, 8))
    torch.testing.assert_close(region_perturbation(model, x, a, y, patch_size=3),
                               region_perturbation(model, x, a.sum(1, keepdim=True), y, patch_size=3))
    torch.testing.assert_close(irof(model, x, a, y, segments=segments),
                               irof(model, x, a.mean(1, keepdim=True), y, segments=segments))


def test_attribution_method_and_inputs_untouched():
    model, x, _, y = batch(1, n=3, seed=11)
    saved = x.clone()
    a = Saliency(model).attribute(x, target=y)
    torch.testing.assert_close(pixel_flipping(model, x, Saliency, y, features_in_step=8),
                               pixel_flipping(model, x, a, y, features_in_step=8))
    selectivity(model, x, a, y, patch_size=4, perturb_baseline="mean")
    torch.testing.assert_close(x, saved)
    assert pixel_flipping(model, x, a, y).dtype == torch.float64


def test_bad_arguments_name_themselves():
    model, x, a, y = batch(1, n=2, seed=12)
    cases = [
        (ArgumentValueError, "features_in_step", lambda: pixel_flipping(model, x, a, y, features_in_step=0)),
        (ArgumentValueError, "perturb_baseline", lambda: pixel_flipping(model, x, a, y, perturb_baseline="grey")),
        (ArgumentTypeError, "perturb_baseline", lambda: pixel_flipping(model, x, a, y, perturb_baseline=[0])),
        (ArgumentValueError, "attributions", lambda: pixel_flipping(model, x, a[:, :, :4], y)),
        (ArgumentTypeError, "attributions", lambda: pixel_flipping(model, x, None, y)),
        (ArgumentValueError, "order", lambda: region_perturbation(model, x, a, y, order="best")),
        (ArgumentValueError, "patch_size", lambda: region_perturbation(model, x, a, y, patch_size=9)),
        (ArgumentValueError, "regions_evaluation", lambda: region_perturbation(model, x, a, y,
                                                                               regions_evaluation=0)),
        (ArgumentValueError, "inputs", lambda: selectivity(nn.Linear(4, 2), torch.ones(2, 4), torch.ones(2, 4), 0)),
        (ArgumentValueError, "segmentation_method", lambda: irof(model, x, a, y, segmentation_method="grid")),
        (ArgumentValueError, "segments", lambda: irof(model, x, a, y, segments=torch.zeros(2, 4, 4,
                                                                                              dtype=torch.long))),
        (ArgumentTypeError, "segments", lambda: irof(model, x, a, y, segments=torch.zeros(2, 8, 8))),
        (ArgumentValueError, "single segment", lambda: irof(model, x, a, y, segments=torch.zeros(
            2, 8, 8, dtype=torch.long))),
        (ArgumentTypeError, "seed", lambda: pixel_flipping(model, x, a, y, seed="1")),
        (ArgumentTypeError, "return_curves", lambda: selectivity(model, x, a, y, return_curves=1)),
        (ArgumentTypeError, "softmax", lambda: irof(model, x, a, y, softmax=None)),
        (ArgumentTypeError, "abs", lambda: pixel_flipping(model, x, a, y, abs="yes")),
    ]
    for error, word, run in cases:
        with pytest.raises(error, match=word):
            run()
