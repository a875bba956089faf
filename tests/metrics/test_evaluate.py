"""evaluate(): every method by every metric, a tidy table, a plot, and explain-once semantics."""

from __future__ import annotations

import pytest
import torch

from attribuo.attr import InputXGradient, IntegratedGradients, Saliency
from attribuo.metrics.evaluate import Evaluation, evaluate

torch.manual_seed(0)
MODEL = torch.nn.Linear(6, 3)
X = torch.randn(5, 6)


def l1(model, inputs, attributions, target=None, *, additional_forward_args=None, scale=1.0):
    return attributions.abs().flatten(1).sum(1) * scale


def test_scores_are_each_metric_on_each_methods_attributions():
    ev = evaluate({"sal": Saliency, "ixg": InputXGradient(MODEL), "ig": IntegratedGradients},
                  [l1, (l1, {"scale": 2.0})], MODEL, X, target=2, explain_kwargs={"ig": {"n_steps": 4}})
    assert ev.methods == ["sal", "ixg", "ig"] and ev.metrics == ["l1", "l1(scale=2.0)"]
    ixg = (MODEL.weight[2] * X).detach()
    assert torch.allclose(ev.scores[("ixg", "l1")], ixg.abs().sum(1))
    assert torch.allclose(ev.scores[("sal", "l1(scale=2.0)")], 2 * MODEL.weight[2].abs().sum().expand(5).detach())
    # IG on a linear model with a zero baseline is exactly input x gradient
    assert torch.allclose(ev.scores[("ig", "l1")], ev.scores[("ixg", "l1")], atol=1e-5)
    rows = ev.rows()
    assert len(rows) == 6 and {"method", "metric", "mean", "std", "n", "seconds"} <= set(rows[0])
    assert rows[0]["n"] == 5


def test_table_is_a_dataframe_and_the_plot_has_one_bar_per_pair():
    pd = pytest.importorskip("pandas")
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    ev = evaluate([Saliency, InputXGradient], [l1], MODEL, X, target=0)
    table = ev.table()
    assert isinstance(table, pd.DataFrame) and list(table["method"]) == ["Saliency", "InputXGradient"]
    long = ev.table(per_example=True)
    assert len(long) == 10 and set(long["example"]) == set(range(5))
    ax = ev.plot()
    assert len(ax.patches) == 2 and [t.get_text() for t in ax.get_xticklabels()] == ["l1"]


def test_metrics_that_explain_again_get_the_method():
    seen = []

    def max_sensitivity(model, inputs, attributions, target=None, *, additional_forward_args=None,
                        explain_kwargs=None):
        seen.append((attributions, explain_kwargs))
        return attributions(model).attribute(inputs, target=target, **explain_kwargs).abs().sum(1)

    ev = evaluate({"ig": IntegratedGradients}, [max_sensitivity], MODEL, X, target=1,
                  explain_kwargs={"ig": {"n_steps": 3}})
    method, kwargs = seen[0]
    assert method is IntegratedGradients and kwargs == {"n_steps": 3}  # given once, not bound twice
    assert ev.scores[("ig", "max_sensitivity")].shape == (5,)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="`methods` must not be empty"):
        evaluate({}, [l1], MODEL, X)
    with pytest.raises(TypeError, match="`metrics`"):
        evaluate([Saliency], "l1", MODEL, X)
    with pytest.raises(ValueError, match="unknown method 'IG'"):
        evaluate([Saliency], [l1], MODEL, X, explain_kwargs={"IG": {}})
    with pytest.raises(TypeError, match="explain"):
        evaluate([42], [l1], MODEL, X)


def test_repr_lists_every_pair():
    ev = Evaluation({("a", "m"): torch.tensor([1.0, 3.0])}, {("a", "m"): 0.0})
    assert "a" in repr(ev) and ev.rows()[0]["mean"] == 2.0
