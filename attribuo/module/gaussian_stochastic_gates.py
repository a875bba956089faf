"""Gaussian stochastic gates (Yamada, Lindenbaum, Negahban & Kluger, 2020,
"Feature Selection using Stochastic Gates")."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from .._engine.errors import ArgumentValueError
from .stochastic_gates_base import StochasticGatesBase, _real


def _gaussian_noise(batch_size: int, like: Tensor, std: float) -> Tensor:
    """N(0, std^2) noise of shape ``(batch_size, len(like))`` on like's device/dtype."""
    noise = torch.empty(batch_size, like.numel(), device=like.device, dtype=like.dtype)
    return noise.normal_(mean=0.0, std=std)


# the batch size is symbolic under torch.fx tracing: keep the sampler a leaf call
torch.fx.wrap("_gaussian_noise")


class GaussianStochasticGates(StochasticGatesBase):
    """Stochastic gates ``clamp(mu + N(0, std^2), 0, 1)`` with a learnable mean ``mu``.

    In eval mode a gate is ``clamp(mu, 0, 1)``. The L0 penalty uses
    ``P(gate > 0) = Phi(mu / std)``, the standard normal CDF.

    Args:
        n_gates: number of gates.
        mask: optional integer tensor broadcastable to the input that maps each
            element to a gate index (largest index ``n_gates - 1``).
        reg_weight: factor applied to the L0 penalty.
        std: fixed standard deviation of the noise, positive.
        reg_reduction: ``"sum"``, ``"mean"`` or ``"none"``.

    Example:
        >>> import torch
        >>> from attribuo.module import GaussianStochasticGates
        >>> gates = GaussianStochasticGates(3, std=0.5)
        >>> _, reg = gates(torch.randn(4, 3))
        >>> bool(0 < reg < 3)
        True
    """

    def __init__(
        self,
        n_gates: int,
        mask: Tensor | None = None,
        reg_weight: float = 1.0,
        std: float = 0.5,
        reg_reduction: str = "sum",
    ) -> None:
        std = _real(std, "std")
        if not std > 0:
            raise ArgumentValueError(f"`std` must be positive, got {std}")
        super().__init__(n_gates, mask=mask, reg_weight=reg_weight, reg_reduction=reg_reduction)
        # means near 0.5: every gate starts half open
        self.mu = nn.Parameter(torch.empty(self.n_gates).normal_(0.5, 0.01))
        self.std = std

    def _sample_gate_values(self, batch_size: int) -> Tensor:
        if not self.training:
            return self.mu.expand(batch_size, self.n_gates)
        return self.mu + _gaussian_noise(batch_size, self.mu, self.std)

    def _get_gate_values(self) -> Tensor:
        return self.mu

    def _get_gate_active_probs(self) -> Tensor:
        z = self.mu / self.std
        return 0.5 * (1 + torch.erf(z / math.sqrt(2)))

    @classmethod
    def _from_pretrained(cls, mu: Tensor, *args: Any, **kwargs: Any) -> GaussianStochasticGates:
        """Gates whose means ``mu`` are a trained 1-D tensor (one entry per gate).

        Other arguments are those of the constructor, without ``n_gates``.

        Example:
            >>> import torch
            >>> from attribuo.module import GaussianStochasticGates
            >>> GaussianStochasticGates._from_pretrained(torch.tensor([-0.2, 0.4, 1.3])).get_gate_values()
            tensor([0.0000, 0.4000, 1.0000])
        """
        return cls._pretrained("mu", mu, args, kwargs)

    from_pretrained = _from_pretrained

    def extra_repr(self) -> str:
        return (
            f"n_gates={self.n_gates}, reg_weight={self.reg_weight}, std={self.std}, "
            f"reg_reduction={self.reg_reduction!r}"
        )
