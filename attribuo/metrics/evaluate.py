"""Score several attribution methods with several metrics in one call: a tidy table and a plot.

:func:`evaluate` explains the inputs once per method, runs every metric on
those attributions (metrics that explain again get the method itself), and
returns an :class:`Evaluation`: the per-example scores, a long-form table
(a pandas DataFrame when pandas is installed) and a grouped bar plot.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import Tensor

from .._engine.errors import ArgumentTypeError, ArgumentValueError
from ._common import as_explainer

# metrics whose third argument must be a method (they explain perturbed inputs or models)
EXPLAINS_AGAIN = frozenset({
    "max_sensitivity", "avg_sensitivity", "local_lipschitz_estimate", "continuity",
    "relative_input_stability", "relative_output_stability", "relative_representation_stability",
    "mprt", "smooth_mprt", "efficient_mprt", "random_logit", "input_invariance",
})


class Evaluation:
    """The result of :func:`evaluate`: ``scores[(method, metric)]`` is an ``(N,)`` tensor.

    Example:
        >>> import torch
        >>> ev = Evaluation({("IG", "sparseness"): torch.tensor([0.5, 0.7], dtype=torch.float64)},
        ...                 {("IG", "sparseness"): 0.01})
        >>> ev.rows()[0]["mean"]
        0.6
    """

    def __init__(self, scores: dict[tuple[str, str], Tensor], seconds: dict[tuple[str, str], float],
                 explain_seconds: dict[str, float] | None = None) -> None:
        self.scores = scores
        self.seconds = seconds  # each metric's own time
        self.explain_seconds = dict(explain_seconds or {})  # each method's one explanation

    @property
    def methods(self) -> list[str]:
        return list(dict.fromkeys(m for m, _ in self.scores))

    @property
    def metrics(self) -> list[str]:
        return list(dict.fromkeys(k for _, k in self.scores))

    def rows(self) -> list[dict[str, Any]]:
        """One dict per (method, metric): mean, std and count of the per-example scores, and the
        metric's seconds (the method's explanation is timed once, in ``explain_seconds``)."""
        out = []
        for (method, metric), values in self.scores.items():
            v = values.detach().to(torch.float64).reshape(-1)
            finite = v[torch.isfinite(v)]
            out.append({
                "method": method, "metric": metric,
                "mean": float(finite.mean()) if finite.numel() else float("nan"),
                "std": float(finite.std()) if finite.numel() > 1 else 0.0,
                "n": int(v.numel()), "seconds": round(self.seconds[(method, metric)], 4),
            })
        return out

    def table(self, per_example: bool = False) -> Any:
        """A pandas DataFrame (long form) when pandas is installed, else a list of dicts.

        ``per_example=True`` gives one row per (method, metric, example).
        """
        if per_example:
            rows = [{"method": m, "metric": k, "example": i, "score": float(s)}
                    for (m, k), v in self.scores.items() for i, s in enumerate(v.reshape(-1).tolist())]
        else:
            rows = self.rows()
        try:
            import pandas as pd
        except ImportError:
            return rows
        return pd.DataFrame(rows)

    def plot(self, ax: Any = None) -> Any:
        """Grouped bars (one group per metric, one bar per method, error bar = std); the axes."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(1.6 + 1.2 * len(self.metrics) * max(1, len(self.methods)) / 2, 3.2))
        rows = {(r["method"], r["metric"]): r for r in self.rows()}
        width = 0.8 / max(1, len(self.methods))
        for j, method in enumerate(self.methods):
            xs, means, stds = [], [], []
            for i, metric in enumerate(self.metrics):
                r = rows.get((method, metric))
                if r is not None:
                    xs.append(i + (j - (len(self.methods) - 1) / 2) * width)
                    means.append(r["mean"])
                    stds.append(r["std"])
            ax.bar(xs, means, width, yerr=stds, label=method, capsize=2)
        ax.set_xticks(range(len(self.metrics)))
        ax.set_xticklabels(self.metrics, rotation=30, ha="right")
        ax.set_ylabel("mean score")
        ax.legend(fontsize="small")
        return ax

    def __repr__(self) -> str:
        lines = [f"{'method':<22}{'metric':<34}{'mean':>12}{'std':>12}"]
        lines += [f"{r['method']:<22}{r['metric']:<34}{r['mean']:>12.4g}{r['std']:>12.4g}" for r in self.rows()]
        return "\n".join(lines)


