"""Shared pieces of the training-data influence methods.

Conventions (Captum's): a *batch* is a tuple or list whose last element
holds the labels and whose other elements are the model's inputs, so the
model is called as ``model(*batch[:-1])``. ``inputs`` to ``influence`` and
``self_influence`` is either one such batch or a ``DataLoader`` of them.
"""

from __future__ import annotations

import glob
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from .._engine.errors import ArgumentTypeError, ArgumentValueError


class KMostInfluentialResults(NamedTuple):
    """Top-k result of ``influence(..., k=...)``.

    ``indices[i, j]`` is the position in the training set of the ``j``-th most
    influential example for test example ``i`` and ``influence_scores[i, j]``
    its score (largest first for proponents, smallest first for opponents).
    """

    indices: Tensor
    influence_scores: Tensor


class DataInfluence(ABC):
    """Base of all training-data influence methods.

    A subclass answers "which training examples matter for these test
    examples" through :meth:`influence`.

    Example:
        >>> from attribuo.influence import DataInfluence, TracInCP
        >>> issubclass(TracInCP, DataInfluence)
        True
    """

    def __init__(self, model: nn.Module, train_dataset: Dataset, **kwargs: Any) -> None:
        self.model = model
        self.train_dataset = train_dataset

    @abstractmethod
    def influence(self, inputs: Any = None, **kwargs: Any) -> Any:
        """Influence of the training data on ``inputs``."""

    @classmethod
    def get_name(cls) -> str:
        """The class name, used in progress messages."""
        return cls.__name__


# --- batches and loaders ---------------------------------------------------


class _OneBatch(Dataset):
    """A dataset whose single item is an already-formed batch."""

    def __init__(self, batch: Any) -> None:
        self.batch = batch

    def __getitem__(self, i: int) -> Any:
        if i != 0:
            raise IndexError(i)
        return self.batch

    def __len__(self) -> int:
        return 1


def as_batches(inputs: Any, name: str = "inputs") -> DataLoader:
    """``inputs`` as an iterable of batches: a DataLoader as is, a batch wrapped."""
    if isinstance(inputs, DataLoader):
        return inputs
    if not isinstance(inputs, (tuple, list)):
        raise ArgumentTypeError(
            f"`{name}` must be a tuple (model inputs..., labels) or a DataLoader of such "
            f"batches, got {type(inputs).__name__}"
        )
    if len(inputs) < 2:
        raise ArgumentValueError(
            f"`{name}` must hold at least one model input followed by the labels "
            f"(the last element); got {len(inputs)} element(s)"
        )
    return DataLoader(_OneBatch(tuple(inputs)), batch_size=None, shuffle=False)


def split_batch(batch: Any, name: str = "inputs") -> tuple[tuple[Any, ...], Any]:
    """``(model inputs, labels)`` of one batch."""
    if not isinstance(batch, (tuple, list)) or len(batch) < 2:
        raise ArgumentValueError(
            f"each batch of `{name}` must be a tuple or list (model inputs..., labels); "
            f"got {type(batch).__name__}"
        )
    return tuple(batch[:-1]), batch[-1]


def train_loader(train_dataset: Any, batch_size: Any) -> DataLoader:
    """Captum's rule: a Dataset is batched in order with ``batch_size``."""
    if isinstance(train_dataset, DataLoader):
        return train_dataset
    if not isinstance(train_dataset, Dataset):
        raise ArgumentTypeError(
            f"`train_dataset` must be a torch Dataset or DataLoader, got "
            f"{type(train_dataset).__name__}"
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ArgumentValueError(
            "since `train_dataset` is a Dataset, `batch_size` must be a positive int, "
            f"got {batch_size!r}"
        )
    return DataLoader(train_dataset, batch_size, shuffle=False)


def progress(iterable: Iterable, show: bool, desc: str, total: int | None = None) -> Iterable:
    """Wrap ``iterable`` in a tqdm bar when ``show``."""
    if not show:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total)


class ProgressBar:
    """A tqdm bar shown only when asked, updated by hand (``update``) and closed at the end."""

    def __init__(self, show: bool, desc: str, total: int | None) -> None:
        if show:
            from tqdm.auto import tqdm

            self._bar = tqdm(desc=desc, total=total)
        else:
            self._bar = None

    def update(self) -> None:
        if self._bar is not None:
            self._bar.update()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def loader_len(loader: Any) -> int | None:
    try:
        return len(loader)
    except TypeError:
        return None


# --- checkpoints -----------------------------------------------------------


def _natural_key(path: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split("([0-9]+)", path)]


def resolve_checkpoints(checkpoints: Any) -> list[Any]:
    """A folder (every file in it), a list of paths, or any iterable; paths in natural order."""
    if isinstance(checkpoints, (str, os.PathLike)):
        found = sorted(glob.glob(os.path.join(os.fspath(checkpoints), "*")), key=_natural_key)
    elif isinstance(checkpoints, list) and checkpoints and isinstance(checkpoints[0], str):
        found = sorted(checkpoints, key=_natural_key)
    else:
        try:
            found = list(checkpoints)
        except TypeError:
            raise ArgumentTypeError(
                "`checkpoints` must be a folder, a list of paths or an iterable of "
                f"checkpoints, got {type(checkpoints).__name__}"
            ) from None
    if not found:
        # Captum's wording first: code written for it matches that phrase
        raise ArgumentValueError(
            f"Invalid checkpoints provided for TracIn class: `checkpoints` holds no checkpoint: {checkpoints!r}"
        )
    if any(c is None for c in found):
        raise ArgumentValueError("`checkpoints` contains None; every checkpoint must be loadable")
    return found


