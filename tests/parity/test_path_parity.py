"""IntegratedGradients, GradientShap and NoiseTunnel against Captum 0.9.0.

Random methods are compared under the same torch and numpy seeds: attribuo
draws the same numbers in the same order as Captum, so results agree to
float32 rounding.
"""

import warnings

import captum.attr as captum_attr
import numpy as np
import pytest
import torch
from models import MLP, SequenceOutputModel, SmallCNN, TwoInputModel, seeded

import attribuo.attr as attribuo_attr

METHODS = ["riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid", "gausslegendre"]
TOL = {"rtol": 1e-4, "atol": 1e-5}


def _setup(name):
    torch.manual_seed(1)
    if name == "mlp":
        return seeded(MLP()), torch.randn(4, 6), None, [2, 0, 1, 1]
    if name == "cnn":
        return seeded(SmallCNN()), torch.randn(3, 1, 8, 8), None, torch.tensor([0, 3, 1])
    if name == "two_inputs":
        return seeded(TwoInputModel()), (torch.randn(4, 4), torch.randn(4, 3)), (0.5,), 1
    return seeded(SequenceOutputModel()), torch.randn(4, 5), None, (1, 2)


def _both(name, *args):
    return getattr(attribuo_attr, name)(*args), getattr(captum_attr, name)(*args)


def _close(ours, theirs):
    if isinstance(theirs, tuple):
        assert isinstance(ours, tuple) and len(ours) == len(theirs)
        for a, b in zip(ours, theirs):
            _close(a, b)
        return
    assert isinstance(ours, torch.Tensor) and ours.shape == theirs.shape
    torch.testing.assert_close(ours, theirs.detach(), **TOL)


def _seeded_call(fn, seed=7):
    torch.manual_seed(seed)
    np.random.seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn()


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("model_name", ["mlp", "cnn", "two_inputs", "seq_output"])
def test_integrated_gradients_every_method(method, model_name):
    model, x, args, target = _setup(model_name)
    ours, theirs = _both("IntegratedGradients", model)
    kwargs = dict(
        target=target,
        additional_forward_args=args,
        n_steps=12,
        method=method,
        return_convergence_delta=True,
    )
    _close(ours.attribute(x, **kwargs), theirs.attribute(x, **kwargs))


@pytest.mark.parametrize(
    "baselines",
    ["none", "scalar", "full", "batch_one", "tuple_mixed"],
)
@pytest.mark.parametrize("internal_batch_size", [None, 5])
@pytest.mark.parametrize("multiply_by_inputs", [True, False])
def test_integrated_gradients_baselines_batching_and_multiplier(
    baselines, internal_batch_size, multiply_by_inputs
):
    model, x, args, target = _setup("two_inputs")
    torch.manual_seed(2)
    b = {
        "none": None,
        "scalar": (0.25, -0.5),
        "full": (torch.randn(4, 4), torch.randn(4, 3)),
        "batch_one": (torch.randn(1, 4), torch.randn(1, 3)),
        "tuple_mixed": (torch.randn(1, 4), 0.3),
    }[baselines]
    ours, theirs = _both("IntegratedGradients", model, multiply_by_inputs)
    kwargs = dict(
        baselines=b,
        target=[0, 2, 1, 1],
        additional_forward_args=args,
        n_steps=9,
        internal_batch_size=internal_batch_size,
        return_convergence_delta=True,
    )
    _close(ours.attribute(x, **kwargs), theirs.attribute(x, **kwargs))


@pytest.mark.parametrize(
    "model_name, stdevs, n_samples",
    [
        ("mlp", 0.0, 5),
        ("mlp", 0.3, 3),
        ("cnn", 0.1, 4),
        ("two_inputs", (0.2, 0.05), 3),
        ("seq_output", 0.1, 2),
    ],
)
@pytest.mark.parametrize("multiply_by_inputs", [True, False])
def test_gradient_shap_same_seed_same_numbers(model_name, stdevs, n_samples, multiply_by_inputs):
    model, x, args, target = _setup(model_name)
    torch.manual_seed(3)
    xs = x if isinstance(x, tuple) else (x,)
    dist = tuple(torch.randn((6,) + tuple(t.shape[1:])) for t in xs)
    dist = dist if isinstance(x, tuple) else dist[0]
    ours, theirs = _both("GradientShap", model, multiply_by_inputs)
    kwargs = dict(
        n_samples=n_samples,
        stdevs=stdevs,
        target=target,
        additional_forward_args=args,
        return_convergence_delta=True,
    )
    _close(
        _seeded_call(lambda: ours.attribute(x, dist, **kwargs)),
        _seeded_call(lambda: theirs.attribute(x, dist, **kwargs)),
    )


