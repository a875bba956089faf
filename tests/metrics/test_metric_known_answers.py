"""Across the families, through evaluate(): on a model whose mechanism is known, the metrics
prefer the exact attribution to a random one.

The model is linear in its first four inputs and ignores the other four, so
the exact attribution (input x gradient, which equals Integrated Gradients
here) puts all relevance on the used inputs; a random attribution does not.
"""

from __future__ import annotations

import torch

from attribuo.attr import InputXGradient
from attribuo.metrics import (
    complexity,
    evaluate,
    faithfulness_correlation,
    faithfulness_estimate,
    pixel_flipping,
    relevance_mass_accuracy,
    sparseness,
    top_k_intersection,
)

torch.manual_seed(0)
WEIGHTS = torch.tensor([3.0, -2.0, 1.5, 2.5, 0.0, 0.0, 0.0, 0.0])


class HalfLinear(torch.nn.Module):
    """Class 1's score is ``w . x`` over the first four inputs; class 0's is its negative."""

    def forward(self, x):
        score = x @ WEIGHTS
        return torch.stack([-score, score], dim=1)


def random_attribution(model, inputs, target):
    g = torch.Generator().manual_seed(1)
    return torch.randn(inputs.shape, generator=g)


def test_metrics_rank_the_exact_attribution_above_a_random_one():
    model = HalfLinear()
    x = torch.rand(24, 8) + 0.5
    used = torch.zeros(24, 8)
    used[:, :4] = 1
    ev = evaluate(
        {"exact": InputXGradient, "random": random_attribution},
        [
            (faithfulness_correlation, {"nr_runs": 50, "subset_size": 3, "seed": 0, "softmax": False}),
            (faithfulness_estimate, {"softmax": False}),
            (pixel_flipping, {"softmax": False}),
            (relevance_mass_accuracy, {"masks": used}),
            (top_k_intersection, {"masks": used, "k": 4, "abs": True}),  # a negative weight is relevant too
            sparseness,
            complexity,
        ],
        model, x, target=1,
    )
    mean = {(r["method"], r["metric"]): r["mean"] for r in ev.rows()}

    def better(metric: str, higher: bool = True) -> bool:
        exact, rand = mean[("exact", metric)], mean[("random", metric)]
        return exact > rand if higher else exact < rand

    assert better("faithfulness_correlation(nr_runs=50, subset_size=3, seed=0, softmax=False)")
    assert better("faithfulness_estimate(softmax=False)")
    assert better("pixel_flipping(softmax=False)", higher=False)  # the score falls faster
    assert better("relevance_mass_accuracy") and mean[("exact", "relevance_mass_accuracy")] == 1.0
    top_k = "top_k_intersection(k=4, abs=True)"
    assert better(top_k) and mean[("exact", top_k)] == 1.0
    assert better("sparseness")  # half the features carry nothing
    assert better("complexity", higher=False)
