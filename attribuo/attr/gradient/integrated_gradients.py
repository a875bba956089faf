"""Integrated Gradients: the path integral of gradients from a baseline to the input."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor

from ..._engine.baselines import full_baselines
from ..._engine.call import parse_call
from ..._engine.paths import integrate_path_gradients, path_weights
from ..base import GradientAttribution

TensorOrTuple = Tensor | tuple[Tensor, ...]


class IntegratedGradients(GradientAttribution):
    """Integrated Gradients (Sundararajan et al., 2017).

    Averages the gradient of the target along the straight line from
    ``baselines`` to ``inputs`` (a quadrature rule with ``n_steps`` points)
    and, with ``multiply_by_inputs=True`` (the default), multiplies it by
    ``inputs - baselines``. The attributions of an example then add up to
    ``F(input) - F(baseline)`` up to the quadrature error, which
    ``return_convergence_delta=True`` reports per example.

    When ``internal_batch_size`` is not given the steps are evaluated in
    chunks that fit a memory budget (``ATTRIBUO_MEMORY_BUDGET_MB``), so many
    steps on large inputs do not exhaust memory; the result does not depend
    on how the steps are chunked.

    Example:
        >>> import torch
        >>> from attribuo.attr import IntegratedGradients
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
        >>> x = torch.rand(5, 3)
        >>> attr, delta = IntegratedGradients(model).attribute(
        ...     x, target=1, return_convergence_delta=True)
        >>> attr.shape, bool(delta.abs().max() < 1e-3)
        (torch.Size([5, 3]), True)
    """

    _convergence_delta = True

    def __init__(self, forward_func: Callable, multiply_by_inputs: bool = True) -> None:
        super().__init__(forward_func)
        self._multiply_by_inputs = multiply_by_inputs

    def attribute(
        self,
        inputs: TensorOrTuple,
        baselines: Any = None,
        target: Any = None,
        additional_forward_args: Any = None,
        n_steps: int = 50,
        method: str = "gausslegendre",
        internal_batch_size: int | None = None,
        return_convergence_delta: bool = False,
    ) -> TensorOrTuple | tuple[TensorOrTuple, Tensor]:
        """Integrated gradients of ``target`` w.r.t. ``inputs``, same form as ``inputs``.

        ``baselines``: None (zeros), a number, or per input a tensor of the
        input's shape, of one example's shape or with batch size 1 (a tuple
        mixes them). ``method``: ``"riemann_left"``, ``"riemann_right"``,
        ``"riemann_middle"``, ``"riemann_trapezoid"`` or ``"gausslegendre"``.
        ``internal_batch_size``: at most this many expanded examples per
        forward (at least one step). With ``return_convergence_delta=True``
        returns ``(attributions, delta)``, one delta per example.
        """
        call = parse_call(inputs, target, additional_forward_args, floating=True)
        starts = full_baselines(call.inputs, baselines)
        alphas, weights = path_weights(method, n_steps)
        grads = integrate_path_gradients(
            self.forward_func, call, starts, alphas, weights, internal_batch_size
        )
        if self.multiplies_by_inputs:
            grads = tuple(g * (x - b) for g, x, b in zip(grads, call.inputs, starts))
        return self._with_delta(call.result(grads), grads, starts, call, return_convergence_delta)
