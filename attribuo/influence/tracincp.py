"""TracIn with checkpoints (Pruthi et al., 2020): TracInCPBase and TracInCP.

The influence of training example ``z`` on test example ``z'`` is
``sum_c lr_c * <grad L(z'; w_c), grad L(z; w_c)>`` over the saved
checkpoints ``w_c``. Each checkpoint is loaded once per call; per-example
gradients come from one vectorised call per batch, and scores of a whole
training batch from one matrix product.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from .._engine.errors import ArgumentValueError
from .base import (
    DataInfluence,
    KMostInfluentialResults,
    ProgressBar,
    as_batches,
    check_k,
    check_model,
    iterate,
    load_checkpoint,
    load_flexible_state_dict,
    loader_len,
    loss_reductions,
    resolve_checkpoints,
    top_k,
    train_loader,
)
from .gradients import chosen_parameters, per_example_gradients


class TracInCPBase(DataInfluence):
    """Base of the TracIn family: checkpoints, loss functions and the training loader.

    ``checkpoints`` is a folder (every file in it, in natural order), a list
    of paths or any iterable of objects ``checkpoints_load_func(model, c)``
    understands; that function loads ``c`` into the model and returns the
    learning rate used at that checkpoint.

    Example:
        >>> from attribuo.influence import TracInCP, TracInCPBase
        >>> TracInCP.get_name(), issubclass(TracInCP, TracInCPBase)
        ('TracInCP', True)
    """

    def __init__(
        self,
        model: nn.Module,
        train_dataset: Dataset | DataLoader,
        checkpoints: str | list[str] | Iterator,
        checkpoints_load_func: Callable[[nn.Module, Any], float] = load_flexible_state_dict,
        loss_fn: Callable | nn.Module | None = None,
        batch_size: int | None = 1,
        test_loss_fn: Callable | nn.Module | None = None,
    ) -> None:
        check_model(model, checkpoints_load_func)
        self.model = model
        self.checkpoints = checkpoints
        self.checkpoints_load_func = checkpoints_load_func
        self.loss_fn = loss_fn
        self.test_loss_fn = loss_fn if test_loss_fn is None else test_loss_fn
        self.batch_size = batch_size
        self.train_dataset = train_dataset
        self.train_dataloader = train_loader(train_dataset, batch_size)
        self.train_dataloader_len = loader_len(self.train_dataloader)

    @property
    def checkpoints(self) -> list[Any]:
        return self._checkpoints

    @checkpoints.setter
    def checkpoints(self, checkpoints: Any) -> None:
        self._checkpoints = resolve_checkpoints(checkpoints)

    @abstractmethod
    def self_influence(self, inputs: Any = None, show_progress: bool = False) -> Tensor:
        """Influence of each example on itself."""

    @abstractmethod
    def influence(
        self, inputs: Any, k: int | None = None, proponents: bool = True, unpack_inputs: bool = True,
        show_progress: bool = False,
    ) -> Tensor | KMostInfluentialResults:
        """Scores of every training example, or the top ``k``, for each example of ``inputs``."""

    # -- the shared driver ----------------------------------------------

    def _quantities(self, batch_inputs: Any, loss_fn: Any, reduction: str, name: str) -> Any:
        """Per-example quantities of one batch whose pairwise products give scores."""
        raise NotImplementedError

    @staticmethod
    def _pair_scores(test_q: Any, train_q: Any) -> Tensor:
        raise NotImplementedError

    @staticmethod
    def _self_scores(q: Any) -> Tensor:
        raise NotImplementedError

    @staticmethod
    def _aggregate(qs: list[Any]) -> Any:
        raise NotImplementedError

    def _test_quantities(self, inputs: Any, aggregate: bool = False) -> Any:
        qs = [
            self._quantities(feats, labels, self.test_loss_fn, self.test_reduction_type)
            for feats, labels in iterate(as_batches(inputs), "inputs")
        ]
        if aggregate:
            return self._aggregate(qs)
        return tuple(torch.cat(parts) for parts in zip(*qs)) if isinstance(qs[0], tuple) else torch.cat(qs)

    def _scores(self, inputs: Any, show_progress: bool, aggregate: bool = False, task: str | None = None) -> Tensor:
        """``(n_test, n_train)`` matrix summed over checkpoints, each loaded once.

        Progress is one bar over the training batches (times the checkpoints:
        they are the outer loop here), with Captum's description.
        """
        if inputs is None:
            raise ArgumentValueError(
                "`inputs` is required; for self influence scores use `self_influence`"
            )
        as_batches(inputs)  # validate before any checkpoint is loaded
        desc = f"Using {self.get_name()} to " + (
            f"perform computation for getting {task}. Processing training batches" if task
            else "compute influence for training batches"
        )
        bar = ProgressBar(show_progress, desc, _total(self.train_dataloader_len, self.checkpoints))
        total = None
        try:
            for checkpoint in self.checkpoints:
                lr = load_checkpoint(self, checkpoint)
                test_q = self._test_quantities(inputs, aggregate)
                cols = []
                for f, y in iterate(self.train_dataloader, "train_dataset"):
                    cols.append(self._pair_scores(test_q, self._quantities(f, y, self.loss_fn, self.reduction_type)))
                    bar.update()
                scores = torch.cat(cols, dim=1) * lr
                total = scores if total is None else total + scores
        finally:
            bar.close()
        return total

    def _route(self, inputs: Any, k: int | None, proponents: bool, show_progress: bool, **kw: Any):
        if k is not None:
            check_k(k)
        task = None if k is None else ("proponents" if proponents else "opponents")
        scores = self._scores(inputs, show_progress, task=task, **kw)
        return scores if k is None else top_k(scores, k, proponents)

    def _self_influence(self, inputs: Any, show_progress: bool, outer_loop_by_checkpoints: bool = False) -> Tensor:
        """Self influence summed over checkpoints, each loaded once.

        Progress follows Captum's bars: with ``outer_loop_by_checkpoints`` one
        over checkpoints and one over batches per checkpoint, else a single
        one over batches.
        """
        loader = self.train_dataloader if inputs is None else as_batches(inputs)
        prefix = f"Using {self.get_name()} to compute self influence. Processing"
        outer = ProgressBar(show_progress and outer_loop_by_checkpoints, f"{prefix} checkpoint", len(self.checkpoints))
        single = ProgressBar(
            show_progress and not outer_loop_by_checkpoints, f"{prefix} batch",
            _total(loader_len(loader), self.checkpoints),
        )
        total = None
        try:
            for checkpoint in self.checkpoints:
                lr = load_checkpoint(self, checkpoint)
                inner = ProgressBar(show_progress and outer_loop_by_checkpoints, f"{prefix} batch", loader_len(loader))
                parts = []
                for f, y in iterate(loader, "inputs"):
                    parts.append(self._self_scores(self._quantities(f, y, self.loss_fn, self.reduction_type)))
                    inner.update()
                    single.update()
                inner.close()
                outer.update()
                scores = torch.cat(parts) * lr
                total = scores if total is None else total + scores
        finally:
            outer.close()
            single.close()
        return total


def _total(batches: int | None, checkpoints: Any) -> int | None:
    return None if batches is None else batches * len(checkpoints)


class TracInCP(TracInCPBase):
    """TracIn influence from per-example gradients of all (or some) parameters.

    ``layers`` (module names) restricts the gradients to those modules'
    parameters. ``loss_fn`` gives one loss per example
    (``reduction="none"``) unless ``sample_wise_grads_per_batch=True``, where
    it reduces by ``"sum"`` or ``"mean"``, as in Captum; gradients are the
    same either way. With ``loss_fn=None`` the summed model output is
    differentiated. Unlike Captum's sample-wise trick, which only sees
    ``Linear`` and ``Conv2d`` layers, every chosen parameter counts.

    Example:
        >>> import os, tempfile, torch
        >>> from torch.utils.data import TensorDataset
        >>> from attribuo.influence import TracInCP
        >>> model = torch.nn.Linear(3, 2)
        >>> folder = tempfile.mkdtemp()
        >>> torch.save(model.state_dict(), os.path.join(folder, "ckpt-1.pt"))
        >>> train = TensorDataset(torch.randn(10, 3), torch.randint(0, 2, (10,)))
        >>> loss = torch.nn.CrossEntropyLoss(reduction="none")
        >>> tracin = TracInCP(model, train, folder, loss_fn=loss, batch_size=4)
        >>> tracin.influence((torch.randn(2, 3), torch.tensor([0, 1]))).shape
        torch.Size([2, 10])
        >>> tracin.influence((torch.randn(2, 3), torch.tensor([0, 1])), k=3).indices.shape
        torch.Size([2, 3])
    """

    def __init__(
        self,
        model: nn.Module,
        train_dataset: Dataset | DataLoader,
        checkpoints: str | list[str] | Iterator,
        checkpoints_load_func: Callable[[nn.Module, Any], float] = load_flexible_state_dict,
        layers: list[str] | None = None,
        loss_fn: Callable | nn.Module | None = None,
        batch_size: int | None = 1,
        test_loss_fn: Callable | nn.Module | None = None,
        sample_wise_grads_per_batch: bool = False,
    ) -> None:
        super().__init__(
            model, train_dataset, checkpoints, checkpoints_load_func, loss_fn, batch_size, test_loss_fn
        )
        self.sample_wise_grads_per_batch = sample_wise_grads_per_batch
        self.reduction_type, self.test_reduction_type = loss_reductions(
            loss_fn, test_loss_fn, sample_wise_grads_per_batch
        )
        self._params, self.layer_modules = chosen_parameters(model, layers)
        self.layers = layers

    def influence(
        self,
        inputs: Any,
        k: int | None = None,
        proponents: bool = True,
        show_progress: bool = False,
        aggregate: bool = False,
    ) -> Tensor | KMostInfluentialResults:
        """Influence scores ``(n_inputs, n_train)``, or the top ``k`` as ``(indices, scores)``.

        ``inputs`` is a batch ``(model inputs..., labels)`` or a DataLoader of
        batches. ``proponents=False`` gives the ``k`` most negative scores.
        With ``aggregate=True`` test gradients are summed first: one row.
        """
        return self._route(inputs, k, proponents, show_progress, aggregate=aggregate)

    def self_influence(
        self,
        inputs: Any = None,
        show_progress: bool = False,
        outer_loop_by_checkpoints: bool = False,
    ) -> Tensor:
        """``sum_c lr_c * |grad L(z; w_c)|^2`` for every example (default: the training set).

        Checkpoints are always the outer loop here, which loads each once;
        ``outer_loop_by_checkpoints`` chooses which of Captum's progress bars
        ``show_progress`` shows.
        """
        return self._self_influence(inputs, show_progress, outer_loop_by_checkpoints)

    def compute_intermediate_quantities(self, inputs: Any, aggregate: bool = False) -> Tensor:
        """Per example, ``lr_c * grad L(z; w_c)`` flattened and joined over checkpoints."""
        blocks = []
        for checkpoint in self.checkpoints:
            lr = load_checkpoint(self, checkpoint)
            blocks.append(self._test_quantities_with(inputs, aggregate, self.loss_fn, self.reduction_type) * lr)
        return torch.cat(blocks, dim=1)

    def _test_quantities_with(self, inputs: Any, aggregate: bool, loss_fn: Any, reduction: str) -> Tensor:
        qs = [self._quantities(f, y, loss_fn, reduction) for f, y in iterate(as_batches(inputs), "inputs")]
        return self._aggregate(qs) if aggregate else torch.cat(qs)

    def _quantities(self, features: Any, labels: Any, loss_fn: Any, reduction: str) -> Tensor:
        return per_example_gradients(self.model, self._params, features, labels, loss_fn, reduction)

    @staticmethod
    def _pair_scores(test_q: Tensor, train_q: Tensor) -> Tensor:
        return test_q @ train_q.T

    @staticmethod
    def _self_scores(q: Tensor) -> Tensor:
        return (q * q).sum(dim=1)

    @staticmethod
    def _aggregate(qs: list[Tensor]) -> Tensor:
        return torch.stack([q.sum(dim=0) for q in qs]).sum(dim=0, keepdim=True)
