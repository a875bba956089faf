"""SobolAttribution: the design, Jansen's estimator on analytic functions, known-answer images."""

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attribuo._engine.call import parse_call
from attribuo._engine.errors import ArgumentTypeError, ArgumentValueError
from attribuo.attr.perturbation.sobol import (
    SobolAttribution,
    jansen_total_indices,
    sobol_design,
    sobol_indices,
)


def test_design_is_scipys_sobol_sequence_with_replicated_columns():
    qmc = pytest.importorskip("scipy.stats.qmc")
    d, n = 5, 16
    design = sobol_design(d, n)
    points = qmc.Sobol(2 * d, scramble=False).random(n)
    a, b = points[:, :d], points[:, d:]
    np.testing.assert_array_equal(design[:n].numpy(), a)
    np.testing.assert_array_equal(design[n:2 * n].numpy(), b)
    for i in range(d):  # C_i: A with column i from B
        c = a.copy()
        c[:, i] = b[:, i]
        np.testing.assert_array_equal(design[(2 + i) * n:(3 + i) * n].numpy(), c)
    scrambled = sobol_design(d, n, seed=3)
    assert torch.equal(scrambled, sobol_design(d, n, seed=3)) and not torch.equal(scrambled, design)


def _jansen_loop(values, nb_design):
    """Jansen (1999) from its formula, one variable and one point at a time."""
    d = len(values) // nb_design - 2
    f_a = values[:nb_design]
    mean = sum(f_a) / nb_design
    var = sum((v - mean) ** 2 for v in f_a) / (nb_design - 1)
    out = []
    for i in range(d):
        f_c = values[(2 + i) * nb_design:(3 + i) * nb_design]
        out.append(sum((f_a[j] - f_c[j]) ** 2 for j in range(nb_design)) / (2 * nb_design * var))
    return out


def test_estimator_matches_a_slow_loop():
    design = sobol_design(4, 32)
    y = torch.sin(3 * design[:, 0]) * design[:, 1] + design[:, 2] ** 2 + 0.1 * design[:, 3]
    got = jansen_total_indices(torch.stack([y, 2 * y + 1]), 32)
    ref = _jansen_loop(y.tolist(), 32)
    np.testing.assert_allclose(got[0].numpy(), ref, rtol=1e-12)
    np.testing.assert_allclose(got[1].numpy(), ref, rtol=1e-12)  # invariant to affine maps of f


def test_estimator_on_ishigami_known_total_indices():
    a, b, n = 7.0, 0.1, 4096
    var = a * a / 8 + b * math.pi**4 / 5 + b * b * math.pi**8 / 18 + 0.5
    v1, v2 = 0.5 * (1 + b * math.pi**4 / 5) ** 2, a * a / 8
    v13 = b * b * math.pi**8 * (1 / 18 - 1 / 50)
    expected = [(v1 + v13) / var, v2 / var, v13 / var]  # 0.558, 0.442, 0.244
    x = -math.pi + 2 * math.pi * sobol_design(3, n)
    y = torch.sin(x[:, 0]) + a * torch.sin(x[:, 1]) ** 2 + b * x[:, 2] ** 4 * torch.sin(x[:, 0])
    np.testing.assert_allclose(jansen_total_indices(y, n).numpy(), expected, atol=3e-3)


def test_estimator_on_additive_model_index_is_variance_share():
    w = torch.tensor([1.0, 2.0, 0.0, 3.0], dtype=torch.float64)
    n = 2048
    y = sobol_design(4, n) @ w
    np.testing.assert_allclose(jansen_total_indices(y, n).numpy(), (w**2 / (w**2).sum()).numpy(), atol=2e-3)


# ------------------------------------------------------------------ images
def _cell_model(weights, grid):
    """Output = sum over cells of weight * mean of the cell's pixels: additive in the mask values."""

    def f(x):
        cells = F.adaptive_avg_pool2d(x.sum(1, keepdim=True), grid)[:, 0]  # [N, g, g]
        return (cells * weights).sum((1, 2))

    return f


def test_known_answer_image_model_grid_indices():
    grid, n = 4, 32
    torch.manual_seed(0)
    weights = torch.zeros(grid, grid, dtype=torch.float64)
    weights[1, 2], weights[3, 0], weights[0, 0] = 4.0, -1.0, 0.25
    x = torch.rand(2, 3, 16, 16, dtype=torch.float64) + 0.5
    st = sobol_indices(_cell_model(weights, grid), parse_call(x), grid, n)
    assert st.shape == (2, grid, grid)
    assert bool((st[:, weights == 0] == 0).all())  # cells the model ignores: exactly 0
    # additive in the mask: f(A) - f(C_i) = w_i xbar_i (A_i - B_i), so ST_i is w_i^2 xbar_i^2 times a
    # factor fixed by the design alone
    design = sobol_design(grid * grid, n)
    spread = (design[:n] - design[n:2 * n]).square().sum(0).reshape(grid, grid)
    xbar = F.adaptive_avg_pool2d(x.sum(1, keepdim=True), grid)[:, 0]
    used = weights != 0
    ratio = st[:, used] / ((weights * xbar) ** 2 * spread)[:, used]
    torch.testing.assert_close(ratio, ratio[:, :1].expand_as(ratio), rtol=1e-10, atol=0)
    assert bool((st[:, 1, 2] > st[:, 3, 0]).all()) and bool((st[:, 3, 0] > st[:, 0, 0]).all())


