"""Perturbation methods against Captum 0.9.0 (same seed where the draws can match)."""

import warnings

import pytest
import torch
from torch import nn

captum_attr = pytest.importorskip("captum.attr")
captum_lime = pytest.importorskip("captum.attr._core.lime")
captum_models = pytest.importorskip("captum._utils.models.linear_model")

import attribuo._utils.models as ours_models  # noqa: E402

import attribuo.attr as ours  # noqa: E402
import attribuo.attr.perturbation.lime as ours_lime  # noqa: E402

warnings.filterwarnings("ignore")


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 3)).double()


def _cnn():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)).double()


def _x():
    torch.manual_seed(1)
    return torch.randn(4, 5, dtype=torch.float64)


def _img():
    torch.manual_seed(1)
    return torch.randn(2, 3, 8, 8, dtype=torch.float64)


_SHARED = _mlp()


def _two_inputs(a, b):
    return _SHARED(torch.cat([a[:, :3], b], 1))


def _pair(a=None, b=None):
    torch.manual_seed(2)
    return torch.randn(4, 5, dtype=torch.float64), torch.randn(4, 2, dtype=torch.float64)


MASK = torch.tensor([[0, 0, 1, 1, 2]])
PER_EXAMPLE = torch.tensor([[0, 1, 2, 3, 4], [4, 3, 2, 1, 0], [0, 0, 1, 1, 2], [1, 1, 1, 0, 0]])
TUPLE_MASK = (torch.tensor([[0, 1, 2, 3, 3]]), torch.tensor([[3, 0]]))

TABULAR = [
    dict(target=1),
    dict(target=[0, 1, 2, 1], baselines=0.25),
    dict(target=torch.tensor([2, 1, 0, 0]), feature_mask=MASK),
    dict(target=0, feature_mask=PER_EXAMPLE, baselines=torch.full((1, 5), -0.5, dtype=torch.float64)),
]


def _same(name, model, inputs, seed=None, **kw):
    if seed is not None:
        torch.manual_seed(seed)
    a = getattr(ours, name)(model).attribute(inputs, **kw)
    if seed is not None:
        torch.manual_seed(seed)
    b = getattr(captum_attr, name)(model).attribute(inputs, **kw)
    return a, b


def _close(a, b, atol):
    a, b = (a, b) if isinstance(a, tuple) else ((a,), (b,))
    assert len(a) == len(b)
    for p, q in zip(a, b):
        assert p.shape == q.shape
        torch.testing.assert_close(p, q.to(p.dtype), atol=atol, rtol=0)


@pytest.mark.parametrize("kw", TABULAR)
@pytest.mark.parametrize("name", ["FeatureAblation", "ShapleyValues"])
def test_deterministic_methods_match(name, kw):
    _close(*_same(name, _mlp(), _x(), **kw), atol=1e-5)


@pytest.mark.parametrize("name", ["FeatureAblation", "ShapleyValues", "ShapleyValueSampling", "FeaturePermutation"])
def test_tuple_inputs_shared_ids(name):
    kw = dict(feature_mask=TUPLE_MASK) if name != "FeatureAblation" else dict(feature_mask=TUPLE_MASK, baselines=(0.1, 0.2))
    _close(*_same(name, _two_inputs, _pair(), seed=5, **{**kw, "target": 0}), atol=1e-5)


@pytest.mark.parametrize("name", ["FeatureAblation", "ShapleyValues", "ShapleyValueSampling"])
def test_scalar_per_batch_output(name):
    model = _mlp()
    _close(*_same(name, lambda t: model(t)[:, 0].sum(), _x(), seed=3, feature_mask=MASK), atol=1e-5)


def test_multi_output_without_target():
    _close(*_same("FeatureAblation", _mlp(), _x(), feature_mask=MASK), atol=1e-5)
    _close(*_same("ShapleyValueSampling", _mlp(), _x(), seed=3, feature_mask=MASK, n_samples=3), atol=1e-5)


@pytest.mark.parametrize("kw", [
    dict(sliding_window_shapes=(3, 4, 4), strides=2, target=1),
    dict(sliding_window_shapes=(1, 3, 3), strides=(1, 2, 3), target=[0, 2], baselines=0.3),
    dict(sliding_window_shapes=(2, 3, 2), target=2, perturbations_per_eval=5),
])
def test_occlusion_matches(kw):
    _close(*_same("Occlusion", _cnn(), _img(), **kw), atol=1e-5)


@pytest.mark.parametrize("kw", TABULAR)
@pytest.mark.parametrize("name", ["ShapleyValueSampling", "FeaturePermutation"])
def test_seeded_methods_match_under_same_seed(name, kw):
    kw = dict(kw)
    if name == "FeaturePermutation":
        kw.pop("baselines", None)
    else:
        kw["n_samples"] = 7
    _close(*_same(name, _mlp(), _x(), seed=11, **kw), atol=1e-5)


@pytest.mark.parametrize("kw", [dict(target=1), dict(target=[0, 1, 2, 1], baselines=0.25, n_samples=60),
                                dict(target=0, feature_mask=MASK, return_input_shape=False)])
