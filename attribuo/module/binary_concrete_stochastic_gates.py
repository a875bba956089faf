"""Hard-concrete gates (Louizos, Welling & Kingma, 2018, "Learning Sparse Neural
Networks through L0 Regularization")."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from .._engine.errors import ArgumentValueError
from .stochastic_gates_base import StochasticGatesBase, _real


def _uniform_noise(batch_size: int, like: Tensor, eps: float) -> Tensor:
    """U(eps, 1 - eps) noise of shape ``(batch_size, len(like))`` on like's device/dtype."""
    noise = torch.empty(batch_size, like.numel(), device=like.device, dtype=like.dtype)
    return noise.uniform_(eps, 1 - eps)


# the batch size is symbolic under torch.fx tracing: keep the sampler a leaf call
torch.fx.wrap("_uniform_noise")


class BinaryConcreteStochasticGates(StochasticGatesBase):
    """Stochastic gates drawn from a stretched, clamped binary concrete distribution.

    Each gate has a learnable location ``log_alpha``. In training a gate is
    ``s = sigmoid((logit(u) + log_alpha) / temperature)`` with
    ``u ~ U(eps, 1 - eps)``, stretched to ``s * (upper_bound - lower_bound) +
    lower_bound`` and clamped to [0, 1], so it is exactly 0 or 1 with positive
    probability. In eval mode ``s = sigmoid(log_alpha)``. The L0 penalty uses
    ``P(gate > 0) = sigmoid(log_alpha - temperature * log(-lower_bound / upper_bound))``.

    Args:
        n_gates: number of gates.
        mask: optional integer tensor broadcastable to the input that maps each
            element to a gate index (largest index ``n_gates - 1``).
        reg_weight: factor applied to the L0 penalty.
        temperature: concrete temperature, strictly between 0 and 1 (smaller
            is closer to a Bernoulli).
        lower_bound: stretch lower end, below 0.
        upper_bound: stretch upper end, above 1.
        eps: keeps ``u`` away from 0 and 1 (``0 <= eps < 0.5``).
        reg_reduction: ``"sum"``, ``"mean"`` or ``"none"``.

    Example:
        >>> import torch
        >>> from attribuo.module import BinaryConcreteStochasticGates
        >>> gates = BinaryConcreteStochasticGates(5, reg_weight=0.01)
        >>> gated, reg = gates(torch.randn(3, 5))
        >>> gated.shape
        torch.Size([3, 5])
        >>> gates.eval()(torch.ones(2, 5))[0].shape
        torch.Size([2, 5])
    """

    def __init__(
        self,
        n_gates: int,
        mask: Tensor | None = None,
        reg_weight: float = 1.0,
        temperature: float = 2 / 3,
        lower_bound: float = -0.1,
        upper_bound: float = 1.1,
        eps: float = 1e-8,
        reg_reduction: str = "sum",
    ) -> None:
        temperature = _real(temperature, "temperature")
        lower_bound = _real(lower_bound, "lower_bound")
        upper_bound = _real(upper_bound, "upper_bound")
        eps = _real(eps, "eps")
        if not 0 < temperature < 1:
            raise ArgumentValueError(f"`temperature` must be between 0 and 1, got {temperature}")
        if not lower_bound < 0:
            raise ArgumentValueError(f"`lower_bound` must be below 0, got {lower_bound}")
        if not upper_bound > 1:
            raise ArgumentValueError(f"`upper_bound` must be above 1, got {upper_bound}")
        if not 0 <= eps < 0.5:
            raise ArgumentValueError(f"`eps` must satisfy 0 <= eps < 0.5, got {eps}")
        super().__init__(n_gates, mask=mask, reg_weight=reg_weight, reg_reduction=reg_reduction)
        self.temperature = temperature
        self.lower_bound = lower_bound
        self.upper_bound = upper_bound
        self.eps = eps
        # log_alpha - offset is the logit of P(gate > 0); offset depends only on constants
        self.active_prob_offset = temperature * math.log(-lower_bound / upper_bound)
        # near 0 so every gate starts half open (P(s > 0.5) = 0.5)
        self.log_alpha_param = nn.Parameter(torch.empty(self.n_gates).normal_(0.0, 0.01))

    def _stretch(self, s: Tensor) -> Tensor:
        return s * (self.upper_bound - self.lower_bound) + self.lower_bound

    def _sample_gate_values(self, batch_size: int) -> Tensor:
        log_alpha = self.log_alpha_param
        if not self.training:
            return self._get_gate_values().expand(batch_size, self.n_gates)
        u = _uniform_noise(batch_size, log_alpha, self.eps)
        return self._stretch(torch.sigmoid((torch.logit(u) + log_alpha) / self.temperature))

    def _get_gate_values(self) -> Tensor:
        return self._stretch(torch.sigmoid(self.log_alpha_param))

    def _get_gate_active_probs(self) -> Tensor:
        return torch.sigmoid(self.log_alpha_param - self.active_prob_offset)

    @classmethod
    def _from_pretrained(
        cls, log_alpha_param: Tensor, *args: Any, **kwargs: Any
    ) -> BinaryConcreteStochasticGates:
        """Gates whose ``log_alpha_param`` is a trained 1-D tensor (one entry per gate).

        Other arguments are those of the constructor, without ``n_gates``.

        Example:
            >>> import torch
            >>> from attribuo.module import BinaryConcreteStochasticGates
            >>> g = BinaryConcreteStochasticGates._from_pretrained(torch.tensor([-9.0, 9.0]))
            >>> g.get_gate_values()
            tensor([0., 1.])
        """
        return cls._pretrained("log_alpha_param", log_alpha_param, args, kwargs)

    from_pretrained = _from_pretrained

    def extra_repr(self) -> str:
        return (
            f"n_gates={self.n_gates}, reg_weight={self.reg_weight}, "
            f"temperature={self.temperature:.4g}, lower_bound={self.lower_bound}, "
            f"upper_bound={self.upper_bound}, reg_reduction={self.reg_reduction!r}"
        )
