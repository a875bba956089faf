"""PartitionShap: Owen values over a hierarchy of features (shap's Partition explainer)."""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..._engine.call import Call, parse_call
from ..._engine.errors import ArgumentTypeError, ArgumentValueError
from ..._engine.incremental import incremental_evaluation
from ..._engine.inputs import positive_int
from ..._engine.perturb import (
    Masks,
    blend,
    evaluate_perturbations,
    feature_count,
    feature_masks,
    initial_output,
    is_aggregate,
    perturbation_baselines,
    select_elements,
    spread,
    warn_missing_ids,
)
from ..base import PerturbationAttribution

TensorOrTuple = Tensor | tuple[Tensor, ...]

ROUND_MASKS = 10  # coalitions per example per round of the budgeted search (shap's tabular batch_size)
MAX_CHILDREN = 16  # a node's 2^m coalitions of its children are enumerated


# ------------------------------------------------------------------ the hierarchy
@dataclass(frozen=True)
class Hierarchy:
    """A tree over features ``0..F-1``: nodes ``0..F-1`` are the features, the rest groups.

    ``children[v]`` lists a group's parts (empty for a feature); ``stop[v]``
    marks a group that is not split further (a negative distance in a
    linkage matrix: its credit is shared equally by its features). Features
    are laid out in the tree's depth-first order, so every node covers the
    positions ``lo[v]:hi[v]`` of ``order`` (``order[p]`` is the feature at
    position ``p``).
    """

    children: tuple[tuple[int, ...], ...]
    stop: tuple[bool, ...]
    root: int
    lo: np.ndarray
    hi: np.ndarray
    order: np.ndarray

    @property
    def features(self) -> int:
        return int(self.order.size)

    def is_unit(self, node: int) -> bool:
        """Whether ``node`` takes its credit as a whole (a feature or a group not split further)."""
        return not self.children[node] or self.stop[node]

    def exact_evaluations(self) -> int:
        """Coalitions the full recursion evaluates (besides the empty and full ones)."""
        total, stack = 0, [(self.root, 1)]
        while stack:
            node, contexts = stack.pop()
            if self.is_unit(node):
                continue
            m = len(self.children[node])
            total += contexts * (2**m - 2)
            stack.extend((kid, contexts * 2 ** (m - 1)) for kid in self.children[node])
        return total


def _finish(children: list[tuple[int, ...]], stop: list[bool], root: int, count: int) -> Hierarchy:
    lo = np.zeros(len(children), dtype=np.int64)
    hi = np.zeros(len(children), dtype=np.int64)
    order: list[int] = []
    stack: list[tuple[int, bool]] = [(root, False)]
    while stack:  # depth first, children in the order given; iterative (deep linkage chains)
        node, done = stack.pop()
        if done:
            hi[node] = len(order)
            continue
        lo[node] = len(order)
        if not children[node]:
            order.append(node)
            hi[node] = len(order)
            continue
        stack.append((node, True))
        stack.extend((kid, False) for kid in reversed(children[node]))
    return Hierarchy(tuple(children), tuple(stop), root, lo, hi, np.asarray(order, dtype=np.int64))


