"""Randomisation metrics against Quantus 0.6 (same layer seeds), slow references, known answers."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from torch import nn

from attribuo._engine.errors import ArgumentTypeError, ArgumentValueError
from attribuo.attr import Saliency
from attribuo.metrics.randomisation import (
    efficient_mprt,
    mprt,
    random_logit,
    smooth_mprt,
    structural_similarity,
)

quantus = pytest.importorskip("quantus")
skimage_metrics = pytest.importorskip("skimage.metrics")

N = 6


def cnn(classes=3):
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(256, classes)).eval()


@pytest.fixture(scope="module")
def data():
    torch.manual_seed(0)
    model = cnn()
    x = torch.rand(N, 1, 8, 8)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    return model, x, y


def q_saliency(model, inputs, targets, **kwargs):
    """Quantus' explain_func form, computing the same saliency as ours."""
    return Saliency(model).attribute(torch.as_tensor(inputs), target=torch.as_tensor(targets)).numpy()


def channel_saliency(model, inputs, target):
    """What quantus.explain(method='Saliency') computes: |gradient| summed over channels."""
    return Saliency(model).attribute(inputs, target=target).sum(1, keepdim=True)


def _run(metric, model, x, y, **call):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return metric(model=model, x_batch=x.numpy(), y_batch=y.numpy(), device="cpu", **call)


@pytest.mark.parametrize("order", ["top_down", "bottom_up", "independent"])
def test_mprt_matches_quantus_layer_by_layer(data, order):
    model, x, y = data
    expected = _run(quantus.MPRT(layer_order=order, disable_warnings=True), model, x, y,
                    a_batch=q_saliency(model, x.numpy(), y.numpy()), explain_func=q_saliency)
    scores, layers = mprt(model, x, Saliency, y, layer_order=order, seed=42, return_layers=True)
    assert list(layers) == list(expected)  # 'original' then Quantus' layer order
    for name, values in expected.items():
        np.testing.assert_allclose(layers[name].numpy(), values, rtol=0, atol=1e-12)
    randomised = [np.asarray(v) for k, v in expected.items() if k != "original"]
    np.testing.assert_allclose(scores.numpy(), np.mean(randomised, axis=0), atol=1e-12)
    last = _run(quantus.MPRT(layer_order=order, return_last_correlation=True, disable_warnings=True),
                model, x, y, a_batch=q_saliency(model, x.numpy(), y.numpy()), explain_func=q_saliency)
    ours_last = mprt(model, x, Saliency, y, layer_order=order, seed=42, return_last_correlation=True)
    np.testing.assert_allclose(ours_last.numpy(), last, atol=1e-12)
    skipped = mprt(model, x, Saliency, y, layer_order=order, seed=42, skip_layers=True)
    torch.testing.assert_close(skipped, ours_last)


def test_smooth_mprt_matches_quantus_without_noise(data):
    """nr_samples=1 is Quantus' noise-free sample only: deterministic, so exactly comparable."""
    model, x, y = data
    expected = _run(quantus.SmoothMPRT(nr_samples=1, disable_warnings=True), model, x, y, a_batch=None,
                    explain_func=quantus.explain, explain_func_kwargs={"method": "Saliency"})
    _, layers = smooth_mprt(model, x, channel_saliency, y, nr_samples=1, seed=42, return_layers=True)
    assert list(layers) == list(expected)
    for name, values in expected.items():
        np.testing.assert_allclose(layers[name].numpy(), values, atol=1e-12)


def _reference_smooth_mprt(model, x, y, explain, nr_samples, noise_magnitude, seed):
    """Plain loops from the paper: bottom-up cascade, noise drawn copy by copy from a seeded generator."""
    g = torch.Generator().manual_seed(seed)
    std = noise_magnitude * (x.amax(dim=(1, 2, 3), keepdim=True) - x.amin(dim=(1, 2, 3), keepdim=True))

    def smoothed(m):
        total = torch.zeros(N, x[0].numel(), dtype=torch.float64)
        for s in range(nr_samples):
            noisy = x + torch.randn(x.shape, generator=g) * std if s < nr_samples - 1 else x
            total += explain(m, noisy, y).double().flatten(1) / nr_samples
        return (total / total.pow(2).mean(1, keepdim=True).sqrt()).abs()

    work = copy.deepcopy(model)
    scores = {}
    with torch.random.fork_rng():
        reference = smoothed(work)
        for name, module in work.named_modules():
            if hasattr(module, "reset_parameters"):
                torch.manual_seed(seed + 1)
                module.reset_parameters()
                current = smoothed(work)
                scores[name] = [spearmanr(reference[i], current[i]).statistic for i in range(N)]
    return scores


