"""FeatureAblation: closed forms, feature groups, output and input forms (Captum's edge cases)."""

import warnings

import pytest
import torch
from models import tabular_batch, tabular_mlp
from torch import nn

from attribuo.attr import FeatureAblation, ShapleyValues, ShapleyValueSampling

warnings.filterwarnings("ignore", message=".*Feature mask.*")



def _linear():
    torch.manual_seed(0)
    return nn.Linear(5, 2).double()


def test_feature_ablation_linear_closed_form():
    model, x = _linear(), tabular_batch()
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
    model, x = _linear(), tabular_batch()
    attr = FeatureAblation(lambda t: model(t)[:, 0].sum()).attribute(x)
    assert attr.shape == (1, 5)
    torch.testing.assert_close(attr[0], (x * model.weight[0]).sum(0))


def test_batch_of_one_equals_batch_rows():
    model, x = tabular_mlp(), tabular_batch()
    full = FeatureAblation(model).attribute(x, target=0)
    single = torch.cat([FeatureAblation(model).attribute(x[i:i + 1], target=0) for i in range(4)])
    torch.testing.assert_close(full, single, atol=1e-12, rtol=0)


def test_show_progress_runs(capsys):
    model, x = tabular_mlp(), tabular_batch()
    FeatureAblation(model).attribute(x, target=0, show_progress=True, perturbations_per_eval=2)
    assert "Feature Ablation" in capsys.readouterr().err


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


def test_integral_float_and_negative_feature_ids_are_features():
    model, x = tabular_mlp(), tabular_batch()
    ids = torch.tensor([[0, 0, 1, 2, 2]])
    expected = FeatureAblation(model).attribute(x, target=1, feature_mask=ids)
    as_float = FeatureAblation(model).attribute(x, target=1, feature_mask=ids.float())
    shifted = FeatureAblation(model).attribute(x, target=1, feature_mask=ids - 2)  # ids -2, -1, 0
    torch.testing.assert_close(as_float, expected, rtol=0, atol=0)
    torch.testing.assert_close(shifted, expected, rtol=0, atol=0)
    with pytest.raises(ValueError, match="feature ids >= 0"):
        ShapleyValueSampling(model).attribute(x, target=1, feature_mask=ids - 2)


def test_forward_futures_follow_captums_contract():
    model, x = tabular_mlp(), tabular_batch()

    def asynchronous(t):
        future = torch.futures.Future()
        future.set_result(model(t))
        return future

    expected = FeatureAblation(model).attribute(x, target=0)
    result = FeatureAblation(asynchronous).attribute_future(x, target=0)
    assert type(result) is torch.Future
    torch.testing.assert_close(result.wait(), expected)
    with pytest.raises(TypeError, match="attribute_future"):  # a future where a value is expected
        FeatureAblation(asynchronous).attribute(x, target=0)
    with pytest.raises(TypeError, match="Future"):  # and the other way round, raised at once
        FeatureAblation(model).attribute_future(x, target=0)


def test_a_fractional_baseline_for_integer_inputs_is_not_truncated():
    x = torch.tensor([[1, 2], [3, 4]])
    attr = FeatureAblation(lambda t: t.sum(1)).attribute(x, baselines=0.5)
    torch.testing.assert_close(attr, x - 0.5)
