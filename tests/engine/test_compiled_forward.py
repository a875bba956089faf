"""compile_forward: compiled no-grad forwards match eager ones, compile once, fall back, stay eager where they must.

Most tests compile through a counting backend that runs the traced FX graph
as it is: that exercises dynamo (tracing, guards, dynamic batch, recompiles)
without a C++ compiler, and its numbers are bitwise those of eager (same
kernels). The inductor tests, which need a compiler and take tens of seconds
on a cold cache, are slow tests (``ATTRIBUO_SLOW=1``).
"""

from __future__ import annotations

import os
import shutil
import threading
import warnings

import pytest
import torch
from torch import nn

from attribuo import compile_forward
from attribuo._engine.hooks import forward_hooks
from attribuo.attr import (
    FeatureAblation,
    IntegratedGradients,
    LayerFeatureAblation,
    Occlusion,
    Saliency,
    ShapleyValueSampling,
)
from attribuo.compiled import CompiledForward

dynamo = pytest.mark.skipif(
    not torch._dynamo.is_dynamo_supported(), reason="torch.compile (dynamo) is not supported on this Python"
)
pytestmark = dynamo


class Counting:
    """A dynamo backend that counts the graphs it is given and runs them as traced."""

    def __init__(self) -> None:
        self.graphs = 0

    def __call__(self, gm, example_inputs):
        self.graphs += 1
        return gm.forward


@pytest.fixture(autouse=True)
def fresh_dynamo():
    # dynamo caches per code object (every nn.Sequential shares one); a fresh cache per test
    # keeps graph counts exact and far from the recompile limit
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


class Residual(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x):
        return torch.relu(x + self.bn(self.conv(x)))


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)).eval()


def cnn() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), Residual(4),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3),
    )
    for m in model.modules():  # non-trivial running statistics, so eval-mode BN does something
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def _inputs(kind: str, n: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 6, generator=g) if kind == "mlp" else torch.randn(n, 3, 8, 8, generator=g)


def _superpixels() -> torch.Tensor:
    rows = torch.arange(8) // 4
    return (rows[:, None] * 2 + rows[None, :]).reshape(1, 1, 8, 8).expand(1, 3, 8, 8)


def _attribute(method: str, forward, kind: str, x, ppe: int):
    if method == "Occlusion":
        # 5 windows on the MLP's 6 features, 9 on the CNN's 8x8 image
        window, strides = ((2,), 1) if kind == "mlp" else ((3, 4, 4), 2)
        return Occlusion(forward).attribute(
            x, sliding_window_shapes=window, strides=strides, target=1, perturbations_per_eval=ppe
        )
    mask = None if kind == "mlp" else _superpixels()
    return FeatureAblation(forward).attribute(x, target=1, feature_mask=mask, perturbations_per_eval=ppe)


CHUNKS = (1, 2, 3, 5, 7)  # perturbations per eval: five chunk sizes, and smaller last chunks


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
@pytest.mark.parametrize("method", ["Occlusion", "FeatureAblation"])
def test_matches_eager_with_one_graph_for_every_chunk_size(kind, method):
    model = mlp() if kind == "mlp" else cnn()
    backend = Counting()
    fast = compile_forward(model, backend=backend)
    x = _inputs(kind)

    def eager(t):
        # the model behind a plain function: the same algorithm the wrapper gets (a bare module
        # may be evaluated incrementally on images, which rounds differently)
        return model(t)

    for ppe in CHUNKS:
        assert torch.equal(_attribute(method, fast, kind, x, ppe), _attribute(method, eager, kind, x, ppe))
    # batch 2 copies: every chunk has >= 2 rows, so the dynamic batch dim needs one graph; torch's
    # convolution adds a guard on the batch (< 16 here, >= 16 in another graph) on some builds
    assert backend.graphs <= (1 if kind == "mlp" else 2)
    assert not fast.fell_back
    module_eager = _attribute(method, model, kind, x, 3)
    torch.testing.assert_close(_attribute(method, fast, kind, x, 3), module_eager, rtol=1e-5, atol=1e-6)


