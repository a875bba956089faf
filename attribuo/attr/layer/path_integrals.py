"""Layer attribution by path integrals: internal influence, conductance, integrated gradients.

See :mod:`attribuo.attr.layer.common` for the conventions shared by the layer
classes (result forms, lists of layers, reused layers).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from ..._engine.baselines import full_baselines
from ..._engine.call import Call, parse_call
from ..._engine.errors import ArgumentTypeError, ArgumentValueError
from ..._engine.inputs import require_floating
from ..._engine.paths import (
    Evaluations,
    integrate_path_gradients,
    path_weights,
    site_path_evaluations,
)
from ..._engine.sites import site_function
from ..base import GradientAttribution, LayerAttribution
from .common import (
    LayerResult,
    MultipliesByInputs,
    TensorOrTuple,
    layer_form,
    layer_list,
    layer_values_at,
    per_layer,
    single_layer,
)


def internal_influence(evaluations: Evaluations, weights: list[float]) -> tuple[Tensor, ...]:
    """``sum_k weights[k] * dF/dy(x_k)`` over the :func:`site_path_evaluations` of a path.

    ``y`` is the layer's output (or input); one tensor per layer value.
    """
    totals: list[Tensor] = []
    for lo, hi, grads, _ in evaluations:
        w = torch.tensor(weights[lo:hi], dtype=grads[0].dtype, device=grads[0].device)
        sums = [torch.tensordot(w, g, dims=1) for g in grads]
        totals = sums if not totals else [t + s for t, s in zip(totals, sums)]
    return tuple(totals)


def layer_conductance(evaluations: Evaluations) -> tuple[Tensor, ...]:
    """Conductance of every neuron of a layer (Dhamdhere et al., 2018).

    ``sum_k dF/dy(x_k) * (y(x_{k+1}) - y(x_k))`` over consecutive points of
    the :func:`site_path_evaluations` of a path: the change of each neuron
    along the path, weighted by the output's sensitivity to it. The sum of
    a layer's conductances approaches ``F(end) - F(start)``.
    """
    totals: list[Tensor] = []
    last: tuple[tuple[Tensor, ...], tuple[Tensor, ...]] | None = None
    for _, _, grads, values in evaluations:
        if last is not None:  # the step from the previous chunk's last point
            grads = tuple(torch.cat([p[-1:], g]) for p, g in zip(last[0], grads))
            values = tuple(torch.cat([p[-1:], v]) for p, v in zip(last[1], values))
        # the step differences are a fresh tensor: weight them in place (one allocation less)
        sums = [(v[1:] - v[:-1]).mul_(g[:-1]).sum(0) for g, v in zip(grads, values)]
        totals = sums if not totals else [t + s for t, s in zip(totals, sums)]
        last = (grads, values)
    return tuple(totals)


class InternalInfluence(LayerAttribution, GradientAttribution):
    """Internal influence (Leino et al., 2018): the layer gradient integrated along the input path.

    The gradient of the target output w.r.t. the layer is averaged over the
    straight line from ``baselines`` to ``inputs`` (not multiplied by any
    difference).

    Example:
        >>> import torch
        >>> from attribuo.attr import InternalInfluence
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
        >>> InternalInfluence(net, net[1]).attribute(torch.rand(5, 3), target=0).shape
        torch.Size([5, 4])
    """

    def attribute(
        self, inputs: TensorOrTuple, baselines: Any = None, target: Any = None,
        additional_forward_args: Any = None, n_steps: int = 50, method: str = "gausslegendre",
        internal_batch_size: int | None = None, attribute_to_layer_input: bool = False,
        grad_kwargs: dict[str, Any] | None = None,
    ) -> TensorOrTuple:
        """Path-averaged layer gradients, the layer's shape."""
        layer = single_layer(self.layer, type(self))
        call = parse_call(inputs, target, additional_forward_args, floating=True)
        alphas, weights = path_weights(method, n_steps)
        evaluations = site_path_evaluations(
            self.forward_func, layer, call, full_baselines(call.inputs, baselines), alphas,
            attribute_to_layer_input, internal_batch_size, grad_kwargs,
        )
        return layer_form(internal_influence(evaluations, weights))