def _from_linkage(z: Any, count: int) -> Hierarchy:
    """A scipy linkage matrix: row ``i`` joins nodes ``z[i, 0]`` and ``z[i, 1]`` into node ``F + i``."""
    z = z.detach().cpu().numpy() if isinstance(z, Tensor) else np.asarray(z)
    if z.ndim != 2 or z.shape[0] != max(count - 1, 0) or (count > 1 and z.shape[1] < 2):
        raise ArgumentValueError(
            f"`hierarchy` as a linkage matrix must have shape ({max(count - 1, 0)}, 4) for {count} "
            f"features (scipy.cluster.hierarchy.linkage's format); got {tuple(z.shape)}"
        )
    if not np.issubdtype(z.dtype, np.number) or not np.isfinite(z[:, :2]).all():
        raise ArgumentValueError("`hierarchy` (a linkage matrix) must hold finite numbers")
    ids = z[:, :2]
    if count > 1 and not (ids == np.round(ids)).all():
        raise ArgumentValueError("`hierarchy` (a linkage matrix) must hold whole node ids in columns 0 and 1")
    children: list[tuple[int, ...]] = [()] * count
    stop = [False] * count
    used = np.zeros(2 * count, dtype=bool)
    for row in range(count - 1):
        a, b = int(ids[row, 0]), int(ids[row, 1])
        for node in (a, b):
            if not 0 <= node < count + row or used[node]:
                raise ArgumentValueError(
                    f"`hierarchy` row {row} joins node {node}, which is not a feature or an earlier "
                    "row's cluster, or was already joined; each node must be joined exactly once"
                )
            used[node] = True
        children.append((a, b))
        distance = float(z[row, 2]) if z.shape[1] >= 3 else 1.0
        stop.append(distance < 0)  # shap: a negative distance ends the descent
    return _finish(children, stop, 2 * count - 2 if count else 0, count)


def _from_nested(tree: Any, count: int) -> Hierarchy:
    """Nested lists / tuples of feature ids, e.g. ``[[0, 1], [2, [3, 4]]]`` (any number of parts)."""
    children: list[tuple[int, ...]] = [()] * count
    stop = [False] * count
    seen = np.zeros(count, dtype=bool)

    def build(item: Any) -> int:
        if isinstance(item, (int, np.integer)) and not isinstance(item, bool):
            if not 0 <= int(item) < count:
                raise ArgumentValueError(f"`hierarchy` names feature {int(item)}; features are 0..{count - 1}")
            if seen[int(item)]:
                raise ArgumentValueError(f"`hierarchy` names feature {int(item)} more than once")
            seen[int(item)] = True
            return int(item)
        if isinstance(item, (list, tuple)):
            if not item:
                raise ArgumentValueError("`hierarchy` holds an empty group")
            kids = [build(x) for x in item]
            if len(kids) == 1:
                return kids[0]
            if len(kids) > MAX_CHILDREN:
                raise ArgumentValueError(
                    f"`hierarchy` has a group of {len(kids)} parts; at most {MAX_CHILDREN} "
                    "(every subset of a group's parts is evaluated): nest it further"
                )
            children.append(tuple(kids))
            stop.append(False)
            return len(children) - 1
        raise ArgumentTypeError(
            f"`hierarchy` must be nested lists or tuples of feature ids; found {type(item).__name__}"
        )

    root = build(tree)
    if not seen.all():
        missing = np.flatnonzero(~seen)[:5].tolist()
        raise ArgumentValueError(f"`hierarchy` leaves out features {missing}; it must name every feature once")
    return _finish(children, stop, root, count)


def balanced_tree(count: int) -> list | int:
    """The default hierarchy: features ``0..F-1`` halved recursively, in order (first half larger).

    Example:
        >>> balanced_tree(5)
        [[[0, 1], 2], [3, 4]]
    """

    def build(lo: int, hi: int) -> list | int:
        if hi - lo == 1:
            return lo
        mid = lo + (hi - lo + 1) // 2
        return [build(lo, mid), build(mid, hi)]

    return build(0, count) if count else []


def feature_hierarchy(hierarchy: Any, count: int) -> Hierarchy:
    """``hierarchy`` (None, a linkage matrix, or nested lists of ids) over ``count`` features."""
    if hierarchy is None:
        return _from_nested(balanced_tree(count), count) if count else _finish([], [], 0, 0)
    if isinstance(hierarchy, (np.ndarray, Tensor)):
        return _from_linkage(hierarchy, count)
    if isinstance(hierarchy, (list, tuple, int, np.integer)):
        return _from_nested(hierarchy, count)
    raise ArgumentTypeError(
        "`hierarchy` must be None, a linkage matrix (numpy array or tensor) or nested lists of "
        f"feature ids; got {type(hierarchy).__name__}"
    )


