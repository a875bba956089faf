"""DeepLift rules for the operations transformers use, with summation-to-delta exact.

As in :mod:`.deeplift_rules`, the forward runs on ``[x; x0]`` along dim 0
and each rule passes back multipliers, the same in both halves of a pair:

* **element-wise** functions (GELU exact and tanh, SiLU, SELU, CELU, Mish,
  exp, log, sqrt, rsqrt, reciprocal, erf, square, scalar powers): the Rescale
  multiplier ``(f(x) - f(x0)) / (x - x0)``, the derivative where the two
  are closer than ``eps``, 0 where both are infinite (masked scores);
* **products** of two tensors that both carry the inputs (``*``, matmul,
  ``bmm``, two-operand ``einsum``): the exact two-player split
  ``d(ab) = da (b + b0) / 2 + (a + a0) / 2 db``, i.e. each factor's
  multiplier is the other factor's pair mean. A product with a parameter or
  constant is linear and keeps its gradient;
* **division** ``a / b`` by a tensor that carries the inputs:
  ``a * reciprocal(b)``, both rules above;
* **max / amax** along a dim: the rise of the maximum goes to the input's
  arg-max, the drop to the reference's, as for max pooling;
* **LayerNorm, RMSNorm, GroupNorm**: written out (centre, square, mean,
  rsqrt, product, affine) so that each step has its exact rule;
* **softmax over the last dim of a 3-D or larger tensor** (attention) and the
  softmax of a written-out **SDPA**: ``exp(z - m) / sum exp(z - m)`` with ``m``
  one constant per pair, exact. A 2-D softmax keeps Captum's rule (see
  :mod:`.deeplift_rules`), for parity with Captum on classifier heads;
* ``nn.MultiheadAttention``'s functional body is looked into.

Every step is exact, so attributions add up to ``F(x) - F(x0)`` up to float
rounding on BERT, GPT2, Llama and ViT.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..._engine.attention import SDPA_FUNCTIONS, decomposed_attention, sdpa_call
from ..._engine.dependence import Dependence
from ..._engine.overrides import Rule, see_inside

# ------------------------------------------------------------ element-wise


def _halves(t: Tensor) -> tuple[Tensor, Tensor]:
    n = t.shape[0] // 2
    return t[:n], t[n:]


def _derivative(fn: Callable[[Tensor], Tensor], z: Tensor) -> Tensor:
    with torch.enable_grad():
        leaf = z.detach().requires_grad_()
        (grad,) = torch.autograd.grad(fn(leaf).sum(), leaf)
    return grad


class _Rescale(torch.autograd.Function):
    """``fn(z)`` whose backward passes the pair's Rescale multiplier to both halves."""

    @staticmethod
    def forward(ctx, z: Tensor, fn: Callable[[Tensor], Tensor], eps: float) -> Tensor:
        out = fn(z)
        z1, z0 = _halves(z)
        o1, o0 = _halves(out)
        dz = z1 - z0
        ratio = (o1 - o0) / dz
        near = dz.abs() < eps
        if bool(near.any()):
            slope = _derivative(fn, z)
            s1, s0 = _halves(slope)
            # Each half keeps its own slope where the pair coincides.
            multiplier = torch.cat((torch.where(near, s1, ratio), torch.where(near, s0, ratio)))
        else:
            multiplier = torch.cat((ratio, ratio))
        # Both halves infinite (masked scores): nothing flows through them.
        ctx.save_for_backward(torch.nan_to_num(multiplier, nan=0.0, posinf=0.0, neginf=0.0))
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple:
        (multiplier,) = ctx.saved_tensors
        return grad * multiplier, None, None


