"""Shared machinery of stochastic gates: argument checks, gating, the L0 penalty.

A stochastic gate is a random variable z in [0, 1] obtained by clamping a
continuous variable (stretched concrete or Gaussian) to the unit interval. The
expected number of open gates, sum_i P(z_i > 0), is a differentiable surrogate
of the L0 norm. Subclasses only say how to sample the continuous variable,
what its "mean" gate value is, and what P(z > 0) is.
"""

from __future__ import annotations

import numbers
from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import Tensor, nn

from .._engine.errors import ArgumentTypeError, ArgumentValueError

_REDUCTIONS = ("none", "mean", "sum")


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ArgumentTypeError(f"`{name}` must be an int, got {type(value).__name__}")
    if value < 1:
        raise ArgumentValueError(f"`{name}` must be at least 1, got {value}")
    return int(value)


def _real(value: Any, name: str) -> float:
    """A finite Python number (a 0-d tensor is accepted and turned into a float)."""
    if isinstance(value, Tensor) and value.numel() == 1 and not value.dtype.is_complex:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ArgumentTypeError(f"`{name}` must be a real number, got {type(value).__name__}")
    value = float(value)
    if value != value or value in (float("inf"), float("-inf")):
        raise ArgumentValueError(f"`{name}` must be finite, got {value}")
    return value


def _checked_mask(mask: Any, n_gates: int) -> Tensor | None:
    if mask is None:
        return None
    if not isinstance(mask, Tensor):
        raise ArgumentTypeError(
            f"`mask` must be a tensor of gate indices, got {type(mask).__name__}"
        )
    if mask.dtype.is_floating_point or mask.dtype.is_complex or mask.dtype == torch.bool:
        raise ArgumentTypeError(f"`mask` must hold integer gate indices, got dtype {mask.dtype}")
    if mask.numel() == 0:
        raise ArgumentValueError("`mask` must not be empty")
    low, high = int(mask.min()), int(mask.max())
    if low < 0 or high != n_gates - 1:
        raise ArgumentValueError(
            f"`mask` must hold gate indices 0 .. n_gates - 1 = {n_gates - 1} with the largest "
            f"equal to n_gates - 1; got indices from {low} to {high}"
        )
    # gather() needs int64 indices; a private copy so later edits by the caller do not leak in
    return mask.detach().clone().long()


def _trace_proxy(value: Any) -> bool:
    """True while torch.fx traces the module (shapes are symbolic, checks must wait)."""
    return isinstance(value, torch.fx.Proxy)