def _shapley_weights(m: int) -> list[float]:
    """Weight of a coalition of ``k`` of a player's ``m - 1`` siblings, for k = 0..m-1."""
    return [math.factorial(k) * math.factorial(m - k - 1) / math.factorial(m) for k in range(m)]


def _paint(tree: Hierarchy, coalitions: list[tuple[int, ...]]) -> np.ndarray:
    """``[P, F]`` booleans: the features of each coalition (a tuple of disjoint nodes)."""
    count = tree.features
    diff = np.zeros((len(coalitions), count + 1), dtype=np.int32)
    rows = np.repeat(np.arange(len(coalitions)), [len(c) for c in coalitions])
    nodes = np.fromiter((v for c in coalitions for v in c), dtype=np.int64, count=rows.size)
    np.add.at(diff, (rows, tree.lo[nodes]), 1)  # a node covers a run of positions
    np.add.at(diff, (rows, tree.hi[nodes]), -1)
    by_position = np.cumsum(diff[:, :count], axis=1) > 0
    out = np.empty_like(by_position)
    out[:, tree.order] = by_position
    return out


def _to_leaves(tree: Hierarchy, credit: np.ndarray) -> np.ndarray:
    """Node credits ``[nodes, K]`` shared equally by each node's features: ``[F, K]``.

    What shap's ``lower_credit`` does: a group's credit passes to its parts
    in proportion to their sizes, so each feature gets ``credit / size``.
    """
    count = tree.features
    size = (tree.hi - tree.lo).astype(np.float64)
    per = credit / np.maximum(size, 1.0)[:, None]
    diff = np.zeros((count + 1, credit.shape[1]))
    np.add.at(diff, tree.lo, per)
    np.add.at(diff, tree.hi, -per)
    out = np.empty((count, credit.shape[1]))
    out[tree.order] = np.cumsum(diff[:count], axis=0)
    return out


# ---------------------------------------------------------------- the algorithm
def _expansions(tree: Hierarchy, node: int) -> tuple[list[tuple[int, ...]], list[tuple[int, int, int, float]]]:
    """How a group splits: the unions of every subset of its parts (bit ``j`` = part ``j``), and
    one ``(subset, subset with the part, part, Shapley weight)`` per part and subset without it."""
    kids = tree.children[node]
    m = len(kids)
    subsets = [tuple(kids[j] for j in range(m) if b >> j & 1) for b in range(2**m)]
    weights = _shapley_weights(m)
    moves = [
        (b, b | 1 << j, kid, weights[bin(b).count("1")])
        for b in range(2**m) for j, kid in enumerate(kids) if not b >> j & 1
    ]
    return subsets, moves


def _evaluate(
    forward_func: Callable, call: Call, baselines: tuple[Tensor, ...], masks: Masks,
    selection: np.ndarray, initial: Tensor, perturbations_per_eval: int | None,
    show_progress: bool = False, desc: str = "",
) -> Tensor:
    """Outputs ``[P, n_out]`` of coalitions ``selection`` (``[P, F]``, or ``[P, N, F]`` per example)."""
    chosen = torch.from_numpy(selection)
    values = torch.empty((selection.shape[0], initial.numel()), dtype=torch.float64)

    def make(start: int, stop: int) -> tuple[tuple[Tensor, ...], None]:
        part = chosen[start:stop]
        return tuple(
            blend(select_elements(part.to(x.device), m), x, b) for x, b, m in zip(call.inputs, baselines, masks)
        ), None

    for start, stop, rows, _ in evaluate_perturbations(
        forward_func, call, selection.shape[0], make, initial, perturbations_per_eval, show_progress, desc
    ):
        values[start:stop] = rows.detach().to("cpu", torch.float64)
    return values