def _scalar(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class _Unary:
    """How to read ``f(z)`` off a call: ``value(z, args, kwargs)``; None when the call is not element-wise."""

    value: Callable[[tuple, dict], Callable[[Tensor], Tensor] | None]


def _same_call(func: Callable) -> _Unary:
    def value(args, kwargs):
        rest, kw = args[1:], {k: v for k, v in kwargs.items() if k != "inplace"}
        return lambda z: func(z, *rest, **kw)

    return _Unary(value)


def _power(func: Callable) -> _Unary:
    def value(args, kwargs):
        exponent = kwargs.get("exponent", args[1] if len(args) > 1 else None)
        if not _scalar(exponent) or not isinstance(args[0], Tensor):
            return None
        return lambda z: torch.pow(z, exponent)

    return _Unary(value)


def _unary_table() -> dict[Callable, _Unary]:
    table: dict[Callable, _Unary] = {}
    for func in (
        F.gelu, F.silu, F.selu, F.celu, F.mish, torch.selu, torch.celu, torch.exp, torch.Tensor.exp,
        torch.log, torch.Tensor.log, torch.sqrt, torch.Tensor.sqrt, torch.rsqrt, torch.Tensor.rsqrt,
        torch.reciprocal, torch.Tensor.reciprocal, torch.erf, torch.Tensor.erf, torch.special.erf,
        torch.square, torch.Tensor.square, getattr(torch.special, "gelu", None),
    ):
        if func is not None:
            table[func] = _same_call(func)
    for func in (torch.pow, torch.Tensor.pow, torch.Tensor.__pow__):
        table[func] = _power(func)
    return table


UNARY = _unary_table()

# ---------------------------------------------------------------- products


class _Product(torch.autograd.Function):
    """``op(a, b)``, bilinear; each factor's multiplier uses the other factor's pair mean."""

    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor, op: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
        ctx.op = op
        ctx.save_for_backward(a, b)
        return op(a, b)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple:
        a, b = ctx.saved_tensors

        def pair_mean(t: Tensor) -> Tensor:
            t1, t0 = _halves(t)
            mean = (t1 + t0) / 2
            return torch.cat((mean, mean))

        with torch.enable_grad():
            la, lb = a.detach().requires_grad_(), b.detach().requires_grad_()
            (grad_a,) = torch.autograd.grad(ctx.op(la, pair_mean(b)), la, grad)
            (grad_b,) = torch.autograd.grad(ctx.op(pair_mean(a), lb), lb, grad)
        return grad_a, grad_b, None


def _multiply(a: Tensor, b: Tensor) -> Tensor:
    return a * b


# -------------------------------------------------------------- max / amax


class _MaxRescale(torch.autograd.Function):
    """``amax(z, dim, keepdim)``: the rise goes to the input's arg-max, the drop to the reference's."""

    @staticmethod
    def forward(ctx, z: Tensor, dim: int, keepdim: bool, eps: float) -> Tensor:
        values, at = z.max(dim, keepdim=True)
        v1, v0 = _halves(values)
        a1, a0 = _halves(at)
        z1, z0 = _halves(z)
        rise_den = v1 - z0.gather(dim, a1)  # x - x0 at the input's arg-max
        drop_den = z1.gather(dim, a0) - v0  # x - x0 at the reference's arg-max
        change = v1 - v0
        rise = change.clamp(min=0) / torch.where(rise_den.abs() < eps, torch.ones_like(rise_den), rise_den)
        drop = change.clamp(max=0) / torch.where(drop_den.abs() < eps, torch.ones_like(drop_den), drop_den)
        # Where the pair coincides at the arg-max the change there is 0 too: the
        # ordinary gradient (1 at the arg-max) is the multiplier.
        rise = torch.where(rise_den.abs() < eps, torch.ones_like(rise), rise)
        drop = torch.where(drop_den.abs() < eps, torch.zeros_like(drop), drop)
        ctx.dim, ctx.keepdim, ctx.shape = dim, keepdim, z.shape
        ctx.save_for_backward(a1, a0, rise, drop)
        return values if keepdim else values.squeeze(dim)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple:
        a1, a0, rise, drop = ctx.saved_tensors
        dim = ctx.dim
        g = grad if ctx.keepdim else grad.unsqueeze(dim)
        g1, _ = _halves(g)
        half = torch.zeros((ctx.shape[0] // 2, *ctx.shape[1:]), dtype=g.dtype, device=g.device)
        half = half.scatter_add(dim, a1, g1 * rise).scatter_add(dim, a0, g1 * drop)
        return torch.cat((half, half)), None, None, None


# ------------------------------------------------------------- the rule set


@dataclass
class TransformerRescale:
    """The DeepLift substitutions for transformer operations, for one forward on ``[x; x0]``.

    ``sources`` are the joint leaves (inputs concatenated with baselines);
    they tell the products of two input-carrying tensors from products with
    parameters. Without them, products keep their gradient.
    """

    eps: float = 1e-10
    sources: tuple[Tensor, ...] = ()

    def __post_init__(self) -> None:
        self.depends = Dependence(self.sources)
        self.pairs = self.sources[0].shape[0] if self.sources else None

    def carries(self, t: Any) -> bool:
        """Whether ``t`` is an ``[x; x0]`` tensor of this forward."""
        return (
            isinstance(t, Tensor) and t.is_floating_point() and t.dim() >= 1 and t.shape[0] == self.pairs
            and self.depends(t)
        )

    # the operations, callable on tensors (rules call them on the pieces they write out)
    def unary(self, fn: Callable[[Tensor], Tensor], z: Tensor) -> Tensor:
        if not self.carries(z):
            return fn(z)
        return _Rescale.apply(z, fn, self.eps)

    def product(self, a: Any, b: Any, op: Callable[[Tensor, Tensor], Tensor] = _multiply) -> Tensor:
        if self.carries(a) and self.carries(b):
            return _Product.apply(a, b, op)
        return op(a, b)

    def divide(self, a: Any, b: Any) -> Tensor:
        if not self.carries(b):
            return a / b
        return self.product(a, self.unary(torch.reciprocal, b))

    def softmax(self, z: Tensor, dim: int = -1) -> Tensor:
        if not self.carries(z):
            return torch.softmax(z, dim)
        z1, z0 = _halves(z.detach())
        top = torch.maximum(z1.amax(dim, keepdim=True), z0.amax(dim, keepdim=True))
        top = torch.nan_to_num(top, neginf=0.0)  # rows masked out entirely
        shifted = z - torch.cat((top, top))
        e = self.unary(torch.exp, shifted)
        return self.product(e, self.unary(torch.reciprocal, e.sum(dim, keepdim=True)))

    def normalise(self, x: Tensor, dims: tuple[int, ...], eps: float, centre: bool) -> Tensor:
        c = x - x.mean(dims, keepdim=True) if centre else x
        second = self.unary(torch.square, c).mean(dims, keepdim=True)
        return self.product(c, self.unary(torch.rsqrt, second + eps))

    # ------------------------------------------------------------ the rules
    def table(self) -> dict[Callable, Rule]:
        rules: dict[Callable, Rule] = {}
        for func, spec in UNARY.items():
            rules[func] = self._unary_rule(spec)
        products = {
            torch.mul: _multiply, torch.Tensor.mul: _multiply, torch.Tensor.__mul__: _multiply,
            torch.Tensor.__rmul__: _multiply, torch.multiply: _multiply,
            torch.matmul: torch.matmul, torch.Tensor.matmul: torch.matmul, torch.Tensor.__matmul__: torch.matmul,
            torch.bmm: torch.bmm, torch.Tensor.bmm: torch.bmm,
        }
        for func, op in products.items():
            rules[func] = self._product_rule(op)
        rules[torch.Tensor.__rmatmul__] = self._product_rule(lambda a, b: torch.matmul(b, a))
        rules[torch.einsum] = self._einsum
        for func in (torch.div, torch.Tensor.div, torch.true_divide, torch.Tensor.__truediv__, torch.divide):
            rules[func] = self._divide
        for func in (torch.amax, torch.Tensor.amax, torch.max, torch.Tensor.max):
            rules[func] = self._max
        rules.update({F.layer_norm: self._layer_norm, torch.layer_norm: self._layer_norm, F.group_norm: self._group_norm})
        if hasattr(F, "rms_norm"):
            rules[F.rms_norm] = self._rms_norm
        for func in (F.softmax, torch.softmax, torch.Tensor.softmax, torch.special.softmax):
            rules[func] = self._softmax
        rules.update({f: self._sdpa for f in SDPA_FUNCTIONS})
        rules[F.multi_head_attention_forward] = see_inside
        return rules

    def _unary_rule(self, spec: _Unary) -> Rule:
        def rule(func, args, kwargs):
            fn = spec.value(args, kwargs) if args and isinstance(args[0], Tensor) else None
            if fn is None or not self.carries(args[0]):
                return func(*args, **kwargs)
            return self.unary(fn, args[0])

        return rule

    def _product_rule(self, op: Callable[[Tensor, Tensor], Tensor]) -> Rule:
        def rule(func, args, kwargs):
            if len(args) != 2 or kwargs:
                return func(*args, **kwargs)
            return self.product(args[0], args[1], op)

        return rule

    def _einsum(self, func, args, kwargs):
        operands = args[1:]
        if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
            operands = tuple(operands[0])
        if len(operands) != 2 or kwargs:
            return func(*args, **kwargs)
        equation = args[0]
        return self.product(operands[0], operands[1], lambda a, b: torch.einsum(equation, a, b))

    def _divide(self, func, args, kwargs):
        divisor = kwargs.get("other", args[1] if len(args) > 1 else None)
        if kwargs.get("rounding_mode") is not None or not self.carries(divisor):
            return func(*args, **kwargs)
        return self.divide(args[0], divisor)

    def _max(self, func, args, kwargs):
        dim = kwargs.get("dim", args[1] if len(args) > 1 else None)
        keepdim = kwargs.get("keepdim", args[2] if len(args) > 2 else False)
        if not isinstance(dim, int) or isinstance(dim, bool) or not self.carries(args[0]) or "out" in kwargs:
            return func(*args, **kwargs)
        z = args[0]
        dim = dim % z.dim()
        if dim == 0:
            return func(*args, **kwargs)
        values = _MaxRescale.apply(z, dim, bool(keepdim), self.eps)
        if func in (torch.max, torch.Tensor.max):
            return torch.return_types.max((values, z.detach().argmax(dim, keepdim=bool(keepdim))))
        return values

    def _layer_norm(self, func, args, kwargs):
        x = args[0]
        shape = kwargs.get("normalized_shape", args[1] if len(args) > 1 else None)
        weight = kwargs.get("weight", args[2] if len(args) > 2 else None)
        bias = kwargs.get("bias", args[3] if len(args) > 3 else None)
        eps = kwargs.get("eps", args[4] if len(args) > 4 else 1e-5)
        if not self.carries(x):
            return func(*args, **kwargs)
        count = 1 if isinstance(shape, int) else len(shape)
        y = self.normalise(x, tuple(range(-count, 0)), eps, centre=True)
        y = y * weight if weight is not None else y
        return y + bias if bias is not None else y

    def _rms_norm(self, func, args, kwargs):
        x = args[0]
        shape = kwargs.get("normalized_shape", args[1] if len(args) > 1 else None)
        weight = kwargs.get("weight", args[2] if len(args) > 2 else None)
        eps = kwargs.get("eps", args[3] if len(args) > 3 else None)
        if not self.carries(x):
            return func(*args, **kwargs)
        eps = torch.finfo(x.dtype).eps if eps is None else eps
        count = 1 if isinstance(shape, int) else len(shape)
        y = self.normalise(x, tuple(range(-count, 0)), eps, centre=False)
        return y * weight if weight is not None else y

    def _group_norm(self, func, args, kwargs):
        x = args[0]
        groups = kwargs.get("num_groups", args[1] if len(args) > 1 else None)
        weight = kwargs.get("weight", args[2] if len(args) > 2 else None)
        bias = kwargs.get("bias", args[3] if len(args) > 3 else None)
        eps = kwargs.get("eps", args[4] if len(args) > 4 else 1e-5)
        if not self.carries(x):
            return func(*args, **kwargs)
        y = self.normalise(x.reshape(x.shape[0], groups, -1), (-1,), eps, centre=True).reshape(x.shape)
        affine = (1, -1) + (1,) * (x.dim() - 2)
        y = y * weight.reshape(affine) if weight is not None else y
        return y + bias.reshape(affine) if bias is not None else y

    def _softmax(self, func, args, kwargs):
        z = args[0]
        dim = kwargs.get("dim", args[1] if len(args) > 1 else None)
        dtype = kwargs.get("dtype", None)
        if not isinstance(z, Tensor) or z.dim() < 3 or dim not in (-1, z.dim() - 1) or not self.carries(z):
            return None  # not an attention softmax: the caller's rule decides
        return self.softmax(z.to(dtype) if dtype is not None else z, -1)

    def _sdpa(self, func, args, kwargs):
        call = sdpa_call(args, kwargs)
        if call is None:
            return func(*args, **kwargs)
        return decomposed_attention(call, matmul=lambda a, b: self.product(a, b, torch.matmul), softmax=self.softmax)
