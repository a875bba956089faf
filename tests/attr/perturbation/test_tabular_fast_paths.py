"""The fast paths behind tabular Lime / KernelShap give the numbers of the plain paths.

Bulk coalition draws vs Captum-style one-by-one torch calls (same coalitions,
same generator state after), Cholesky vs eigen-decomposition least squares,
guessed lasso supports vs coordinate descent alone, and the one-thread
context.
"""

import pytest
import torch
from torch import nn

import attribuo.attr as aa
import attribuo.attr.perturbation.kernel_shap as ks
import attribuo.attr.perturbation.linear_solvers as solvers
import attribuo.attr.perturbation.torch_stream as ts
from attribuo._engine.threads import is_small_work, serial_threads

CPU = torch.device("cpu")


def _fit_draws(count):
    # what Lime draws between two examples' samples (a DataLoader seed, a layer's initialisation)
    def draws():
        torch.empty((), dtype=torch.int64).random_()
        torch.empty(1, count).uniform_()
        torch.empty(1).uniform_()

    return draws


def _stepwise(monkeypatch, fn):
    with monkeypatch.context() as m:
        m.setattr(ks, "mirror_available", lambda: False)
        return fn()


def _draw_both(monkeypatch, seed, groups, n_samples, count):
    torch.manual_seed(seed)
    fast = ks.kernel_shap_samples(groups, n_samples, count, CPU, _fit_draws(count))
    fast_state = torch.get_rng_state()
    torch.manual_seed(seed)
    slow = _stepwise(monkeypatch, lambda: ks.kernel_shap_samples(groups, n_samples, count, CPU, _fit_draws(count)))
    return fast, fast_state, slow, torch.get_rng_state()


def test_the_mirror_is_available_on_this_torch():
    assert ts.mirror_available()


@pytest.mark.parametrize("count", [16, 20, 33, 48, 100])
@pytest.mark.parametrize("groups,n_samples", [(1, 3), (1, 200), (3, 57), (16, 40)])
def test_bulk_coalitions_equal_one_by_one_draws(monkeypatch, count, groups, n_samples):
    fast, fast_state, slow, slow_state = _draw_both(monkeypatch, count + n_samples, groups, n_samples, count)
    assert torch.equal(fast, slow)
    assert torch.equal(fast_state, slow_state)  # the generator left where the plain calls leave it


def test_redrawn_samples_equal_one_by_one_draws(monkeypatch):
    # margins no recomputed value can clear: every sample goes through torch's own redraw
    calls = []
    plain = ks._draw_stepwise
    monkeypatch.setattr(ks, "_draw_stepwise", lambda *a: calls.append(1) or plain(*a))
    monkeypatch.setattr(ks, "NORMAL_MARGIN", 1e9)
    monkeypatch.setattr(ts, "RATIO_MARGIN", 1e9)
    fast, fast_state, slow, slow_state = _draw_both(monkeypatch, 4, 2, 12, 20)
    assert len(calls) == 2 * 10 + 2  # every sample of both groups, then the plain path's two groups
    assert torch.equal(fast, slow) and torch.equal(fast_state, slow_state)


def test_stream_reads_torch_words_and_moves_the_generator():
    torch.manual_seed(3)
    torch.rand(7)
    stream = ts.Stream.from_torch()
    ahead = ts.Stream.uniform_floats(stream.copy().words(700))  # across a twist of the engine
    assert torch.equal(torch.from_numpy(ahead).float(), torch.rand(700))
    stream.words(700)
    assert torch.equal(stream.torch_state(), torch.get_rng_state())


def _mlp(features):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(features, 16), nn.ReLU(), nn.Linear(16, 3)).eval()


@pytest.mark.parametrize("batch,n_samples", [(1, 30), (1, 200), (16, 25), (16, 60)])
def test_kernel_shap_fast_path_matches_the_plain_path(monkeypatch, batch, n_samples):
    model = _mlp(24)
    x = torch.randn(batch, 24, generator=torch.Generator().manual_seed(1))
    target = torch.arange(batch) % 3

    def run():
        torch.manual_seed(5)
        return aa.KernelShap(model).attribute(x, target=target, n_samples=n_samples)

    torch.testing.assert_close(run(), _stepwise(monkeypatch, run), atol=1e-9, rtol=1e-7)