def _exact(forward_func, call, baselines, masks, tree, initial, full, ppe, show_progress, desc) -> np.ndarray:
    """Owen values ``[F, n_out]`` by the full recursion: every group split in every context."""
    coalitions: list[tuple[int, ...]] = []  # value index k + 2 (0: empty, 1: every feature)
    credit_node: list[int] = []
    credit_index: list[int] = []
    credit_weight: list[float] = []
    items = [((), tree.root, 0, 1, 1.0)]  # (context, node, index of f(context), of f(context + node), weight)
    while items:
        context, node, at_context, at_with, weight = items.pop()
        if tree.is_unit(node):
            credit_node += [node, node]
            credit_index += [at_with, at_context]
            credit_weight += [weight, -weight]
            continue
        subsets, moves = _expansions(tree, node)
        full_set = len(subsets) - 1
        index = [at_context] + [len(coalitions) + 2 + k for k in range(full_set - 1)] + [at_with]
        coalitions.extend(context + subsets[b] for b in range(1, full_set))
        items.extend((context + subsets[b], kid, index[b], index[b_in], weight * w) for b, b_in, kid, w in moves)
    values = np.empty((len(coalitions) + 2, initial.numel()))
    values[0] = initial.detach().reshape(-1).cpu().double().numpy()
    values[1] = full
    if coalitions:
        values[2:] = _evaluate(
            forward_func, call, baselines, masks, _paint(tree, coalitions), initial, ppe, show_progress, desc
        ).numpy()
    credit = np.zeros((len(tree.children), values.shape[1]))
    np.add.at(credit, np.asarray(credit_node), np.asarray(credit_weight)[:, None] * values[credit_index])
    return _to_leaves(tree, credit)


def _budgeted(forward_func, call, baselines, masks, tree, initial, full, budget, ppe, show_progress, desc):
    """Owen values ``[F, n_out]`` by shap's best-first search, ``budget`` coalitions per example.

    Each example keeps a queue of (group, context) pairs ordered by the
    largest output change the pair carries times its weight; rounds take up
    to ``ROUND_MASKS`` coalitions' worth of the top pairs of every example,
    evaluate them in one batched pass, and queue the parts. When the budget
    is spent, each pair left over gives its group ``weight * (f(context +
    group) - f(context))``, shared equally by the group's features.
    """
    n_out = initial.numel()
    per_example = not is_aggregate(initial, call.batch)
    groups = call.batch if per_example else 1
    width = n_out // groups
    # one output per example (the usual case): plain floats, far cheaper than tiny arrays
    scalar = width == 1
    base = initial.detach().reshape(groups, width).cpu().double().numpy()
    top = full.reshape(groups, width)
    if scalar:
        base, top = base[:, 0].tolist(), top[:, 0].tolist()
    heaps: list[list] = [[(0.0, 0, ((), tree.root, base[g], top[g], 1.0))] for g in range(groups)]
    spent = [0] * groups
    credit = np.zeros((groups, len(tree.children), width))
    counter = 1  # ties in priority are taken first in, first out
    expansions: dict[int, tuple] = {}
    bar = None
    if show_progress:
        from tqdm.auto import tqdm

        bar = tqdm(desc=f"{desc} attribution", total=budget)
    while True:
        picked: list[list] = []
        rows_per_group: list[int] = []
        for g in range(groups):
            heap, mine, cost = heaps[g], [], 0
            while heap and cost < ROUND_MASKS and spent[g] + cost < budget:
                context, node, f_context, f_with, weight = heapq.heappop(heap)[2]
                if tree.is_unit(node):
                    credit[g, node] += weight * (f_with - f_context)
                    continue
                if node not in expansions:
                    expansions[node] = _expansions(tree, node)
                mine.append((context, node, f_context, f_with, weight))
                cost += len(expansions[node][0]) - 2
            picked.append(mine)
            rows_per_group.append(cost)
        count = max(rows_per_group)
        if count == 0:
            break
        coalitions = [[] for _ in range(groups)]
        for g, mine in enumerate(picked):
            for context, node, *_ in mine:
                subsets = expansions[node][0]
                coalitions[g].extend(context + subsets[b] for b in range(1, len(subsets) - 1))
            coalitions[g].extend([()] * (count - rows_per_group[g]))  # padding: baseline copies
        flat = [coalitions[g][p] for p in range(count) for g in range(groups)]
        painted = _paint(tree, flat).reshape(count, groups, tree.features)
        selection = painted if per_example else painted[:, 0]
        out = _evaluate(forward_func, call, baselines, masks, selection, initial, ppe).numpy()
        out = out.reshape(count, groups, width)
        for g, mine in enumerate(picked):
            spent[g] += rows_per_group[g]
            got = out[:, g, 0].tolist() if scalar else out[:, g]
            row = 0
            for context, node, f_context, f_with, weight in mine:
                subsets, moves = expansions[node]
                inner = len(subsets) - 2
                f = [f_context, *got[row:row + inner], f_with]
                row += inner
                for b, b_in, kid, w in moves:
                    share = weight * w
                    f_in, f_out = f[b_in], f[b]
                    change = abs(f_in - f_out) if scalar else float(np.max(np.abs(f_in - f_out)))
                    heapq.heappush(heaps[g], (-change * share, counter, (context + subsets[b], kid, f_out, f_in, share)))
                    counter += 1
        if bar is not None:
            bar.update(count)
    if bar is not None:
        bar.close()
    for g in range(groups):  # what the budget did not reach stays with its group
        for _, _, (_, node, f_context, f_with, weight) in heaps[g]:
            credit[g, node] += weight * (f_with - f_context)
    leaves = np.stack([_to_leaves(tree, credit[g]) for g in range(groups)])  # [G, F, width]
    return leaves.transpose(1, 0, 2).reshape(tree.features, n_out)


