"""The perturbation loop against slow references: one perturbed copy, one forward at a time."""

from __future__ import annotations

import pytest
import torch

from attribuo._engine.call import parse_call
from attribuo._engine.perturb import (
    FeatureElements,
    blend,
    evaluate_perturbations,
    feature_masks,
    feature_order,
    initial_output,
    positions,
    replace_elements,
    select_elements,
    spread,
)
from attribuo.attr.perturbation.feature_ablation import ablate
from attribuo.attr.perturbation.occlusion import occlude


def model(x, y, scale):
    return torch.stack([(x.flatten(1) ** 2).sum(1) + y.sum(1), x.flatten(1).sin().sum(1) * scale], dim=1)


def _inputs(n=3):
    g = torch.Generator().manual_seed(3)
    return (
        torch.randn(n, 2, 3, generator=g, dtype=torch.float64),
        torch.randn(n, 4, generator=g, dtype=torch.float64),
        torch.rand(n, generator=g, dtype=torch.float64),
    )


def _reference_ablation(forward, xs, bases, masks, target, args):
    """Ablate each feature id in turn, one forward per feature and example."""
    n = xs[0].shape[0]
    ids = sorted({int(i) for m in masks for i in m.unique()})
    out = [torch.zeros_like(x) for x in xs]
    for i in range(n):
        def f(*parts, i=i):
            extra = [a[i : i + 1] for a in args]
            return forward(*parts, *extra)[0, target[i]]

        full = f(*[x[i : i + 1] for x in xs])
        for fid in ids:
            parts, hits = [], []
            for x, b, m in zip(xs, bases, masks):
                hit = (m[i if m.shape[0] > 1 else 0] == fid).unsqueeze(0)
                parts.append(torch.where(hit, b[i : i + 1], x[i : i + 1]))
                hits.append(hit[0])
            drop = full - f(*parts)
            for o, hit in zip(out, hits):
                o[i][hit] = drop
    return out


@pytest.mark.parametrize("per_eval", [None, 1, 2, 5, 100])
def test_ablation_matches_reference_whatever_the_chunking(per_eval):
    x, y, scale = _inputs()
    masks_given = (torch.tensor([[[0, 0, 1], [2, 2, 1]]]), torch.tensor([[3, 3, 4, 0]]))  # id 0 spans both
    call = parse_call((x, y), [0, 1, 1], (scale,))
    bases = (torch.full_like(x, 0.5), torch.zeros_like(y))
    masks = feature_masks(call.inputs, masks_given)
    got = ablate(model, call, bases, masks, per_eval)
    expected = _reference_ablation(model, (x, y), bases, masks, [0, 1, 1], (scale,))
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-12)


def test_per_example_masks_match_reference():
    x, y, scale = _inputs(2)
    per_example = (torch.arange(12).reshape(2, 2, 3) % 4, torch.tensor([[0, 1, 2, 3], [3, 3, 3, 3]]))
    call = parse_call((x, y), 0, (scale,))
    bases = (torch.zeros_like(x), torch.zeros_like(y))
    masks = feature_masks(call.inputs, per_example)
    got = ablate(model, call, bases, masks, 3)
    expected = _reference_ablation(model, (x, y), bases, masks, [0, 0], (scale,))
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("per_eval", [None, 1, 4])
def test_occlusion_matches_reference(per_eval):
    x = torch.randn(2, 1, 5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))

    def f(t):
        return (t.flatten(1) * torch.linspace(-1, 1, 20, dtype=t.dtype)).tanh().sum(1, keepdim=True)

    window, stride = (1, 2, 3), (1, 2, 2)
    (got,) = occlude(f, parse_call(x, 0), (torch.zeros_like(x),), (window,), (stride,), per_eval)
    # reference: every window position, those reaching past the end cropped, each element
    # averaged over the windows covering it
    total, cover = torch.zeros_like(x), torch.zeros_like(x)
    full = f(x)[:, 0]
    for r in (0, 2, 4):  # ceil((5 - 2) / 2) + 1 positions; the last covers one row
        for c in (0, 2):  # ceil((4 - 3) / 2) + 1 positions; the last covers two columns
            hit = torch.zeros_like(x, dtype=torch.bool)
            hit[:, :, r : r + 2, c : c + 3] = True
            drop = full - f(torch.where(hit, 0.0, x))[:, 0]
            total += hit * drop.view(-1, 1, 1, 1)
            cover += hit
    torch.testing.assert_close(got, total / cover, rtol=1e-12, atol=1e-12)


