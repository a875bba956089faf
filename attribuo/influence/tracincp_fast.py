"""TracIn restricted to the last fully-connected layer: TracInCPFast and TracInCPFastRandProj.

For a linear layer ``y = W a + b`` the per-example gradient of the loss with
respect to ``W`` is the outer product ``g a^T`` of the gradient ``g`` at the
layer's output and its input ``a``, so the gradient dot product of two
examples factorises: ``<g a^T, g' a'^T> = (g . g') (a . a')``. One forward
and one backward (from the loss to the layer output only) per batch give
every score; the bias gradient is left out, as in Captum.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from .._engine.errors import ArgumentTypeError, ArgumentValueError
from .._engine.hooks import forward_hooks
from .base import (
    KMostInfluentialResults,
    as_batches,
    batch_loss,
    check_k,
    iterate,
    load_checkpoint,
    load_flexible_state_dict,
    loss_reductions,
    module_by_name,
)
from .tracincp import TracInCPBase


def layer_input_and_output_grad(
    model: nn.Module, layer: nn.Module, features: tuple[Any, ...], labels: Any, loss_fn: Any, reduction: str
) -> tuple[Tensor, Tensor]:
    """``(g, a)``: per-example loss gradient at ``layer``'s output and ``layer``'s input."""
    seen: dict[str, Tensor] = {}

    def hook(module: nn.Module, args: tuple, output: Tensor) -> Tensor:
        if "out" in seen:
            raise ArgumentValueError("`final_fc_layer` runs more than once in one forward pass")
        if not args or not isinstance(args[0], Tensor) or not isinstance(output, Tensor):
            raise ArgumentValueError("`final_fc_layer` must take and return tensors")
        seen["in"] = args[0].detach()
        # A fresh leaf: the backward stops here instead of running through the model.
        seen["out"] = output.detach().requires_grad_(True)
        return seen["out"]

    with torch.enable_grad(), forward_hooks([(layer, hook)]):
        out = model(*features)
    if "out" not in seen:
        raise ArgumentValueError("`final_fc_layer` was not called by the model's forward")
    act, leaf = seen["in"], seen["out"]
    if act.dim() != 2 or leaf.dim() != 2:
        raise ArgumentValueError(
            "`final_fc_layer` must map (batch, in_features) to (batch, out_features); got input "
            f"{tuple(act.shape)} and output {tuple(leaf.shape)}"
        )
    with torch.enable_grad():
        loss = batch_loss(loss_fn, out, labels, reduction)
        (g,) = torch.autograd.grad(loss, leaf, allow_unused=True)
    if g is None:
        g = torch.zeros_like(leaf)
    return g, act


class TracInCPFast(TracInCPBase):
    """TracIn over the weights of ``final_fc_layer`` only, in closed form.

    ``final_fc_layer`` is a module (or its name) whose input is
    ``(batch, in_features)`` and output ``(batch, out_features)``.
    ``loss_fn`` must reduce by ``"sum"`` or ``"mean"`` (per-example losses
    are recovered from it as in Captum). ``vectorize`` is accepted for
    Captum compatibility and has no effect.

    Example:
        >>> import torch
        >>> from torch.utils.data import TensorDataset
        >>> from attribuo.influence import TracInCPFast
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
        >>> train = TensorDataset(torch.randn(8, 4), torch.randint(0, 2, (8,)))
        >>> def load(model, state):  # a checkpoint here is a state dict; learning rate 1
        ...     model.load_state_dict(state)
        ...     return 1.0
        >>> tracin = TracInCPFast(model, "2", train, [model.state_dict()],
        ...     checkpoints_load_func=load,
        ...     loss_fn=torch.nn.CrossEntropyLoss(reduction="sum"), batch_size=4)
        >>> tracin.self_influence().shape
        torch.Size([8])
    """

    def __init__(
        self,
        model: nn.Module,
        final_fc_layer: nn.Module | str,
        train_dataset: Dataset | DataLoader,
        checkpoints: str | list[str] | Iterator,
        checkpoints_load_func: Callable = load_flexible_state_dict,
        loss_fn: Callable | nn.Module | None = None,
        batch_size: int | None = 1,
        test_loss_fn: Callable | nn.Module | None = None,
        vectorize: bool = False,
    ) -> None:
        super().__init__(
            model, train_dataset, checkpoints, checkpoints_load_func, loss_fn, batch_size, test_loss_fn
        )
        self.vectorize = vectorize
        self.final_fc_layer = final_fc_layer
        if loss_fn is None:
            raise ArgumentValueError("`loss_fn` must not be None for TracInCPFast")
        self.reduction_type, self.test_reduction_type = loss_reductions(loss_fn, test_loss_fn, True)

    @property
    def final_fc_layer(self) -> nn.Module:
        return self._final_fc_layer

    @final_fc_layer.setter
    def final_fc_layer(self, layer: nn.Module | str) -> None:
        if isinstance(layer, str):
            try:
                layer = module_by_name(self.model, layer, "final_fc_layer")
            except ArgumentValueError as error:  # Captum's wording first, for code that matches it
                raise ArgumentValueError(f'Invalid final_fc_layer str: "{layer}" provided! {error}') from None
        if not isinstance(layer, nn.Module):
            raise ArgumentTypeError(
                f"`final_fc_layer` must be a module or a module name, got {type(layer).__name__}"
            )
        self._final_fc_layer = layer

    def influence(
        self, inputs: Any, k: int | None = None, proponents: bool = True, show_progress: bool = False
    ) -> Tensor | KMostInfluentialResults:
        """Influence scores ``(n_inputs, n_train)``, or the top ``k`` as ``(indices, scores)``."""
        return self._route(inputs, k, proponents, show_progress)

    def self_influence(
        self, inputs: Any = None, show_progress: bool = False, outer_loop_by_checkpoints: bool = False
    ) -> Tensor:
        """``sum_c lr_c |g|^2 |a|^2`` per example (default: the training set)."""
        return self._self_influence(inputs, show_progress, outer_loop_by_checkpoints)

    def _quantities(self, features: Any, labels: Any, loss_fn: Any, reduction: str) -> tuple[Tensor, Tensor]:
        return layer_input_and_output_grad(self.model, self.final_fc_layer, features, labels, loss_fn, reduction)

    @staticmethod
    def _pair_scores(test_q: tuple[Tensor, Tensor], train_q: tuple[Tensor, Tensor]) -> Tensor:
        return (test_q[0] @ train_q[0].T) * (test_q[1] @ train_q[1].T)

    @staticmethod
    def _self_scores(q: tuple[Tensor, Tensor]) -> Tensor:
        return (q[0] * q[0]).sum(1) * (q[1] * q[1]).sum(1)


class NearestNeighbors(ABC):
    """Index over training quantities answering maximum-inner-product queries.

    ``setup(data)`` indexes the rows of ``data``;
    ``get_nearest_neighbors(query, k)`` returns ``(indices, scores)``, each
    ``(n_query, k)``, the ``k`` rows with the largest dot product, best first.
    """

    @abstractmethod
    def setup(self, data: Tensor) -> None:
        """Index the rows of ``data``."""

    @abstractmethod
    def get_nearest_neighbors(self, query: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """The ``k`` indexed rows with the largest dot product with each query row."""


class ExactNearestNeighbors(NearestNeighbors):
    """Exact maximum-inner-product search by one matrix product (the default).

    Example:
        >>> import torch
        >>> from attribuo.influence import ExactNearestNeighbors
        >>> nn_index = ExactNearestNeighbors()
        >>> nn_index.setup(torch.eye(3))
        >>> nn_index.get_nearest_neighbors(torch.tensor([[0.0, 2.0, 1.0]]), 2)[0]
        tensor([[1, 2]])
    """

    def setup(self, data: Tensor) -> None:
        self.data = data.reshape(len(data), -1)

    def get_nearest_neighbors(self, query: Tensor, k: int) -> tuple[Tensor, Tensor]:
        scores = query.reshape(len(query), -1) @ self.data.T
        values, indices = torch.topk(scores, min(k, scores.shape[1]), dim=1)
        return indices, values


class TracInCPFastRandProj(TracInCPFast):
    """TracInCPFast with training quantities stored (optionally randomly projected) up front.

    The training set's per-checkpoint gradients ``sqrt(lr) g a^T`` are kept
    in memory (projected to about ``projection_dim`` numbers per checkpoint
    when given), so each ``influence`` call costs only the test examples'
    quantities and a nearest-neighbour search. ``nearest_neighbors``
    defaults to :class:`ExactNearestNeighbors` (Captum defaults to an
    approximate Annoy index). The projection matrices are drawn exactly as
    Captum draws them with ``seed``, without reseeding the global RNG.

    Example:
        >>> import os, tempfile, torch
        >>> from torch.utils.data import TensorDataset
        >>> from attribuo.influence import TracInCPFastRandProj
        >>> model = torch.nn.Linear(4, 3)  # a model that is its own final layer
        >>> ckpt = os.path.join(tempfile.mkdtemp(), "ckpt.pt")
        >>> torch.save(model.state_dict(), ckpt)
        >>> data = TensorDataset(torch.randn(8, 4), torch.randint(0, 3, (8,)))
        >>> tracin = TracInCPFastRandProj(model, model, data, [ckpt], batch_size=4,
        ...     loss_fn=torch.nn.CrossEntropyLoss(reduction="sum"), projection_dim=4)
        >>> tracin.influence((torch.randn(2, 4), torch.tensor([0, 2])), k=3).indices.shape
        torch.Size([2, 3])
    """

    def __init__(
        self,
        model: nn.Module,
        final_fc_layer: nn.Module | str,
        train_dataset: Dataset | DataLoader,
        checkpoints: str | list[str] | Iterator,
        checkpoints_load_func: Callable = load_flexible_state_dict,
        loss_fn: Callable | nn.Module | None = None,
        batch_size: int | None = 1,
        test_loss_fn: Callable | nn.Module | None = None,
        vectorize: bool = False,
        nearest_neighbors: NearestNeighbors | None = None,
        projection_dim: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(
            model, final_fc_layer, train_dataset, checkpoints, checkpoints_load_func,
            loss_fn, batch_size, test_loss_fn, vectorize,
        )
        if projection_dim is not None and (
            isinstance(projection_dim, bool) or not isinstance(projection_dim, int) or projection_dim < 1
        ):
            raise ArgumentValueError(f"`projection_dim` must be a positive int or None, got {projection_dim!r}")
        self.nearest_neighbors = ExactNearestNeighbors() if nearest_neighbors is None else nearest_neighbors
        self.projection_dim = projection_dim
        self.seed = seed
        self.projection_quantities = self._draw_projections()
        self.src_intermediate_quantities = self._intermediate(self.train_dataloader, self.loss_fn, self.reduction_type)
        self.nearest_neighbors.setup(self.src_intermediate_quantities)

    def _draw_projections(self) -> tuple[Tensor, Tensor] | None:
        if self.projection_dim is None:
            return None
        # Captum seeds the global RNG, then takes the first training batch
        # (a DataLoader iterator draws its base seed) and draws two normal
        # matrices; the same sequence runs here inside a forked RNG state.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            load_checkpoint(self, self.checkpoints[0])
            feats, labels = next(iterate(self.train_dataloader, "train_dataset"))
            g, a = self._quantities(feats, labels, self.loss_fn, self.reduction_type)
            g_dim, a_dim = g.shape[1], a.shape[1]
            if g_dim * a_dim <= self.projection_dim:
                return None
            side = int(self.projection_dim**0.5)
            g_proj_dim, a_proj_dim = min(side, g_dim), min(side, a_dim)
            g_proj = torch.normal(torch.zeros(g_dim, g_proj_dim), 1.0 / g_proj_dim**0.5)
            a_proj = torch.normal(torch.zeros(a_dim, a_proj_dim), 1.0 / a_proj_dim**0.5)
        return g_proj.to(g.device, g.dtype), a_proj.to(a.device, a.dtype)

    def _intermediate(self, inputs: Any, loss_fn: Any, reduction: str) -> Tensor:
        loader = as_batches(inputs)
        blocks = []
        for checkpoint in self.checkpoints:
            root_lr = load_checkpoint(self, checkpoint) ** 0.5
            rows = []
            for feats, labels in iterate(loader, "inputs"):
                g, a = self._quantities(feats, labels, loss_fn, reduction)
                if self.projection_quantities is not None:
                    g, a = g @ self.projection_quantities[0], a @ self.projection_quantities[1]
                rows.append((g[:, :, None] * a[:, None, :]).flatten(1) * root_lr)
            blocks.append(torch.cat(rows))
        return torch.cat(blocks, dim=1)

    def compute_intermediate_quantities(self, inputs: Any) -> Tensor:
        """Per example, ``sqrt(lr_c) g a^T`` (projected), flattened and joined over checkpoints."""
        return self._intermediate(inputs, self.loss_fn, self.reduction_type)

    def influence(  # type: ignore[override]
        self, inputs: Any = None, k: int | None = 5, proponents: bool = True
    ) -> Tensor | KMostInfluentialResults:
        """Scores ``(n_inputs, n_train)`` with ``k=None``, else the top ``k`` (default 5)."""
        if inputs is None:
            raise ArgumentValueError("`inputs` is required; TracInCPFastRandProj has no self influence")
        test = self._intermediate(inputs, self.test_loss_fn, self.test_reduction_type)
        if k is None:
            return test @ self.src_intermediate_quantities.T
        check_k(k)
        sign = 1.0 if proponents else -1.0
        indices, scores = self.nearest_neighbors.get_nearest_neighbors(test * sign, k)
        return KMostInfluentialResults(indices, scores * sign)

    def self_influence(
        self, inputs: Any = None, show_progress: bool = False, outer_loop_by_checkpoints: bool = False
    ) -> Tensor:
        """Not supported (as in Captum): use :class:`TracInCPFast`, which is exact and as cheap."""
        raise NotImplementedError(
            "TracInCPFastRandProj does not compute self influence; use TracInCPFast instead"
        )
