"""Summarizer, ClassSummarizer and the Stat family (Captum's utilities)."""

import pytest
import torch

from attribuo.attr import (
    MSE,
    ClassSummarizer,
    CommonStats,
    Count,
    Max,
    Mean,
    Min,
    StdDev,
    Sum,
    Summarizer,
    Var,
)
from attribuo.attr.utils.stat import GeneralAccumFn


def _stream(n=50, shape=(3,), seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g, dtype=torch.float64) * 1e3 + 1e5 for _ in range(n)]


@pytest.mark.parametrize("order", [0, 1])
def test_running_stats_equal_batch_formulas(order):
    xs = _stream()
    s = Summarizer([Mean(), Var(order=order), StdDev(order=order), Min(), Max(), Sum(), MSE(), Count()])
    for x in xs:
        s.update(x)
    stacked = torch.stack(xs)
    out = s.summary
    v = "variance" if order == 0 else "sample_variance"
    sd = "std_dev" if order == 0 else "sample_std_dev"
    torch.testing.assert_close(out["mean"], stacked.mean(0))
    torch.testing.assert_close(out[v], stacked.var(0, correction=order))
    torch.testing.assert_close(out[sd], stacked.std(0, correction=order))
    torch.testing.assert_close(out["min"], stacked.min(0).values)
    torch.testing.assert_close(out["max"], stacked.max(0).values)
    torch.testing.assert_close(out["sum"], stacked.sum(0))
    torch.testing.assert_close(out["mse"], ((stacked - stacked.mean(0)) ** 2).sum(0))
    assert out["count"] == len(xs)


def test_summary_lists_only_requested_stats_and_none_before_updates():
    s = Summarizer([StdDev()])
    assert s.summary is None
    s.update(torch.tensor(1.0))
    assert set(s.summary) == {"std_dev"}
    assert float(s.summary["std_dev"]) == 0.0


def test_integer_input_mean_is_float64_and_variance_zero_for_one_value():
    s = Summarizer([Var(), Mean()])
    s.update(torch.tensor(10))
    assert s.summary["mean"].dtype == torch.float64
    assert float(s.summary["variance"]) == 0.0


def test_tuple_inputs_give_one_summary_per_position_and_form_is_fixed():
    s = Summarizer(CommonStats())
    s.update((torch.ones(2, 3), torch.zeros(4)))
    s.update((torch.ones(2, 3) * 3, torch.ones(4)))
    out = s.summary
    assert isinstance(out, list) and len(out) == 2
    torch.testing.assert_close(out[0]["mean"], torch.full((2, 3), 2.0))
    torch.testing.assert_close(out[1]["max"], torch.ones(4))
    with pytest.raises(ValueError, match="`x`"):
        s.update(torch.ones(2, 3))


def test_custom_name_is_kept_when_another_stat_depends_on_it():
    s = Summarizer([Var(), Mean(name="avg")])
    for v in (1.0, 3.0):
        s.update(torch.tensor(v))
    assert set(s.summary) == {"variance", "avg"}
    assert float(s.summary["avg"]) == 2.0 and float(s.summary["variance"]) == 1.0


def test_general_accum_fn():
    s = Summarizer([GeneralAccumFn(torch.mul, name="prod")])
    for v in (2.0, 3.0, 4.0):
        s.update(torch.tensor(v))
    assert float(s.summary["prod"]) == 24.0


def test_class_summarizer_splits_by_label_and_tensor_labels_become_values():
    s = ClassSummarizer([Mean(), Count()])
    x = torch.tensor([[1.0], [3.0], [5.0], [7.0]])
    s.update(x, labels=torch.tensor([0, 1, 0, 1]))
    cs = s.class_summaries
    assert set(cs) == {0, 1}
    torch.testing.assert_close(cs[0][0]["mean"], torch.tensor([3.0]))
    torch.testing.assert_close(cs[1][0]["mean"], torch.tensor([5.0]))
    torch.testing.assert_close(s.summary[0]["mean"], torch.tensor([4.0]))
    assert s.summary[0]["count"] == 4
    with pytest.raises(AssertionError):  # wrong number of labels (also a ValueError)
        s.update(x, labels=[0, 1, 2])