def test_smooth_mprt_with_noise_against_reference_and_chunking(data):
    model, x, y = data
    expected = _reference_smooth_mprt(model, x, y, channel_saliency, 5, 0.2, seed=7)
    scores, layers = smooth_mprt(model, x, channel_saliency, y, nr_samples=5, noise_magnitude=0.2, seed=7,
                                 return_layers=True)
    chunked = smooth_mprt(model, x, channel_saliency, y, nr_samples=5, noise_magnitude=0.2, seed=7,
                          max_examples_per_batch=2 * N)
    for name, values in expected.items():
        np.testing.assert_allclose(layers[name].numpy(), values, atol=1e-6)
    torch.testing.assert_close(chunked, scores, atol=1e-6, rtol=0)


def test_efficient_mprt_matches_quantus(data):
    model, x, y = data
    for order in ("bottom_up", "top_down"):
        expected = _run(quantus.EfficientMPRT(layer_order=order, disable_warnings=True), model, x, y,
                        a_batch=None, explain_func=q_saliency)
        got = efficient_mprt(model, x, Saliency, y, layer_order=order, seed=42)
        np.testing.assert_allclose(got.numpy(), expected, atol=1e-12)
    expected = _run(quantus.EfficientMPRT(complexity_func_kwargs={"n_bins": 10}, abs=True, normalise=True,
                                          disable_warnings=True), model, x, y, a_batch=None,
                    explain_func=q_saliency)
    got = efficient_mprt(model, x, Saliency, y, n_bins=10, abs=True, normalise=True, seed=42)
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-6)


def test_random_logit_matches_quantus_with_two_classes(data):
    """With two classes the other class is fixed; Quantus normalises per batch: call it per example."""
    _, x, y = data
    torch.manual_seed(5)
    model = cnn(classes=2)
    y2 = y % 2
    a = q_saliency(model, x.numpy(), y2.numpy())
    expected = np.concatenate([
        _run(quantus.RandomLogit(num_classes=2, disable_warnings=True), model, x[i:i + 1], y2[i:i + 1],
             a_batch=a[i:i + 1], explain_func=q_saliency)
        for i in range(N)
    ])
    got = random_logit(model, x, Saliency, y2, seed=0)
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-6)


def test_random_logit_draws_another_class_and_scores_it(data):
    model, x, y = data
    seen = []

    def recording(m, inputs, target):
        seen.append(torch.as_tensor(target).clone())
        if len(inputs) == 1:  # the draws below: no need to explain
            return inputs.clone()
        return Saliency(m).attribute(inputs, target=target)

    got = random_logit(model, x, recording, y, seed=3, similarity_func="spearman")
    own, other = seen
    assert torch.equal(own, y) and bool((other != y).all()) and bool((other < 3).all())
    a_own = Saliency(model).attribute(x, target=y).flatten(1)
    a_other = Saliency(model).attribute(x, target=other).flatten(1)
    expected = [spearmanr(a_own[i], a_other[i]).statistic for i in range(N)]
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-10)
    # repeatable with a seed; the draw covers all other classes
    torch.testing.assert_close(got, random_logit(model, x, Saliency, y, seed=3, similarity_func="spearman"))
    draws = set()
    for seed in range(12):
        seen.clear()
        random_logit(model, x[:1], recording, y[:1], seed=seed, num_classes=4)
        draws.add(int(seen[1]))
    assert draws == {1, 2, 3}


def test_structural_similarity_matches_skimage():
    torch.manual_seed(2)
    a = torch.rand(4, 50, dtype=torch.float64)
    b = 0.3 * a + torch.rand(4, 50, dtype=torch.float64)
    for win in (7, 5):
        got = structural_similarity(a, b, win_size=win)
        for i in range(4):
            both = torch.cat([a[i], b[i]])
            expected = skimage_metrics.structural_similarity(
                a[i].numpy(), b[i].numpy(), win_size=win, data_range=float(both.max() - both.min()))
            assert float(got[i]) == pytest.approx(expected, abs=1e-12)


def test_known_answer_model_dependent_beats_model_independent(data):
    """Saliency depends on the weights; 'explain by the input itself' does not (Adebayo's edge detector)."""
    model, x, y = data

    def input_itself(m, inputs, target):
        return inputs.clone()

    sal = mprt(model, x, Saliency, y, seed=0)
    fixed = mprt(model, x, input_itself, y, seed=0)
    torch.testing.assert_close(fixed, torch.ones(N, dtype=torch.float64))
    assert bool((sal < 0.9).all())
    assert bool((smooth_mprt(model, x, Saliency, y, nr_samples=3, seed=0) < 0.95).all())
    # random logit: a class-blind explanation is identical across classes
    assert bool((random_logit(model, x, input_itself, y, seed=0) > 0.999).all())
    linear = nn.Linear(64, 3)
    xf = x.flatten(1)
    assert random_logit(linear, xf, Saliency, y, seed=0).mean() < 0.9
    # efficient MPRT: a model-blind explanation keeps its complexity (0 rise)
    torch.testing.assert_close(efficient_mprt(model, x, input_itself, y, seed=0),
                               torch.zeros(N, dtype=torch.float64))


