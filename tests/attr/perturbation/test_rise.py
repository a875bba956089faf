"""RISE against the paper's definition written out slowly, and its properties."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attribuo._engine.errors import ArgumentTypeError, ArgumentValueError
from attribuo._engine.incremental import _ENABLED
from attribuo.attr.perturbation.rise import DRAW_BLOCK, RISE, rise_masks


def _cnn(dtype=torch.float64):
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(4 * 5 * 5, 3)
    ).to(dtype).eval()


def paper_masks(n, h, w, s, p, seed):
    """The paper's masks: an s x s grid kept with probability p, bilinearly upsampled to
    (s + 1) * ceil(H / s) pixels a side, cropped at a random offset below one cell; drawn
    as RISE documents (per block of DRAW_BLOCK masks: grids, row shifts, column shifts)."""
    g = torch.Generator().manual_seed(seed)
    ch, cw = math.ceil(h / s), math.ceil(w / s)
    out = []
    while len(out) < n:
        k = min(DRAW_BLOCK, n - len(out))
        grids = (torch.rand(k, s, s, generator=g) < p).double()
        dy = torch.randint(ch, (k,), generator=g)
        dx = torch.randint(cw, (k,), generator=g)
        up = F.interpolate(grids[:, None], size=((s + 1) * ch, (s + 1) * cw), mode="bilinear", align_corners=False)
        for i in range(k):
            out.append(up[i, 0, dy[i]:dy[i] + h, dx[i]:dx[i] + w])
    return torch.stack(out)


def slow_rise(f, x, target, masks, p, baseline):
    """(1 / (N p)) sum_i f(x * M_i + b * (1 - M_i))[target] M_i, one mask and one example at a time."""
    sal = torch.zeros((x.shape[0],) + tuple(masks.shape[1:]), dtype=torch.float64)
    b = torch.as_tensor(baseline, dtype=x.dtype).expand_as(x)
    with torch.no_grad():
        for m in masks:
            for n in range(x.shape[0]):
                masked = x[n:n + 1] * m + b[n:n + 1] * (1 - m)
                sal[n] += f(masked)[0, target[n]] * m
    return sal / (len(masks) * p)


def test_masks_are_the_papers_construction():
    # more masks than one draw block, a size the grid does not divide
    ours = rise_masks(DRAW_BLOCK + 76, (13, 10), grid_size=3, p_keep=0.4, seed=3, dtype=torch.float64)
    torch.testing.assert_close(ours, paper_masks(DRAW_BLOCK + 76, 13, 10, 3, 0.4, 3), rtol=0, atol=1e-12)


@pytest.mark.parametrize("baseline", [0.0, 0.3, "tensor"])
def test_estimator_equals_the_slow_loop_over_the_same_masks(baseline):
    model = _cnn()
    torch.manual_seed(1)
    x = torch.rand(2, 3, 10, 10, dtype=torch.float64)
    if baseline == "tensor":
        baseline = torch.rand(3, 10, 10, dtype=torch.float64)  # one example's shape
    target = [0, 2]
    ours = RISE(model).attribute(x, target=target, n_masks=60, grid_size=3, p_keep=0.5, baselines=baseline, seed=1)
    masks = rise_masks(60, (10, 10), grid_size=3, p_keep=0.5, seed=1, dtype=torch.float64)
    expected = slow_rise(model, x, target, masks, 0.5, baseline)
    assert ours.shape == x.shape
    torch.testing.assert_close(ours, expected.unsqueeze(1).expand_as(x), rtol=1e-10, atol=1e-12)


def test_chunk_size_does_not_change_the_result(monkeypatch):
    model = _cnn()
    torch.manual_seed(2)
    x = torch.rand(2, 3, 10, 10, dtype=torch.float64)
    kwargs = dict(target=1, n_masks=DRAW_BLOCK + 30, grid_size=4, seed=5)
    reference = RISE(model).attribute(x, **kwargs)
    for per_eval in (1, 7, 200):
        torch.testing.assert_close(RISE(model).attribute(x, masks_per_eval=per_eval, **kwargs), reference)
    # a tiny memory budget: mask blocks (and chunks) of one mask each
    monkeypatch.setenv("ATTRIBUO_MEMORY_BUDGET_MB", "0.001")
    monkeypatch.setattr("attribuo.attr.perturbation.rise._CPU_MASK_BYTES", 1)
    torch.testing.assert_close(RISE(model).attribute(x, **kwargs), reference)


def test_known_answer_the_watched_region_is_salient():
    region = (slice(2, 6), slice(9, 14))

    def model(x):  # the mean of a fixed region of channel 0
        return x[:, 0, region[0], region[1]].mean((1, 2))

    x = torch.ones(1, 3, 16, 16)
    sal = RISE(model).attribute(x, n_masks=1500, grid_size=4, seed=0)[0, 0]
    inside = torch.zeros(16, 16, dtype=torch.bool)
    inside[region] = True
    assert sal[inside].mean() > sal[~inside].mean() + 0.1
    assert inside.reshape(-1)[sal.argmax()]  # the most salient pixel is in the region
    # the expected score given a pixel is kept: about 0.5 far from the region (independent
    # cells), higher inside it
    assert abs(float(sal[12:, :4].mean()) - 0.5) < 0.05


def test_examples_do_not_depend_on_the_batch():
    model = _cnn()
    torch.manual_seed(3)
    x = torch.rand(3, 3, 10, 10, dtype=torch.float64)
    target = torch.tensor([2, 0, 1])
    batch = RISE(model).attribute(x, target=target, n_masks=80, grid_size=3, seed=9)
    for n in range(3):
        alone = RISE(model).attribute(x[n:n + 1], target=int(target[n]), n_masks=80, grid_size=3, seed=9)
        torch.testing.assert_close(batch[n:n + 1], alone)


def test_seed_forms():
    model = _cnn()
    x = torch.rand(1, 3, 10, 10, dtype=torch.float64)
    rise = RISE(model)
    a = rise.attribute(x, target=0, n_masks=40, seed=4)
    torch.testing.assert_close(rise.attribute(x, target=0, n_masks=40, seed=4), a)
    torch.testing.assert_close(rise.attribute(x, target=0, n_masks=40, seed=torch.Generator().manual_seed(4)), a)
    assert not torch.allclose(rise.attribute(x, target=0, n_masks=40, seed=5), a)
    torch.manual_seed(11)
    b = rise.attribute(x, target=0, n_masks=40)  # torch's global generator
    torch.manual_seed(11)
    torch.testing.assert_close(rise.attribute(x, target=0, n_masks=40), b)


def test_tuple_inputs_sequences_and_batched_forward_args():
    def model(img, seq, scale):  # an image and a sequence; a per-example scale
        return scale * (img[:, 0, :3, :3].mean((1, 2)) + 0.0 * seq.sum((1, 2)))

    torch.manual_seed(4)
    img, seq = torch.rand(2, 3, 12, 12) + 0.5, torch.rand(2, 2, 20)
    scale = torch.tensor([1.0, 3.0])
    rise = RISE(model)
    out = rise.attribute((img, seq), additional_forward_args=(scale,), n_masks=300, grid_size=4, seed=0)
    assert isinstance(out, tuple) and out[0].shape == img.shape and out[1].shape == seq.shape
    # the scale is expanded with the masked copies: example 1's maps are 3x example 0's
    ones = rise.attribute((img, seq), additional_forward_args=(torch.ones(2),), n_masks=300, grid_size=4, seed=0)
    torch.testing.assert_close(out[0][1], 3 * ones[0][1])
    torch.testing.assert_close(out[1][0], ones[1][0])
    assert out[0][0, 0, :3, :3].mean() > out[0][0, 0, 8:, 8:].mean()
    # a sequence alone: a 1-D mask per copy, constant over channels
    seq_sal = RISE(lambda s: s[:, 0, :5].sum(1)).attribute(seq, n_masks=400, grid_size=5, seed=1)
    assert seq_sal.shape == seq.shape and torch.equal(seq_sal[:, 0], seq_sal[:, 1])
    assert seq_sal[0, 0, :5].mean() > seq_sal[0, 0, 12:].mean()


def test_no_leftover_state():
    model = _cnn(torch.float32)
    model.train()
    model[0].weight.requires_grad_(False)
    x = torch.rand(2, 3, 10, 10, requires_grad=True)
    before = x.detach().clone()
    RISE(model).attribute(x, target=1, n_masks=20, seed=0)
    with pytest.raises(ValueError):
        RISE(model).attribute(x, target=7, n_masks=20, seed=0)
    assert model.training and all(m.training for m in model.modules())
    assert [p.requires_grad for p in model.parameters()] == [False, True, True, True]
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert torch.equal(x.detach(), before) and x.requires_grad and x.grad is None
    assert _ENABLED.get()  # incremental evaluation switched back on


@pytest.mark.parametrize(
    "kwargs, error, name",
    [
        ({"n_masks": 0}, ArgumentValueError, "n_masks"),
        ({"p_keep": 1.5}, ArgumentValueError, "p_keep"),
        ({"p_keep": 0}, ArgumentValueError, "p_keep"),
        ({"grid_size": 0}, ArgumentValueError, "grid_size"),
        ({"grid_size": (2, 3, 4)}, ArgumentValueError, "grid_size"),
        ({"masks_per_eval": 0}, ArgumentValueError, "masks_per_eval"),
        ({"seed": "a"}, ArgumentTypeError, "seed"),
        ({"baselines": "zero"}, ArgumentTypeError, "baselines"),
        ({"target": None}, ArgumentValueError, "target"),  # 3 outputs per example: pick one
    ],
)
def test_bad_arguments(kwargs, error, name):
    x = torch.rand(1, 3, 10, 10, dtype=torch.float64)
    call = {"target": 0, "n_masks": 4, **kwargs}
    with pytest.raises(error, match=name):
        RISE(_cnn()).attribute(x, **call)


def test_bad_inputs():
    with pytest.raises(ArgumentValueError, match="inputs"):
        RISE(lambda x: x.sum(1)).attribute(torch.rand(2, 5), n_masks=4)
    with pytest.raises(ArgumentTypeError, match="inputs"):
        RISE(lambda x: x.sum((1, 2, 3))).attribute(torch.ones(1, 1, 4, 4, dtype=torch.long), n_masks=4)
    with pytest.raises(ArgumentValueError, match="grid_size"):
        RISE(lambda x: x.sum((1, 2))).attribute(torch.rand(1, 2, 8), grid_size=(2, 2), n_masks=4)