def test_shapley_sampling_matches_eager_with_one_graph():
    model, backend = mlp(), Counting()
    fast = compile_forward(model, backend=backend)
    x = _inputs("mlp", 4)
    for ppe in (1, 4, 9):
        torch.manual_seed(5)
        ours = ShapleyValueSampling(fast).attribute(x, target=0, n_samples=3, perturbations_per_eval=ppe)
        torch.manual_seed(5)
        ref = ShapleyValueSampling(lambda t: model(t)).attribute(x, target=0, n_samples=3, perturbations_per_eval=ppe)
        assert torch.equal(ours, ref)
    assert backend.graphs == 1


def test_without_the_dynamic_batch_every_size_compiles():
    # the counter does see recompilation storms: static shapes give one graph per chunk size
    model, backend = mlp(), Counting()
    fast = compile_forward(model, backend=backend, dynamic=False)
    with torch.no_grad():
        for n in (2, 3, 4, 5, 6):
            assert torch.equal(fast(torch.ones(n, 6)), model(torch.ones(n, 6)))
    assert backend.graphs == 5


def test_a_batch_of_one_adds_at_most_one_graph():
    model, backend = mlp(), Counting()
    fast = compile_forward(model, backend=backend)
    x = _inputs("mlp", 1)
    for ppe in CHUNKS:
        assert torch.equal(_attribute("FeatureAblation", fast, "mlp", x, ppe),
                           _attribute("FeatureAblation", lambda t: model(t), "mlp", x, ppe))
    assert backend.graphs <= 2


def test_failed_compile_falls_back_to_eager_with_one_warning():
    calls = []

    def broken(gm, example_inputs):
        calls.append(1)
        raise RuntimeError("no compiler here")

    model = mlp()
    fast = compile_forward(model, backend=broken)
    x = _inputs("mlp", 3)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        results = [_attribute("FeatureAblation", fast, "mlp", x, ppe) for ppe in (1, 2, 4)]
    ours = [w for w in seen if "compile_forward" in str(w.message)]
    assert len(ours) == 1 and issubclass(ours[0].category, RuntimeWarning)
    assert "no compiler here" in str(ours[0].message)
    assert fast.fell_back and len(calls) == 1  # never tried again
    for ppe, result in zip((1, 2, 4), results):
        assert torch.equal(result, _attribute("FeatureAblation", lambda t: model(t), "mlp", x, ppe))


def test_a_broken_call_raises_its_own_error_and_keeps_compiling():
    model, backend = mlp(), Counting()
    fast = compile_forward(model, backend=backend)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warning either
        with torch.no_grad(), pytest.raises(RuntimeError, match="cannot be multiplied"):
            fast(torch.ones(2, 5))  # 5 features for a 6-feature model: the model's own error
        with torch.no_grad():
            assert torch.equal(fast(torch.ones(3, 6)), model(torch.ones(3, 6)))
    assert not fast.fell_back and backend.graphs >= 1


@pytest.mark.parametrize("method", [Saliency, IntegratedGradients])
def test_gradient_methods_run_eagerly(method):
    model, backend = cnn(), Counting()
    x = _inputs("cnn", 3)
    ours = method(compile_forward(model, backend=backend)).attribute(x, target=2)
    assert torch.equal(ours, method(model).attribute(x, target=2))
    assert backend.graphs == 0


@pytest.mark.parametrize("plain_function", [False, True])
def test_layer_methods_run_eagerly(plain_function):
    # the module wrapped (its hooks are seen) or a closure over it (attribuo's active hooks are)
    model, backend = cnn(), Counting()
    inner = (lambda t: model(t)) if plain_function else model
    fast = compile_forward(inner, backend=backend)
    x = _inputs("cnn", 2)
    ours = LayerFeatureAblation(fast, model[3]).attribute(x, target=0)
    assert torch.equal(ours, LayerFeatureAblation(inner, model[3]).attribute(x, target=0))
    assert backend.graphs == 0


def test_hooks_added_after_compiling_are_honoured():
    model, backend = mlp(), Counting()
    fast = compile_forward(model, backend=backend)
    x = _inputs("mlp", 4)
    with torch.no_grad():
        plain = fast(x)
        handle = model[2].register_forward_hook(lambda m, a, out: out * 2)
        try:
            assert torch.equal(fast(x), plain * 2)
        finally:
            handle.remove()
        assert torch.equal(fast(x), plain)
    assert backend.graphs == 1


