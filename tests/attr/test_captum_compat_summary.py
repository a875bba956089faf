"""Summarizer / Stat family, ProductBaselines and ModelInputWrapper (Captum's utilities)."""

import inspect
import random

import numpy as np
import pytest
import torch

import attribuo.attr as A_
from attribuo.attr import (
    MSE,
    ClassSummarizer,
    CommonStats,
    Count,
    LayerIntegratedGradients,
    Max,
    Mean,
    Min,
    ModelInputWrapper,
    ProductBaselines,
    StdDev,
    Sum,
    Summarizer,
    Var,
)
from attribuo.attr.stat import GeneralAccumFn


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


def test_product_baselines_draw_from_the_product_with_python_random():
    pb = ProductBaselines({"a": [1, 2], ("b", "c"): [(3, 4), (5, 6)]})
    random.seed(0)
    draws = [pb() for _ in range(40)]
    assert all(set(d) == {"a", "b", "c"} for d in draws)
    assert {(d["b"], d["c"]) for d in draws} == {(3, 4), (5, 6)}
    assert {d["a"] for d in draws} == {1, 2}
    random.seed(0)
    assert [pb() for _ in range(40)] == draws
    assert ProductBaselines([[7], [8, 8]])() == [7, 8]


class _TwoInputs(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 1)

    def forward(self, x, y):
        return self.lin(x * y)


def test_model_input_wrapper_is_transparent_and_exposes_inputs_as_layers():
    torch.manual_seed(0)
    model = _TwoInputs().double()
    wrapped = ModelInputWrapper(model)
    x, y = torch.rand(2, 3, dtype=torch.float64), torch.rand(2, 3, dtype=torch.float64)
    torch.testing.assert_close(wrapped(x, y), model(x, y))
    torch.testing.assert_close(wrapped(x, y=y), model(x, y))
    assert set(wrapped.input_maps) == {"x", "y"}
    # attributing to the identity layer of `x` is attributing to `x` itself
    lig = LayerIntegratedGradients(wrapped, wrapped.input_maps["x"])
    attr = lig.attribute((x, y), target=0, n_steps=20)
    completeness = wrapped(x, y)[:, 0] - (wrapped(torch.zeros_like(x), y)[:, 0])
    torch.testing.assert_close(attr.sum(1), completeness, atol=1e-6, rtol=0)
    # linear in x: IG = x * w * y exactly
    torch.testing.assert_close(attr, x * y * model.lin.weight.detach()[0], atol=1e-10, rtol=0)


class _FourInputs(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 2)

    def forward(self, x1, x2, x3, x4):
        return self.lin(torch.relu(x1 + 2 * x2 - x3) * x4)


def _seed(k):
    torch.manual_seed(k)
    np.random.seed(k)  # GradientShap draws its alphas from numpy, as Captum does


class _OneInput(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 2)

    def forward(self, x):
        return self.lin(torch.relu(x - 0.3))


@pytest.mark.parametrize("layer_cls,primary_cls,multi", [
    (A_.LayerIntegratedGradients, A_.IntegratedGradients, True),
    (A_.LayerIntegratedGradients, A_.IntegratedGradients, False),
    (A_.LayerGradientXActivation, A_.InputXGradient, True),
    (A_.LayerGradientXActivation, A_.InputXGradient, False),
    (A_.LayerFeatureAblation, A_.FeatureAblation, False),
    (A_.LayerDeepLift, A_.DeepLift, False),
    (A_.LayerDeepLiftShap, A_.DeepLiftShap, False),
    (A_.LayerGradientShap, A_.GradientShap, False),
])
def test_layer_method_on_wrapped_inputs_equals_primary_method(layer_cls, primary_cls, multi):
    # as Captum's test_input_layer_wrapper: identity layers of a ModelInputWrapper stand
    # for the inputs, so a layer method on them gives the primary method's attributions
    torch.manual_seed(0)
    names = ["x1", "x2", "x3", "x4"] if multi else ["x"]
    model = ModelInputWrapper((_FourInputs() if multi else _OneInput()).double())
    layers = [model.input_maps[n] for n in names]
    xs = tuple(torch.rand(5, 3, dtype=torch.float64) for _ in names)
    args = [xs]
    if "baselines" in inspect.getfullargspec(primary_cls.attribute.__wrapped__).args:
        args.append(tuple(torch.zeros(5, 3, dtype=torch.float64) for _ in names))
    lm = layer_cls(model, layers if multi else layers[0])
    results = []
    for kwargs in ({}, {"attribute_to_layer_input": True}):
        _seed(1)
        got = lm.attribute(*args, target=0, **kwargs)
        results.append(tuple(got) if isinstance(got, (tuple, list)) else (got,))
    _seed(1)
    expected = primary_cls(model).attribute(*args, target=0)
    expected = expected if isinstance(expected, tuple) else (expected,)
    for got in results:
        torch.testing.assert_close(got, expected)