def test_evaluation_loop_yields_every_perturbation_once_in_order():
    x = torch.arange(6.0).reshape(3, 2)
    call = parse_call(x, None, (torch.tensor([1.0, 2.0, 3.0]),))
    seen = []

    def make(start, stop):
        copies = x.unsqueeze(0).expand(stop - start, 3, 2) * torch.arange(start, stop).view(-1, 1, 1)
        return (copies.reshape(-1, 2),), (start, stop)

    def forward(t, w):
        return t.sum(1) * w

    initial = initial_output(forward, call)
    for start, stop, rows, payload in evaluate_perturbations(forward, call, 7, make, initial, 3):
        assert payload == (start, stop) and stop - start <= 3
        seen.extend(range(start, stop))
        for k in range(stop - start):
            torch.testing.assert_close(rows[k], initial * (start + k))
    assert seen == list(range(7))


def test_one_value_per_batch_runs_one_copy_per_call():
    x = torch.rand(4, 3)
    call = parse_call(x)
    calls = []

    def total(t):
        calls.append(t.shape[0])
        return t.sum()

    initial = initial_output(total, call)
    rows = [r for _, _, r, _ in evaluate_perturbations(total, call, 5, lambda a, b: ((x.repeat(b - a, 1),), None), initial)]
    assert len(rows) == 5 and set(calls) == {4}
    with pytest.raises(ValueError, match="`perturbations_per_eval` must be 1"):
        list(evaluate_perturbations(total, call, 5, lambda a, b: ((x.repeat(b - a, 1),), None), initial, 2))


def test_replace_elements_equals_blend_with_the_same_mask():
    g = torch.Generator().manual_seed(0)
    base, values = torch.randn(3, 4, 2, generator=g), torch.randn(3, 4, 2, generator=g)
    index = torch.randint(0, 5, (1, 4, 2), generator=g)
    elements = FeatureElements(index)
    p, e, rows = elements.chunk(1, 4)  # features 1, 2 and 3
    replaced = replace_elements(base, 3, p, e, rows, values)
    chosen = torch.zeros(3, 5, dtype=torch.bool)
    chosen[torch.arange(3), torch.arange(1, 4)] = True
    blended = blend(select_elements(chosen, index), values, base)
    torch.testing.assert_close(replaced, blended, rtol=0, atol=0)


def test_masks_order_positions_and_spread():
    x = torch.zeros(2, 3)
    masks = feature_masks((x, x), (torch.tensor([5, 5, 2]), torch.tensor([[7, 2, 2]])))
    assert [tuple(m.shape) for m in masks] == [(1, 3), (1, 3)]
    order = feature_order(masks)
    assert order.tolist() == [2, 5, 7]  # input 0's ids ascending, then new ids of input 1
    index = positions(masks, order)
    assert index[0].tolist() == [[1, 1, 0]] and index[1].tolist() == [[2, 0, 0]]
    values = torch.tensor([[10.0], [20.0], [30.0]])  # one value per feature
    assert spread(values, index[1], (1,)).tolist() == [[30.0, 10.0, 10.0]]
    default = feature_masks((x, torch.zeros(2, 2)), None)
    assert default[0].tolist() == [[0, 1, 2]] and default[1].tolist() == [[3, 4]]
    with pytest.raises(ValueError, match="`feature_mask`"):
        feature_masks((x,), torch.tensor([[0, 1, 2]] * 3))  # 3 rows for a batch of 2
