"""Perturbation methods: closed forms, Shapley properties, chunking invariance, errors."""

import warnings

import pytest
import torch
from torch import nn

from attribuo._engine.errors import ArgumentTypeError, ArgumentValueError
from attribuo._utils.models import lasso_batch, least_squares_batch
from attribuo.attr import (
    FeatureAblation,
    FeaturePermutation,
    KernelShap,
    Lime,
    Occlusion,
    ShapleyValues,
    ShapleyValueSampling,
)

warnings.filterwarnings("ignore", message=".*Feature mask.*")


def _mlp(inputs=5, outputs=3):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(inputs, 8), nn.Tanh(), nn.Linear(8, outputs)).double()


def _x(n=4, f=5):
    torch.manual_seed(1)
    return torch.randn(n, f, dtype=torch.float64)


def _linear():
    torch.manual_seed(0)
    return nn.Linear(5, 2).double()


def test_feature_ablation_linear_closed_form():
    model, x = _linear(), _x()
    for t in (0, 1):
        attr = FeatureAblation(model).attribute(x, target=t, baselines=0.5)
        torch.testing.assert_close(attr, (x - 0.5) * model.weight[t])


def test_feature_ablation_groups_shared_across_tuple():
    f = lambda a, b: (a * torch.tensor([1.0, 2.0, 3.0], dtype=a.dtype)).sum(1) + 10 * b.sum(1)  # noqa: E731
    a, b = torch.ones(2, 3, dtype=torch.float64), torch.ones(2, 1, dtype=torch.float64)
    mask = (torch.tensor([[0, 0, 1]]), torch.tensor([[1]]))
    attr = FeatureAblation(f).attribute((a, b), feature_mask=mask)
    torch.testing.assert_close(attr[0], torch.tensor([[3.0, 3.0, 13.0]] * 2, dtype=torch.float64))
    torch.testing.assert_close(attr[1], torch.tensor([[13.0]] * 2, dtype=torch.float64))


def test_scalar_per_batch_output_gives_leading_dim_one():
    model, x = _linear(), _x()
    attr = FeatureAblation(lambda t: model(t)[:, 0].sum()).attribute(x)
    assert attr.shape == (1, 5)
    torch.testing.assert_close(attr[0], (x * model.weight[0]).sum(0))


def test_occlusion_hand_computed_1d():
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    attr = Occlusion(lambda t: t.sum(1)).attribute(x, sliding_window_shapes=(2,), strides=2)
    torch.testing.assert_close(attr, torch.tensor([[3.0, 3.0, 7.0, 7.0]]))
    # windows [0,1] [1,2] [2,3]: each covered element averages the windows covering it
    attr = Occlusion(lambda t: t.sum(1)).attribute(x, sliding_window_shapes=(2,), strides=1)
    torch.testing.assert_close(attr, torch.tensor([[3.0, 4.0, 6.0, 7.0]]))


def test_shapley_values_efficiency_exact():
    model, x = _mlp(), _x()
    base = torch.full_like(x, 0.3)
    attr = ShapleyValues(model).attribute(x, baselines=base, target=2)
    gap = model(x)[:, 2] - model(base)[:, 2]
    torch.testing.assert_close(attr.sum(1), gap, atol=1e-12, rtol=0)


def test_shapley_values_symmetry_and_hand_value():
    f = lambda t: t.prod(1)  # noqa: E731
    attr = ShapleyValues(f).attribute(torch.tensor([[2.0, 3.0]], dtype=torch.float64), baselines=1.0)
    torch.testing.assert_close(attr, torch.tensor([[2.0, 3.0]], dtype=torch.float64))
    attr = ShapleyValues(f).attribute(torch.tensor([[2.0, 2.0]], dtype=torch.float64), baselines=1.0)
    assert attr[0, 0] == attr[0, 1]