def test_gradient_shap_callable_baselines_and_internal_batch_size():
    model, x, _, target = _setup("mlp")
    dist = torch.randn(5, 6)
    ours, theirs = _both("GradientShap", model)
    got = _seeded_call(
        lambda: ours.attribute(
            x, lambda inp: dist * 2, stdevs=0.2, target=target, internal_batch_size=3
        )
    )
    expected = _seeded_call(
        lambda: theirs.attribute(x, lambda inp: dist * 2, stdevs=0.2, target=target)
    )
    _close(got, expected)


WRAPPED = {
    "Saliency": ({}, {}),
    "InputXGradient": ({}, {}),
    "IntegratedGradients": ({"n_steps": 8}, {"return_convergence_delta": True}),
    "GradientShap": ({"n_samples": 2}, {"return_convergence_delta": True}),
}


@pytest.mark.parametrize("wrapped", list(WRAPPED))
@pytest.mark.parametrize("nt_type", ["smoothgrad", "smoothgrad_sq", "vargrad"])
@pytest.mark.parametrize("nt_samples_batch_size", [None, 1, 3])
def test_noise_tunnel_same_seed_same_numbers(wrapped, nt_type, nt_samples_batch_size):
    model, x, _, target = _setup("mlp")
    extra, delta_kw = WRAPPED[wrapped]
    if wrapped == "GradientShap":
        # Captum validates a non-drawn distribution against the batch, so draw from it
        extra = {**extra, "baselines": torch.randn(5, 6), "draw_baseline_from_distrib": True}
    elif wrapped == "IntegratedGradients":
        extra = {**extra, "baselines": torch.randn(4, 6)}
    ours, theirs = _both(wrapped, model)
    kwargs = dict(
        nt_type=nt_type,
        nt_samples=7,
        nt_samples_batch_size=nt_samples_batch_size,
        stdevs=0.2,
        target=target,
        **extra,
        **delta_kw,
    )
    _close(
        _seeded_call(lambda: attribuo_attr.NoiseTunnel(ours).attribute(x, **kwargs)),
        _seeded_call(lambda: captum_attr.NoiseTunnel(theirs).attribute(x, **kwargs)),
    )


@pytest.mark.parametrize("nt_samples_batch_size", [None, 2])
def test_noise_tunnel_baseline_distribution_tuple_inputs_and_stdevs(nt_samples_batch_size):
    model, x, args, _ = _setup("two_inputs")
    torch.manual_seed(4)
    dist = (torch.randn(6, 4), torch.randn(3, 3))
    ours, theirs = _both("IntegratedGradients", model)
    kwargs = dict(
        nt_type="vargrad",
        nt_samples=5,
        nt_samples_batch_size=nt_samples_batch_size,
        stdevs=(0.1, 0.3),
        draw_baseline_from_distrib=True,
        baselines=dist,
        target=torch.tensor([0, 1, 2, 0]),
        additional_forward_args=args,
        n_steps=6,
        return_convergence_delta=True,
    )
    _close(
        _seeded_call(lambda: attribuo_attr.NoiseTunnel(ours).attribute(x, **kwargs)),
        _seeded_call(lambda: captum_attr.NoiseTunnel(theirs).attribute(x, **kwargs)),
    )


def test_noise_tunnel_cnn_saliency_batch_of_samples():
    model, x, _, target = _setup("cnn")
    ours, theirs = _both("Saliency", model)
    kwargs = dict(
        nt_type="smoothgrad_sq",
        nt_samples=6,
        nt_samples_batch_size=4,
        stdevs=0.5,
        target=target,
        abs=False,
    )
    _close(
        _seeded_call(lambda: attribuo_attr.NoiseTunnel(ours).attribute(x, **kwargs)),
        _seeded_call(lambda: captum_attr.NoiseTunnel(theirs).attribute(x, **kwargs)),
    )


@pytest.mark.parametrize(
    "make, kwargs",
    [
        # a layer method: results have the layer's form, deltas are passed through
        (
            lambda lib, m: lib.LayerIntegratedGradients(m, m.fc1),
            {"target": 0, "n_steps": 10, "return_convergence_delta": True},
        ),
        # a perturbation method with a per-example feature mask, expanded with the samples
        (
            lambda lib, m: lib.FeatureAblation(m),
            {
                "target": 1,
                "feature_mask": torch.tensor(
                    [[0, 0, 1, 1, 2, 2], [0, 1, 1, 1, 2, 2], [0, 0, 0, 1, 2, 2], [1, 1, 1, 0, 0, 0]]
                ),
            },
        ),
    ],
)
def test_noise_tunnel_over_layer_and_perturbation_methods(make, kwargs):
    model, x, _, _ = _setup("mlp")
    nt_kwargs = dict(
        nt_type="smoothgrad", nt_samples=5, nt_samples_batch_size=2, stdevs=0.1, **kwargs
    )
    _close(
        _seeded_call(
            lambda: attribuo_attr.NoiseTunnel(make(attribuo_attr, model)).attribute(x, **nt_kwargs)
        ),
        _seeded_call(
            lambda: captum_attr.NoiseTunnel(make(captum_attr, model)).attribute(x, **nt_kwargs)
        ),
    )