def test_kernel_shap_per_example_masks_fast_path_matches_the_plain_path(monkeypatch):
    model = _mlp(40)
    x = torch.randn(4, 40, generator=torch.Generator().manual_seed(2))
    mask = torch.stack([torch.randperm(40, generator=torch.Generator().manual_seed(k)) % 20 for k in range(4)])

    def run():
        torch.manual_seed(6)
        return aa.KernelShap(model).attribute(x, target=1, feature_mask=mask, n_samples=70)

    torch.testing.assert_close(run(), _stepwise(monkeypatch, run), atol=1e-9, rtol=1e-7)


def _eigh_only(gram, rhs):
    vals, vecs = torch.linalg.eigh(gram)
    cut = vals.amax(1, keepdim=True).clamp_min(0) * (gram.shape[1] * 1e3 * torch.finfo(gram.dtype).eps)
    inv = torch.where(vals > cut, 1.0 / vals.clamp_min(1e-300), torch.zeros_like(vals))
    return vecs @ (inv.unsqueeze(2) * (vecs.transpose(1, 2) @ rhs.unsqueeze(2))).squeeze(2).unsqueeze(2)


@pytest.mark.parametrize("batch,samples,features", [(16, 200, 20), (1, 200, 100), (4, 30, 40), (5, 60, 6)])
def test_least_squares_cholesky_path_equals_the_eigen_path(monkeypatch, batch, samples, features):
    torch.manual_seed(0)
    x = torch.randint(0, 2, (batch, samples, features)).double()
    x[0, :, 0] = x[0, :, 1]  # one rank-deficient problem among well-posed ones
    y = torch.randn(batch, samples, dtype=torch.float64)
    w = torch.rand(batch, samples, dtype=torch.float64)
    w[:, :2] = 1e6  # KernelShap's pinned endpoints
    coef, intercept = solvers.least_squares_batch(x, y, w)
    monkeypatch.setattr(solvers, "_solve_gram", lambda g, r: _eigh_only(g, r).squeeze(2))
    ref, ref_intercept = solvers.least_squares_batch(x, y, w)
    scale = ref.abs().max()
    torch.testing.assert_close(coef / scale, ref / scale, atol=1e-8, rtol=0)
    torch.testing.assert_close(intercept, ref_intercept, atol=1e-6 * float(scale), rtol=0)


@pytest.mark.parametrize("batch,samples,features", [(1, 200, 100), (1, 1000, 20), (16, 200, 20), (3, 25, 30)])
def test_lasso_guessed_supports_equal_coordinate_descent(monkeypatch, batch, samples, features):
    torch.manual_seed(batch + features)
    x = torch.bernoulli(torch.full((batch, samples, features), 0.5)).double()
    y = x @ (torch.randn(features, dtype=torch.float64) * (torch.rand(features) < 0.3)) * 0.2
    y = y + 0.05 * torch.randn(batch, samples, dtype=torch.float64)
    w = torch.rand(batch, samples, dtype=torch.float64)
    coef, intercept = solvers.lasso_batch(x, y, w, alpha=0.01)
    found = solvers._active_set_guess
    nothing = lambda gram, q, alpha: (torch.zeros_like(q), torch.zeros(q.shape[0], dtype=q.dtype))  # noqa: E731
    monkeypatch.setattr(solvers, "_active_set_guess", nothing)
    ref, ref_intercept = solvers.lasso_batch(x, y, w, alpha=0.01)
    torch.testing.assert_close(coef, ref, atol=1e-9, rtol=0)
    torch.testing.assert_close(intercept, ref_intercept, atol=1e-9, rtol=0)
    monkeypatch.setattr(solvers, "_active_set_guess", found)


def test_serial_threads_restores_the_count_on_errors():
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError, match="boom"):
        with serial_threads():
            assert torch.get_num_threads() == 1
            raise RuntimeError("boom")
    assert torch.get_num_threads() == before
    with serial_threads(False):
        assert torch.get_num_threads() == before


def test_small_work_is_small_cpu_models_only():
    tiny = nn.Linear(20, 3)
    assert is_small_work(tiny, (torch.zeros(16, 20),), copies=200)
    assert not is_small_work(tiny, (torch.zeros(16, 20),), copies=10**9)  # too many copies
    assert not is_small_work(nn.Linear(5000, 3), (torch.zeros(1, 5000),), copies=2)  # an image-sized example
    assert not is_small_work(lambda t: t.sum(1), (torch.zeros(1, 20),), copies=2)  # cost unknown
