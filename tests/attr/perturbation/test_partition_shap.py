"""PartitionShap: Owen values against their definition, shap's PartitionExplainer, properties."""

import itertools
import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from attribuo._engine.call import parse_call
from attribuo._engine.errors import ArgumentTypeError, ArgumentValueError
from attribuo._engine.perturb import feature_masks, perturbation_baselines
from attribuo.attr.perturbation.partition_shap import (
    PartitionShap,
    balanced_tree,
    feature_hierarchy,
    owen_values,
)


def _mlp(features, outputs=1, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(features, 12), nn.Tanh(), nn.Linear(12, outputs)).double().eval()


def _interacting(x):
    """Pairwise products and a square: interactions across every level of the trees below."""
    return x[:, 0] * x[:, 3] + x[:, 1] * x[:, 2] * x[:, -1] + torch.sin(x[:, 2] + x[:, -3]) + x[:, -2] ** 2


def _linkage(features, seed=0):
    from scipy.cluster.hierarchy import linkage

    data = np.random.RandomState(seed).randn(40, features)
    return linkage(data.T, "average", metric="correlation")


def _nested_from_linkage(z):
    """The linkage as nested lists (test-side conversion for the reference)."""
    count = z.shape[0] + 1

    def build(node):
        if node < count:
            return node
        a, b = (int(v) for v in z[node - count, :2])
        return [build(a), build(b)]

    return build(2 * count - 2)


# ------------------------------------------------------------- the slow reference
def _leaves(tree):
    return [tree] if isinstance(tree, int) else [i for part in tree for i in _leaves(part)]


def owen_reference(value, tree):
    """Owen values from the definition (Owen 1977, nested partitions).

    For feature ``i`` with ancestors ``A_0 > A_1 > ... > {i}``: at every level
    pick a subset ``R_k`` of the ``m_k - 1`` siblings of the part holding
    ``i`` with weight ``|R_k|! (m_k - |R_k| - 1)! / m_k!``; average ``v(R + i)
    - v(R)`` over all choices, ``R`` the union of the chosen siblings.
    """
    phi = {}

    def walk(node, levels):
        if isinstance(node, int):
            phi[node] = _owen_one(value, node, levels)
            return
        parts = [frozenset(_leaves(p)) for p in node]
        for k, part in enumerate(node):
            walk(part, levels + [[s for j, s in enumerate(parts) if j != k]])

    walk(tree, [])
    return phi


def _owen_one(value, i, levels):
    per_level = []
    for siblings in levels:
        m = len(siblings) + 1
        options = []
        for r in range(len(siblings) + 1):
            w = math.factorial(r) * math.factorial(m - r - 1) / math.factorial(m)
            for chosen in itertools.combinations(siblings, r):
                options.append((frozenset().union(*chosen), w))
        per_level.append(options)
    total = 0.0
    for combo in itertools.product(*per_level):
        s = frozenset().union(*(c for c, _ in combo))
        w = math.prod(w for _, w in combo)
        total += w * (value(s | {i}) - value(s))
    return total


def _reference_attr(f, x, base, tree):
    out = torch.zeros_like(x)
    for n in range(x.shape[0]):
        def value(s, n=n):
            keep = torch.zeros(x.shape[1], dtype=torch.bool)
            keep[list(s)] = True
            return float(f(torch.where(keep, x[n], base[n])[None])[0])

        for i, v in owen_reference(value, tree).items():
            out[n, i] = v
    return out


@pytest.mark.parametrize(
    "features, hierarchy",
    [
        (6, None),  # balanced binary tree over the features in order
        (8, "linkage"),
        (6, [[0, 1, 2], [3, [4, 5]]]),  # non-binary
        (5, [4, [0, 2], [1, 3]]),  # a feature next to groups
        (4, [0, 1, 2, 3]),  # one level: the Shapley values
    ],
)
def test_exact_owen_values_match_the_definition(features, hierarchy):
    torch.manual_seed(1)
    x = torch.randn(2, features, dtype=torch.float64)
    base = torch.randn(2, features, dtype=torch.float64)
    tree = hierarchy
    if hierarchy == "linkage":
        hierarchy = _linkage(features)
        tree = _nested_from_linkage(hierarchy)
    elif hierarchy is None:
        tree = balanced_tree(features)
    attr = PartitionShap(_interacting).attribute(x, baselines=base, hierarchy=hierarchy)
    torch.testing.assert_close(attr, _reference_attr(_interacting, x, base, tree), atol=1e-12, rtol=0)


def test_one_level_tree_gives_shapley_values_and_linear_model_gives_w_times_delta():
    from attribuo.attr import ShapleyValues

    x = torch.randn(3, 5, dtype=torch.float64)
    flat = PartitionShap(_interacting).attribute(x, hierarchy=[0, 1, 2, 3, 4])
    torch.testing.assert_close(flat, ShapleyValues(_interacting).attribute(x), atol=1e-12, rtol=0)
    lin = nn.Linear(5, 1).double()
    attr = PartitionShap(lin).attribute(x, baselines=0.5, target=0, hierarchy=_linkage(5))
    torch.testing.assert_close(attr, (x - 0.5) * lin.weight[0].detach(), atol=1e-12, rtol=0)


