"""Propagation rules of layer-wise relevance propagation (LRP).

A rule says how the relevance arriving at a layer's output is split over its
inputs. Every rule here is configuration over one body,
:meth:`PropagationRule.propagate`::

    z  = layer(modified inputs, modified parameters)
    s  = relevance / stabilize(z)
    R  = modified inputs * (d z / d inputs)^T s

so a rule only states how it modifies the parameters
(:meth:`~PropagationRule.modify_parameter`), the inputs
(:meth:`~PropagationRule.modify_input`) and the stabiliser
(``STABILITY_FACTOR``). A new rule is a few lines; for example the
"w-square" rule of Montavon et al. (2017)::

    class WSquareRule(PropagationRule):
        def modify_parameter(self, name, param):
            return param**2 if name == "weight" else torch.zeros_like(param)

        def modify_input(self, x):
            return torch.ones_like(x)

Rules are attached to a module through its ``rule`` attribute (as in
Captum: ``model.fc1.rule = EpsilonRule(epsilon=0.1)``), through a composite
(``attribuo.attr.relevance``), or by default through
:data:`DEFAULT_RULES`, a map from layer classes to rule factories that is
searched by ``isinstance`` (subclasses inherit their base class's rule) and
that users may extend.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd
from torch.nn.modules.dropout import _DropoutNd
from torch.nn.modules.pooling import (
    _AdaptiveAvgPoolNd,
    _AdaptiveMaxPoolNd,
    _AvgPoolNd,
    _MaxPoolNd,
)
from torch.nn.utils.stateless import _reparametrize_module

from ..._engine.errors import ArgumentValueError


@dataclass
class LayerCall:
    """One call of a module during the LRP forward, as a rule sees it.

    ``inputs`` are the tensor arguments (detached values), ``output`` the
    output the model used. :meth:`forward` re-runs the layer on other inputs
    and/or with modified parameters and returns ``(output, leaves)``, the
    leaves being the differentiable stand-ins of the inputs.
    """

    module: nn.Module
    args: tuple
    kwargs: dict
    positions: tuple[int, ...]
    inputs: tuple[Tensor, ...]
    output: Tensor
    graph_inputs: tuple[Tensor, ...] = ()
    graph_output: Tensor | None = None
    parameters: dict[str, Tensor] = field(default_factory=dict)
    function: Callable[[dict, tuple, dict], Tensor] | None = None

    def forward(
        self,
        inputs: tuple[Tensor, ...] | None = None,
        parameter: Callable[[str, Tensor], Tensor] | None = None,
    ) -> tuple[Tensor, tuple[Tensor, ...]]:
        """The layer's output on ``inputs`` (default: its own) with ``parameter`` applied."""
        if inputs is None and parameter is None and self.graph_output is not None:
            return self.graph_output, self.graph_inputs
        xs = self.inputs if inputs is None else inputs
        leaves = tuple(x.detach().requires_grad_() for x in xs)
        args = list(self.args)
        for pos, leaf in zip(self.positions, leaves):
            args[pos] = leaf
        params = {
            name: (parameter(name.rsplit(".", 1)[-1], p) if parameter else p)
            for name, p in self.parameters.items()
        }
        with torch.enable_grad():
            if self.function is not None:
                out = self.function(params, tuple(args), self.kwargs)
            else:
                with _reparametrize_module(self.module, params):
                    # .forward, not __call__: the module's hooks already ran once.
                    out = self.module.forward(*args, **self.kwargs)
        return out, leaves


def _vjp(z: Tensor, leaves: tuple[Tensor, ...], s: Tensor) -> tuple[Tensor, ...]:
    grads = torch.autograd.grad(z, leaves, s, allow_unused=True)
    return tuple(torch.zeros_like(x) if g is None else g for x, g in zip(leaves, grads))


