"""Deletion / insertion curves: hand-computed areas, random-order expectation, slow reference."""

from __future__ import annotations

import pytest
import torch
from models import SmallCNN, TwoInputModel, seeded
from torch import nn

from attribuo._engine.errors import ArgumentTypeError, ArgumentValueError
from attribuo.metrics import deletion_curve, insertion_curve

W = torch.tensor([[1.0, 2.0, -1.0, 3.0]], dtype=torch.float64)


@pytest.fixture
def linear():
    model = nn.Linear(4, 1).double()
    with torch.no_grad():
        model.weight.copy_(W)
        model.bias.fill_(0.5)
    return model


def test_deletion_and_insertion_by_hand(linear):
    x = torch.ones(1, 4, dtype=torch.float64)
    attr = x * W  # [1, 2, -1, 3]: order 3, 1, 0, 2
    dele = deletion_curve(linear, x, attr, target=0)
    # f = 5.5; remove 3 -> 2.5; remove 2 -> 0.5; remove 1 -> -0.5; remove -1 -> 0.5
    torch.testing.assert_close(dele.scores, torch.tensor([[5.5, 2.5, 0.5, -0.5, 0.5]],
                                                         dtype=torch.float64))
    torch.testing.assert_close(dele.area, torch.tensor([0.25 * (5.5 / 2 + 2.5 + 0.5 - 0.5 + 0.5 / 2)],
                                                       dtype=torch.float64))
    ins = insertion_curve(linear, x, attr, target=0)
    torch.testing.assert_close(ins.scores, torch.tensor([[0.5, 3.5, 5.5, 6.5, 5.5]],
                                                        dtype=torch.float64))
    torch.testing.assert_close(ins.area, torch.tensor([4.625], dtype=torch.float64))
    torch.testing.assert_close(dele.fractions, torch.tensor([0, 0.25, 0.5, 0.75, 1.0],
                                                            dtype=torch.float64))


def test_grouped_steps_and_baseline_by_hand(linear):
    x = torch.tensor([[2.0, 1.0, 1.0, 1.0]], dtype=torch.float64)
    attr = torch.tensor([[4.0, 3.0, 2.0, 1.0]], dtype=torch.float64)
    # two steps: features {0, 1} then {2, 3} go to the baseline 1.0
    dele = deletion_curve(linear, x, attr, baselines=1.0, target=0, n_steps=2)
    f = lambda v: float(linear(torch.tensor([v], dtype=torch.float64)).detach())  # noqa: E731
    expected = [f([2, 1, 1, 1]), f([1, 1, 1, 1]), f([1, 1, 1, 1])]
    torch.testing.assert_close(dele.scores, torch.tensor([expected], dtype=torch.float64))
    torch.testing.assert_close(dele.area, torch.tensor([0.5 * (expected[0] / 2 + expected[1]
                                                              + expected[2] / 2)],
                                                       dtype=torch.float64))


@pytest.mark.parametrize("curve", [deletion_curve, insertion_curve])
def test_constant_attribution_gives_random_order_expectation(linear, curve):
    # under a uniformly random order the expected curve of a linear model is the straight
    # line between f(x) and f(baseline), so the expected area is their mean
    torch.manual_seed(0)
    n = 4000
    x = torch.tensor([[1.0, 2.0, 0.5, -1.0]], dtype=torch.float64).repeat(n, 1)
    result = curve(linear, x, torch.ones_like(x), target=0)
    fx, fb = float(linear(x[:1]).detach()), 0.5
    se = result.area.std() / n**0.5
    assert abs(float(result.area.mean()) - (fx + fb) / 2) < 4 * float(se)
    assert result.scores.unique(dim=0).shape[0] > 10  # ties really are broken at random
    # and the mean curve is that straight line
    line = fx + (fb - fx) * result.fractions if curve is deletion_curve else \
        fb + (fx - fb) * result.fractions
    assert float((result.scores.mean(0) - line).abs().max()) < 0.1


