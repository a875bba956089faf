"""XRAI against the paper's greedy region selection written out slowly, and its properties."""

import math
import sys

import pytest
import torch
from torch import nn

from attribuo._engine.errors import ArgumentTypeError, ArgumentValueError
from attribuo.attr.gradient.integrated_gradients import IntegratedGradients
from attribuo.attr.gradient.xrai import XRAI, image_regions, label_regions, rank_regions


def _cnn():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(4 * 8 * 8, 3)
    ).double().eval()


def slow_xrai(attr, levels, area_threshold=1.0):
    """The paper's loop with Python sets: add the region of highest mean attribution over its
    not yet selected pixels (first on ties) until the area is reached; pixels get the gain of
    the region that added them, leftover pixels the lowest gain."""
    values = attr.reshape(-1).tolist()
    regions = []
    for labels in levels:
        flat = labels.reshape(-1).tolist()
        for r in sorted(set(flat)):
            regions.append({p for p, v in enumerate(flat) if v == r})
    selected, out, remaining = set(), {}, list(range(len(regions)))
    while len(selected) < area_threshold * len(values):
        best, best_gain = None, -math.inf
        for r in remaining:
            new = regions[r] - selected
            if new:
                gain = sum(values[p] for p in new) / len(new)
                if gain > best_gain:
                    best, best_gain = r, gain
        if best is None:
            break
        for p in regions[best] - selected:
            out[p] = best_gain
        selected |= regions[best]
        remaining.remove(best)
    low = min(out.values())
    return torch.tensor([out.get(p, low) for p in range(len(values))], dtype=torch.float64)