def test_attribution_is_the_bicubic_upsampled_grid_on_every_channel():
    grid = 4
    weights = torch.zeros(grid, grid, dtype=torch.float64)
    weights[2, 1] = 1.0
    f = _cell_model(weights, grid)
    x = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    attr = SobolAttribution(f).attribute(x, grid_size=grid, nb_design=16)
    assert attr.shape == x.shape and attr.dtype == x.dtype
    st = sobol_indices(f, parse_call(x), grid, 16)
    up = F.interpolate(st.unsqueeze(1), size=(16, 16), mode="bicubic", align_corners=False)
    torch.testing.assert_close(attr, up.expand(-1, 3, -1, -1))
    assert attr[0, 0].argmax() // 16 in range(8, 12) and attr[0, 0].argmax() % 16 in range(4, 8)


def _cnn():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 3)
    ).double().eval()


@pytest.mark.parametrize("perturbation", ["inpainting", "blurring", "amplitude"])
def test_chunk_and_batch_invariance(perturbation):
    model, x = _cnn(), torch.rand(3, 3, 16, 16, dtype=torch.float64)
    explainer = SobolAttribution(model)
    kw = {"grid_size": 4, "nb_design": 8, "perturbation": perturbation, "target": [0, 1, 2]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 8 plain Sobol points repeat in a few variables
        ref = explainer.attribute(x, **kw)
        for size in (1, 7, 1000):
            torch.testing.assert_close(explainer.attribute(x, batch_size=size, **kw), ref, atol=1e-12, rtol=0)
        for n in range(3):
            one = explainer.attribute(x[n:n + 1], **{**kw, "target": n})
            torch.testing.assert_close(one, ref[n:n + 1], atol=1e-12, rtol=0)
    assert bool((ref >= -0.5).all()) and ref.abs().sum() > 0


def test_perturbations_follow_their_formulas():
    seen = []

    def f(t):
        seen.append(t.clone())
        return t.sum((1, 2, 3))

    x = torch.rand(1, 1, 12, 12, dtype=torch.float64)
    SobolAttribution(f).attribute(x, grid_size=2, nb_design=16, baselines=0.25, batch_size=10**4)
    masks = F.interpolate(sobol_design(4, 16).reshape(-1, 1, 2, 2), size=(12, 12), mode="nearest")
    torch.testing.assert_close(seen[-1], x * masks + 0.25 * (1 - masks))
    SobolAttribution(f).attribute(x, grid_size=2, nb_design=16, perturbation="amplitude", batch_size=10**4)
    torch.testing.assert_close(seen[-1], x * (masks - 0.5))
    SobolAttribution(f).attribute(x, grid_size=2, nb_design=16, perturbation="blurring", batch_size=10**4)
    blurred = torch.empty_like(x)
    padded = np.pad(x[0, 0].numpy(), ((5, 4), (5, 4)), mode="reflect")  # cv2.blur's anchor and border
    for i in range(12):
        for j in range(12):
            blurred[0, 0, i, j] = float(padded[i:i + 10, j:j + 10].mean())
    torch.testing.assert_close(seen[-1], x * masks + blurred * (1 - masks))


def test_no_leftover_state():
    model = _cnn().train()
    x = torch.rand(1, 3, 8, 8, dtype=torch.float64)
    before = x.clone()
    SobolAttribution(model).attribute(x, target=0, grid_size=2, nb_design=16)
    assert model.training and torch.equal(x, before)
    assert all(p.requires_grad for p in model.parameters()) and not model._forward_hooks


@pytest.mark.parametrize(
    "kwargs, error, words",
    [
        ({"grid_size": 0}, ArgumentValueError, "grid_size"),
        ({"grid_size": 9}, ArgumentValueError, "grid_size"),
        ({"nb_design": 1}, ArgumentValueError, "nb_design"),
        ({"perturbation": "noise"}, ArgumentValueError, "perturbation"),
        ({"perturbation": 3}, ArgumentTypeError, "perturbation"),
        ({"batch_size": 0}, ArgumentValueError, "batch_size"),
        ({"seed": "a"}, ArgumentTypeError, "seed"),
        ({"baselines": torch.zeros(5)}, ArgumentValueError, "baselines"),
    ],
)
def test_bad_arguments(kwargs, error, words):
    with pytest.raises(error, match=words):
        SobolAttribution(lambda t: t.sum((1, 2, 3))).attribute(torch.rand(2, 1, 8, 8), **{"grid_size": 2, **kwargs})


def test_bad_inputs_and_outputs():
    with pytest.raises(ArgumentValueError, match="inputs"):
        SobolAttribution(lambda t: t.sum(1)).attribute(torch.rand(2, 8))
    with pytest.raises(ArgumentValueError, match="target"):
        SobolAttribution(lambda t: t.flatten(1)[:, :3]).attribute(torch.rand(2, 1, 8, 8), grid_size=2)
