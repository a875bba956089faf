"""AttnLRP's rules (Achtibat et al., ICML 2024) as backward substitutions.

The rules are written in *gradient form*: every backward is modified so
that, at each tensor ``t`` of the forward, ``t * grad(t)`` is the relevance
AttnLRP gives ``t``. The relevance of the inputs is then gradient times
input, for the price of one forward and one backward, with no explicit
relevance tensors and no division by activations between layers.

In gradient form, with ``R = t * g`` at every tensor:

* **linear maps** (``nn.Linear``, convolutions, additions, reshapes, RoPE's
  products with constant tables) keep their gradient: that is LRP-0, which
  conserves relevance up to what biases absorb. A composite can give a
  linear layer an epsilon or gamma rule instead.
* **element-wise non-linearities** (GELU, SiLU, tanh, Mish, softplus, ELU, and
  every activation module of ``transformers.activations``, whatever formula
  it is written with) get the identity rule ``R_in = R_out``: the gradient
  becomes ``g * f(x) / x``.
* **products of two input-dependent tensors** (attention's query-key and
  attention-value products, the gates of GLU/SwiGLU MLPs, ``torch.einsum``)
  get the uniform rule: each factor receives half the relevance, so the
  gradient to both factors is halved.
* **softmax** keeps its gradient: gradient times input of the softmax is
  AttnLRP's softmax rule ``R_in = x (R_out - s sum R_out)``, a linearisation
  whose bias absorbs part of the relevance (the one rule that is not exactly
  conservative). ``attention_rule="constant"`` holds the attention
  probabilities constant instead (CP-LRP), which conserves exactly.
* **normalisation** (LayerNorm, RMSNorm, GroupNorm, ``F.normalize``, and any
  ``rsqrt``, ``sqrt``, ``var``, ``std``, norm or negative power of an
  input-dependent tensor, and division by one) treats the scale as a
  constant: the normalisation is then linear in its input (identity rule on
  the variance).
* **SDPA** keeps torch's fused kernel: for it the rules above come down to
  scaling the gradients of q and k by 1/4 and of v by 1/2. It is written out
  (:mod:`attribuo._engine.attention`) only when its maps are recorded.

Which tensors depend on the explained inputs is read off the autograd graph
(parameters and constant tables do not), so ``weight * x`` is linear while
``gate * up`` is a product.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..._engine.attention import SDPA_FUNCTIONS, AttentionRecorder, attention_rules, sdpa_call
from ..._engine.dependence import Dependence
from ..._engine.errors import ArgumentTypeError
from ..._engine.hooks import forward_hooks, forward_pre_hooks
from ..._engine.norms import NORM_FUNCTIONS, norm_call
from ..._engine.overrides import Rule, call_argument
from .rules import LayerCall, PropagationRule


# ------------------------------------------------------ autograd nodes
class _GradScale(torch.autograd.Function):
    """Identity forward; the gradient is multiplied by ``factor``."""

    @staticmethod
    def forward(ctx, x: Tensor, factor: float) -> Tensor:
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g: Tensor) -> tuple:
        return g * ctx.factor, None


class _IdentityRule(torch.autograd.Function):
    """``out = f(x)`` whose gradient is ``g * out / x``, so relevance passes unchanged."""

    @staticmethod
    def forward(ctx, x: Tensor, out: Tensor) -> Tensor:
        ratio = torch.where(x == 0, torch.zeros((), dtype=out.dtype, device=out.device), out / x)
        ctx.save_for_backward(ratio)
        return out.view_as(out)

    @staticmethod
    def backward(ctx, g: Tensor) -> tuple:
        (ratio,) = ctx.saved_tensors
        return g * ratio, None


@dataclass
class _LayerStep:
    rule: PropagationRule
    call: LayerCall


class _GradientFormRule(torch.autograd.Function):
    """A layer whose backward is an LRP rule in gradient form: ``vjp(z', R / z')`` with ``R = y g``."""

    @staticmethod
    def forward(ctx, step: _LayerStep, x: Tensor) -> Tensor:  # noqa: ARG004
        ctx.step = step
        return step.call.output.view_as(step.call.output)

    @staticmethod
    def backward(ctx, g: Tensor) -> tuple:
        rule, call = ctx.step.rule, ctx.step.call
        parameter = rule.modify_parameter if rule._changes("modify_parameter") else None
        with torch.enable_grad():
            z, leaves = call.forward(None, parameter)
            s = call.output * g / rule.stabilize(z.detach())
            (grad,) = torch.autograd.grad(z, leaves, s, allow_unused=True)
        return None, torch.zeros_like(leaves[0]) if grad is None else grad


def check_gradient_form(rule: PropagationRule, where: str) -> None:
    """Only rules that change parameters (epsilon, gamma) have a gradient form."""
    if not isinstance(rule, PropagationRule):
        raise ArgumentTypeError(f"the rule for {where} must be a PropagationRule, got {type(rule).__name__}")
    if rule._changes("modify_input") or rule._changes("propagate"):
        raise ArgumentTypeError(
            f"{type(rule).__name__} (for {where}) changes the layer inputs, which AttnLRP's "
            "gradient form cannot express; use EpsilonRule or GammaRule on transformer layers"
        )


# ------------------------------------------------------------ the rules
@dataclass
class TransformerState:
    """Per call: which tensors depend on the sources, and whether a unit is running."""

    dependence: Dependence
    recorder: AttentionRecorder | None = None
    constant_attention: bool = False
    depth: int = 0



ELEMENTWISE_FUNCTIONS: tuple[Callable, ...] = tuple(
    f
    for f in (
        F.gelu, F.silu, F.mish, F.elu, F.celu, F.selu, F.softplus, F.hardswish, F.tanh,
        torch.tanh, torch.Tensor.tanh, getattr(torch.special, "gelu", None),
    )
    if f is not None
)
PRODUCT_FUNCTIONS: tuple[Callable, ...] = (
    torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__, torch.Tensor.__rmatmul__,
    torch.bmm, torch.Tensor.bmm, torch.mm, torch.Tensor.mm, torch.mul, torch.Tensor.mul,
    torch.Tensor.__mul__, torch.Tensor.__rmul__, torch.multiply, torch.einsum,
)
DIVISIONS: tuple[Callable, ...] = (
    torch.div, torch.Tensor.div, torch.Tensor.div_, torch.true_divide, torch.Tensor.__truediv__,
    torch.Tensor.__itruediv__, torch.divide,
)
NORMALIZERS: tuple[Callable, ...] = (
    torch.rsqrt, torch.Tensor.rsqrt, torch.sqrt, torch.Tensor.sqrt, torch.var, torch.Tensor.var,
    torch.std, torch.Tensor.std, torch.var_mean, torch.std_mean, torch.norm, torch.Tensor.norm,
    torch.linalg.vector_norm, torch.linalg.norm, torch.reciprocal, torch.Tensor.reciprocal,
)
POWERS: tuple[Callable, ...] = (torch.pow, torch.Tensor.pow, torch.Tensor.__pow__)


def _detached(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.detach()
    if isinstance(value, tuple):
        return tuple(_detached(v) for v in value)
    return value


def _frozen_scale(t: Tensor, dims: tuple[int, ...], eps: float, centre: bool) -> Tensor:
    centred = t - t.mean(dims, keepdim=True) if centre else t
    second = (centred * centred).mean(dims, keepdim=True)
    return centred * torch.rsqrt(second + eps).detach()


class _FrozenScaleLayerNorm(torch.autograd.Function):
    """LayerNorm from torch's fused kernel, differentiated with its scale ``1/sigma`` held constant."""

    @staticmethod
    def forward(ctx, x: Tensor, shape: tuple, weight: Tensor | None, bias: Tensor | None, eps: float) -> Tensor:
        out, _, rstd = torch.native_layer_norm(x, shape, weight, bias, eps)
        ctx.dims = tuple(range(-len(shape), 0))
        ctx.save_for_backward(rstd, weight)
        return out

    @staticmethod
    def backward(ctx, g: Tensor) -> tuple:
        rstd, weight = ctx.saved_tensors
        scaled = g * weight if weight is not None else g
        centred = scaled - scaled.mean(ctx.dims, keepdim=True)
        return centred * rstd, None, None, None, None