def _levels(n, h, w, seed):
    """Random label maps of different granularity; one level also has scattered (non-contiguous) regions."""
    g = torch.Generator().manual_seed(seed)
    blocks = [(torch.arange(h)[:, None] // c) * 100 + torch.arange(w)[None, :] // c for c in (2, 3, 5)]
    levels = [b.expand(n, h, w) for b in blocks]
    levels.append(torch.randint(0, 6, (n, h, w), generator=g))
    return levels


@pytest.mark.parametrize("area_threshold", [1.0, 0.6])
def test_greedy_equals_the_slow_reference_on_given_segments(area_threshold):
    torch.manual_seed(1)
    x = torch.rand(2, 3, 10, 9, dtype=torch.float64)
    attributions = torch.randn(2, 3, 10, 9, dtype=torch.float64)
    levels = _levels(2, 10, 9, seed=2)
    ours = XRAI(_cnn()).attribute(x, attributions=attributions, segments=levels, area_threshold=area_threshold)
    assert ours.shape == x.shape
    for n in range(2):
        expected = slow_xrai(attributions[n].sum(0), [lv[n] for lv in levels], area_threshold)
        torch.testing.assert_close(ours[n, 0].reshape(-1), expected, rtol=1e-12, atol=1e-12)
        assert torch.equal(ours[n, 0], ours[n, 2])  # the same map on every channel


def test_rank_regions_on_overlapping_dilated_regions():
    torch.manual_seed(3)
    labels = torch.randint(0, 5, (12, 12))
    regions = torch.cat([label_regions(labels, dilation=2), label_regions(labels.T.contiguous(), dilation=1)])
    a = torch.randn(144, dtype=torch.float64)
    # the slow reference over the same (overlapping) regions
    values, sets = a.tolist(), [set(torch.nonzero(r).reshape(-1).tolist()) for r in regions]
    selected, out = set(), {}
    while len(selected) < 144:
        gains = [(sum(values[p] for p in s - selected) / len(s - selected), -i) for i, s in enumerate(sets) if s - selected]
        gain, i = max(gains)
        for p in sets[-i] - selected:
            out[p] = gain
        selected |= sets[-i]
    expected = torch.tensor([out[p] for p in range(144)], dtype=torch.float64)
    torch.testing.assert_close(rank_regions(a, regions), expected, rtol=1e-12, atol=1e-12)


def test_dilation_is_a_euclidean_disk():
    labels = torch.zeros(9, 9, dtype=torch.long)
    labels[4, 4] = 1
    grown = label_regions(labels, dilation=2)[1].reshape(9, 9)
    yy, xx = torch.meshgrid(torch.arange(9), torch.arange(9), indexing="ij")
    assert torch.equal(grown, (yy - 4) ** 2 + (xx - 4) ** 2 <= 4)


def test_attributions_are_integrated_gradients_from_black_and_white_averaged():
    model = _cnn()
    torch.manual_seed(4)
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    levels = _levels(2, 8, 8, seed=5)
    ours = XRAI(model).attribute(x, target=1, segments=levels, n_steps=16)
    ig = IntegratedGradients(model)
    black = x.amin((1, 2, 3), keepdim=True).expand_as(x)
    white = x.amax((1, 2, 3), keepdim=True).expand_as(x)
    averaged = (ig.attribute(x, black, target=1, n_steps=16) + ig.attribute(x, white, target=1, n_steps=16)) / 2
    torch.testing.assert_close(ours, XRAI(model).attribute(x, attributions=averaged, segments=levels))
    # one given baseline, or a list of them
    zero = XRAI(model).attribute(x, target=1, segments=levels, n_steps=16, baselines=0.0)
    torch.testing.assert_close(zero, XRAI(model).attribute(
        x, attributions=ig.attribute(x, 0.0, target=1, n_steps=16), segments=levels))
    torch.testing.assert_close(
        XRAI(model).attribute(x, target=1, segments=levels, n_steps=16, baselines=[black, white]), ours)


def _square_model(region):
    def model(x):  # the brightness of one square of the image
        return x[:, :, region[0], region[1]].sum((1, 2, 3)).unsqueeze(1)
    return model


def test_known_answer_the_relevant_region_ranks_first():
    region = (slice(4, 8), slice(8, 12))
    torch.manual_seed(6)
    x = torch.rand(1, 3, 16, 16, dtype=torch.float64) * 0.5
    x[:, :, region[0], region[1]] = 1.0
    cells = (torch.arange(16)[:, None] // 4) * 4 + torch.arange(16)[None, :] // 4  # the square is cell 6
    shifted = ((torch.arange(16)[:, None] + 2) // 4) * 4 + (torch.arange(16)[None, :] + 2) // 4
    ranked = XRAI(_square_model(region)).attribute(x, target=0, segments=[shifted, cells], n_steps=8)[0, 0]
    top = ranked == ranked.max()
    inside = torch.zeros(16, 16, dtype=torch.bool)
    inside[region] = True
    assert torch.equal(top, inside)


def test_known_answer_with_the_papers_segmentation():
    pytest.importorskip("skimage")
    region = (slice(8, 20), slice(14, 26))
    torch.manual_seed(7)
    x = torch.rand(1, 3, 32, 32, dtype=torch.float64) * 0.3
    x[:, :, region[0], region[1]] = 0.9
    ranked = XRAI(_square_model(region)).attribute(x, target=0, n_steps=8)[0, 0]
    inside = torch.zeros(32, 32, dtype=torch.bool)
    inside[region] = True
    top = ranked >= ranked.flatten().kthvalue(32 * 32 - 144 + 1).values  # the best-ranked 144 pixels
    assert (top & inside).sum() >= 0.8 * 144
    assert inside.reshape(-1)[ranked.argmax()]


def test_without_scikit_image_a_superpixel_grid(monkeypatch):
    monkeypatch.setitem(sys.modules, "skimage.segmentation", None)  # import fails
    regions = image_regions(torch.rand(3, 224, 224))
    assert regions.shape == (4 ** 2 + 7 ** 2 + 14 ** 2 + 28 ** 2, 224 * 224)
    assert bool(regions.any(0).all()) and int(regions.sum()) == 4 * 224 * 224  # 4 levels, each a partition
    small = XRAI(_cnn()).attribute(torch.rand(1, 3, 8, 8, dtype=torch.float64), target=0, n_steps=4)
    assert torch.isfinite(small).all()


def test_examples_do_not_depend_on_the_batch():
    model = _cnn()
    torch.manual_seed(8)
    x = torch.rand(3, 3, 8, 8, dtype=torch.float64)
    target = torch.tensor([2, 0, 1])
    levels = _levels(3, 8, 8, seed=9)
    batch = XRAI(model).attribute(x, target=target, segments=levels, n_steps=10, internal_batch_size=7)
    for n in range(3):
        alone = XRAI(model).attribute(x[n:n + 1], target=int(target[n]), segments=[lv[n] for lv in levels], n_steps=10)
        torch.testing.assert_close(batch[n:n + 1], alone)


def test_no_leftover_state():
    model = _cnn().float()
    model.train()
    model[0].weight.requires_grad_(False)
    x = torch.rand(2, 3, 8, 8)
    before = x.clone()
    xrai = XRAI(model)
    xrai.attribute(x, target=1, n_steps=4, segments=torch.zeros(8, 8, dtype=torch.long))
    with pytest.raises(ValueError):
        xrai.attribute(x, target=9, n_steps=4)
    assert all(m.training for m in model.modules())
    assert [p.requires_grad for p in model.parameters()] == [False, True, True, True]
    assert all(p.grad is None for p in model.parameters())
    assert all(not m._forward_hooks and not m._backward_hooks for m in model.modules())
    assert torch.equal(x, before) and not x.requires_grad


@pytest.mark.parametrize(
    "kwargs, error, name",
    [
        ({"area_threshold": 0}, ArgumentValueError, "area_threshold"),
        ({"area_threshold": 1.5}, ArgumentValueError, "area_threshold"),
        ({"dilation": -1}, ArgumentValueError, "dilation"),
        ({"scales": ()}, ArgumentValueError, "scales"),
        ({"segments": torch.zeros(5, 5, dtype=torch.long)}, ArgumentValueError, "segments"),
        ({"segments": torch.zeros(8, 8)}, ArgumentTypeError, "segments"),
        ({"segments": [torch.zeros(8, 8, dtype=torch.long), "x"]}, ArgumentTypeError, r"segments\[1\]"),
        ({"attributions": torch.zeros(1, 2, 8, 8)}, ArgumentValueError, "attributions"),
        ({"baselines": []}, ArgumentValueError, "baselines"),
        ({"baselines": [0.0, torch.zeros(5)]}, ArgumentValueError, r"baselines\[1\]"),
        ({"n_steps": 0}, ArgumentValueError, "n_steps"),
    ],
)
def test_bad_arguments(kwargs, error, name):
    x = torch.rand(1, 3, 8, 8, dtype=torch.float64)
    with pytest.raises(error, match=name):
        XRAI(_cnn()).attribute(x, target=0, **kwargs)


def test_bad_inputs():
    with pytest.raises(ArgumentValueError, match="inputs"):
        XRAI(lambda x: x.sum(1)).attribute(torch.rand(2, 5))
    with pytest.raises(ArgumentValueError, match="inputs"):
        XRAI(lambda a, b: a.sum((1, 2, 3))).attribute((torch.rand(1, 3, 4, 4), torch.rand(1, 3, 4, 4)))