def test_user_model_and_global_rng_untouched_and_chunking(data):
    _, x, y = data
    torch.manual_seed(4)
    model = cnn()
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.random.get_rng_state()
    full = mprt(model, x, Saliency, y, seed=1)
    chunked = mprt(model, x, Saliency, y, seed=1, max_examples_per_batch=4)
    subset = mprt(model, x[2:5], Saliency, y[2:5], seed=1)
    logit_full = random_logit(model, x, Saliency, y, seed=2)
    logit_chunked = random_logit(model, x, Saliency, y, seed=2, max_examples_per_batch=1)
    assert torch.equal(torch.random.get_rng_state(), rng)
    assert model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    torch.testing.assert_close(chunked, full)
    torch.testing.assert_close(subset, full[2:5])
    torch.testing.assert_close(logit_chunked, logit_full)


class Gated(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 3)

    def forward(self, x, gate):
        return self.fc(x * gate)


def test_additional_forward_args_reach_model_and_explainer():
    torch.manual_seed(6)
    model = Gated()
    x = torch.rand(5, 8)
    gate = (torch.rand(5, 8) > 0.5).float()
    y = torch.tensor([0, 1, 2, 0, 1])
    got, layers = mprt(model, x, Saliency, y, additional_forward_args=(gate,), seed=3, return_layers=True,
                       similarity_func="pearson", abs=False)
    chunked = mprt(model, x, Saliency, y, additional_forward_args=(gate,), seed=3, max_examples_per_batch=2,
                   similarity_func="pearson", abs=False)
    torch.testing.assert_close(chunked, got)
    trained = Saliency(model).attribute(x, target=y, additional_forward_args=(gate,), abs=False)
    torch.manual_seed(4)
    random = copy.deepcopy(model)
    random.fc.reset_parameters()
    randomised = Saliency(random).attribute(x, target=y, additional_forward_args=(gate,), abs=False)
    expected = [np.corrcoef(trained[i].abs(), randomised[i].abs())[0, 1] for i in range(5)]
    np.testing.assert_allclose(layers["fc"].numpy(), expected, atol=1e-6)
    smooth = smooth_mprt(model, x, Saliency, y, additional_forward_args=(gate,), nr_samples=3, seed=1)
    smooth_chunked = smooth_mprt(model, x, Saliency, y, additional_forward_args=(gate,), nr_samples=3, seed=1,
                                 max_examples_per_batch=5)
    torch.testing.assert_close(smooth_chunked, smooth)


def test_bad_arguments(data):
    model, x, y = data
    a = torch.rand(N, 1, 8, 8)
    for metric in (mprt, smooth_mprt, efficient_mprt, random_logit):
        with pytest.raises(ArgumentTypeError, match="attributions"):
            metric(model, x, a, y)
    for metric in (mprt, smooth_mprt, efficient_mprt):
        with pytest.raises(ArgumentTypeError, match="forward_func"):
            metric(lambda t: model(t), x, Saliency, y)
        with pytest.raises(ArgumentValueError, match="layer_order"):
            metric(model, x, Saliency, y, layer_order="sideways")
    with pytest.raises(ArgumentValueError, match="similarity_func"):
        mprt(model, x, Saliency, y, similarity_func="kendall")
    with pytest.raises(ArgumentValueError, match="nr_samples"):
        smooth_mprt(model, x, Saliency, y, nr_samples=0)
    with pytest.raises(ArgumentValueError, match="noise_magnitude"):
        smooth_mprt(model, x, Saliency, y, noise_magnitude=-1.0)
    with pytest.raises(ArgumentValueError, match="n_bins"):
        efficient_mprt(model, x, Saliency, y, n_bins=0)
    with pytest.raises(ArgumentValueError, match="target"):
        random_logit(model, x, Saliency, None)
    with pytest.raises(ArgumentValueError, match="num_classes"):
        random_logit(model, x, Saliency, y, num_classes=1)
    with pytest.raises(ArgumentValueError, match="target"):
        random_logit(model, x, Saliency, y, num_classes=2)
    with pytest.raises(ArgumentValueError, match="max_examples_per_batch"):
        mprt(model, x, Saliency, y, max_examples_per_batch=0)
    with pytest.raises(ArgumentTypeError, match="seed"):
        mprt(model, x, Saliency, y, seed="s")
    with pytest.raises(ArgumentValueError, match="reset_parameters"):
        mprt(nn.ReLU(), x, Saliency, y)
    with pytest.raises(ArgumentValueError, match="win_size"):
        structural_similarity(a.flatten(1), a.flatten(1), win_size=4)
