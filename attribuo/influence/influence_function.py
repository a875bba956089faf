"""Influence functions (Koh & Liang, 2017) through a low-rank inverse Hessian.

The influence of training example ``z`` on test example ``x`` is, as Captum
defines it, ``grad L(x)^T H^-1 grad L(z)`` with ``H`` the Hessian of the
*summed* training loss over the chosen parameters (at one checkpoint), and
with a plus sign (no ``-`` in front). ``H^-1`` is replaced by ``R R^T`` where
``R = V diag(lambda)^(-1/2)`` holds the top ``projection_dim`` eigenpairs of
``H + hessian_reg * I`` whose eigenvalue exceeds ``hessian_inverse_tol``. A
score is then the dot product of two *influence embeddings* ``grad L^T R``.

* :class:`NaiveInfluenceFunction` forms ``H`` exactly (``torch.func.hessian``
  over the flattened parameters, summed over the Hessian batches) and takes its
  eigenpairs: the reference for small models.
* :class:`~attribuo.influence.ArnoldiInfluenceFunction` (``arnoldi.py``)
  finds the top eigenpairs from Hessian-vector products only.

Both share everything else: the per-example gradients
(:func:`~attribuo.influence.gradients.per_example_gradients`), the embeddings
and the score routes (:class:`IntermediateQuantitiesInfluenceFunction`).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch.utils.data import DataLoader, Dataset

from .._engine.errors import ArgumentValueError
from .._engine.inputs import positive_int
from .base import (
    DataInfluence,
    KMostInfluentialResults,
    as_batches,
    batch_loss,
    check_k,
    check_model,
    iterate,
    load_flexible_state_dict,
    loader_len,
    loss_reductions,
    progress,
    top_k,
    train_loader,
)
from .gradients import chosen_parameters, per_example_gradients


class InfluenceFunctionBase(DataInfluence):
    """Base of the influence-function methods: one checkpoint, losses and loaders.

    ``checkpoint`` is loaded once, at construction, with
    ``checkpoints_load_func(model, checkpoint)``. ``hessian_dataset`` (default:
    ``train_dataset``) is the data whose summed loss defines the Hessian.
    ``layers`` restricts gradients and Hessian to those modules' parameters.

    Example:
        >>> from attribuo.influence import InfluenceFunctionBase, NaiveInfluenceFunction
        >>> issubclass(NaiveInfluenceFunction, InfluenceFunctionBase)
        True
    """

    def __init__(
        self,
        model: nn.Module,
        train_dataset: Dataset | DataLoader,
        checkpoint: Any,
        checkpoints_load_func: Callable[[nn.Module, Any], Any] = load_flexible_state_dict,
        layers: list[str] | None = None,
        loss_fn: Callable | nn.Module | None = None,
        batch_size: int | None = 1,
        hessian_dataset: Dataset | DataLoader | None = None,
        test_loss_fn: Callable | nn.Module | None = None,
        sample_wise_grads_per_batch: bool = False,
    ) -> None:
        check_model(model, checkpoints_load_func)
        self.model = model
        self.checkpoint = checkpoint
        self.checkpoints_load_func = checkpoints_load_func
        checkpoints_load_func(model, checkpoint)  # the learning rate it returns plays no part
        self.loss_fn = loss_fn
        self.test_loss_fn = loss_fn if test_loss_fn is None else test_loss_fn
        self.sample_wise_grads_per_batch = sample_wise_grads_per_batch
        self.batch_size = batch_size
        self.reduction_type, self.test_reduction_type = loss_reductions(
            loss_fn, test_loss_fn, sample_wise_grads_per_batch
        )
        self.train_dataset = train_dataset
        self.train_dataloader = train_loader(train_dataset, batch_size)
        self.hessian_dataloader = (
            self.train_dataloader if hessian_dataset is None else train_loader(hessian_dataset, batch_size)
        )
        self._params, self.layer_modules = chosen_parameters(model, layers)
        self.layers = layers
        self.model_device = next(iter(self._params.values())).device

    @abstractmethod
    def influence(
        self, inputs: Any, k: int | None = None, proponents: bool = True, show_progress: bool = False
    ) -> Tensor | KMostInfluentialResults:
        """Scores of every training example, or the top ``k``, for each example of ``inputs``."""

    @abstractmethod
    def self_influence(self, inputs_dataset: Any = None, show_progress: bool = False) -> Tensor:
        """Influence of each example on itself."""


class IntermediateQuantitiesInfluenceFunction(InfluenceFunctionBase):
    """Influence functions whose scores are dot products of per-example embeddings.

    A subclass sets ``self.R`` (``[n_params, projection_dim]``, with
    ``R R^T`` approximating the inverse Hessian); the embedding of an example
    is its flattened loss gradient times ``R``.

    Example:
        >>> from attribuo.influence import IntermediateQuantitiesInfluenceFunction as IQ
        >>> from attribuo.influence import ArnoldiInfluenceFunction
        >>> issubclass(ArnoldiInfluenceFunction, IQ)
        True
    """

    R: Tensor

    def _hessian_options(
        self, projection_dim: Any, seed: int, hessian_reg: float, hessian_inverse_tol: float
    ) -> FlatLoss:
        """Stores the options both subclasses share; returns the loss to take the Hessian of."""
        self.projection_dim = check_projection_dim(projection_dim)
        self.seed = seed
        self.hessian_reg = hessian_reg
        self.hessian_inverse_tol = hessian_inverse_tol
        return FlatLoss(self.model, self._params, self.loss_fn, self.reduction_type)

    def _set_projection(self, H: Tensor, basis: Tensor | None, what: str, on_cpu: bool) -> None:
        """``self.R`` from the top eigenpairs of ``H`` (in the coordinates of ``basis``'s rows)."""
        ls, vs = top_eigen(H, self.projection_dim, self.hessian_reg, self.hessian_inverse_tol)
        R = inverse_sqrt_projection(ls, vs if basis is None else basis.T @ vs, what)
        self.R = R.cpu() if on_cpu else R

    def compute_intermediate_quantities(
        self,
        inputs_dataset: Any,
        aggregate: bool = False,
        show_progress: bool = False,
        return_on_cpu: bool = True,
        test: bool = False,
    ) -> Tensor:
        """Influence embeddings ``(n_examples, projection_dim)``: ``grad L(x)^T R``.

        ``inputs_dataset`` is a batch ``(model inputs..., labels)`` or a
        DataLoader of batches. ``aggregate=True`` sums the embeddings of all
        examples (one row). ``test=True`` uses ``test_loss_fn``.
        ``return_on_cpu=False`` leaves them on the model's device.
        """
        loss_fn = self.test_loss_fn if test else self.loss_fn
        reduction = self.test_reduction_type if test else self.reduction_type
        loader = as_batches(inputs_dataset, "inputs_dataset")
        device = torch.device("cpu") if return_on_cpu else self.model_device
        rows = []
        for features, labels in progress(
            iterate(loader, "inputs_dataset"), show_progress,
            f"Using {self.get_name()} to compute intermediate quantities", loader_len(loader),
        ):
            grads = per_example_gradients(self.model, self._params, features, labels, loss_fn, reduction)
            emb = grads @ self.R.to(device=grads.device, dtype=grads.dtype)
            rows.append(emb.sum(0, keepdim=True) if aggregate else emb)
        out = torch.cat(rows)
        return (out.sum(0, keepdim=True) if aggregate else out).to(device)

    def influence(
        self, inputs: Any, k: int | None = None, proponents: bool = True, show_progress: bool = False
    ) -> Tensor | KMostInfluentialResults:
        """Influence scores ``(n_inputs, n_train)``, or the top ``k`` as ``(indices, scores)``.

        ``inputs`` is a test batch ``(model inputs..., labels)`` or a
        DataLoader of them; ``proponents=False`` gives the ``k`` most
        negative scores.
        """
        if k is not None:
            check_k(k)
        test = self.compute_intermediate_quantities(inputs, test=True)
        cols = [
            test @ self.compute_intermediate_quantities(batch).T
            for batch in progress(
                self.train_dataloader, show_progress,
                f"Using {self.get_name()} to compute influence for training batches",
                loader_len(self.train_dataloader),
            )
        ]
        scores = torch.cat(cols, dim=1)
        return scores if k is None else top_k(scores, k, proponents)

    def self_influence(self, inputs_dataset: Any = None, show_progress: bool = False) -> Tensor:
        """``|grad L(z)^T R|^2`` per example of ``inputs_dataset`` (default: the training set)."""
        data = self.train_dataloader if inputs_dataset is None else inputs_dataset
        emb = self.compute_intermediate_quantities(data, show_progress=show_progress)
        return (emb * emb).sum(dim=1)


# --- the flattened loss, its Hessian and Hessian-vector products -------------------


class FlatLoss:
    """The summed loss of a batch as a function of the flattened chosen parameters."""

    def __init__(self, model: nn.Module, params: dict[str, Tensor], loss_fn: Any, reduction: str):
        self.model, self.loss_fn, self.reduction = model, loss_fn, reduction
        self.names = list(params)
        self.shapes = [p.shape for p in params.values()]
        self.sizes = [p.numel() for p in params.values()]
        self.theta = torch.cat([p.detach().reshape(-1) for p in params.values()])

    def batch_fn(self, batch: Any) -> Callable[[Tensor], Tensor]:
        features, labels = tuple(batch[:-1]), batch[-1]

        def loss(theta: Tensor) -> Tensor:
            parts = torch.split(theta, self.sizes)
            named = {n: t.view(s) for n, t, s in zip(self.names, parts, self.shapes)}
            out = functional_call(self.model, named, features)
            return batch_loss(self.loss_fn, out, labels, self.reduction)

        return loss

    def hessian(self, loader: Any, show_progress: bool = False) -> Tensor:
        """``sum over batches`` of the Hessian of the batch loss, ``[n_params, n_params]``."""
        total = None
        with torch.enable_grad():
            for batch in progress(loader, show_progress, "Computing the Hessian of `hessian_dataset`"):
                f = self.batch_fn(batch)
                try:
                    h = torch.func.hessian(f)(self.theta)
                except RuntimeError:  # models torch.func cannot trace: plain autograd
                    h = torch.autograd.functional.hessian(f, self.theta)
                total = h if total is None else total + h
        return total

    def hvp(self, loader: Any, v: Tensor) -> Tensor:
        """``H v`` for the Hessian of the loss summed over ``loader``."""
        total = None
        with torch.enable_grad():
            for batch in loader:
                # double backward: the gradient's directional derivative along v
                theta = self.theta.detach().requires_grad_(True)
                (g,) = torch.autograd.grad(self.batch_fn(batch)(theta), theta, create_graph=True)
                hv = None
                if g.requires_grad:  # otherwise the loss is linear in theta: H v = 0
                    (hv,) = torch.autograd.grad(g @ v, theta, allow_unused=True)
                hv = torch.zeros_like(v) if hv is None else hv
                total = hv if total is None else total + hv
        return total


def top_eigen(
    H: Tensor, k: int | None, hessian_reg: float, hessian_inverse_tol: float
) -> tuple[Tensor, Tensor]:
    """Eigenpairs of ``H + hessian_reg * I`` above ``hessian_inverse_tol``, the top ``k``.

    Eigenvalues come in ascending order, eigenvectors as columns, each signed
    so that its entries sum to a positive number (Captum's convention, which
    makes embeddings reproducible). ``H`` is symmetrised first.
    """
    H = (H + H.T) / 2 + hessian_reg * torch.eye(len(H), dtype=H.dtype, device=H.device)
    ls, vs = torch.linalg.eigh(H)
    keep = ls > hessian_inverse_tol
    ls, vs = ls[keep], vs[:, keep]
    if k is not None:
        ls, vs = ls[-k:], vs[:, -k:]
    sign = torch.where(vs.sum(0) > 0, 1.0, -1.0).to(vs.dtype)
    return ls, vs * sign


def inverse_sqrt_projection(ls: Tensor, vs: Tensor, what: str) -> Tensor:
    """``R = vs diag(ls)^(-1/2)`` so that ``R R^T`` inverts the kept part of the Hessian."""
    if ls.numel() == 0:
        raise ArgumentValueError(
            f"{what} has no eigenvalue above `hessian_inverse_tol` (after adding `hessian_reg`), "
            "so it cannot be inverted; raise `hessian_reg` or lower `hessian_inverse_tol`"
        )
    return vs * ls.rsqrt().unsqueeze(0)


def check_projection_dim(projection_dim: Any) -> int | None:
    if projection_dim is None:
        return None
    positive_int(projection_dim, "projection_dim")
    return projection_dim


class NaiveInfluenceFunction(IntermediateQuantitiesInfluenceFunction):
    """Influence functions with the exact Hessian: ground truth for small models.

    The Hessian of the training loss summed over ``hessian_dataset`` is
    formed explicitly (size ``n_params^2``: use ``layers`` to keep it small),
    then ``R`` is built from its top ``projection_dim`` eigenpairs (see the
    module docstring). ``seed`` is accepted for Captum compatibility; nothing
    here is random, and the global RNG is not touched.

    Example:
        >>> import os, tempfile, torch
        >>> from torch.utils.data import TensorDataset
        >>> from attribuo.influence import NaiveInfluenceFunction
        >>> model = torch.nn.Linear(3, 1, bias=False)
        >>> path = os.path.join(tempfile.mkdtemp(), "ckpt.pt")
        >>> torch.save(model.state_dict(), path)
        >>> train = TensorDataset(torch.randn(10, 3), torch.randn(10, 1))
        >>> loss = torch.nn.MSELoss(reduction="none")
        >>> inf = NaiveInfluenceFunction(model, train, path, loss_fn=loss, batch_size=5)
        >>> inf.influence((torch.randn(2, 3), torch.randn(2, 1))).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        model: nn.Module,
        train_dataset: Dataset | DataLoader,
        checkpoint: Any,
        checkpoints_load_func: Callable[[nn.Module, Any], Any] = load_flexible_state_dict,
        layers: list[str] | None = None,
        loss_fn: Callable | nn.Module | None = None,
        batch_size: int | None = 1,
        hessian_dataset: Dataset | DataLoader | None = None,
        test_loss_fn: Callable | nn.Module | None = None,
        sample_wise_grads_per_batch: bool = False,
        projection_dim: int = 50,
        seed: int = 42,
        hessian_reg: float = 1e-6,
        hessian_inverse_tol: float = 1e-5,
        projection_on_cpu: bool = True,
        show_progress: bool = False,
    ) -> None:
        super().__init__(
            model, train_dataset, checkpoint, checkpoints_load_func, layers, loss_fn,
            batch_size, hessian_dataset, test_loss_fn, sample_wise_grads_per_batch,
        )
        flat = self._hessian_options(projection_dim, seed, hessian_reg, hessian_inverse_tol)
        H = flat.hessian(self.hessian_dataloader, show_progress)
        self._set_projection(H, None, "The Hessian", projection_on_cpu)
