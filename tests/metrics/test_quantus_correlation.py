"""Correlation-style faithfulness metrics: parity with Quantus 0.6, slow references, known answers.

Random draws: Quantus draws with numpy's global generator, these metrics with
torch. For faithfulness_correlation the test replays Quantus' numpy draws
(per run: one ``np.random.choice`` per example, then the ``np.random.uniform``
that Quantus' baseline lookup always makes) and passes them as ``subsets``.
For the uniform baseline and sensitivity_n the references below replay the
metrics' documented torch draws instead.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from attribuo._engine.errors import ArgumentTypeError, ArgumentValueError
from attribuo.metrics.correlation import (
    faithfulness_correlation,
    faithfulness_estimate,
    monotonicity,
    monotonicity_correlation,
    pearson_rows,
    sensitivity_n,
    sufficiency,
)

quantus = pytest.importorskip("quantus")
Q = {"disable_warnings": True, "display_progressbar": False}


def cnn(channels: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(channels, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 64, 3)).eval()


def data(channels: int, n: int = 6, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, channels, 8, 8, generator=g)
    y = torch.arange(n) % 3
    a = torch.randn(n, channels, 8, 8, generator=g)
    return x, y, a


def run_quantus(metric, model, x, y, a) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = metric(model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=a.numpy(), device="cpu")
    return np.asarray(out, dtype=np.float64)


def close(ours: torch.Tensor, theirs: np.ndarray, tol: float = 1e-5) -> None:
    np.testing.assert_allclose(ours.numpy(), theirs, atol=tol, rtol=0)


@pytest.fixture
def linear():
    torch.manual_seed(3)
    model = nn.Linear(8, 1).double()
    return model


def exact_linear(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return x * model.weight.detach()


# ---------------------------------------------------------------- parity with Quantus


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("baseline", ["black", "mean", "white"])
def test_faithfulness_correlation_matches_quantus(channels, baseline):
    model, (x, y, a) = cnn(channels), data(channels)
    n, f, runs, size = x.shape[0], x[0].numel(), 12, 20
    np.random.seed(7)
    subsets = []
    for _ in range(runs):
        subsets.append(np.stack([np.random.choice(f, size, replace=False) for _ in range(n)]))
        np.random.uniform(size=n)  # Quantus' baseline lookup draws this on every perturbation
    np.random.seed(7)
    theirs = run_quantus(quantus.FaithfulnessCorrelation(nr_runs=runs, subset_size=size, perturb_baseline=baseline,
                                                         return_aggregate=False, **Q), model, x, y, a)
    ours = faithfulness_correlation(model, x, a, y, perturb_baseline=baseline,
                                    subsets=torch.from_numpy(np.stack(subsets)))
    close(ours, theirs)


@pytest.mark.parametrize("channels,step", [(1, 1), (1, 4), (3, 8)])
def test_faithfulness_estimate_matches_quantus(channels, step):
    model, (x, y, a) = cnn(channels), data(channels)
    theirs = run_quantus(quantus.FaithfulnessEstimate(features_in_step=step, **Q), model, x, y, a)
    close(faithfulness_estimate(model, x, a, y, features_in_step=step), theirs)


@pytest.mark.parametrize("channels,step", [(1, 1), (1, 4), (3, 16)])
def test_monotonicity_correlation_matches_quantus_deterministic_baseline(channels, step):
    model, (x, y, a) = cnn(channels), data(channels)
    # a deterministic baseline makes every sample the same copy: one Quantus sample is enough
    theirs = run_quantus(quantus.MonotonicityCorrelation(features_in_step=step, perturb_baseline="black",
                                                         nr_samples=1, **Q), model, x, y, a)
    ours = monotonicity_correlation(model, x, a, y, features_in_step=step, perturb_baseline="black")
    close(ours, theirs, 1e-9)


def test_monotonicity_matches_quantus_with_its_intended_perturbation():
    # Quantus 0.6 replaces the baseline by itself: every attribution is "monotone"
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3)).eval()
    x, y = torch.rand(8, 1, 4, 4), torch.arange(8) % 3
    random_a = torch.randn(8, 1, 4, 4)
    exact = model[1].weight.detach()[y].view(8, 1, 4, 4) * x
    assert run_quantus(quantus.Monotonicity(features_in_step=4, **Q), model, x, y, random_a).all()
    # with the perturbation it means (put the input's values back), Quantus and this agree
    flat = x.numpy().reshape(8, -1)

    def put_back(arr, indices, **kwargs):
        out, rows = arr.copy(), np.arange(arr.shape[0])[:, None]
        out[rows, indices] = flat[rows, indices]
        return out

    seen = set()
    for a in (random_a, exact):
        for step in (1, 4, 8):
            theirs = run_quantus(quantus.Monotonicity(features_in_step=step, perturb_func=put_back, abs=False, **Q),
                                 model, x, y, a)
            ours = monotonicity(model, x, a, y, features_in_step=step, abs=False)
            close(ours, theirs, 0)
            seen.update(theirs.tolist())
    assert seen == {0.0, 1.0}


def clustered(n_per: int = 4, seed: int = 0):
    """Inputs in three clusters a linear model separates, attributions clustered alike."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(3, 16, generator=g) * 3
    labels = torch.arange(3).repeat_interleave(n_per)
    x = (centres[labels] + 0.3 * torch.randn(len(labels), 16, generator=g)).view(-1, 1, 4, 4)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3)).eval()
    with torch.no_grad():
        model[1].weight.copy_(centres)
        model[1].bias.zero_()
    return model, x, labels