@pytest.mark.parametrize("method", ["sampling", "kernel"])
def test_sampling_methods_converge_to_shapley_values(method):
    model, x = _mlp(), _x()
    exact = ShapleyValues(model).attribute(x, target=0)
    errors = []
    for n in (10, 2000) if method == "sampling" else (30, 4000):
        torch.manual_seed(0)
        if method == "sampling":
            est = ShapleyValueSampling(model).attribute(x, target=0, n_samples=n)
        else:
            est = KernelShap(model).attribute(x, target=0, n_samples=n)
        errors.append((est - exact).abs().max().item())
    assert errors[1] < errors[0] and errors[1] < 0.02


def _dummy_model(x):
    return torch.tanh(x[:, 0] * x[:, 1]) + x[:, 3] ** 2 - x[:, 4]


def _additive_dummy_model(x):
    # the regression surrogates are exact only without interactions
    return torch.tanh(x[:, 0]) + x[:, 1] + x[:, 3] ** 2 - x[:, 4]


@pytest.mark.parametrize("name", ["ablation", "occlusion", "permutation", "sampling", "exact", "kernel", "lime"])
def test_ignored_feature_gets_zero(name):
    x = _x()
    torch.manual_seed(0)
    attr = {
        "ablation": lambda: FeatureAblation(_dummy_model).attribute(x),
        "occlusion": lambda: Occlusion(_dummy_model).attribute(x, sliding_window_shapes=(1,)),
        "permutation": lambda: FeaturePermutation(_dummy_model).attribute(x),
        "sampling": lambda: ShapleyValueSampling(_dummy_model).attribute(x, n_samples=5),
        "exact": lambda: ShapleyValues(_dummy_model).attribute(x),
        "kernel": lambda: KernelShap(_additive_dummy_model).attribute(x, n_samples=100),
        "lime": lambda: Lime(_additive_dummy_model).attribute(x, n_samples=100),
    }[name]()
    tol = {"kernel": 1e-6, "lime": 1e-3}.get(name, 0.0)
    assert attr[:, 2].abs().max().item() <= tol
    assert attr.abs().sum() > 0


@pytest.mark.parametrize("name", ["ablation", "occlusion", "permutation", "sampling", "exact", "kernel", "lime"])
def test_results_do_not_depend_on_perturbations_per_eval(name):
    model, x = _mlp(), _x()
    calls = {
        "ablation": lambda p: FeatureAblation(model).attribute(x, target=1, perturbations_per_eval=p),
        "occlusion": lambda p: Occlusion(model).attribute(x, (2,), target=1, perturbations_per_eval=p),
        "permutation": lambda p: FeaturePermutation(model).attribute(x, target=1, perturbations_per_eval=p),
        "sampling": lambda p: ShapleyValueSampling(model).attribute(x, target=1, n_samples=4, perturbations_per_eval=p),
        "exact": lambda p: ShapleyValues(model).attribute(x, target=1, perturbations_per_eval=p),
        "kernel": lambda p: KernelShap(model).attribute(x, target=1, n_samples=30, perturbations_per_eval=p),
        "lime": lambda p: Lime(model).attribute(x, target=1, n_samples=30, perturbations_per_eval=p),
    }[name]
    results = []
    for p in (1, 3, None):
        torch.manual_seed(0)
        results.append(calls(p))
    for r in results[1:]:
        torch.testing.assert_close(r, results[0], atol=1e-10, rtol=0)


def test_batch_of_one_equals_batch_rows():
    model, x = _mlp(), _x()
    full = FeatureAblation(model).attribute(x, target=0)
    single = torch.cat([FeatureAblation(model).attribute(x[i:i + 1], target=0) for i in range(4)])
    torch.testing.assert_close(full, single, atol=1e-12, rtol=0)


def test_per_example_feature_mask():
    model, x = _mlp(), _x(2)
    mask = torch.tensor([[0, 0, 1, 1, 2], [2, 1, 1, 0, 0]])
    attr = ShapleyValues(model).attribute(x, target=0, feature_mask=mask)
    for i in range(2):
        ref = ShapleyValues(model).attribute(x[i:i + 1], target=0, feature_mask=mask[i:i + 1])
        torch.testing.assert_close(attr[i:i + 1], ref, atol=1e-12, rtol=0)


