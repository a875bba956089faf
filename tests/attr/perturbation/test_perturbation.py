"""Properties every perturbation method shares: ignored features, chunking invariance, dtypes, errors."""

import warnings

import pytest
import torch
from models import tabular_batch, tabular_mlp

from attribuo._engine.errors import ArgumentTypeError, ArgumentValueError
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



def _dummy_model(x):
    return torch.tanh(x[:, 0] * x[:, 1]) + x[:, 3] ** 2 - x[:, 4]


def _additive_dummy_model(x):
    # the regression surrogates are exact only without interactions
    return torch.tanh(x[:, 0]) + x[:, 1] + x[:, 3] ** 2 - x[:, 4]


@pytest.mark.parametrize("name", ["ablation", "occlusion", "permutation", "sampling", "exact", "kernel", "lime"])
def test_ignored_feature_gets_zero(name):
    x = tabular_batch()
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
    model, x = tabular_mlp(), tabular_batch()
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


def test_float64_in_float64_out_and_inputs_untouched():
    model, x = tabular_mlp(), tabular_batch()
    before = x.clone()
    for method in (FeatureAblation(model), ShapleyValueSampling(model), Lime(model)):
        attr = method.attribute(x, target=0)
        assert attr.dtype == torch.float64
    assert torch.equal(x, before) and not x.requires_grad


def test_bad_arguments_raise_named_errors():
    model, x = tabular_mlp(), tabular_batch()
    with pytest.raises(ArgumentValueError, match="perturbations_per_eval"):
        FeatureAblation(model).attribute(x, target=0, perturbations_per_eval=0)
    with pytest.raises(ArgumentValueError, match="feature_mask"):
        FeatureAblation(model).attribute(x, target=0, feature_mask=torch.zeros(3, 5, dtype=torch.long))
    with pytest.raises(ArgumentTypeError, match="feature_mask"):  # whole floats are ids; halves are not
        FeatureAblation(model).attribute(x, target=0, feature_mask=torch.full((1, 5), 0.5))
    with pytest.raises(ArgumentValueError, match="sliding_window_shapes"):
        Occlusion(model).attribute(x, sliding_window_shapes=(9,), target=0)
    with pytest.raises(ArgumentValueError, match="strides"):
        Occlusion(model).attribute(x, sliding_window_shapes=(2,), strides=3, target=0)
    with pytest.raises(ArgumentValueError, match="n_samples"):
        ShapleyValueSampling(model).attribute(x, target=0, n_samples=0)
    with pytest.raises(ArgumentValueError, match="perturbations_per_eval"):
        FeatureAblation(lambda t: model(t)[:, 0].sum()).attribute(x, perturbations_per_eval=4)