class _CompletePathMethod(LayerAttribution, GradientAttribution, ABC):
    """Captum's argument handling of LayerConductance and LayerIntegratedGradients.

    Both attribute ``F(inputs) - F(baselines)`` along the same path, with the
    same arguments and the same convergence delta; :meth:`_integrate` is the
    algorithm: ``(result in the layer's form, flat attributions)``.
    """

    _convergence_delta = True

    _float_inputs = True

    def attribute(
        self, inputs: TensorOrTuple, baselines: Any = None, target: Any = None,
        additional_forward_args: Any = None, n_steps: int = 50, method: str = "gausslegendre",
        internal_batch_size: int | None = None, return_convergence_delta: bool = False,
        attribute_to_layer_input: bool = False, grad_kwargs: dict[str, Any] | None = None,
    ) -> LayerResult | tuple[LayerResult, Tensor]:
        """Attributions of every layer value (the layer's form); with the delta when asked."""
        call = parse_call(inputs, target, additional_forward_args, floating=self._float_inputs)
        starts = full_baselines(call.inputs, baselines)
        path_weights(method, n_steps)  # validates `method` and `n_steps` first
        result, attrs = self._integrate(
            call, starts, n_steps, method, internal_batch_size, attribute_to_layer_input, grad_kwargs
        )
        return self._with_delta(result, attrs, starts, call, return_convergence_delta)

    @abstractmethod
    def _integrate(
        self, call: Call, starts: tuple[Tensor, ...], n_steps: int, method: str,
        internal_batch_size: int | None, use_input: bool, grad_kwargs: dict[str, Any] | None,
    ) -> tuple[LayerResult, tuple[Tensor, ...]]: ...


class LayerConductance(_CompletePathMethod):
    """Conductance of each neuron of a layer (Dhamdhere et al., 2018).

    Integrated gradients flowing through each neuron: along the path from
    ``baselines`` to ``inputs``, the change of the neuron times the output's
    gradient w.r.t. it. A layer's conductances add up to
    ``F(inputs) - F(baselines)``, up to an error that shrinks with
    ``n_steps`` (``return_convergence_delta=True`` gives it per example).
    As in Captum, ``n_steps + 1`` points of ``method`` give ``n_steps``
    differences.

    Example:
        >>> import torch
        >>> from attribuo.attr import LayerConductance
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
        >>> attr, delta = LayerConductance(net, net[0]).attribute(
        ...     torch.rand(5, 3), target=0, n_steps=200, return_convergence_delta=True)
        >>> attr.shape, bool(delta.abs().max() < 1e-2)
        (torch.Size([5, 4]), True)
    """

    _multiply_by_inputs = True

    def _integrate(self, call, starts, n_steps, method, internal_batch_size, use_input, grad_kwargs):
        alphas, _ = path_weights(method, n_steps + 1)
        evaluations = site_path_evaluations(
            self.forward_func, single_layer(self.layer, type(self)), call, starts, alphas,
            use_input, internal_batch_size, grad_kwargs,
        )
        attrs = layer_conductance(evaluations)
        return layer_form(attrs), attrs