def load_flexible_state_dict(model: nn.Module, path: str) -> float:
    """Load the state dict saved at ``path`` into ``model``; return its learning rate.

    The file may hold a ``"learning_rate"`` entry (default 1.0) and keys with
    or without a ``DataParallel`` ``"module."`` prefix.

    Example:
        >>> import os, tempfile, torch
        >>> from attribuo.influence.base import load_flexible_state_dict
        >>> m = torch.nn.Linear(2, 1)
        >>> path = os.path.join(tempfile.mkdtemp(), "c.pt")
        >>> torch.save({**m.state_dict(), "learning_rate": 0.5}, path)
        >>> load_flexible_state_dict(m, path)
        0.5
    """
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    state = dict(torch.load(path, map_location=device))
    learning_rate = state.pop("learning_rate", 1.0)
    target = model.module if isinstance(model, nn.DataParallel) else model
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    target.load_state_dict(state)
    return float(learning_rate)


def load_checkpoint(instance: Any, checkpoint: Any) -> float:
    learning_rate = instance.checkpoints_load_func(instance.model, checkpoint)
    if isinstance(learning_rate, Tensor):
        return learning_rate
    if not isinstance(learning_rate, (int, float)):
        raise ArgumentTypeError(
            "`checkpoints_load_func` must return the learning rate (a number), got "
            f"{type(learning_rate).__name__}"
        )
    return float(learning_rate)


# --- losses and modules ----------------------------------------------------


def check_loss_fn(loss_fn: Any, name: str, per_batch: bool) -> str:
    """Captum's reduction rule for ``loss_fn``; returns ``"none"``, ``"sum"`` or ``"mean"``.

    ``per_batch`` loss functions (TracInCPFast, TracInCP with
    ``sample_wise_grads_per_batch``) must reduce by sum or mean; the others
    must return one loss per example (``reduction="none"``).
    """
    if loss_fn is None:
        return "sum"
    if not callable(loss_fn):
        raise ArgumentTypeError(f"`{name}` must be callable, got {type(loss_fn).__name__}")
    if not hasattr(loss_fn, "reduction"):
        # Without the attribute Captum assumes a summing (per batch) or
        # per-example loss; our per-example evaluation needs neither.
        return "sum" if per_batch else "none"
    reduction = loss_fn.reduction
    if per_batch and reduction not in ("sum", "mean"):
        raise ArgumentValueError(
            f'`{name}.reduction` must be "sum" or "mean" here (gradients are taken of the '
            f"loss of a whole batch), got {reduction!r}"
        )
    if not per_batch and reduction != "none":
        raise ArgumentValueError(
            f'`{name}.reduction` must be "none" when `sample_wise_grads_per_batch` is False '
            f"(one loss per example is needed), got {reduction!r}"
        )
    return str(reduction)


def loss_reductions(loss_fn: Any, test_loss_fn: Any, per_batch: bool) -> tuple[str, str]:
    """``check_loss_fn`` for ``loss_fn`` and ``test_loss_fn`` (which defaults to ``loss_fn``)."""
    reduction = check_loss_fn(loss_fn, "loss_fn", per_batch)
    if test_loss_fn is None:
        return reduction, reduction
    return reduction, check_loss_fn(test_loss_fn, "test_loss_fn", per_batch)


def check_model(model: Any, checkpoints_load_func: Any) -> None:
    """The two arguments every checkpoint-based influence method starts from."""
    if not isinstance(model, nn.Module):
        raise ArgumentTypeError(f"`model` must be a torch.nn.Module, got {type(model).__name__}")
    if not callable(checkpoints_load_func):
        raise ArgumentTypeError("`checkpoints_load_func` must be callable")


def module_by_name(model: nn.Module, name: str, arg: str) -> nn.Module:
    """The submodule called ``name`` (dotted path), or an error naming ``arg``."""
    try:
        module = model.get_submodule(name)
    except AttributeError:
        raise ArgumentValueError(f"`{arg}`: the model has no module named {name!r}") from None
    return module


def batch_loss(loss_fn: Any, output: Tensor, labels: Any, reduction: str) -> Tensor:
    """Sum of the per-example losses of one batch, whatever ``loss_fn`` reduces by."""
    if loss_fn is None:
        return output.sum()
    loss = loss_fn(output, labels)
    if reduction == "mean":
        loss = loss * output.shape[0]
    return loss.sum()


def check_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ArgumentValueError(f"`k` must be a positive int or None, got {k!r}")
    return k


def top_k(scores: Tensor, k: int, proponents: bool) -> KMostInfluentialResults:
    """Per row, the ``k`` largest (proponents) or smallest (opponents) scores."""
    k = min(k, scores.shape[1])
    values, indices = torch.topk(scores, k, dim=1, largest=bool(proponents))
    return KMostInfluentialResults(indices, values)


def iterate(loader: Iterable, name: str) -> Iterator[tuple[tuple[Any, ...], Any]]:
    for batch in loader:
        yield split_batch(batch, name)
