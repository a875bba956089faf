"""Incremental evaluation of local perturbations (Krypton-style) equals the plain forward."""

from __future__ import annotations

import threading

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import attribuo._engine.incremental as incremental
from attribuo._engine.incremental import IncrementalForward, incremental_evaluation
from attribuo.attr import FeatureAblation, Occlusion, ShapleyValueSampling
from tests.models.resnet import residual_cnn


@pytest.fixture
def runs(monkeypatch):
    """How many chunks went through the incremental path."""
    count = {"chunks": 0}
    original = incremental._Runner.run

    def counted(self, *args, **kwargs):
        count["chunks"] += 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(incremental._Runner, "run", counted)
    return count


def _plain(method, *args, **kwargs):
    with incremental_evaluation(False):
        return method.attribute(*args, **kwargs)


class Pooled(nn.Module):
    """Padded max pooling, padded average pooling, dilation, groups, functional and in-place ops."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 5, stride=2, padding=2)
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.b = nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=2)
        self.avg = nn.AvgPool2d(3, 1, 1)
        self.c = nn.Conv2d(8, 8, 3, padding="same")
        self.head = nn.Linear(8 * 4, 4)

    def forward(self, x):
        h = self.pool(F.relu(self.a(x)))
        h = torch.sigmoid(self.b(h)) * 2.0 - 1
        h = self.avg(h).relu_()
        h = h + self.c(h) / 3
        return self.head(F.adaptive_avg_pool2d(h, 2).flatten(1))


def _image(n, size, seed=0):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("batch", [1, 3])
def test_occlusion_on_a_residual_cnn_equals_the_plain_path(batch, runs):
    model = residual_cnn(pool_stem=True)
    x = _image(batch, 48)
    kwargs = dict(sliding_window_shapes=(3, 8, 8), strides=(3, 6, 6), target=torch.arange(batch) % 10)
    fast = Occlusion(model).attribute(x, **kwargs)
    assert runs["chunks"] > 0
    plain = _plain(Occlusion(model), x, **kwargs)
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-5)


def test_windows_that_stick_out_cover_one_channel_and_a_tensor_baseline(runs):
    model = residual_cnn(seed=3)
    x = _image(2, 40, seed=1)
    base = torch.rand(2, 3, 40, 40)
    kwargs = dict(sliding_window_shapes=(1, 7, 5), strides=(1, 5, 4), baselines=base, target=3,
                  perturbations_per_eval=7)
    fast = Occlusion(model).attribute(x, **kwargs)
    assert runs["chunks"] > 0
    torch.testing.assert_close(fast, _plain(Occlusion(model), x, **kwargs), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("ppe", [1, 5, None])
def test_feature_ablation_with_superpixels(ppe, runs):
    model = Pooled().eval()
    x = _image(2, 32, seed=2)
    grid = torch.arange(32) // 8
    mask = (grid[:, None] * 4 + grid[None, :]).expand(1, 3, 32, 32)
    kwargs = dict(feature_mask=mask, target=1, perturbations_per_eval=ppe)
    fast = FeatureAblation(model).attribute(x, **kwargs)
    assert runs["chunks"] > 0
    torch.testing.assert_close(fast, _plain(FeatureAblation(model), x, **kwargs), rtol=1e-5, atol=1e-5)


def test_channels_last_and_double_precision(runs):
    model = residual_cnn(seed=1).double()
    x = _image(1, 32, seed=5).double().contiguous(memory_format=torch.channels_last)
    kwargs = dict(sliding_window_shapes=(3, 6, 6), strides=4, target=2)
    fast = Occlusion(model).attribute(x, **kwargs)
    assert runs["chunks"] > 0
    torch.testing.assert_close(fast, _plain(Occlusion(model), x, **kwargs), rtol=1e-10, atol=1e-10)


def test_forward_against_random_boxes():
    model = residual_cnn(seed=2, pool_stem=True)
    x = _image(2, 56, seed=7)
    gen = torch.Generator().manual_seed(0)
    copies = x.repeat(6, 1, 1, 1)
    for k in range(6):
        h, w = (int(v) for v in torch.randint(1, 12, (2,), generator=gen))
        top, left = int(torch.randint(0, 56 - h + 1, (1,), generator=gen)), int(torch.randint(0, 56 - w + 1, (1,), generator=gen))
        copies[2 * k:2 * k + 2, :, top:top + h, left:left + w] = torch.rand(2, 3, h, w, generator=gen)
    with torch.no_grad():
        fast = IncrementalForward.build(model, x)
        assert fast is not None
        torch.testing.assert_close(fast(copies), model(copies), rtol=1e-5, atol=1e-5)
        assert fast.runner is not None  # it stayed on the incremental path


def test_a_wrong_rule_is_caught_and_the_plain_model_runs(monkeypatch):
    original = incremental.slide

    def off_by_one(*args):
        out = original(*args)
        out.values.add_(1.0)
        return out

    monkeypatch.setattr(incremental, "slide", off_by_one)
    model = residual_cnn()
    x = _image(1, 32)
    kwargs = dict(sliding_window_shapes=(3, 4, 4), strides=4, target=0)
    fast = Occlusion(model).attribute(x, **kwargs)
    torch.testing.assert_close(fast, _plain(Occlusion(model), x, **kwargs), rtol=1e-5, atol=1e-5)


class ConvHead(nn.Module):
    """A convolution and a linear head; subclasses write the forward."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4, 2)