def test_exact_cost_is_the_full_recursion():
    tree = feature_hierarchy(None, 8)
    assert tree.exact_evaluations() == 2 * (1 + 2 * 2 + 4 * 4)  # contexts double per level
    rows = []

    def f(t):
        rows.append(t.shape[0])
        return t.sum(1)

    PartitionShap(f).attribute(torch.randn(1, 8), perturbations_per_eval=1000)
    assert sum(rows) == 2 + 42  # f(baselines), f(inputs), the recursion's coalitions


# ---------------------------------------------------------------- shap parity
def _shap_values(model, x, background, z, max_evals):
    shap = pytest.importorskip("shap")

    def f(a):
        with torch.no_grad():
            return model(torch.from_numpy(a)).numpy()[:, 0]

    explainer = shap.PartitionExplainer(f, shap.maskers.Partition(background, clustering=z))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return explainer(x.numpy(), max_evals=max_evals, silent=True).values


@pytest.mark.parametrize("features, max_evals", [(8, 500), (8, 30), (8, 11), (16, 120), (16, 500)])
def test_parity_with_shap_partition_explainer(features, max_evals):
    """shap's masker with one background row = our baselines, the same clustering and max_evals.

    Full budget: both are the exact Owen values. Under a budget both run the
    same best-first search (rounds of 10 coalitions, shap's tabular batch
    size); a random MLP has no exactly tied priorities, where shap's random
    tie-breaking could differ from our first-in-first-out.
    """
    model = _mlp(features)
    x = torch.randn(3, features, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    base = torch.randn(1, features, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    z = _linkage(features)
    ours = PartitionShap(model).attribute(x, baselines=base, target=0, hierarchy=z, max_evals=max_evals)
    theirs = _shap_values(model, x, base.numpy(), z, max_evals)
    np.testing.assert_allclose(ours.numpy(), theirs, atol=1e-12, rtol=0)


def test_parity_with_shap_negative_distance_and_background_rows():
    model = _mlp(6)
    x = torch.randn(2, 6, dtype=torch.float64)
    z = _linkage(6)
    z[1, 2] = -1.0  # shap does not split a cluster with a negative distance
    base = torch.randn(1, 6, dtype=torch.float64)
    ours = PartitionShap(model).attribute(x, baselines=base, target=0, hierarchy=z)
    np.testing.assert_allclose(ours.numpy(), _shap_values(model, x, base.numpy(), z, 500), atol=1e-12, rtol=0)
    # several background rows: shap averages the model over them; exact Owen values are linear
    rows = torch.randn(3, 6, dtype=torch.float64)
    mean = sum(PartitionShap(model).attribute(x, baselines=r[None], target=0, hierarchy=z) for r in rows) / 3
    np.testing.assert_allclose(mean.numpy(), _shap_values(model, x, rows.numpy(), z, 500), atol=1e-12, rtol=0)


# --------------------------------------------------------------- properties
def _cnn():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 3)
    ).double().eval()