class LayerIntegratedGradients(MultipliesByInputs, _CompletePathMethod):
    """Integrated gradients in the space of a layer's values (Sundararajan et al., 2017).

    The path runs from the layer's values at ``baselines`` to its values at
    ``inputs``; the layer's output is replaced by the path points while the
    rest of the model runs. Works on embedding layers with integer token
    inputs (baselines are then token ids, e.g. padding), and on a list of
    layers, all replaced at once (a layer whose output only reaches the
    model through another listed layer then gets zero attributions).

    Example:
        >>> import torch
        >>> from attribuo.attr import LayerIntegratedGradients
        >>> emb = torch.nn.Embedding(10, 4)
        >>> net = torch.nn.Sequential(emb, torch.nn.Flatten(), torch.nn.Linear(12, 2))
        >>> ids = torch.tensor([[1, 2, 3], [4, 5, 6]])
        >>> attr, delta = LayerIntegratedGradients(net, emb).attribute(
        ...     ids, target=1, return_convergence_delta=True)
        >>> attr.shape, bool(delta.abs().max() < 1e-4)
        (torch.Size([2, 3, 4]), True)
    """

    _float_inputs = False  # token ids are fine: the path runs through the layer's values

    def _integrate(self, call, starts, n_steps, method, internal_batch_size, use_input, grad_kwargs):
        layers = layer_list(self.layer)
        check_grad_kwargs(grad_kwargs)
        ends = layer_values_at(self.forward_func, layers, call, use_input)
        begins = layer_values_at(self.forward_func, layers, call.with_inputs(starts), use_input)
        counts = [len(values) for values in ends]
        layer_ends = tuple(v for values in ends for v in values)
        layer_starts = tuple(v for values in begins for v in values)
        require_floating(layer_ends, "layer values")
        replaced = site_function(self.forward_func, layers, call, use_input, counts)
        opted_in = bool(grad_kwargs and (grad_kwargs.get("materialize_grads") or grad_kwargs.get("allow_unused")))
        if len(layers) > 1 and not opted_in:  # as in Captum, materialize_grads=True accepts zeros
            check_layers_reach_output(replaced, call, layer_ends, layers, counts)
        alphas, weights = path_weights(method, n_steps)
        attrs = integrate_path_gradients(
            replaced, call.with_inputs(layer_ends, args=()), layer_starts, alphas, weights,
            internal_batch_size,
        )
        if self.multiplies_by_inputs:
            attrs = tuple(g * (e - s) for g, e, s in zip(attrs, layer_ends, layer_starts))
        bounds = [sum(counts[:i]) for i in range(len(counts) + 1)]
        result = per_layer(self.layer, [layer_form(attrs[a:b]) for a, b in zip(bounds, bounds[1:])])
        return result, attrs


def check_layers_reach_output(
    replaced: Callable, call: Any, layer_ends: tuple[Tensor, ...], layers: list[nn.Module], counts: list[int],
) -> None:
    """Raise when a listed layer reaches the output only through another listed layer.

    All listed layers are replaced at once, so such a layer would get
    gradient zero: a silent wrong answer. One forward and backward at the inputs tells.
    """
    probe = tuple(v.detach().requires_grad_() for v in layer_ends)
    with torch.enable_grad():
        out = call.with_inputs(probe, args=()).forward(replaced)
        grads = torch.autograd.grad(out.sum(), probe, allow_unused=True)
    owners = [i for i, n in enumerate(counts) for _ in range(n)]
    cut = sorted({owners[k] for k, g in enumerate(grads) if g is None})
    if cut:
        names = ", ".join(f"layer[{i}] ({type(layers[i]).__name__})" for i in cut)
        raise ArgumentValueError(
            f"{names} reaches the output only through another listed layer; all listed layers are "
            "replaced together, so its attributions would be zero. Attribute it in a separate call."
        )


_NEUTRAL_GRAD_KWARGS = {"retain_graph", "allow_unused", "materialize_grads"}


def check_grad_kwargs(grad_kwargs: dict[str, Any] | None) -> None:
    """Path methods differentiate chunk by chunk; only kwargs that cannot change results pass."""
    if grad_kwargs is None:
        return
    if not isinstance(grad_kwargs, dict):
        raise ArgumentTypeError(f"`grad_kwargs` must be a dict, got {type(grad_kwargs).__name__}")
    unsupported = set(grad_kwargs) - _NEUTRAL_GRAD_KWARGS
    if unsupported:
        raise ArgumentValueError(
            f"`grad_kwargs` keys {sorted(unsupported)} are not supported here; "
            f"only {sorted(_NEUTRAL_GRAD_KWARGS)} are accepted"
        )