class PropagationRule:
    """Base of all LRP rules (Captum's ``PropagationRule``).

    Subclasses override some of :meth:`modify_parameter`,
    :meth:`modify_input` and ``STABILITY_FACTOR``; the propagation itself is
    written once, in :meth:`propagate`. See the module docstring for a
    complete new rule in five lines.

    Example:
        >>> import torch
        >>> from attribuo.attr import LRP
        >>> from attribuo.attr.relevance.rules import GammaRule
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
        >>> model[0].rule = GammaRule(gamma=0.5)
        >>> LRP(model).attribute(torch.rand(2, 3), target=0).shape
        torch.Size([2, 3])
    """

    STABILITY_FACTOR: float = 1e-9

    def modify_parameter(self, name: str, param: Tensor) -> Tensor:
        """The parameter ``name`` ("weight", "bias", ...) as the rule uses it."""
        return param

    def modify_input(self, x: Tensor) -> Tensor:
        """The layer input as the rule uses it (also the factor of the relevance)."""
        return x

    def stabilize(self, z: Tensor) -> Tensor:
        """``z + eps * sign(z)`` with sign(0) taken as +1, so no division by zero."""
        sign = torch.where(z >= 0, 1.0, -1.0).to(z.dtype)
        return z + sign * self.STABILITY_FACTOR

    def _changes(self, method: str) -> bool:
        return getattr(type(self), method) is not getattr(PropagationRule, method)

    def propagate(self, layer: LayerCall, relevance: Tensor) -> tuple[Tensor, ...]:
        """Split ``relevance`` (the layer output's) over the layer's inputs."""
        xs = (
            tuple(self.modify_input(x) for x in layer.inputs)
            if self._changes("modify_input")
            else None
        )
        parameter = self.modify_parameter if self._changes("modify_parameter") else None
        z, leaves = layer.forward(xs, parameter)
        grads = _vjp(z, leaves, relevance / self.stabilize(z.detach()))
        factors = layer.inputs if xs is None else xs
        return tuple(x * g for x, g in zip(factors, grads))

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({fields})"


class EpsilonRule(PropagationRule):
    """LRP-epsilon: ``epsilon`` added to the denominators absorbs weak, noisy relevance.

    For middle and upper layers. ``epsilon`` near 0 gives LRP-0, which on a
    bias-free ReLU network conserves relevance exactly.

    Example:
        >>> from attribuo.attr.relevance.rules import EpsilonRule
        >>> EpsilonRule(epsilon=0.25).STABILITY_FACTOR
        0.25
    """

    def __init__(self, epsilon: float = 1e-9) -> None:
        self.STABILITY_FACTOR = epsilon


def _zero_bias(name: str, param: Tensor, flag: bool) -> Tensor:
    return torch.zeros_like(param) if flag and name == "bias" else param


class GammaRule(PropagationRule):
    """LRP-gamma: positive weights are enlarged by ``gamma`` times themselves.

    Favours positive contributions; for lower layers. As in Captum, the bias
    is kept unless ``set_bias_to_zero``.

    Example:
        >>> from attribuo.attr.relevance.rules import GammaRule
        >>> GammaRule(gamma=0.5).gamma
        0.5
    """

    def __init__(self, gamma: float = 0.25, set_bias_to_zero: bool = False) -> None:
        self.gamma = gamma
        self.set_bias_to_zero = set_bias_to_zero

    def modify_parameter(self, name: str, param: Tensor) -> Tensor:
        if name == "weight":
            return param + self.gamma * param.clamp(min=0)
        return _zero_bias(name, param, self.set_bias_to_zero)


class Alpha1_Beta0_Rule(PropagationRule):  # noqa: N801 (Captum's name)
    """LRP-alpha1-beta0 (deep Taylor, z+): only positive weights carry relevance.

    Captum's version: weights clamped at 0, bias kept unless
    ``set_bias_to_zero``. Not meant for BatchNorm layers.

    Example:
        >>> from attribuo.attr.relevance.rules import Alpha1_Beta0_Rule
        >>> Alpha1_Beta0_Rule(set_bias_to_zero=True).set_bias_to_zero
        True
    """

    def __init__(self, set_bias_to_zero: bool = False) -> None:
        self.set_bias_to_zero = set_bias_to_zero

    def modify_parameter(self, name: str, param: Tensor) -> Tensor:
        if name == "weight":
            return param.clamp(min=0)
        return _zero_bias(name, param, self.set_bias_to_zero)


class IdentityRule(EpsilonRule):
    """Relevance passes unchanged from output to input (same shapes required).

    Useful for BatchNorm layers and for element-wise activations without a
    built-in rule (``DEFAULT_RULES[nn.GELU] = IdentityRule``).

    Example:
        >>> from attribuo.attr.relevance.rules import IdentityRule
        >>> IdentityRule().STABILITY_FACTOR
        1e-09
    """

    def propagate(self, layer: LayerCall, relevance: Tensor) -> tuple[Tensor, ...]:
        for x in layer.inputs:
            if x.shape != relevance.shape:
                raise ArgumentValueError(
                    f"IdentityRule on {type(layer.module).__name__} needs inputs shaped like "
                    f"its output {tuple(relevance.shape)}, got {tuple(x.shape)}"
                )
        return tuple(relevance for _ in layer.inputs)