def _norm(func, args, kwargs):
    call = norm_call(func, args, kwargs)
    if call.kind == "layer":
        shape = tuple(call.x.shape[d] for d in call.dims)
        return _FrozenScaleLayerNorm.apply(call.x, shape, call.weight, call.bias, call.eps)
    return call.written_out(_frozen_scale)


def _normalize(func, args, kwargs):
    x = args[0]
    p, dim, eps = call_argument(args, kwargs, 1, "p", 2.0), call_argument(args, kwargs, 2, "dim", 1), call_argument(args, kwargs, 3, "eps", 1e-12)
    norm = torch.linalg.vector_norm(x, p, dim, keepdim=True).clamp_min(eps).detach()
    return x / norm


def transformer_rules(state: TransformerState) -> dict[Callable, Rule]:
    """The AttnLRP substitutions for one call (see the module docstring)."""
    depends = state.dependence

    def outside_units(rule: Rule) -> Rule:
        def apply(func, args, kwargs):
            if state.depth:
                return func(*args, **kwargs)
            return rule(func, args, kwargs)

        return apply

    def product(func, args, kwargs):
        out = func(*args, **kwargs)
        operands = args[1:] if func is torch.einsum else args
        if func is torch.einsum and len(operands) == 1 and isinstance(operands[0], (list, tuple)):
            operands = operands[0]
        count = sum(1 for t in operands if depends(t))
        if count > 1 and isinstance(out, Tensor) and out.requires_grad:
            return _GradScale.apply(out, 1.0 / count)
        return out

    def elementwise(func, args, kwargs):
        x = args[0]
        if not depends(x):
            return func(*args, **kwargs)
        kwargs = {k: v for k, v in kwargs.items() if k != "inplace"}
        with torch.no_grad():
            out = func(*args, **kwargs)
        return _IdentityRule.apply(x, out)

    def divide(func, args, kwargs):
        divisor = call_argument(args, kwargs, 1, "other")
        if depends(divisor):
            if "other" in kwargs:
                kwargs = {**kwargs, "other": divisor.detach()}
            else:
                args = (args[0], divisor.detach(), *args[2:])
        return func(*args, **kwargs)

    def reverse_divide(func, args, kwargs):  # other / self
        if depends(args[0]):
            args = (args[0].detach(), *args[1:])
        return func(*args, **kwargs)

    def normalizer(func, args, kwargs):
        out = func(*args, **kwargs)
        return _detached(out) if depends(args[0]) else out

    def power(func, args, kwargs):
        exponent = call_argument(args, kwargs, 1, "exponent")
        out = func(*args, **kwargs)
        shrinking = isinstance(exponent, (int, float)) and exponent < 1 and exponent != 0
        return out.detach() if shrinking and depends(args[0]) else out

    rules: dict[Callable, Rule] = {}
    rules.update({f: product for f in PRODUCT_FUNCTIONS})
    rules.update({f: elementwise for f in ELEMENTWISE_FUNCTIONS})
    rules.update({f: divide for f in DIVISIONS})
    rules[torch.Tensor.__rtruediv__] = reverse_divide
    rules.update({f: normalizer for f in NORMALIZERS})
    rules.update({f: power for f in POWERS})
    rules.update({f: _norm for f in NORM_FUNCTIONS})
    rules[F.normalize] = _normalize

    def attention_product(a: Tensor, b: Tensor) -> Tensor:
        return product(torch.matmul, (a, b), {})

    def on_map(probabilities: Tensor) -> Tensor:
        if state.constant_attention:
            probabilities = probabilities.detach()
        return state.recorder.record(probabilities) if state.recorder is not None else probabilities

    wants_maps = state.constant_attention or state.recorder is not None
    rules.update(attention_rules(on_map if wants_maps else None, matmul=attention_product))
    if state.recorder is None:
        # Nothing to record: keep torch's fused kernel and put the rules on its gradients.
        rules.update({f: _fused_attention(state) for f in SDPA_FUNCTIONS})
    return {f: outside_units(r) for f, r in rules.items()}