class StochasticGatesBase(nn.Module, ABC):
    """Base class of stochastic gates: gates the input and returns an L0 penalty.

    ``forward(input_tensor)`` draws one gate per gate index and example (in
    training mode; in eval mode it uses each gate's deterministic value),
    clamps the gates to [0, 1], spreads them over the input (one gate per
    element, or shared through ``mask``) and returns
    ``(input_tensor * gates, reg_weight * reduce(P(gate > 0)))``.

    Subclasses implement ``_sample_gate_values(batch_size)`` (shape
    ``(batch_size, n_gates)``, before clamping), ``_get_gate_values()`` (the
    deterministic, unclamped gate values, shape ``(n_gates,)``) and
    ``_get_gate_active_probs()`` (P(gate > 0), shape ``(n_gates,)``).

    Args:
        n_gates: number of gates.
        mask: optional integer tensor, broadcastable to the input's shape,
            giving each input element the index of the gate that scales it;
            elements with the same index share a gate. Its largest index must
            be ``n_gates - 1``. Without it the input must have ``n_gates``
            elements per example, each with its own gate.
        reg_weight: factor applied to the L0 penalty.
        reg_reduction: ``"sum"`` (expected number of open gates), ``"mean"``
            (expected fraction) or ``"none"`` (one probability per gate).

    Example:
        >>> import torch
        >>> from attribuo.module import GaussianStochasticGates
        >>> gates = GaussianStochasticGates(4, reg_weight=0.1)
        >>> gated, reg = gates(torch.randn(8, 4))
        >>> gated.shape, reg.shape
        (torch.Size([8, 4]), torch.Size([]))
    """

    mask: Tensor | None

    def __init__(
        self,
        n_gates: int,
        mask: Tensor | None = None,
        reg_weight: float = 1.0,
        reg_reduction: str = "sum",
    ) -> None:
        super().__init__()
        n_gates = _positive_int(n_gates, "n_gates")
        checked_mask = _checked_mask(mask, n_gates)
        reg_weight = _real(reg_weight, "reg_weight")
        if not isinstance(reg_reduction, str) or reg_reduction not in _REDUCTIONS:
            raise ArgumentValueError(
                f"`reg_reduction` must be one of 'none', 'mean', 'sum', got {reg_reduction!r}"
            )
        self.n_gates = n_gates
        self.reg_weight = reg_weight
        self.reg_reduction = reg_reduction
        self.register_buffer("mask", checked_mask)

    # -- the gating itself -------------------------------------------------

    def forward(self, input_tensor: Tensor) -> tuple[Tensor, Tensor]:
        """Gate ``input_tensor``; return ``(gated_input, l0_reg)``.

        ``gated_input`` has the input's shape; add ``l0_reg`` to the model's
        loss to push gates towards closing.
        """
        if not _trace_proxy(input_tensor):
            self._check_input(input_tensor)
        batch_size = input_tensor.size(0)
        gates = torch.clamp(self._sample_gate_values(batch_size), min=0, max=1)
        if self.mask is not None:
            # each element picks the gate its mask index names (per example)
            index = self.mask.expand_as(input_tensor).reshape(batch_size, -1)
            gates = torch.gather(gates, 1, index)
        gated_input = input_tensor * gates.reshape(input_tensor.size())
        return gated_input, self._l0_penalty()

    def _l0_penalty(self) -> Tensor:
        probs = self._get_gate_active_probs()
        if self.reg_reduction == "sum":
            probs = probs.sum()
        elif self.reg_reduction == "mean":
            probs = probs.mean()
        return probs * self.reg_weight

    def _check_input(self, input_tensor: Any) -> None:
        if not isinstance(input_tensor, Tensor):
            raise ArgumentTypeError(
                f"`input_tensor` must be a tensor, got {type(input_tensor).__name__}"
            )
        if self.mask is None:
            if input_tensor.dim() < 2:
                raise ArgumentValueError(
                    "`input_tensor` must have at least 2 dimensions (dim 0 is the batch), "
                    f"got shape {tuple(input_tensor.shape)}"
                )
            per_example = input_tensor[0].numel()
            if per_example != self.n_gates:
                raise ArgumentValueError(
                    f"`input_tensor` has {per_example} elements per example but there are "
                    f"{self.n_gates} gates; give a `mask` to share gates between elements"
                )
            return
        if input_tensor.dim() < 1:
            raise ArgumentValueError("`input_tensor` must have a batch dimension")
        try:
            fits = torch.broadcast_shapes(self.mask.shape, input_tensor.shape) == input_tensor.shape
        except RuntimeError:
            fits = False
        if not fits:
            raise ArgumentValueError(
                f"`mask` of shape {tuple(self.mask.shape)} does not broadcast to the shape "
                f"{tuple(input_tensor.shape)} of `input_tensor`"
            )

    # -- inspection ---------------------------------------------------------

    def get_gate_values(self, clamp: bool = True) -> Tensor:
        """Deterministic value of each gate, shape ``(n_gates,)``, detached.

        With ``clamp=False`` the raw value before clamping to [0, 1] is
        returned, which still ranks gates that are all fully open or closed.
        """
        if not isinstance(clamp, bool):
            raise ArgumentTypeError(f"`clamp` must be a bool, got {type(clamp).__name__}")
        values = self._get_gate_values()
        if clamp:
            values = torch.clamp(values, min=0, max=1)
        return values.detach()

    def get_gate_active_probs(self) -> Tensor:
        """Probability that each gate is non-zero, shape ``(n_gates,)``, detached."""
        return self._get_gate_active_probs().detach()

    def _get_numel_of_input(self, input_tensor: Tensor) -> int:
        """Elements per example of a batched input (Captum's helper name)."""
        if input_tensor.dim() < 2:
            raise ArgumentValueError(
                "`input_tensor` must have at least 2 dimensions (dim 0 is the batch), "
                f"got shape {tuple(input_tensor.shape)}"
            )
        return input_tensor[0].numel()

    # -- what a distribution provides -----------------------------------------

    @abstractmethod
    def _get_gate_values(self) -> Tensor:
        """Unclamped deterministic gate values, shape ``(n_gates,)``."""

    @abstractmethod
    def _sample_gate_values(self, batch_size: int) -> Tensor:
        """Unclamped gate values for a batch, shape ``(batch_size, n_gates)``."""

    @abstractmethod
    def _get_gate_active_probs(self) -> Tensor:
        """P(gate > 0) for each gate, shape ``(n_gates,)``."""

    # -- construction from trained values --------------------------------------

    @classmethod
    def _pretrained(cls, name: str, values: Any, args: tuple, kwargs: dict) -> StochasticGatesBase:
        """Build ``cls(len(values), *args, **kwargs)`` and load ``values`` as parameter ``name``.

        The module takes the dtype and device of ``values``. It is built with
        the normal constructor first, so the random number stream advances
        exactly as for a fresh module.
        """
        if not isinstance(values, Tensor):
            raise ArgumentTypeError(f"`{name}` must be a tensor, got {type(values).__name__}")
        if values.dim() != 1:
            raise ArgumentValueError(
                f"`{name}` must be 1-dimensional (one value per gate), got shape "
                f"{tuple(values.shape)}"
            )
        if not values.dtype.is_floating_point:
            raise ArgumentTypeError(f"`{name}` must be a floating-point tensor, got {values.dtype}")
        gates = cls(values.numel(), *args, **kwargs)
        gates.to(device=values.device, dtype=values.dtype)
        with torch.no_grad():
            getattr(gates, name).copy_(values)
        return gates