class Branchy(ConvHead):
    """Data-dependent control flow: fx cannot trace it."""

    def forward(self, x):
        h = self.conv(x)
        if h.mean() > 100:
            h = h * 0
        return self.head(h.mean((2, 3)))


class Aliased(ConvHead):
    """An in-place update of a value that is also read elsewhere."""

    def forward(self, x):
        h = self.conv(x)
        g = h * 1.0
        h.relu_()
        return self.head((h + g).mean((2, 3)))


@pytest.mark.parametrize("model", [Branchy(), Aliased()], ids=["control-flow", "aliased-in-place"])
def test_models_it_cannot_follow_run_plainly(model):
    x = _image(2, 16)
    assert IncrementalForward.build(model.eval(), x) is None
    kwargs = dict(sliding_window_shapes=(3, 4, 4), strides=4, target=1)
    torch.testing.assert_close(
        Occlusion(model).attribute(x, **kwargs), _plain(Occlusion(model), x, **kwargs), rtol=1e-6, atol=1e-6
    )


def test_hooks_training_mode_and_non_local_perturbations_keep_the_plain_path(runs):
    model = residual_cnn()
    x = _image(1, 32)
    handle = model.stem.register_forward_hook(lambda m, a, o: o * 1.5)
    try:
        assert IncrementalForward.build(model, x) is None
        hooked = Occlusion(model).attribute(x, sliding_window_shapes=(3, 8, 8), strides=8, target=0)
    finally:
        handle.remove()
    assert runs["chunks"] == 0
    assert hooked.abs().sum() > 0
    # growing coalitions are not local: Shapley sampling runs plain forwards, same numbers
    grid = torch.arange(32) // 16
    mask = (grid[:, None] * 2 + grid[None, :]).expand(1, 3, 32, 32)
    torch.manual_seed(0)
    svs = ShapleyValueSampling(model).attribute(x, feature_mask=mask, target=0, n_samples=2)
    torch.manual_seed(0)
    svs_plain = _plain(ShapleyValueSampling(model), x, feature_mask=mask, target=0, n_samples=2)
    torch.testing.assert_close(svs, svs_plain, rtol=1e-5, atol=1e-5)


def test_two_threads_share_a_model():
    model = residual_cnn(seed=4)
    xs = [_image(1, 32, seed=s) for s in (0, 1)]
    kwargs = dict(sliding_window_shapes=(3, 6, 6), strides=5, target=0)
    expected = [_plain(Occlusion(model), x, **kwargs) for x in xs]
    results = [None, None]

    def work(i):
        for _ in range(3):
            results[i] = Occlusion(model).attribute(xs[i], **kwargs)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got, want in zip(results, expected):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_inputs_are_untouched_and_grad_mode_kept():
    model = residual_cnn()
    x = _image(1, 32)
    before = x.clone()
    Occlusion(model).attribute(x, sliding_window_shapes=(3, 8, 8), strides=8, target=0)
    assert torch.equal(x, before)
    assert torch.is_grad_enabled()


def test_forwards_in_other_threads_during_tracing_are_plain():
    import attribuo._engine.incremental as inc

    model = residual_cnn(seed=5)
    other = residual_cnn(seed=6)
    x = _image(1, 32)
    expected = other(x)
    seen = {}

    class Probe(nn.Module):
        """Runs the other model in another thread while fx traces this one."""

        def forward(self, h):
            worker = threading.Thread(target=lambda: seen.setdefault("out", other(x)))
            worker.start()
            worker.join()
            return h

    model.stem.add_module("probe", Probe())
    inc._TRACES.clear()
    inc.traced(model)
    torch.testing.assert_close(seen["out"], expected)


def test_empty_batch_and_cached_traces():
    import attribuo._engine.incremental as inc

    model = residual_cnn()
    assert IncrementalForward.build(model, torch.zeros(0, 3, 16, 16)) is None
    inc._TRACES.clear()
    first = inc.traced(model)
    assert inc.traced(model) is first  # one trace per model structure
    model.head = nn.Linear(64, 10)
    assert inc.traced(model) is not first
    branchy = Branchy()
    with pytest.raises(torch.fx.proxy.TraceError):
        inc.traced(branchy)
    assert inc._TRACES[branchy][1] is None  # the failure is remembered: no retrace per call
    with pytest.raises(inc._Unsupported):
        inc.traced(branchy)


def test_a_batch_whose_activations_exceed_the_budget_runs_plainly(monkeypatch, runs):
    monkeypatch.setenv("ATTRIBUO_ACTIVATION_BUDGET_MB", "0.5")
    model = residual_cnn()
    x = _image(2, 32)
    assert IncrementalForward.build(model, x) is None  # ~1 MiB of unperturbed activations
    kwargs = dict(sliding_window_shapes=(3, 8, 8), strides=8, target=0)
    fast = Occlusion(model).attribute(x, **kwargs)
    assert runs["chunks"] == 0
    torch.testing.assert_close(fast, _plain(Occlusion(model), x, **kwargs), rtol=1e-6, atol=1e-6)
