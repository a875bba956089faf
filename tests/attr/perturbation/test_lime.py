"""Lime (and LimeBase paths): joint fits, empty inputs, Captum's import paths."""

import warnings

import pytest
import torch
from models import tabular_batch, tabular_mlp

from attribuo.attr import KernelShap, Lime

warnings.filterwarnings("ignore", message=".*Feature mask.*")



def test_lime_and_kernel_shap_fit_examples_together_like_alone():
    model, x = tabular_mlp(), tabular_batch()
    torch.manual_seed(0)
    joint = KernelShap(model).attribute(x, target=0, n_samples=40, return_input_shape=False)
    assert joint.shape == (4, 5)
    torch.manual_seed(0)
    lime = Lime(model).attribute(x, target=0, n_samples=40, return_input_shape=False)
    assert lime.shape == (4, 5) and lime.dtype == torch.float64


def test_lime_with_an_empty_second_input():
    model = lambda a, b: (a * torch.tensor([1.0, -2.0, 4.0])).sum(1)  # noqa: E731
    from attribuo._utils.models import SkLearnLinearRegression

    lime = Lime(model, interpretable_model=SkLearnLinearRegression())
    x = torch.tensor([[1.0, 1.0, 1.0]])
    a, b = lime.attribute((x, torch.empty(1, 0)), n_samples=60)
    # a linear model is fitted exactly: coefficient = weight * (x - 0)
    torch.testing.assert_close(a, torch.tensor([[1.0, -2.0, 4.0]]), atol=1e-4, rtol=0)
    assert b.shape == (1, 0)


def test_captum_linear_model_and_lime_paths_import():
    import attribuo._utils.models as models
    from attribuo._utils.models.linear_model import SkLearnLasso
    from attribuo.attr._core.lime import get_exp_kernel_similarity_function

    assert SkLearnLasso is models.SkLearnLasso
    sim = get_exp_kernel_similarity_function("euclidean", 1.0)
    # identical inputs: distance 0 -> similarity 1
    assert sim(torch.ones(1, 2), torch.ones(1, 2), None) == pytest.approx(1.0)
    with pytest.raises(ImportError):
        import attribuo._utils.models.not_a_module  # noqa: F401