def _patches():
    return (torch.arange(8).reshape(8, 1) // 4 * 4 + torch.arange(8).reshape(1, 8) // 2).reshape(1, 1, 8, 8)


@pytest.mark.parametrize("max_evals", [3, 14, 40, 500])
def test_additivity_on_images_with_patch_features(max_evals):
    model, mask = _cnn(), _patches().expand(1, 3, 8, 8)  # 8 patch features (2 rows of 4)
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    attr = PartitionShap(model).attribute(x, baselines=0.2, target=[0, 2], feature_mask=mask, max_evals=max_evals)
    gap = model(x)[[0, 1], [0, 2]] - model(torch.full_like(x, 0.2))[[0, 1], [0, 2]]
    # every element of a feature carries the feature's value (24 elements per patch)
    for n in range(2):
        assert torch.unique(attr[n][mask[0] == 5]).numel() == 1
    torch.testing.assert_close(attr.sum((1, 2, 3)) / 24, gap.detach(), atol=1e-12, rtol=0)


@pytest.mark.parametrize("max_evals", [60, 500])
def test_chunk_and_batch_invariance(max_evals):
    model = _mlp(12, outputs=3)
    x = torch.randn(4, 12, dtype=torch.float64)
    target = [0, 2, 1, 1]
    explainer = PartitionShap(model)
    ref = explainer.attribute(x, target=target, max_evals=max_evals)
    for ppe in (1, 3, 7):
        torch.testing.assert_close(
            explainer.attribute(x, target=target, max_evals=max_evals, perturbations_per_eval=ppe),
            ref, atol=1e-13, rtol=0,
        )
    for n in range(4):  # each example's search is its own
        one = explainer.attribute(x[n:n + 1], target=target[n], max_evals=max_evals)
        torch.testing.assert_close(one, ref[n:n + 1], atol=1e-13, rtol=0)


def test_search_with_ample_budget_equals_the_exact_recursion():
    model = _mlp(10)
    x = torch.randn(3, 10, dtype=torch.float64)
    call = parse_call(x, 0)
    masks = feature_masks(call.inputs, None)
    bases = perturbation_baselines(call.inputs, 0.1)
    z = _linkage(10)
    exact = owen_values(model, call, bases, masks, z, 500, exact=True)[0]
    searched = owen_values(model, call, bases, masks, z, 10**6, exact=False)[0]
    torch.testing.assert_close(searched, exact, atol=1e-13, rtol=0)


def test_tuple_inputs_shared_ids_and_per_example_masks():
    def f(a, b):
        return a.sum(1) * b[:, 0] + b[:, 1] ** 2

    a, b = torch.randn(2, 3, dtype=torch.float64), torch.randn(2, 2, dtype=torch.float64)
    masks = (torch.tensor([[0, 1, 1]]), torch.tensor([[2, 0]]))  # id 0 spans both inputs
    ours = PartitionShap(f).attribute((a, b), feature_mask=masks, hierarchy=[[0, 1], 2])
    assert isinstance(ours, tuple) and ours[0].shape == a.shape and ours[1].shape == b.shape
    for n in range(2):
        def value(s, n=n):
            keep_a = torch.tensor([int(i) in s for i in masks[0][0]])
            keep_b = torch.tensor([int(i) in s for i in masks[1][0]])
            return float(f(torch.where(keep_a, a[n:n + 1], 0.0), torch.where(keep_b, b[n:n + 1], 0.0))[0])

        phi = owen_reference(value, [[0, 1], 2])
        expected_a = torch.tensor([phi[0], phi[1], phi[1]], dtype=torch.float64)
        torch.testing.assert_close(ours[0][n], expected_a, atol=1e-12, rtol=0)
        torch.testing.assert_close(ours[1][n], torch.tensor([phi[2], phi[0]], dtype=torch.float64), atol=1e-12, rtol=0)
    per_example = torch.tensor([[0, 1, 2, 3], [3, 2, 1, 0]])
    x = torch.randn(2, 4, dtype=torch.float64)
    both = PartitionShap(_interacting).attribute(x, feature_mask=per_example, max_evals=9)
    for n in range(2):
        one = PartitionShap(_interacting).attribute(x[n:n + 1], feature_mask=per_example[n:n + 1], max_evals=9)
        torch.testing.assert_close(both[n:n + 1], one, atol=1e-13, rtol=0)


def test_multi_output_without_target_and_batch_aggregate():
    model = _mlp(4, outputs=2)
    x = torch.randn(3, 4, dtype=torch.float64)
    attr = PartitionShap(model).attribute(x, max_evals=8)
    assert attr.shape == (3, 2, 4)
    gap = (model(x) - model(torch.zeros_like(x))).detach()
    torch.testing.assert_close(attr.sum(-1), gap, atol=1e-12, rtol=0)
    total = PartitionShap(lambda t: model(t)[:, 0].sum()).attribute(x, max_evals=8)
    assert total.shape == (1, 4)


def test_no_leftover_state():
    model = _mlp(6).train()
    flags = [p.requires_grad for p in model.parameters()]
    x = torch.randn(2, 6, dtype=torch.float64)
    before = x.clone()
    PartitionShap(model).attribute(x, target=0, max_evals=20)
    assert model.training and [p.requires_grad for p in model.parameters()] == flags
    assert torch.equal(x, before) and not model._forward_hooks


@pytest.mark.parametrize(
    "kwargs, error, words",
    [
        ({"hierarchy": [[0, 1], 2]}, ArgumentValueError, "leaves out"),
        ({"hierarchy": [[0, 1], [1, 2, 3]]}, ArgumentValueError, "more than once"),
        ({"hierarchy": [[0, 1], [2, 7]]}, ArgumentValueError, "features are 0..3"),
        ({"hierarchy": [[0, 1], [2, "3"]]}, ArgumentTypeError, "hierarchy"),
        ({"hierarchy": {"a": 1}}, ArgumentTypeError, "hierarchy"),
        ({"hierarchy": np.zeros((2, 4))}, ArgumentValueError, "(3, 4)"),
        ({"hierarchy": np.array([[0, 1, 1, 2], [0, 2, 1, 2], [4, 3, 1, 3]])}, ArgumentValueError, "joined"),
        ({"hierarchy": [list(range(4))] * 1 + [[]]}, ArgumentValueError, "empty"),
        ({"max_evals": 0}, ArgumentValueError, "max_evals"),
        ({"perturbations_per_eval": 0}, ArgumentValueError, "perturbations_per_eval"),
        ({"feature_mask": torch.tensor([[0, -1, 1, 2]])}, ArgumentValueError, "negative"),
    ],
)
def test_bad_arguments(kwargs, error, words):
    with pytest.raises(error, match=words.replace("(", r"\(").replace(")", r"\)")):
        PartitionShap(lambda t: t.sum(1)).attribute(torch.randn(2, 4), **kwargs)