def owen_values(
    forward_func: Callable,
    call: Call,
    baselines: tuple[Tensor, ...],
    masks: Masks,
    hierarchy: Any = None,
    max_evals: int = 500,
    perturbations_per_eval: int | None = None,
    show_progress: bool = False,
    desc: str = "Partition SHAP",
    exact: bool | None = None,
) -> tuple[Tensor, ...]:
    """Partition SHAP as a pure function (behind :class:`PartitionShap`).

    Features are the ids ``0..F-1`` of ``masks``; ``hierarchy`` is a tree
    over them (see :func:`feature_hierarchy`). With ``max_evals`` at least
    the full recursion's cost plus 2 the exact Owen values are computed, all
    coalitions (the same for every example) in one chunked pass; otherwise
    shap's best-first search spends ``max_evals`` evaluations per example
    (``exact=False`` forces the search, ``exact=True`` the full recursion).
    Results have shape ``f(baselines).shape + inputs[i].shape[1:]``.
    """
    count = feature_count(masks)
    warn_missing_ids(masks, count)
    tree = feature_hierarchy(hierarchy, count)
    initial = initial_output(forward_func, call.with_inputs(baselines))
    dtype = initial.dtype if initial.is_floating_point() else torch.get_default_dtype()
    shape = tuple(initial.shape) if initial.dim() else (1,)
    if count == 0:
        phi = torch.zeros((0,) + shape, dtype=dtype, device=initial.device)
        return tuple(spread(phi, m, shape) for m in masks)
    budget = max(max_evals - 2, 0)  # shap spends two on f(baselines) and f(inputs)
    if exact is None:
        exact = tree.exact_evaluations() <= budget
    with incremental_evaluation(False):  # coalitions are not local boxes: plain forwards
        full = initial_output(forward_func, call).detach().reshape(-1).cpu().double().numpy()
        if exact:
            phi = _exact(forward_func, call, baselines, masks, tree, initial, full,
                         perturbations_per_eval, show_progress, desc)
        else:
            phi = _budgeted(forward_func, call, baselines, masks, tree, initial, full, budget,
                            perturbations_per_eval, show_progress, desc)
    phi_t = torch.from_numpy(phi).to(device=initial.device, dtype=dtype).reshape((count,) + shape)
    return tuple(spread(phi_t, m, shape) for m in masks)