@pytest.mark.parametrize("threshold", [0.5, 0.6, 0.8])
def test_sufficiency_matches_quantus(threshold):
    model, x, y = clustered()
    g = torch.Generator().manual_seed(1)
    # attributions near their cluster's centre, a few swapped so that some scores fall below 1
    a = x + 0.5 * torch.randn(x.shape, generator=g)
    a[[0, 5]] = a[[5, 0]]
    theirs = run_quantus(quantus.Sufficiency(threshold=threshold, **Q), model, x, y, a)
    ours = sufficiency(model, x, a, y, threshold=threshold)
    close(ours, theirs, 1e-12)
    assert len(set(ours.tolist())) > 2


@pytest.mark.parametrize("distance", ["euclidean", "cosine", "cityblock", "sqeuclidean"])
def test_sufficiency_distances_match_scipy(distance):
    # Quantus 0.6 passes V=None to scipy's cdist, which only "seuclidean" accepts:
    # the reference is Quantus' formula with scipy's cdist called correctly
    from scipy.spatial.distance import cdist

    model, x, y = clustered()
    a = (x + 0.8 * torch.randn(x.shape, generator=torch.Generator().manual_seed(2))).abs()
    flat = a.reshape(len(a), -1).double().numpy()
    d = cdist(flat, flat, distance)
    similar = (d / d.max() <= 0.5) & ~np.eye(len(a), dtype=bool)
    pred = model(x).argmax(1).numpy()
    same = pred[:, None] == pred[None, :]
    expected = (similar & same).sum(1) / np.where(similar.sum(1) == 0, np.inf, similar.sum(1))
    close(sufficiency(model, x, a, y, threshold=0.5, distance_func=distance), expected, 1e-12)


# ---------------------------------------------------------------- slow references (paper, same draws)


def double_setup(channels: int, n: int):
    # float64 model and inputs: the references forward one example at a time
    x, y, a = data(channels, n=n)
    return cnn(channels).double(), x.double(), y, a.double()


def score(model, v, target, softmax):
    out = model(v.unsqueeze(0))[0]
    return float((out.softmax(-1) if softmax else out)[target])


def test_monotonicity_correlation_uniform_matches_slow_reference():
    model, x, y, a = double_setup(1, 3)
    n, f, samples, step = 3, 64, 4, 8
    ours = monotonicity_correlation(model, x, a, y, nr_samples=samples, features_in_step=step, seed=5)
    steps = f // step
    u = torch.rand((steps * samples, n), generator=torch.Generator().manual_seed(5), dtype=torch.float64)  # the documented draws
    expected = []
    with torch.no_grad():
        for i in range(n):
            order = a[i].abs().flatten().argsort(stable=True)
            base = score(model, x[i], y[i], True)
            atts, changes = [], []
            for s in range(steps):
                group = order[s * step:(s + 1) * step]
                total = 0.0
                for k in range(samples):
                    v = x[i].flatten().clone()
                    v[group] = u[s * samples + k, i]
                    total += (score(model, v.view(1, 8, 8), y[i], True) - base) ** 2
                atts.append(float(a[i].abs().flatten()[group].sum()))
                changes.append(total / samples)
            from scipy.stats import spearmanr

            expected.append(spearmanr(atts, changes)[0])
    close(ours, np.array(expected), 1e-9)


