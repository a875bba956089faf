"""ArnoldiInfluenceFunction: influence functions from Hessian-vector products only.

The Arnoldi iteration (Schioppa et al., 2021, "Scaling up influence
functions") builds an orthonormal basis ``Q`` of the Krylov space
``span(b, Hb, H^2 b, ...)`` from a random start ``b``, and with it the small
matrix ``Q^T H Q``; the eigenpairs of that matrix give the top eigenpairs of
``H`` (largest converge first) without ever forming ``H``. Everything after
that is :class:`~attribuo.influence.NaiveInfluenceFunction`'s recipe.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from .._engine.errors import ArgumentValueError
from .base import load_flexible_state_dict, progress
from .influence_function import IntermediateQuantitiesInfluenceFunction


def arnoldi_iteration(
    hvp: Callable[[Tensor], Tensor],
    start: Tensor,
    steps: int,
    tol: float,
    show_progress: bool = False,
    restart: Callable[[], Tensor] | None = None,
) -> tuple[Tensor, Tensor]:
    """Krylov basis ``Q`` (rows, ``[m, n]``) and ``Q^T H Q`` (``[m, m]``) from ``steps`` products.

    Each new direction is orthogonalised against all earlier ones, one at a
    time (modified Gram-Schmidt). As in Captum, the last direction found is
    not used, so ``m`` is one less than the number of products computed.

    When a new direction's norm falls below ``tol``, the space found so far
    is invariant under ``H`` (a Hessian proportional to the identity stops at
    once). Without ``restart`` the iteration stops there; with it, the
    iteration goes on from a fresh vector ``restart()`` made orthogonal to
    the basis, until ``steps`` products are done or no new direction exists
    (then every direction found is used: the basis spans an invariant space
    and ``Q^T H Q`` is exact).

    Example:
        >>> import torch
        >>> A = torch.diag(torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64))
        >>> Q, T = arnoldi_iteration(lambda v: A @ v, torch.ones(3, dtype=torch.float64), 3, 1e-9)
        >>> Q.shape, T.shape  # the third product found no new direction
        (torch.Size([2, 3]), torch.Size([2, 2]))
        >>> torch.allclose(Q @ Q.T, torch.eye(2, dtype=torch.float64))
        True
        >>> I = 2 * torch.eye(3, dtype=torch.float64)  # the first product lies along the start
        >>> g = torch.Generator().manual_seed(0)
        >>> Q, T = arnoldi_iteration(lambda v: I @ v, torch.ones(3, dtype=torch.float64), 3, 1e-9,
        ...                          restart=lambda: torch.randn(3, generator=g, dtype=torch.float64))
        >>> T.shape, torch.allclose(T, I)  # the whole space, exactly
        (torch.Size([3, 3]), True)
    """
    basis = [start / start.norm()]
    hess = start.new_zeros(steps + 1, steps)
    eps = torch.finfo(start.dtype).eps if start.is_floating_point() else 0.0
    k, exhausted = 0, False
    for k in progress(range(1, steps + 1), show_progress, "Running Arnoldi iteration for step"):
        v = hvp(basis[k - 1])
        size = float(v.norm())
        for i in range(k):
            hess[i, k - 1] = basis[i] @ v
            v = v - hess[i, k - 1] * basis[i]
        hess[k, k - 1] = v.norm()
        # a remainder at rounding level of the product is no new direction, whatever ``tol`` says
        invariant = hess[k, k - 1] < tol or (restart is not None and hess[k, k - 1] < 64 * eps * size)
        if not invariant:
            basis.append(v / hess[k, k - 1])
            continue
        if restart is None:
            break
        drawn = restart()
        fresh = _orthogonal(drawn, basis)
        if fresh.norm() < max(tol, eps**0.5 * float(drawn.norm())):  # the basis spans everything
            exhausted = True
            break
        hess[k, k - 1] = 0.0  # an invariant space ends here; the next block starts afresh
        basis.append(fresh / fresh.norm())
    m = k if exhausted and restart is not None else max(k - 1, 1)
    return torch.stack(basis[:m]), hess[:m, :m]


def _orthogonal(v: Tensor, basis: list[Tensor]) -> Tensor:
    for _ in range(2):  # twice: Gram-Schmidt loses orthogonality once
        for q in basis:
            v = v - (q @ v) * q
    return v


class ArnoldiInfluenceFunction(IntermediateQuantitiesInfluenceFunction):
    """Influence functions with the Hessian's top eigenpairs found by Arnoldi iteration.

    ``arnoldi_dim`` Hessian-vector products (each a pass over
    ``hessian_dataset``) span a Krylov space from a start vector drawn with
    ``seed`` (the same draw as Captum's on the CPU, from a private
    generator: the global RNG is left alone). The top ``projection_dim``
    eigenpairs of the Hessian restricted to that space, above
    ``hessian_inverse_tol`` after adding ``hessian_reg``, make ``R``. Scores
    approach :class:`~attribuo.influence.NaiveInfluenceFunction`'s as
    ``arnoldi_dim`` grows. ``self.R`` is a ``[n_params, projection_dim]``
    tensor here (Captum keeps a list of parameter tuples).

    Example:
        >>> import os, tempfile, torch
        >>> from torch.utils.data import TensorDataset
        >>> from attribuo.influence import ArnoldiInfluenceFunction
        >>> model = torch.nn.Linear(4, 1)
        >>> path = os.path.join(tempfile.mkdtemp(), "ckpt.pt")
        >>> torch.save(model.state_dict(), path)
        >>> train = TensorDataset(torch.randn(12, 4), torch.randn(12, 1))
        >>> loss = torch.nn.MSELoss(reduction="none")
        >>> inf = ArnoldiInfluenceFunction(model, train, path, loss_fn=loss, batch_size=6,
        ...                                projection_dim=2, arnoldi_dim=5)
        >>> inf.self_influence().shape
        torch.Size([12])
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
        seed: int = 0,
        arnoldi_dim: int = 200,
        arnoldi_tol: float = 1e-1,
        hessian_reg: float = 1e-3,
        hessian_inverse_tol: float = 1e-4,
        projection_on_cpu: bool = True,
        show_progress: bool = False,
    ) -> None:
        super().__init__(
            model, train_dataset, checkpoint, checkpoints_load_func, layers, loss_fn,
            batch_size, hessian_dataset, test_loss_fn, sample_wise_grads_per_batch,
        )
        if isinstance(arnoldi_dim, bool) or not isinstance(arnoldi_dim, int) or arnoldi_dim < 2:
            raise ArgumentValueError(f"`arnoldi_dim` must be an int >= 2, got {arnoldi_dim!r}")
        flat = self._hessian_options(projection_dim, seed, hessian_reg, hessian_inverse_tol)
        self.arnoldi_dim = arnoldi_dim
        self.arnoldi_tol = arnoldi_tol
        # Captum seeds the global RNG and draws randn_like per parameter, in order, on the CPU
        gen = torch.Generator().manual_seed(seed)
        start = torch.cat([
            torch.randn(p.shape, generator=gen, dtype=p.dtype).reshape(-1) for p in self._params.values()
        ]).to(flat.theta.device)
        # after an invariant space (rare but exact), new directions come from the same generator
        basis, small = arnoldi_iteration(
            lambda v: flat.hvp(self.hessian_dataloader, v), start, arnoldi_dim, arnoldi_tol, show_progress,
            restart=lambda: torch.randn(start.shape, generator=gen, dtype=start.dtype).to(start.device),
        )
        self._set_projection(small, basis, "The Hessian restricted to the Krylov space", projection_on_cpu)