class PartitionShap(PerturbationAttribution):
    """Owen values over a feature hierarchy: shap's Partition explainer (Lundberg et al.).

    A hierarchy (a binary clustering as a scipy linkage matrix, nested lists
    of feature ids with any number of parts per group, or by default a
    balanced binary tree over the features in order) splits the features
    into nested coalitions. Each group is credited like a player of a
    Shapley game among its siblings, in every coalition of its ancestors'
    siblings; a feature's credit is its Owen value (Owen, 1977), which for a
    binary tree averages ``f(S + i) - f(S)`` over the ``2^depth`` contexts
    ``S`` the recursion visits. Values add up to ``f(inputs) - f(baselines)``
    per example, and equal the Shapley values on additive models.

    ``max_evals`` bounds the model evaluations per example, as in shap: when
    it covers the full recursion (``sum over groups of contexts * (2^m -
    2)`` plus 2; about ``2 F^2 / 3`` for a balanced binary tree of ``F``
    features) the exact Owen values are computed with every coalition in
    large batched forwards. Otherwise shap's best-first search runs: the
    (group, context) pairs with the largest weighted output change are
    split first, ``ROUND_MASKS`` coalitions per example per round (shap's
    tabular batch size), every example's round in one batched pass; pairs
    left when the budget is spent give their credit to their group's
    features in equal shares.

    Relation to shap: ``shap.PartitionExplainer(model, shap.maskers.Partition(
    background, clustering=Z))`` with a single background row equal to our
    ``baselines`` and the same linkage ``Z`` gives the same values (exactly
    at full budget; under a budget up to the order of exactly tied
    priorities, which shap breaks at random and we break first in, first
    out). With a background of ``B`` rows shap averages the model over them;
    at full budget that is the mean of our values over ``B`` baselines.
    The priorities use the targeted output (shap's: the largest change over
    all outputs of the model).

    Features are ``feature_mask`` groups (ids ``0..F-1``; by default every
    scalar of every input); a forward function that returns one value for
    the whole batch is explained as one game.

    Example:
        >>> import torch
        >>> from attribuo.attr.perturbation.partition_shap import PartitionShap
        >>> f = lambda x: x[:, 0] * x[:, 1] + x[:, 2]
        >>> x = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
        >>> PartitionShap(f).attribute(x, hierarchy=[[0, 1], [2, 3]])
        tensor([[1., 1., 3., 0.]])
    """

    def attribute(
        self,
        inputs: TensorOrTuple,
        baselines: Any = None,
        target: Any = None,
        additional_forward_args: Any = None,
        feature_mask: TensorOrTuple | None = None,
        hierarchy: Any = None,
        max_evals: int = 500,
        perturbations_per_eval: int | None = None,
        show_progress: bool = False,
    ) -> TensorOrTuple:
        """Owen values, same form as ``inputs``.

        Args:
            inputs: tensor or tuple of tensors, dim 0 the batch.
            baselines: values of absent features (None: zeros; a number,
                a tensor per input of the input's or one example's shape).
            target: output to explain (Captum's forms).
            additional_forward_args: passed to the model after the inputs.
            feature_mask: Captum's grouping of elements into features
                (ids ``0..F-1``, shared across the tuple).
            hierarchy: None (balanced binary tree over features ``0..F-1``
                in order), a linkage matrix ``(F - 1, 4)`` (scipy's and
                shap's ``clustering``; a negative distance stops the descent),
                or nested lists / tuples of feature ids.
            max_evals: model evaluations per example (shap's ``max_evals``).
            perturbations_per_eval: coalitions per forward call (None: the
                memory budget decides; results do not depend on it).
            show_progress: show a progress bar.
        """
        positive_int(max_evals, "max_evals")
        call = parse_call(inputs, target, additional_forward_args)
        xs = call.inputs
        masks = feature_masks(xs, feature_mask, nonnegative=True)
        result = owen_values(
            self.forward_func, call, perturbation_baselines(xs, baselines), masks, hierarchy,
            max_evals, perturbations_per_eval, show_progress, self.get_name(),
        )
        return call.result(result)
