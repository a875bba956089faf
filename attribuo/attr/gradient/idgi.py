"""IDGI: integrated gradients with the noise of the steps' off-gradient directions removed."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from ..._engine.baselines import full_baselines
from ..._engine.call import Call, parse_call
from ..._engine.errors import ArgumentValueError
from ..._engine.inputs import rows
from ..base import GradientAttribution
from .path_sampling import output_values, sampled_grid, straight_chunks, values_and_gradients

TensorOrTuple = Tensor | tuple[Tensor, ...]
IDGI_METHODS = ("riemann_left", "riemann_right")


def idgi_share(grads: Sequence[Tensor], change: Tensor) -> tuple[Tensor, ...]:
    """``g_i**2 / ||g||**2 * change`` per example: one step's IDGI attribution.

    ``||g||`` runs over every feature of every input of an example; a zero
    gradient gives no attribution (the step's output change is then lost).

    Example:
        >>> idgi_share((torch.tensor([[3.0, 4.0]]),), torch.tensor([2.0]))
        (tensor([[0.7200, 1.2800]]),)
    """
    squares = [g * g for g in grads]
    norm = sum(rows(s).sum(1) for s in squares)
    scale = torch.where(norm > 0, change.to(norm.dtype) / norm.clamp_min(torch.finfo(norm.dtype).tiny), 0)
    return tuple(s * scale.reshape((-1,) + (1,) * (s.dim() - 1)) for s in squares)


class IdgiSum:
    """IDGI's terms added up along a path whose points are evaluated in order.

    ``add(values, grads)`` takes the next point's output and gradients.
    Gradients at the start of every interval (``before=None``): a point's
    gradient waits for the next point's output, and :meth:`total` takes the
    path's last output. Gradients at the end of every interval: ``before``
    is the output at the path's start and every point is settled at once.
    """

    def __init__(self, like: Sequence[Tensor], before: Tensor | None = None) -> None:
        self.totals = [torch.zeros_like(t) for t in like]
        self._at_end = before is not None
        self._previous = before
        self._pending: Sequence[Tensor] | None = None

    def add(self, values: Tensor, grads: Sequence[Tensor]) -> None:
        if self._at_end:
            self._settle(grads, values - self._previous)
        elif self._pending is not None:
            self._settle(self._pending, values - self._previous)
        if not self._at_end:
            self._pending = grads
        self._previous = values

    def total(self, last: Tensor | None = None) -> tuple[Tensor, ...]:
        if self._pending is not None:
            if last is None:
                raise ValueError("the output at the path's end is needed for the last interval")
            self._settle(self._pending, last - self._previous)
            self._pending = None
        return tuple(self.totals)

    def _settle(self, grads: Sequence[Tensor], change: Tensor) -> None:
        for total, share in zip(self.totals, idgi_share(grads, change)):
            total.add_(share)


def idgi_steps(forward_func: Callable, chunks: Any, batch: int, summed: IdgiSum) -> None:
    """Feed every point of ``chunks`` (in step order) to ``summed``."""
    for lo, hi, points in chunks:
        values, grads = values_and_gradients(points, forward_func)
        for j in range(hi - lo):
            part = slice(j * batch, (j + 1) * batch)
            summed.add(values[part], [g[part] for g in grads])


def idgi_attributions(
    forward_func: Callable,
    call: Call,
    starts: tuple[Tensor, ...],
    grid: Tensor,
    method: str = "riemann_left",
    internal_batch_size: int | None = None,
) -> tuple[Tensor, ...]:
    """IDGI on the straight path from ``starts`` to the inputs, cut at ``grid`` (rows 1 or batch).

    On each interval ``[t_j, t_{j+1}]``: the gradient ``g`` at its start
    (``"riemann_left"``, as in the paper) or end (``"riemann_right"``), and
    ``g_i**2 / ||g||**2 * (F(x(t_{j+1})) - F(x(t_j)))`` per feature. The
    sum over intervals telescopes to ``F(input) - F(baseline)``.
    """
    if method == "riemann_left":
        summed = IdgiSum(call.inputs)
        times = grid[:, :-1]
    else:
        summed = IdgiSum(call.inputs, before=output_values(call.with_inputs(starts), forward_func))
        times = grid[:, 1:]
    chunks = straight_chunks(forward_func, call, starts, times, internal_batch_size)
    idgi_steps(forward_func, chunks, call.batch, summed)
    return summed.total(output_values(call, forward_func) if method == "riemann_left" else None)


class IDGI(GradientAttribution):
    """IDGI, Important Direction Gradient Integration (Yang, Wang and Bilen, 2023).

    Integrated gradients multiplies each step's gradient by the step along
    the path, and most of that step is orthogonal to the gradient, where the
    output does not change: noise. IDGI ("IDGI: A Framework to Eliminate
    Explanation Noise from Integrated Gradients", CVPR 2023) keeps only the
    step along the gradient: on the interval from ``x_j`` to ``x_{j+1}`` of
    the straight path from ``baselines`` to ``inputs``, with ``g`` the
    gradient at ``x_j``, feature ``i`` gets ``g_i**2 / ||g||**2 *
    (F(x_{j+1}) - F(x_j))``. The shares of a step sum to one, so the
    attributions of an example add up to ``F(input) - F(baseline)`` exactly
    (up to rounding; a step with a zero gradient drops its output change).
    The result is not multiplied by ``inputs - baselines``.

    ``n_steps`` intervals cost ``n_steps`` gradient evaluations of the batch
    (chunked under the memory budget, or ``internal_batch_size`` expanded
    examples per forward) and one forward of the inputs. ``step_sampling``
    places the intervals: ``"uniform"`` (the paper), ``"adaptive"`` (short
    intervals where the output changes, after ``n_probes + 1`` probe
    forwards; see :mod:`.path_sampling`) or a tensor of grid points
    ``0 = t_0 <= ... <= t_K = 1``, shape ``(K + 1,)`` or ``(batch, K + 1)``.

    Example:
        >>> import torch
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
        >>> x = torch.rand(5, 3)
        >>> attr, delta = IDGI(model).attribute(x, target=1, n_steps=10, return_convergence_delta=True)
        >>> attr.shape, bool(delta.abs().max() < 1e-5)
        (torch.Size([5, 3]), True)
    """

    _convergence_delta = True

    def __init__(self, forward_func: Callable) -> None:
        super().__init__(forward_func)

    def attribute(
        self,
        inputs: TensorOrTuple,
        baselines: Any = None,
        target: Any = None,
        additional_forward_args: Any = None,
        n_steps: int = 50,
        method: str = "riemann_left",
        step_sampling: Any = "uniform",
        n_probes: int | None = None,
        internal_batch_size: int | None = None,
        return_convergence_delta: bool = False,
    ) -> TensorOrTuple | tuple[TensorOrTuple, Tensor]:
        """IDGI attributions of ``target``, in the form of ``inputs``.

        ``baselines`` as in :class:`IntegratedGradients`. ``method``: where
        in each interval the gradient is taken, ``"riemann_left"`` (its
        start, the paper's choice) or ``"riemann_right"`` (its end).
        ``step_sampling``, ``n_probes``: see the class; a grid overrides
        ``n_steps``. With ``return_convergence_delta=True`` returns
        ``(attributions, delta)``, one delta per example.
        """
        call = parse_call(inputs, target, additional_forward_args, floating=True)
        if method not in IDGI_METHODS:
            raise ArgumentValueError(f"`method` must be one of {IDGI_METHODS}, got {method!r}")
        starts = full_baselines(call.inputs, baselines)
        grid = sampled_grid(
            self.forward_func, call, step_sampling, n_steps, n_probes,
            lambda t, d: straight_chunks(self.forward_func, call, starts, t, internal_batch_size, d),
        )
        attrs = idgi_attributions(self.forward_func, call, starts, grid, method, internal_batch_size)
        return self._with_delta(call.result(attrs), attrs, starts, call, return_convergence_delta)