class FlatRule(PropagationRule):
    """Flat rule: relevance spread uniformly over each output's receptive field.

    Weights are replaced by ones, bias dropped, inputs taken as ones. Used as
    the first-layer rule of :class:`~attribuo.attr.relevance.EpsilonPlusFlat`.

    Example:
        >>> from attribuo.attr.relevance.rules import FlatRule
        >>> FlatRule()
        FlatRule()
    """

    def modify_parameter(self, name: str, param: Tensor) -> Tensor:
        return torch.ones_like(param) if name == "weight" else torch.zeros_like(param)

    def modify_input(self, x: Tensor) -> Tensor:
        return torch.ones_like(x)


class WSquareRule(FlatRule):
    """w-square rule (Montavon et al., 2017): relevance in proportion to squared weights.

    Example:
        >>> from attribuo.attr.relevance.rules import WSquareRule
        >>> WSquareRule()
        WSquareRule()
    """

    def modify_parameter(self, name: str, param: Tensor) -> Tensor:
        return param**2 if name == "weight" else torch.zeros_like(param)


class ZBoxRule(PropagationRule):
    """z^B rule for a first layer whose inputs lie in ``[low, high]`` (e.g. pixels).

    ``z = W x - W+ low - W- high``; relevance ``x c - low c+ - high c-`` with
    ``c = W^T s``, ``c+ = W+^T s``, ``c- = W-^T s``.

    Example:
        >>> from attribuo.attr.relevance.rules import ZBoxRule
        >>> ZBoxRule(low=-1.0, high=1.0).low
        -1.0
    """

    def __init__(self, low: float | Tensor, high: float | Tensor) -> None:
        self.low = low
        self.high = high

    def propagate(self, layer: LayerCall, relevance: Tensor) -> tuple[Tensor, ...]:
        x = layer.inputs
        lows = tuple(torch.zeros_like(t) + torch.as_tensor(self.low, dtype=t.dtype, device=t.device) for t in x)
        highs = tuple(torch.zeros_like(t) + torch.as_tensor(self.high, dtype=t.dtype, device=t.device) for t in x)

        def signed(keep: Callable[[Tensor], Tensor]) -> Callable[[str, Tensor], Tensor]:
            return lambda name, p: keep(p) if name == "weight" else torch.zeros_like(p)

        z_x, leaves_x = layer.forward(x)
        z_l, leaves_l = layer.forward(lows, signed(lambda w: w.clamp(min=0)))
        z_h, leaves_h = layer.forward(highs, signed(lambda w: w.clamp(max=0)))
        z = z_x - z_l - z_h
        leaves = leaves_x + leaves_l + leaves_h
        grads = _vjp(z, leaves, relevance / self.stabilize(z.detach()))
        n = len(x)
        return tuple(
            x[i] * grads[i] + lows[i] * grads[n + i] + highs[i] * grads[2 * n + i]
            for i in range(n)
        )


#: Layer class -> rule factory (``None``: the layer is transparent and its
#: operations are propagated one by one: ReLU/Tanh/Dropout pass relevance
#: unchanged, additions split it in proportion to the summands). Searched
#: along each module's class hierarchy, so subclasses are covered.
DEFAULT_RULES: dict[type, Callable[[], PropagationRule] | None] = {
    nn.Linear: EpsilonRule,
    _ConvNd: EpsilonRule,
    _MaxPoolNd: EpsilonRule,
    _AvgPoolNd: EpsilonRule,
    _AdaptiveAvgPoolNd: EpsilonRule,
    _AdaptiveMaxPoolNd: EpsilonRule,
    _BatchNorm: EpsilonRule,
    nn.ReLU: None,
    nn.Tanh: None,
    _DropoutNd: None,
    nn.Flatten: None,
    nn.Unflatten: None,
    nn.Identity: None,
}

_MISSING = object()


def default_rule(module: nn.Module) -> Any:
    """The rule factory for ``module`` from :data:`DEFAULT_RULES`, or ``_MISSING``."""
    for cls in type(module).__mro__:
        if cls in DEFAULT_RULES:
            return DEFAULT_RULES[cls]
    return _MISSING
