"""Regressions found by running Captum's own tests for the primary methods.

Each test pins a behaviour Captum code relies on; expected values are worked
out by hand from the tiny models below.
"""

import pytest
import torch

from attribuo.attr import FeatureAblation, Lime, ShapleyValues


def _weighted_sum(x):
    # f(x) = 3 x0 + 1 x1 + 2 x2 per example
    return (x.to(torch.float32) * torch.tensor([3.0, 1.0, 2.0])).sum(1)


def test_python_float_output_gives_float64_attributions():
    # a forward returning a Python float is read as float64 (torch.tensor(v, dtype=float))
    x = torch.tensor([[2.0, 10.0, 3.0]])
    attr = FeatureAblation(lambda t: _weighted_sum(t).sum().item()).attribute(x)
    assert attr.dtype == torch.float64
    torch.testing.assert_close(attr, torch.tensor([[6.0, 10.0, 6.0]], dtype=torch.float64))


def test_python_int_output_gives_int64_attributions():
    x = torch.tensor([[2.0, 10.0, 3.0]])
    attr = FeatureAblation(lambda t: int(_weighted_sum(t).sum().item())).attribute(x)
    assert attr.dtype == torch.int64
    assert attr.tolist() == [[6, 10, 6]]


@pytest.mark.parametrize("method", [FeatureAblation, ShapleyValues])
def test_bool_baseline_is_accepted_for_bool_inputs(method):
    x = torch.tensor([[True, False, True]])
    mask = torch.tensor([[0, 0, 1]])
    attr = method(_weighted_sum).attribute(x, baselines=True, feature_mask=mask)
    # feature 0 (x0, x1): f(T,F,T) - f(T,T,T) = 5 - 6; feature 1 (x2): already True -> 0
    torch.testing.assert_close(attr, torch.tensor([[-1.0, -1.0, 0.0]]))


def _sparse_model(dense, sparse):
    # one value for the batch: the dense part plus the first sparse index (if any)
    head = sparse[0] if sparse.numel() else 0
    return _weighted_sum(dense).sum() + head


def test_inputs_after_the_first_may_have_another_length():
    dense = torch.tensor([[1.0, -2.0, 3.0], [2.0, -1.0, 3.0]])
    sparse = torch.tensor([4, 7, 2, 9, 5])
    attr_dense, attr_sparse = FeatureAblation(_sparse_model).attribute((dense, sparse))
    # dense: each column ablated for both rows at once -> weight * column sum
    torch.testing.assert_close(attr_dense, torch.tensor([[9.0, -3.0, 12.0]]))
    # the whole index list is one feature; zeroing it drops the head (4)
    assert attr_sparse.tolist() == [4]


def test_empty_input_gets_zero_attribution():
    dense = torch.tensor([[1.0, -2.0, 3.0]])
    empty = torch.tensor([], dtype=torch.long)
    attr_dense, attr_empty = FeatureAblation(_sparse_model).attribute((dense, empty))
    torch.testing.assert_close(attr_dense, torch.tensor([[3.0, -2.0, 6.0]]))
    assert attr_empty.tolist() == [0]


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
    from attribuo._utils.models.linear_model import SkLearnLasso
    from attribuo.attr._core.lime import get_exp_kernel_similarity_function

    import attribuo._utils.models as models

    assert SkLearnLasso is models.SkLearnLasso
    sim = get_exp_kernel_similarity_function("euclidean", 1.0)
    # identical inputs: distance 0 -> similarity 1
    assert sim(torch.ones(1, 2), torch.ones(1, 2), None) == pytest.approx(1.0)
    with pytest.raises(ImportError):
        import attribuo._utils.models.not_a_module  # noqa: F401
