"""DataLoaderAttribution: feature ablation of a metric computed over a whole DataLoader.

The quantity explained is not one model output per example but a corpus-wide
metric: every batch of the loader goes through the model, ``reduce`` folds
the outputs into a running state and ``to_metric`` turns the final state into
a tensor (precision, mean loss, ...). A feature (an element group given by
``feature_mask``, shared by every batch) is ablated in every batch at once, and
its attribution is ``metric(original data) - metric(data with it ablated)``.

The ablation itself is attribuo's :class:`~attribuo.attr.FeatureAblation`
run on a one-row "feature switch" input: each switch column is one feature,
1 = kept and 0 = ablated. The forward function it sees turns each row of
switches into one traversal of the loader, so the ablation algorithm (which
switches are flipped together, how many per call, the differences) is the
one FeatureAblation uses, written once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from copy import copy
from typing import Any

import torch
from torch import Tensor

from ..._engine.errors import ArgumentTypeError, ArgumentValueError
from ..._engine.inputs import positive_int, restore_form
from ..._engine.perturb import feature_count, feature_masks
from ..base import Attribution
from .feature_ablation import FeatureAblation

TensorOrTuple = Tensor | tuple[Tensor, ...]


class InputRole:
    """What :class:`DataLoaderAttribution` does with each element a batch holds.

    ``need_attr`` (0): passed to the model and attributed (must be a tensor);
    ``need_forward`` (1): passed to the model, not attributed;
    ``no_forward`` (2): not passed to the model (labels, ids); ``reduce`` still
    sees it. (Captum's docstring swaps the meaning of 1 and 2; its code, which
    this follows, passes role 1 to the model and leaves role 2 out.)
    """

    need_attr = 0
    need_forward = 1
    no_forward = 2


def concat_outputs(accum: Tensor | None, output: Tensor, _inputs: tuple[Any, ...]) -> Tensor:
    """The default ``reduce``: the outputs of every batch joined along dim 0."""
    return output if accum is None else torch.cat([accum, output])


def _batch_items(batch: Any) -> tuple[tuple[Any, ...], bool]:
    """One batch as a tuple of its elements, and whether it came as a tuple/list."""
    if isinstance(batch, (tuple, list)):
        return tuple(batch), True
    if isinstance(batch, Tensor):
        return (batch,), False
    raise ArgumentTypeError(
        "`dataloader` must yield a tensor or a tuple/list of elements, got "
        f"{type(batch).__name__}"
    )


def _check_roles(input_roles: Any, count: int) -> tuple[int, ...]:
    if input_roles is None:
        return (InputRole.need_attr,) * count
    roles = tuple(input_roles)
    if len(roles) != count:
        raise ArgumentValueError(
            f"`input_roles` has {len(roles)} entries but each batch of the dataloader holds "
            f"{count} elements; give one role per element"
        )
    if any(isinstance(r, bool) or r not in (0, 1, 2) for r in roles):
        raise ArgumentValueError(f"`input_roles` entries must be 0, 1 or 2, got {roles}")
    if InputRole.need_attr not in roles:
        raise ArgumentValueError(
            f"`input_roles` must mark at least one element for attribution (role 0), got {roles}"
        )
    return roles


def _check_baselines(baselines: Any, inputs: tuple[Tensor, ...]) -> tuple[Any, ...]:
    """One baseline per attributed element: a number or a tensor with batch dim 1."""
    if baselines is None:
        return tuple(False if x.dtype == torch.bool else 0 for x in inputs)
    items = baselines if isinstance(baselines, tuple) else (baselines,)
    if len(items) != len(inputs):
        raise ArgumentValueError(
            f"`baselines` has {len(items)} entries but {len(inputs)} dataloader elements are "
            "attributed (role 0); give one baseline per attributed element"
        )
    out = []
    for i, (b, x) in enumerate(zip(items, inputs)):
        if isinstance(b, bool) or not isinstance(b, (Tensor, int, float)):
            raise ArgumentTypeError(
                f"`baselines[{i}]` must be a tensor or a number, got {type(b).__name__}"
            )
        if isinstance(b, Tensor):
            if b.dim() == x.dim() and b.shape[0] != 1:
                raise ArgumentValueError(
                    f"`baselines[{i}]` has shape {tuple(b.shape)}; its first dim must be 1 so "
                    "that it applies to every batch of the dataloader"
                )
            try:
                torch.broadcast_shapes(b.shape, (1,) + tuple(x.shape[1:]))
            except RuntimeError:
                raise ArgumentValueError(
                    f"`baselines[{i}]` of shape {tuple(b.shape)} does not broadcast to one "
                    f"example of shape {tuple(x.shape[1:])}"
                ) from None
            b = b.to(x.device)
        out.append(b)
    return tuple(out)


class DataLoaderAttribution(Attribution):
    """Attribute a metric of a whole DataLoader by ablating features in every batch.

    ``attr_method`` is a :class:`~attribuo.attr.FeatureAblation` over the model
    (Captum supports no other method here). :meth:`attribute` traverses the
    loader once for the unperturbed metric and then once per
    ``perturbations_per_pass`` features.

    Example:
        >>> import torch
        >>> from torch.utils.data import DataLoader, TensorDataset
        >>> from attribuo.attr import DataLoaderAttribution, FeatureAblation
        >>> model = torch.nn.Linear(3, 1, bias=False)
        >>> x = torch.rand(8, 3)
        >>> loader = DataLoader(TensorDataset(x), batch_size=3)
        >>> dla = DataLoaderAttribution(FeatureAblation(model))
        >>> attr = dla.attribute(loader, to_metric=lambda out: out.sum())
        >>> torch.allclose(attr[0], (x.sum(0) * model.weight[0]).unsqueeze(0), atol=1e-5)
        True
    """

    def __init__(self, attr_method: Attribution) -> None:
        if type(attr_method) is not FeatureAblation:
            raise ArgumentTypeError(
                "`attr_method` must be a FeatureAblation instance (the only method "
                f"DataLoaderAttribution supports), got {type(attr_method).__name__}"
            )
        super().__init__(attr_method.forward_func)
        # a shallow copy: the user's instance keeps its own forward function
        self.attr_method = copy(attr_method)

    def attribute(
        self,
        dataloader: Iterable,
        input_roles: tuple[int, ...] | None = None,
        baselines: Any = None,
        feature_mask: TensorOrTuple | None = None,
        reduce: Callable | None = None,
        to_metric: Callable | None = None,
        perturbations_per_pass: int = 1,
        show_progress: bool = False,
        return_input_shape: bool = True,
    ) -> TensorOrTuple:
        """Attributions of the loader's metric to the attributed elements' features.

        ``dataloader`` yields a tensor or a tuple/list of elements per batch;
        ``input_roles`` says per element whether it is attributed (0), only
        passed to the model (1) or only seen by ``reduce`` (2); default: all 0.
        ``baselines`` and ``feature_mask`` are given per attributed element with
        a batch dim of 1 and apply to every batch. ``reduce(accum, output,
        batch_elements) -> accum`` folds each batch's model output (default:
        concatenation) and ``to_metric(accum) -> Tensor`` makes the final
        metric (default: the state itself).

        Returns, with ``return_input_shape=True``, one tensor per attributed
        element shaped ``(metric.numel(), *element.shape[1:])`` (a tuple when
        batches are tuples/lists); otherwise one tensor ``(metric.numel(),
        n_features)`` with ``n_features = max(feature_mask) + 1``.
        """
        positive_int(perturbations_per_pass, "perturbations_per_pass")
        try:
            first = next(iter(dataloader))
        except TypeError:
            raise ArgumentTypeError(
                f"`dataloader` must be iterable, got {type(dataloader).__name__}"
            ) from None
        except StopIteration:
            raise ArgumentValueError("`dataloader` yields no batch") from None
        items, was_tuple = _batch_items(first)
        roles = _check_roles(input_roles, len(items))
        attr_inputs = tuple(x for x, r in zip(items, roles) if r == InputRole.need_attr)
        for i, x in enumerate(attr_inputs):
            if not isinstance(x, Tensor):
                raise ArgumentTypeError(
                    f"dataloader elements with role 0 must be tensors; attributed element {i} "
                    f"is a {type(x).__name__}"
                )
        base = _check_baselines(baselines, attr_inputs)
        masks = feature_masks(attr_inputs, feature_mask, nonnegative=True)
        for i, m in enumerate(masks):
            if m.shape[0] != 1:
                raise ArgumentValueError(
                    f"`feature_mask[{i}]` must have a first dim of 1 (one mask shared by every "
                    f"batch), got shape {tuple(m.shape)}"
                )
        n_features = feature_count(masks)
        # ids that no element carries would perturb nothing (zero attribution): skip them
        present = torch.unique(torch.cat([m.reshape(-1).cpu() for m in masks]))
        # each input's mask with ids renumbered to switch columns 0..len(present)-1
        columns = tuple(torch.searchsorted(present.to(m.device), m) for m in masks)

        traverse = _Traversal(
            self.forward_func, dataloader, roles, base, columns,
            concat_outputs if reduce is None else reduce, to_metric,
        )
        method = copy(self.attr_method)
        method.forward_func = traverse
        device = attr_inputs[0].device
        switches = torch.ones((1, present.numel()), device=device)
        found = method.attribute(
            switches, perturbations_per_eval=perturbations_per_pass, show_progress=show_progress
        )  # [metric.numel(), len(present)]
        unique_attr = found.new_zeros((found.shape[0], n_features))
        unique_attr[:, present.to(found.device)] = found
        if not return_input_shape:
            return unique_attr
        out = tuple(
            unique_attr[:, m.reshape(-1).to(found.device)].reshape(
                (found.shape[0],) + tuple(x.shape[1:])
            )
            for m, x in zip(masks, attr_inputs)
        )
        return restore_form(was_tuple, out)


class _Traversal:
    """The forward function FeatureAblation sees: switch rows in, one metric per row out."""

    def __init__(self, forward_func, dataloader, roles, baselines, columns, reduce, to_metric):
        self.forward_func = forward_func
        self.dataloader = dataloader
        self.roles = roles
        self.baselines = baselines
        self.columns = columns
        self.reduce = reduce
        self.to_metric = to_metric
        self.shape: torch.Size | None = None  # the metric's shape, fixed by the first traversal

    def _element_masks(self, row: Tensor) -> list[Tensor | None]:
        """Per attributed element, where it is ablated (None: nowhere, left as is)."""
        ablated = row == 0
        out: list[Tensor | None] = []
        for cols in self.columns:
            where = ablated.to(cols.device)[cols]
            out.append(where if bool(where.any()) else None)
        return out

    def _perturb(self, items: tuple[Any, ...], masks: list[Tensor | None]) -> tuple[Any, ...]:
        out, j = [], 0
        for x, role in zip(items, self.roles):
            if role == InputRole.need_attr:
                if masks[j] is not None:
                    # torch.where keeps the element's dtype (integer token ids stay integers)
                    x = torch.where(masks[j], torch.as_tensor(self.baselines[j], device=x.device), x)
                j += 1
            out.append(x)
        return tuple(out)

    def __call__(self, switches: Tensor) -> Tensor:
        plans = [self._element_masks(row) for row in switches]
        states: list[Any] = [None] * len(plans)
        for batch in self.dataloader:
            items, _ = _batch_items(batch)
            if len(items) != len(self.roles):
                raise ArgumentValueError(
                    f"the dataloader yielded a batch of {len(items)} elements after one of "
                    f"{len(self.roles)}; every batch must hold the same elements"
                )
            for p, masks in enumerate(plans):
                perturbed = self._perturb(items, masks)
                fwd = tuple(x for x, r in zip(perturbed, self.roles) if r != InputRole.no_forward)
                states[p] = self.reduce(states[p], self.forward_func(*fwd), perturbed)
        metrics = [self.to_metric(s) if self.to_metric is not None else s for s in states]
        for m in metrics:
            if not isinstance(m, Tensor):
                raise ArgumentTypeError(
                    "the accumulated metric (`reduce`, then `to_metric` if given) must be a "
                    f"tensor, got {type(m).__name__}"
                )
            if self.shape is None:
                self.shape = m.shape
            elif m.shape != self.shape:
                raise ArgumentValueError(
                    f"the metric has shape {tuple(m.shape)} for a perturbed dataloader but "
                    f"{tuple(self.shape)} for the original one; it must not change shape"
                )
        return torch.stack(metrics)