_QKV = ("query", "key", "value")


def _fused_attention(state: TransformerState) -> Rule:
    """SDPA with AttnLRP's gradients, from its fused kernel.

    With ``A = softmax(q k^T)``, the uniform rule halves the gradient of both
    factors of ``A v`` and then of both factors of ``q k^T``; softmax keeps its
    gradient. So the gradients of ``q`` and ``k`` are the ordinary ones times
    ``1/4`` and that of ``v`` times ``1/2`` (a factor 1 wherever a factor
    does not depend on the input). Holding ``A`` constant detaches ``q`` and ``k``.
    """
    depends = state.dependence

    def rule(func, args, kwargs):
        call = sdpa_call(args, kwargs)
        if call is None:
            return func(*args, **kwargs)
        q, k, v = call.query, call.key, call.value
        dq, dk, dv = depends(q), depends(k), depends(v)
        if state.constant_attention:
            q, k = q.detach(), k.detach()
        else:
            values = 0.5 if (dq or dk) and dv else 1.0
            scores = (0.5 if dq and dk else 1.0) * values
            q = _GradScale.apply(q, scores) if dq and scores != 1 else q
            k = _GradScale.apply(k, scores) if dk and scores != 1 else k
            v = _GradScale.apply(v, values) if dv and values != 1 else v
        new = dict(zip(_QKV, (q, k, v)))
        args = tuple(new[_QKV[i]] if i < 3 else a for i, a in enumerate(args))
        kwargs = {key: new.get(key, value) for key, value in kwargs.items()}
        return func(*args, **kwargs)

    return rule