def test_sensitivity_n_matches_slow_reference_of_the_paper():
    model, x, y, a = double_setup(1, 3)
    n, f, samples, step, seed = 3, 64, 5, 8, 11
    scores, curves = sensitivity_n(model, x, a, y, n_max_percentage=0.5, features_in_step=step,
                                   nr_samples=samples, seed=seed, return_curves=True)
    sizes = int(0.5 * f // step)
    assert curves.shape == (n, sizes)
    g = torch.Generator().manual_seed(seed)
    first = int(torch.randint(0, 2**62, (1,), generator=g))  # the documented draws
    expected = np.zeros((n, sizes))
    with torch.no_grad():
        for k in range(sizes):
            sums, deltas = np.zeros((n, samples)), np.zeros((n, samples))
            for s in range(samples):
                c = k * samples + s
                draw = torch.rand(n, f, generator=torch.Generator().manual_seed(first + c), dtype=torch.float64)
                idx = draw.topk(step * (k + 1), dim=1, largest=False).indices
                for i in range(n):
                    v = x[i].flatten().clone()
                    v[idx[i]] = x[i].min()
                    deltas[i, s] = score(model, x[i], y[i], True) - score(model, v.view(1, 8, 8), y[i], True)
                    sums[i, s] = float(a[i].flatten()[idx[i]].sum())
            expected[:, k] = [np.corrcoef(sums[i], deltas[i])[0, 1] for i in range(n)]
    close(curves, expected, 1e-9)
    close(scores, expected.mean(1), 1e-9)


def test_pixel_features_remove_all_channels():
    # (N, 1, H, W) attributions: one feature per pixel, its three channels removed together
    model, x, y, _ = double_setup(3, 2)
    a = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    ours = faithfulness_estimate(model, x, a, y, features_in_step=16)
    expected = []
    with torch.no_grad():
        for i in range(2):
            order = a[i].flatten().argsort(descending=True, stable=True)
            base = score(model, x[i], y[i], False)
            atts, deltas = [], []
            for s in range(4):
                pixels = order[s * 16:(s + 1) * 16]
                v = x[i].reshape(3, -1).clone()
                v[:, pixels] = x[i].min()
                deltas.append(base - score(model, v.view(3, 8, 8), y[i], False))
                atts.append(float(a[i].flatten()[pixels].sum()))
            expected.append(np.corrcoef(atts, deltas)[0, 1])
    close(ours, np.array(expected), 1e-6)


# ---------------------------------------------------------------- known answers


def test_exact_linear_attributions_score_best(linear):
    torch.manual_seed(0)
    x = torch.randn(5, 8, dtype=torch.float64)
    exact = exact_linear(linear, x)
    noise = torch.randn(5, 8, dtype=torch.float64)
    common = {"perturb_baseline": 0.0}
    for metric, kwargs in [
        (faithfulness_correlation, {"nr_runs": 30, "subset_size": 3, "seed": 0}),
        (faithfulness_estimate, {}),
        (sensitivity_n, {"nr_samples": 6, "seed": 0, "softmax": False}),
    ]:
        good = metric(linear, x, exact, 0, **common, **kwargs)
        bad = metric(linear, x, noise, 0, **common, **kwargs)
        torch.testing.assert_close(good, torch.ones(5, dtype=torch.float64))
        assert bad.mean() < 0.6, metric.__name__
    good = monotonicity_correlation(linear, x, exact.abs(), 0, softmax=False, **common)
    bad = monotonicity_correlation(linear, x, noise.abs(), 0, softmax=False, **common)
    torch.testing.assert_close(good, torch.ones(5, dtype=torch.float64))
    assert bad.mean() < 0.6


def test_model_ignoring_half_its_inputs():
    # only the first four features matter: the exact attribution puts zero on the rest
    torch.manual_seed(0)
    w = torch.cat([torch.randn(4), torch.zeros(4)]).double()
    model = nn.Sequential(nn.Linear(8, 1, bias=False).double(), nn.Tanh())
    with torch.no_grad():
        model[0].weight.copy_(w[None])
    x = torch.randn(6, 8, dtype=torch.float64)
    exact = x * w
    uniform = torch.ones_like(x)
    kwargs = {"perturb_baseline": 0.0, "nr_runs": 40, "subset_size": 4, "seed": 1}
    good = faithfulness_correlation(model, x, exact, 0, **kwargs)
    flat = faithfulness_correlation(model, x, uniform + 0.01 * torch.randn_like(x), 0, **kwargs)
    assert good.mean() > 0.9 > flat.mean() + 0.3


def test_monotonicity_known_answer_on_a_gated_model():
    # f(x) = x0 * sum(x[1:]): nothing counts before the gate x0 is in; the exact (Shapley)
    # attributions put x0 last, so the score stays 0 and then jumps to its value
    x = torch.tensor([[3.0, 2.0, -0.5, 1.0, 1.0, -0.3, 1.5, 0.8]], dtype=torch.float64)

    def model(v):
        return (v[:, :1] * v[:, 1:].sum(1, keepdim=True))

    rest = x[0, 1:].sum()
    exact = torch.cat([x[:, :1] * rest / 2, x[:, :1] * x[:, 1:] / 2], dim=1)
    assert float(monotonicity(model, x, exact, 0, perturb_baseline=0.0, softmax=False)) == 1.0
    g = torch.Generator().manual_seed(0)
    randoms = torch.randn(200, 8, generator=g, dtype=torch.float64)
    scores = monotonicity(model, x.expand(200, 8), randoms, 0, perturb_baseline=0.0, softmax=False)
    assert scores.mean() < 0.5


def test_sufficiency_known_answer():
    # attributions of the predicted class's logit cluster like the classes; random ones do not
    model, x, y = clustered(n_per=5)
    pred = model(x).argmax(1)
    exact = model[1].weight.detach()[pred].view(-1, 1, 4, 4) * x
    randoms = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    good = sufficiency(model, x, exact, y, threshold=0.5)
    bad = sufficiency(model, x, randoms, y, threshold=0.5)
    assert good.mean() == 1.0 and bad.mean() < 0.6


# ---------------------------------------------------------------- batching and chunks


@pytest.mark.parametrize("metric,kwargs", [
    (faithfulness_correlation, {"nr_runs": 7, "subset_size": 5, "seed": 2, "perturb_baseline": "uniform"}),
    (faithfulness_estimate, {"features_in_step": 4}),
    (faithfulness_estimate, {"features_in_step": 4, "perturb_baseline": "random", "seed": 3}),
    (monotonicity, {"features_in_step": 4}),
    (monotonicity, {"features_in_step": 4, "perturb_baseline": "random", "seed": 3}),
    (monotonicity_correlation, {"features_in_step": 8, "nr_samples": 3, "seed": 2}),
    (monotonicity_correlation, {"features_in_step": 8, "nr_samples": 3, "seed": 2, "perturb_baseline": "random"}),
    (sensitivity_n, {"features_in_step": 8, "nr_samples": 3, "seed": 2}),
    (sufficiency, {}),
])
def test_chunk_size_invariance(metric, kwargs):
    model, (x, y, a) = cnn(1), data(1, n=5)
    full = metric(model, x, a, y, **kwargs)
    for m in (1, 3, 17):
        torch.testing.assert_close(metric(model, x, a, y, max_examples_per_batch=m, **kwargs), full,
                                   atol=1e-6, rtol=0, equal_nan=True)


@pytest.mark.parametrize("metric,kwargs", [
    (faithfulness_estimate, {"features_in_step": 4}),
    (monotonicity, {"features_in_step": 4}),
    (monotonicity_correlation, {"features_in_step": 8, "perturb_baseline": "mean"}),
])
def test_batch_invariance_of_deterministic_metrics(metric, kwargs):
    model, (x, y, a) = cnn(1), data(1, n=5)
    full = metric(model, x, a, y, **kwargs)
    parts = torch.cat([metric(model, x[:2], a[:2], y[:2], **kwargs), metric(model, x[2:], a[2:], y[2:], **kwargs)])
    torch.testing.assert_close(parts, full, atol=1e-6, rtol=0)


def test_subsets_batch_invariance_and_baseline_forms():
    model, (x, y, a) = cnn(1), data(1, n=4)
    idx = torch.stack([torch.randperm(64, generator=torch.Generator().manual_seed(r))[:8].expand(4, 8)
                       for r in range(6)])
    full = faithfulness_correlation(model, x, a, y, subsets=idx, perturb_baseline=0.25)
    part = faithfulness_correlation(model, x[1:3], a[1:3], y[1:3], subsets=idx[:, 1:3], perturb_baseline=0.25)
    torch.testing.assert_close(part, full[1:3], atol=1e-6, rtol=0)
    as_tensor = faithfulness_correlation(model, x, a, y, subsets=idx, perturb_baseline=torch.full((1, 8, 8), 0.25))
    torch.testing.assert_close(as_tensor, full)


def test_random_baseline_draws_per_element():
    # "random": every removed element gets its own U(0, 1) value; "uniform": one per example and copy
    from attribuo.metrics._common import baseline_fill, metric_call

    call = metric_call(nn.Linear(4, 1), torch.zeros(1, 4), torch.ones(1, 4), 0)
    per_element = baseline_fill(call, "random", 3, torch.Generator().manual_seed(0))(0, 3)
    per_copy = baseline_fill(call, "uniform", 3, torch.Generator().manual_seed(0))(0, 3)
    assert per_element.shape == (3, 1, 4) and len(set(per_element.flatten().tolist())) == 12
    assert per_copy.shape == (3, 1, 1) and bool(((per_element >= 0) & (per_element < 1)).all())
    torch.testing.assert_close(baseline_fill(call, "random", 3, torch.Generator().manual_seed(0))(1, 3),
                               per_element[1:])


def test_inputs_are_not_modified():
    model, (x, y, a) = cnn(1), data(1, n=3)
    x0, a0 = x.clone(), a.clone()
    monotonicity_correlation(model, x, a, y, features_in_step=8, nr_samples=2, seed=0)
    sensitivity_n(model, x, a, y, features_in_step=16, nr_samples=2, seed=0)
    assert torch.equal(x, x0) and torch.equal(a, a0)


def test_pearson_rows_constant_row_is_nan():
    r = pearson_rows(torch.tensor([[0.1, 0.1, 0.1], [1.0, 2.0, 3.0]]), torch.tensor([[1.0, 2.0, 3.0]] * 2))
    assert torch.isnan(r[0]) and r[1] == 1.0


# ---------------------------------------------------------------- bad arguments


def test_bad_arguments():
    model, (x, y, a) = cnn(1), data(1, n=2)
    with pytest.raises(ArgumentValueError, match="subset_size"):
        faithfulness_correlation(model, x, a, y, subset_size=64)
    with pytest.raises(ArgumentValueError, match="perturb_baseline"):
        faithfulness_estimate(model, x, a, y, perturb_baseline="grey")
    with pytest.raises(ArgumentValueError, match="perturb_baseline"):
        faithfulness_estimate(model, x, a, y, perturb_baseline=torch.zeros(3, 8, 8))
    with pytest.raises(ArgumentTypeError, match="perturb_baseline"):
        faithfulness_estimate(model, x, a, y, perturb_baseline=[0.0])
    with pytest.raises(ArgumentValueError, match="features_in_step"):
        monotonicity(model, x, a, y, features_in_step=0)
    with pytest.raises(ArgumentValueError, match="nr_samples"):
        sensitivity_n(model, x, a, y, nr_samples=1)
    with pytest.raises(ArgumentValueError, match="n_max_percentage"):
        sensitivity_n(model, x, a, y, n_max_percentage=1.5)
    with pytest.raises(ArgumentValueError, match="distance_func"):
        sufficiency(model, x, a, y, distance_func="chebyshev")
    with pytest.raises(ArgumentTypeError, match="softmax"):
        monotonicity(model, x, a, y, softmax="yes")
    with pytest.raises(ArgumentValueError, match="softmax"):
        monotonicity(lambda v: v.flatten(1).sum(1), x, a)
    with pytest.raises(ArgumentValueError, match="attributions"):
        faithfulness_estimate(model, x, a[:, :, :4], y)
    with pytest.raises(ArgumentTypeError, match="inputs"):
        faithfulness_estimate(model, [x], a, y)
    with pytest.raises(ArgumentValueError, match="subsets"):
        faithfulness_correlation(model, x, a, y, subsets=torch.zeros(3, 5, 2, dtype=torch.long))
    with pytest.raises(ArgumentValueError, match="repeat"):
        faithfulness_correlation(model, x, a, y, subsets=torch.zeros(3, 2, 2, dtype=torch.long))
    with pytest.raises(ArgumentTypeError, match="subsets"):
        faithfulness_correlation(model, x, a, y, subsets=torch.zeros(3, 2, 2))
    with pytest.raises(ArgumentValueError, match="max_examples_per_batch"):
        faithfulness_estimate(model, x, a, y, max_examples_per_batch=0)