def test_user_tensors_and_model_state_untouched():
    model, backend = cnn(), Counting()
    fast = compile_forward(model, backend=backend)
    x = _inputs("cnn", 2)
    before = x.clone()
    _attribute("Occlusion", fast, "cnn", x, 4)
    assert torch.equal(x, before)
    assert not hasattr(x, "_dynamo_weak_dynamic_indices") and not hasattr(x, "_dynamo_dynamic_indices")
    assert not model.training and all(not m._forward_hooks for m in model.modules())


def test_two_threads_get_their_own_answers():
    # one thread in an attribuo hook block (its hook doubles the output) and one compiled,
    # overlapping; each must see only its own forward's semantics
    model, backend = mlp(), Counting()
    fast = compile_forward(model, backend=backend)
    g = torch.Generator().manual_seed(2)
    batches = [torch.randn(2 + i % 5, 6, generator=g) for i in range(30)]
    with torch.no_grad():
        expected = [model(b) for b in batches]
    start = threading.Barrier(2)
    failures: list[str] = []

    def plain():
        start.wait()
        with torch.no_grad():
            for b, e in zip(batches, expected):
                if not torch.equal(fast(b), e):
                    failures.append("compiled thread")

    def hooked():
        start.wait()
        with torch.no_grad(), forward_hooks([(model[2], lambda m, a, out: out * 2)]):
            for b, e in zip(batches, expected):
                if not torch.equal(fast(b), e * 2):
                    failures.append("hooked thread")

    threads = [threading.Thread(target=plain), threading.Thread(target=hooked)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert backend.graphs <= 2  # the compiled thread's graph (racing threads may each build one)


def test_bad_arguments_are_named():
    with pytest.raises(TypeError, match="`model_or_fn`"):
        compile_forward(3)
    with pytest.raises(TypeError, match="`fullgrpah`"):
        compile_forward(mlp(), fullgrpah=True)
    with pytest.raises(TypeError, match="`fullgraph`"):
        compile_forward(mlp(), fullgraph="yes")
    with pytest.raises(TypeError, match="`dynamic`"):
        compile_forward(mlp(), dynamic="batch")
    with pytest.raises(TypeError, match="`backend`"):
        compile_forward(mlp(), backend=3)
    with pytest.raises(ValueError, match="`backend`"):
        compile_forward(mlp(), backend="no-such-backend")
    with pytest.raises(ValueError, match="`mode`"):
        compile_forward(mlp(), mode="fastest")
    with pytest.raises(ValueError, match="already"):
        compile_forward(compile_forward(mlp(), backend="eager"))
    assert isinstance(compile_forward(mlp(), backend="eager"), CompiledForward)


# ------------------------------------------------------------------ inductor (slow)
slow = pytest.mark.skipif(not os.environ.get("ATTRIBUO_SLOW"), reason="inductor compiles take ~20 s each; set ATTRIBUO_SLOW=1")


@pytest.fixture(scope="module")
def inductor():
    if not any(shutil.which(c) for c in ("g++", "c++", "clang++")):
        pytest.skip("inductor needs a C++ compiler; none found")
    try:
        with torch.no_grad():
            torch.compile(lambda t: t * 2 + 1)(torch.ones(3))
    except Exception as error:  # noqa: BLE001
        pytest.skip(f"torch.compile with inductor is unusable here: {type(error).__name__}")


@slow
@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_inductor_matches_eager_with_one_graph(inductor, kind):
    model = mlp() if kind == "mlp" else cnn()
    graphs = []

    def counting_inductor(gm, example_inputs):
        graphs.append(1)
        return torch._dynamo.lookup_backend("inductor")(gm, example_inputs)

    fast = compile_forward(model, backend=counting_inductor)
    x = _inputs(kind)
    for method in ("Occlusion", "FeatureAblation"):
        for ppe in CHUNKS:
            # fused float32 kernels reassociate sums: outputs of order 1 agree to ~1e-6
            torch.testing.assert_close(
                _attribute(method, fast, kind, x, ppe),
                _attribute(method, lambda t: model(t), kind, x, ppe),
                rtol=1e-4, atol=1e-5,
            )
    assert len(graphs) == 1 and not fast.fell_back