# ------------------------------------------------------------ units
ACTIVATION_MODULES: list[type] = [
    nn.GELU, nn.SiLU, nn.Mish, nn.Tanh, nn.ELU, nn.CELU, nn.SELU, nn.Softplus, nn.Hardswish,
]


def is_activation(module: nn.Module) -> bool:
    """An element-wise activation module: torch's (ACTIVATION_MODULES) or any of ``transformers.activations``."""
    if isinstance(module, tuple(ACTIVATION_MODULES)):
        return True
    kind = type(module)
    return kind.__module__ == "transformers.activations" and kind.__name__ != "LinearActivation"


@contextlib.contextmanager
def unit_hooks(model: Any, state: TransformerState, layer_rules: dict[nn.Module, PropagationRule]) -> Iterator[None]:
    """Activation modules and layers with an explicit rule run as one unit each."""
    if not isinstance(model, nn.Module):
        yield
        return
    activations = [m for m in model.modules() if is_activation(m) and m not in layer_rules]
    units = activations + list(layer_rules)

    def enter(module, args, kwargs):
        state.depth += 1

    def leave_activation(module, args, kwargs, output):
        state.depth -= 1
        x = args[0] if args else None
        if state.depth or not isinstance(output, Tensor) or not state.dependence(x):
            return output
        return _IdentityRule.apply(x, output.detach())

    def leave_layer(module, args, kwargs, output):
        state.depth -= 1
        x = args[0] if args else None
        if state.depth or not isinstance(output, Tensor) or not state.dependence(x):
            return output
        call = LayerCall(
            module=module, args=tuple(a.detach() if isinstance(a, Tensor) else a for a in args),
            kwargs=kwargs, positions=(0,), inputs=(x.detach(),), output=output.detach(),
            parameters={n: p.detach() for n, p in module.named_parameters()},
        )
        return _GradientFormRule.apply(_LayerStep(layer_rules[module], call), x)

    with (
        forward_pre_hooks(((m, enter) for m in units), with_kwargs=True),
        forward_hooks(((m, leave_activation) for m in activations), with_kwargs=True),
        forward_hooks(((m, leave_layer) for m in layer_rules), with_kwargs=True),
    ):
        yield