def test_lime_matches_under_same_seed(kw):
    # same samples and weights; Captum's scikit-learn Lasso stops at tol=1e-4, ours converges further
    model = _mlp().float()
    a, b = _same("Lime", model, _x().float(), seed=7, **kw)
    _close(a, b, atol=1e-3)
    torch.manual_seed(7)
    ours.Lime(model).attribute(_x().float(), **kw)
    after_ours = torch.rand(3)
    torch.manual_seed(7)
    captum_attr.Lime(model).attribute(_x().float(), **kw)
    assert torch.equal(after_ours, torch.rand(3))  # the generator is left where Captum leaves it


def test_lime_scalar_per_batch_matches():
    model = _mlp().float()
    _close(*_same("Lime", lambda t: model(t)[:, 0].sum(), _x().float(), seed=7, n_samples=40), atol=1e-4)


def test_kernel_shap_exact_on_linear_model():
    torch.manual_seed(0)
    model = nn.Linear(5, 2).double()
    for kw in (dict(target=1), dict(target=[0, 1, 1, 0], baselines=0.2, n_samples=40, feature_mask=MASK)):
        _close(*_same("KernelShap", model, _x(), seed=1, **kw), atol=1e-5)


def test_kernel_shap_estimates_converge_to_the_same_values():
    model, x = _mlp(), _x()
    a, b = _same("KernelShap", model, x, seed=3, target=0, n_samples=3000)
    exact = ours.ShapleyValues(model).attribute(x, target=0)
    assert (a - exact).abs().max() < 0.01 and (b - exact).abs().max() < 0.01
    _close(a, b, atol=0.02)


@pytest.mark.parametrize("n_samples", [7, 20, 100])
def test_kernel_shap_draws_captums_coalitions_under_a_seed(n_samples):
    model = _mlp().float()
    x = _x().float()
    torch.manual_seed(11)
    theirs = captum_attr.KernelShap(model).attribute(x, target=1, n_samples=n_samples)
    after_theirs = torch.rand(3)
    torch.manual_seed(11)
    mine = ours.KernelShap(model).attribute(x, target=1, n_samples=n_samples)
    _close(mine, theirs, atol=1e-5)
    assert torch.equal(torch.rand(3), after_theirs)  # the generator is left where Captum leaves it


def test_multi_input_kernel_shap_with_a_mask_matches_captum():
    # Captum's test_multi_input_kernel_shap_with_mask
    from captum.testing.helpers.basic_models import BasicModel_MultiLayer_MultiInput

    net = BasicModel_MultiLayer_MultiInput()
    inputs = (torch.tensor([[20.0, 50.0, 30.0]]), torch.tensor([[0.0, 100.0, 0.0]]), torch.tensor([[2.0, 10.0, 3.0]]))
    masks = (torch.tensor([[0, 1, 0]]), torch.tensor([[0, 1, 2]]), torch.tensor([[0, 0, 0]]))
    for kw in ({}, {"baselines": (2, 3.0, 4)}):
        torch.manual_seed(0)
        theirs = captum_attr.KernelShap(net).attribute(inputs, target=0, additional_forward_args=(1,), feature_mask=masks, **kw)
        torch.manual_seed(0)
        mine = ours.KernelShap(net).attribute(inputs, target=0, additional_forward_args=(1,), feature_mask=masks, **kw)
        for a, b in zip(mine, theirs):
            _close(a, b, atol=1e-3)


# ------------------------------------------------------------------ seeded Lime chains
# Captum's fits take random draws (a DataLoader seed, nn.Linear's initialisation);
# attribuo takes the same ones, so that a seeded sequence of calls (Lime, then
# LimeBase with a user sampler) reproduces Captum exactly.

def _model(x):
    return (x * torch.tensor([3.0, -1.0, 2.0, 0.5])).sum(1) + x[:, 0] * x[:, 1]


def _sampler(original, **kwargs):
    keep = torch.bernoulli(torch.full((1, kwargs["num_interp_features"]), 0.5))
    return original * keep[0][kwargs["feature_mask"]]


def _to_interp(sample, original, **kwargs):
    return (sample != 0).float().reshape(1, -1)


def _run(lime_mod, models_mod):
    torch.manual_seed(7)
    x = torch.tensor([[1.0, 2.0, -1.0, 3.0], [0.5, -2.0, 1.0, 1.0]])
    lime = lime_mod.Lime(_model, interpretable_model=models_mod.SkLearnLasso(alpha=0.01))
    first = lime.attribute(x, target=None, n_samples=40)
    base = lime_mod.LimeBase(
        _model, models_mod.SkLearnLinearRegression(),
        lime_mod.get_exp_kernel_similarity_function("euclidean", 10.0),
        _sampler, False, None, _to_interp,
    )
    second = base.attribute(x[:1], n_samples=30, feature_mask=torch.arange(4), num_interp_features=4)
    return first, second, torch.rand(3)


def test_seeded_lime_then_limebase_matches_captum():
    pytest.importorskip("sklearn")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = _run(ours_lime, ours_models)
        theirs = _run(captum_lime, captum_models)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a.float(), b.float(), atol=1e-4, rtol=1e-4)
