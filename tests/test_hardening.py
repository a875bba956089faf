"""Every public method on strided inputs, and next to another thread using the same model."""

import threading

import numpy as np
import pytest
import torch
from models.methods import REGISTRY, model

import attribuo.attr as A

# methods that draw random numbers from torch's global generator (shared by threads)
RANDOM = {
    "GradientShap", "NoiseTunnel", "FeaturePermutation", "ShapleyValueSampling", "Lime", "KernelShap",
    "LayerGradientShap", "LayerFeaturePermutation", "NeuronGradientShap",
}


def _run(name, m, x):
    make, good, _ = REGISTRY[name]
    torch.manual_seed(0)
    np.random.seed(0)  # GradientShap draws points and baselines with numpy, as Captum does
    return make(m).attribute(x, **good)


def _flat(result):
    if isinstance(result, (tuple, list)):
        return torch.cat([_flat(r).flatten() for r in result])
    return result.detach().flatten()


@pytest.mark.parametrize("layout", ["transposed", "sliced"])
@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_any_strided_input_gives_the_contiguous_result(name, layout):
    m = model().eval()
    torch.manual_seed(1)
    x = torch.randn(3, 1, 8, 8)
    if layout == "transposed":  # column-major images (what channels_last is for colour images)
        strided = x.transpose(2, 3).contiguous().transpose(2, 3)
    else:  # every other column of a wider buffer
        strided = torch.zeros(3, 1, 8, 16)[..., ::2]
        strided.copy_(x)
    assert not strided.is_contiguous()
    torch.testing.assert_close(_flat(_run(name, m, strided)), _flat(_run(name, m, x)), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(strided, x, rtol=0, atol=0)  # the user's tensor is untouched


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_a_second_thread_on_the_same_model_sees_no_hook(name):
    m = model().eval()
    torch.manual_seed(2)
    x, y = torch.randn(3, 1, 8, 8), torch.randn(2, 1, 8, 8)
    expected = None if name in RANDOM else _flat(_run(name, m, x))
    plain = m(y).detach()
    saliency = A.Saliency(m).attribute(y, target=0)
    failures, start = [], threading.Barrier(2)

    def explain():
        start.wait()
        for _ in range(4):
            make, good, _ = REGISTRY[name]
            got = _flat(make(m).attribute(x, **good))
            if expected is not None and not torch.allclose(got, expected, rtol=1e-5, atol=1e-6):
                failures.append(f"{name} changed while another thread ran the model")

    def serve():
        start.wait()
        for _ in range(12):
            if not torch.equal(m(y).detach(), plain):
                failures.append("a plain forward in the other thread changed")
            if not torch.allclose(A.Saliency(m).attribute(y, target=0), saliency):
                failures.append("Saliency in the other thread changed")

    errors = []

    def guarded(f):
        def run():
            try:
                f()
            except BaseException as error:  # noqa: BLE001 (a thread's error must reach the test)
                errors.append(error)
        return run

    threads = [threading.Thread(target=guarded(f)) for f in (explain, serve)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert not failures, sorted(set(failures))
    assert all(not mod._forward_hooks and not mod._forward_pre_hooks for mod in m.modules())


def _shapes(result):
    if isinstance(result, (tuple, list)):
        return [_shapes(r) for r in result]
    return tuple(result.shape)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_an_empty_batch_gives_empty_results_of_the_right_shape(name):
    m = model().eval()
    full = _run(name, m, torch.randn(2, 1, 8, 8))
    empty = _run(name, m, torch.randn(0, 1, 8, 8))

    def emptied(shapes):
        return [emptied(s) for s in shapes] if isinstance(shapes, list) else (0, *shapes[1:])

    assert _shapes(empty) == emptied(_shapes(full))


@pytest.mark.parametrize("name", ["IntegratedGradients", "DeepLift", "LayerConductance", "GradientShap", "LRP"])
def test_an_empty_batch_has_no_deltas(name):
    make, good, _ = REGISTRY[name]
    _, delta = make(model().eval()).attribute(torch.randn(0, 1, 8, 8), **good, return_convergence_delta=True)
    assert delta.shape == (0,)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_inference_mode_gives_the_same_attributions(name):
    m = model().eval()
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    expected = _flat(_run(name, m, x))
    with torch.inference_mode():
        got = _run(name, m, x.clone())
    assert not got.is_inference() if isinstance(got, torch.Tensor) else True
    torch.testing.assert_close(_flat(got), expected, rtol=1e-5, atol=1e-6)


def test_attacks_run_inside_inference_mode():
    from attribuo.robust import FGSM, PGD

    m = model().eval()
    x = torch.rand(2, 1, 8, 8)
    torch.manual_seed(0)
    expected = PGD(m).perturb(x, 0.1, 0.02, 3, target=1)
    with torch.inference_mode():
        torch.manual_seed(0)
        got = PGD(m).perturb(x.clone(), 0.1, 0.02, 3, target=1)
        fgsm = FGSM(m).perturb(x.clone(), 0.1, target=1)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(fgsm, FGSM(m).perturb(x, 0.1, target=1))