def _named(items: Any, kind: str) -> dict[str, Any]:
    if isinstance(items, Mapping):
        named = dict(items)
    elif isinstance(items, Iterable) and not isinstance(items, (str, bytes)):
        named = {}
        for item in items:
            base = item[0] if isinstance(item, tuple) else item
            name = getattr(base, "__name__", None) or type(base).__name__
            if isinstance(item, tuple) and len(item) > 1 and isinstance(item[1], Mapping):
                shown = [f"{k}={v!r}" for k, v in item[1].items() if isinstance(v, (int, float, str, bool))]
                name += f"({', '.join(shown)})" if shown else ""
            while name in named:  # the same function twice with options not shown
                name += "'"
            named[name] = item
    else:
        raise ArgumentTypeError(f"`{kind}` must be a dict of name -> {kind[:-1]}, or a list of them")
    if not named:
        raise ArgumentValueError(f"`{kind}` must not be empty")
    return named


def evaluate(
    methods: Mapping[str, Any] | Iterable[Any],
    metrics: Mapping[str, Any] | Iterable[Any],
    model: Callable,
    inputs: Tensor,
    target: Any = None,
    *,
    additional_forward_args: Any = None,
    explain_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
    progress: bool = False,
) -> Evaluation:
    """Every method scored by every metric on the same inputs and targets.

    Args:
        methods: ``{"name": method}`` or a list; a method is an attribution
            class (``Saliency``), an instance, or ``f(model, inputs, target)``.
        metrics: ``{"name": metric}`` or a list; a metric is one of this
            package's functions, or ``(function, {keyword arguments})`` (e.g.
            ``(pointing_game, {"masks": masks})``).
        model, inputs, target, additional_forward_args: as for the metrics.
        explain_kwargs: per method name, keyword arguments for ``attribute``
            (e.g. ``{"IG": {"n_steps": 32}}``).
        progress: a tqdm bar over the (method, metric) pairs.

    Example:
        >>> import torch
        >>> from attribuo.attr import InputXGradient, Saliency
        >>> from attribuo.metrics import evaluate, sparseness
        >>> model = torch.nn.Linear(6, 2)
        >>> ev = evaluate([Saliency, InputXGradient], [sparseness], model, torch.randn(4, 6), target=1)
        >>> [(r["method"], r["metric"]) for r in ev.rows()]
        [('Saliency', 'sparseness'), ('InputXGradient', 'sparseness')]
    """
    named_methods = _named(methods, "methods")
    named_metrics = _named(metrics, "metrics")
    extra = dict(explain_kwargs or {})
    unknown = sorted(set(extra) - set(named_methods))
    if unknown:
        raise ArgumentValueError(f"`explain_kwargs` names unknown method {unknown[0]!r}")
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(named_methods) * len(named_metrics), desc="evaluate")
    scores: dict[tuple[str, str], Tensor] = {}
    seconds: dict[tuple[str, str], float] = {}
    explained: dict[str, float] = {}
    try:
        for method_name, method in named_methods.items():
            kwargs = dict(extra.get(method_name, {}))
            explain = as_explainer(method, **kwargs)
            started = time.perf_counter()
            attributions = explain(model, inputs, target)
            explained[method_name] = time.perf_counter() - started
            for metric_name, metric in named_metrics.items():
                func, options = (metric if isinstance(metric, tuple) else (metric, {}))
                if not callable(func) or not isinstance(options, Mapping):
                    raise ArgumentTypeError(f"metric {metric_name!r} must be a function or (function, dict)")
                again = getattr(func, "__name__", "") in EXPLAINS_AGAIN
                # the method itself (not the bound explainer) so its kwargs are given once
                third = method if again else attributions
                if again and kwargs and "explain_kwargs" not in options:
                    options = {**options, "explain_kwargs": kwargs}
                started = time.perf_counter()
                values = func(model, inputs, third, target, additional_forward_args=additional_forward_args,
                              **options)
                if isinstance(values, tuple):  # (scores, curves or details)
                    values = values[0]
                spent = time.perf_counter() - started
                scores[(method_name, metric_name)] = torch.as_tensor(values).detach().reshape(-1)
                seconds[(method_name, metric_name)] = spent
                if bar is not None:
                    bar.set_postfix_str(f"{method_name} / {metric_name}")
                    bar.update()
    finally:
        if bar is not None:
            bar.close()
    return Evaluation(scores, seconds, explained)