def test_lime_and_kernel_shap_fit_examples_together_like_alone():
    model, x = _mlp(), _x()
    torch.manual_seed(0)
    joint = KernelShap(model).attribute(x, target=0, n_samples=40, return_input_shape=False)
    assert joint.shape == (4, 5)
    torch.manual_seed(0)
    lime = Lime(model).attribute(x, target=0, n_samples=40, return_input_shape=False)
    assert lime.shape == (4, 5) and lime.dtype == torch.float64


def test_lasso_batch_matches_tight_sklearn():
    sklearn = pytest.importorskip("sklearn.linear_model")
    torch.manual_seed(0)
    x = torch.bernoulli(torch.full((3, 60, 6), 0.5)).double()
    y = x @ torch.randn(6, dtype=torch.float64) + 0.1 * torch.randn(3, 60, dtype=torch.float64)
    w = torch.rand(3, 60, dtype=torch.float64)
    coef, intercept = lasso_batch(x, y, w, alpha=0.01)
    for b in range(3):
        ref = sklearn.Lasso(alpha=0.01, tol=1e-12, max_iter=100000).fit(x[b], y[b], sample_weight=w[b])
        torch.testing.assert_close(coef[b], torch.as_tensor(ref.coef_), atol=1e-6, rtol=0)
        assert abs(intercept[b].item() - ref.intercept_) < 1e-6


def test_least_squares_batch_matches_lstsq():
    torch.manual_seed(0)
    x = torch.randn(2, 30, 4, dtype=torch.float64)
    y = torch.randn(2, 30, dtype=torch.float64)
    w = torch.rand(2, 30, dtype=torch.float64)
    coef, intercept = least_squares_batch(x, y, w)
    for b in range(2):
        design = torch.cat([x[b], torch.ones(30, 1, dtype=torch.float64)], 1) * w[b].sqrt()[:, None]
        sol = torch.linalg.lstsq(design, y[b] * w[b].sqrt()).solution
        torch.testing.assert_close(coef[b], sol[:4])
        torch.testing.assert_close(intercept[b], sol[4])


def test_float64_in_float64_out_and_inputs_untouched():
    model, x = _mlp(), _x()
    before = x.clone()
    for method in (FeatureAblation(model), ShapleyValueSampling(model), Lime(model)):
        attr = method.attribute(x, target=0)
        assert attr.dtype == torch.float64
    assert torch.equal(x, before) and not x.requires_grad


def test_show_progress_runs(capsys):
    model, x = _mlp(), _x()
    FeatureAblation(model).attribute(x, target=0, show_progress=True, perturbations_per_eval=2)
    assert "Feature Ablation" in capsys.readouterr().err


def test_bad_arguments_raise_named_errors():
    model, x = _mlp(), _x()
    with pytest.raises(ArgumentValueError, match="perturbations_per_eval"):
        FeatureAblation(model).attribute(x, target=0, perturbations_per_eval=0)
    with pytest.raises(ArgumentValueError, match="feature_mask"):
        FeatureAblation(model).attribute(x, target=0, feature_mask=torch.zeros(3, 5, dtype=torch.long))
    with pytest.raises(ArgumentTypeError, match="feature_mask"):
        FeatureAblation(model).attribute(x, target=0, feature_mask=torch.zeros(1, 5))
    with pytest.raises(ArgumentValueError, match="sliding_window_shapes"):
        Occlusion(model).attribute(x, sliding_window_shapes=(9,), target=0)
    with pytest.raises(ArgumentValueError, match="strides"):
        Occlusion(model).attribute(x, sliding_window_shapes=(2,), strides=3, target=0)
    with pytest.raises(ArgumentValueError, match="n_samples"):
        ShapleyValueSampling(model).attribute(x, target=0, n_samples=0)
    with pytest.raises(ArgumentValueError, match="perturbations_per_eval"):
        FeatureAblation(lambda t: model(t)[:, 0].sum()).attribute(x, perturbations_per_eval=4)
