"""DeepLift and DeepLiftShap against Captum 0.9.0 on module-based models.

Captum needs each non-linearity to be its own module used once; on such
models the two must agree (float64, to 1e-9).
"""

import warnings

import captum.attr as captum_attr
import pytest
import torch
from models import TwoInputModel
from models.deeplift import ACTIVATIONS, DeepMLP, PoolNet, SoftmaxNet, seeded

import attribuo.attr as attribuo_attr


def _cases():
    torch.manual_seed(3)
    for act in ACTIVATIONS:
        yield f"mlp-{act}", seeded(DeepMLP(act)), torch.randn(4, 5, dtype=torch.float64), 1, None
    for dims in (1, 2, 3):
        # Two touching non-linearities (ReLU -> MaxPool) are where Captum goes
        # wrong (test_captum_incomplete_when_nonlinearities_touch); keep them apart.
        shape = PoolNet.input_shape(dims)
        model = seeded(PoolNet(dims, order="separated"))
        yield f"pool{dims}d", model, torch.randn(3, *shape, dtype=torch.float64), [0, 2, 1], None
    yield "softmax", seeded(SoftmaxNet()), torch.randn(4, 4, dtype=torch.float64), 2, None
    two = seeded(TwoInputModel())
    xs = (torch.randn(4, 4, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64))
    scale = torch.rand(4, 1, dtype=torch.float64) + 0.5  # a batched extra argument
    yield "two-inputs", two, xs, torch.tensor([0, 1, 2, 0]), (scale,)


CASES = {c[0]: c[1:] for c in _cases()}


def _baselines(inputs, kind):
    if kind == "zeros":
        return None
    if kind == "scalar":
        return tuple(0.25 for _ in inputs) if isinstance(inputs, tuple) else 0.25
    torch.manual_seed(7)
    if isinstance(inputs, tuple):
        return tuple(0.3 * torch.randn_like(x) for x in inputs)
    return 0.3 * torch.randn_like(inputs)


def _custom_one(m):
    return tuple(2 * t for t in m)


def _custom_three(m, x, b):
    return tuple(t * (xi - bi) ** 2 for t, xi, bi in zip(m, x, b))


VARIANTS = {
    "default": ({}, {}),
    "no-multiply": ({"multiply_by_inputs": False}, {}),
    "custom-1": ({}, {"custom_attribution_func": _custom_one}),
    "custom-3": ({}, {"custom_attribution_func": _custom_three}),
}


def _as_tuple(v):
    return v if isinstance(v, tuple) else (v,)


def _compare(ours, theirs, atol=1e-9):
    (oa, od), (ta, td) = ours, theirs
    assert type(oa) is type(ta)
    for a, b in zip(_as_tuple(oa), _as_tuple(ta)):
        torch.testing.assert_close(a, b.detach(), atol=atol, rtol=1e-7)
    torch.testing.assert_close(od, td.detach(), atol=atol, rtol=1e-7)


SETTINGS = [("zeros", v) for v in VARIANTS] + [("random", v) for v in VARIANTS] + [("scalar", "default")]


@pytest.mark.parametrize("baselines, variant", SETTINGS)
@pytest.mark.parametrize("case", CASES)
def test_deeplift_matches_captum(case, baselines, variant):
    model, inputs, target, extra = CASES[case]
    init, call = VARIANTS[variant]
    kwargs = dict(baselines=_baselines(inputs, baselines), target=target,
                  additional_forward_args=extra, return_convergence_delta=True, **call)
    ours = attribuo_attr.DeepLift(model, **init).attribute(inputs, **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = captum_attr.DeepLift(model, **init).attribute(inputs, **kwargs)
    _compare(ours, theirs)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("case", ["mlp-relu", "mlp-sigmoid", "mlp-elu", "pool2d", "softmax", "two-inputs"])
def test_deeplift_shap_matches_captum(case, variant):
    model, inputs, target, extra = CASES[case]
    torch.manual_seed(11)
    dist = tuple(torch.randn(5, *x.shape[1:], dtype=x.dtype) for x in _as_tuple(inputs))
    dist = dist if isinstance(inputs, tuple) else dist[0]
    init, call = VARIANTS[variant]
    kwargs = dict(target=target, additional_forward_args=extra, return_convergence_delta=True, **call)
    ours = attribuo_attr.DeepLiftShap(model, **init).attribute(inputs, dist, **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = captum_attr.DeepLiftShap(model, **init).attribute(inputs, dist, **kwargs)
    _compare(ours, theirs)


@pytest.mark.parametrize("case", ["mlp-tanh", "mlp-elu", "mlp-softplus", "softmax"])
def test_deeplift_eps_matches_captum(case):
    # A large eps sends many units to the ordinary-gradient fallback.
    model, inputs, target, _ = CASES[case]
    torch.manual_seed(2)
    base = inputs + 0.05 * torch.randn_like(inputs)
    ours = attribuo_attr.DeepLift(model, eps=0.1, multiply_by_inputs=False).attribute(inputs, base, target=target)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = captum_attr.DeepLift(model, eps=0.1, multiply_by_inputs=False).attribute(
            inputs, base, target=target
        )
    torch.testing.assert_close(ours, theirs.detach(), atol=1e-9, rtol=1e-7)


def test_deeplift_float32_matches_captum():
    model, inputs, target, _ = CASES["pool2d"]
    model = model.float()
    x = inputs.float()
    try:
        ours = attribuo_attr.DeepLift(model).attribute(x, target=target)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs = captum_attr.DeepLift(model).attribute(x, target=target)
    finally:
        model.double()
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours, theirs.detach(), atol=1e-5, rtol=1e-4)


def test_captum_incomplete_when_nonlinearities_touch():
    """A known Captum 0.9.0 error that attribuo does not reproduce.

    When one hooked non-linearity feeds another directly (conv -> ReLU ->
    MaxPool), Captum's hook on the first reads the gradient before the
    second's rule has rewritten it, so its attributions do not add up to
    F(x) - F(x0). attribuo's are complete; where the two are apart they
    agree (test_deeplift_matches_captum).
    """
    torch.manual_seed(5)
    model = seeded(PoolNet(1, order="relu_pool"))
    x = torch.randn(3, *PoolNet.input_shape(1), dtype=torch.float64)
    base = torch.randn_like(x)
    _, ours = attribuo_attr.DeepLift(model).attribute(x, base, target=0, return_convergence_delta=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, theirs = captum_attr.DeepLift(model).attribute(x, base, target=0, return_convergence_delta=True)
    assert ours.abs().max() < 1e-10
    assert theirs.abs().max() > 1e-3