def slow_deletion(model, xs, attrs, base, ids, n_features, steps, target):
    """Obviously-correct loop: one example, one step, one forward at a time."""
    rows = []
    for b in range(xs[0].shape[0]):
        score = torch.zeros(n_features, dtype=torch.float64)
        for a, i in zip(attrs, ids):
            for f in range(n_features):
                score[f] += a[b][i == f].sum()
        order = sorted(range(n_features), key=lambda f: -float(score[f]))
        row = []
        for k in range(steps + 1):
            count = round(k * n_features / steps)
            gone = set(order[:count])
            pert = tuple(
                torch.where(torch.isin(i, torch.tensor(sorted(gone), dtype=torch.long)),
                            torch.full_like(x[b], base), x[b])[None]
                for x, i in zip(xs, ids)
            )
            row.append(float(model(*pert)[0, target[b]].detach()))
        rows.append(row)
    return torch.tensor(rows, dtype=torch.float64)


@pytest.mark.parametrize("max_examples_per_batch", [None, 2, 7])
def test_feature_mask_matches_slow_reference(max_examples_per_batch):
    model = seeded(SmallCNN(channels=2), 3).double()
    torch.manual_seed(1)
    x = torch.randn(3, 2, 8, 8, dtype=torch.float64)
    attr = torch.randn_like(x)
    # 2x2 super-pixels shared by both channels: 16 features
    mask = (torch.arange(8)[:, None] // 2 * 4 + torch.arange(8)[None, :] // 2).expand(1, 2, 8, 8)
    target = [0, 3, 1]
    got = deletion_curve(model, x, attr, baselines=-0.5, target=target, n_steps=5,
                         feature_mask=mask, max_examples_per_batch=max_examples_per_batch)
    ref = slow_deletion(model, (x,), (attr,), -0.5, (mask[0],), 16, 5, target)
    torch.testing.assert_close(got.scores, ref)
    torch.testing.assert_close(got.fractions, torch.tensor([0, 3, 6, 10, 13, 16]) / 16.0,
                               check_dtype=False)


def test_tuple_inputs_with_shared_ids_and_additional_args():
    model = seeded(TwoInputModel(), 4).double()
    torch.manual_seed(2)
    x = (torch.randn(2, 4, dtype=torch.float64), torch.randn(2, 3, dtype=torch.float64))
    attrs = (torch.randn(2, 4, dtype=torch.float64), torch.randn(2, 3, dtype=torch.float64))
    masks = (torch.tensor([[0, 1, 2, 3]]), torch.tensor([[3, 4, 4]]))  # id 3 spans both inputs
    got = deletion_curve(model, x, attrs, target=[2, 1], feature_mask=masks,
                         additional_forward_args=(1.0,))
    ref = slow_deletion(model, x, attrs, 0.0, (masks[0][0], masks[1][0]), 5, 5, [2, 1])
    torch.testing.assert_close(got.scores, ref)


def test_insertion_ends_at_input_and_deletion_at_baseline():
    model = seeded(SmallCNN(), 5).double()
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    attr = torch.randn_like(x)
    dele = deletion_curve(model, x, attr, target=1, n_steps=7)
    ins = insertion_curve(model, x, attr, target=1, n_steps=7)
    fx, fb = model(x)[:, 1].detach(), model(torch.zeros_like(x))[:, 1].detach()
    torch.testing.assert_close(dele.scores[:, 0], fx)
    torch.testing.assert_close(dele.scores[:, -1], fb)
    torch.testing.assert_close(ins.scores[:, 0], fb)
    torch.testing.assert_close(ins.scores[:, -1], fx)
    assert dele.scores.shape == (2, 8)


def test_errors_name_the_argument(linear):
    x = torch.ones(2, 4, dtype=torch.float64)
    with pytest.raises(ArgumentValueError, match="attributions"):
        deletion_curve(linear, x, torch.ones(2, 3), target=0)
    with pytest.raises(ArgumentValueError, match="n_steps"):
        deletion_curve(linear, x, x, target=0, n_steps=0)
    with pytest.raises(ArgumentTypeError, match="feature_mask"):
        deletion_curve(linear, x, x, target=0, feature_mask=torch.ones(1, 4))
    with pytest.raises(ArgumentValueError, match="same for every example"):
        deletion_curve(linear, x, x, target=0, feature_mask=torch.tensor([[0, 1, 2, 3], [0, 0, 1, 1]]))
