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
* **max / amax** (and min / amin, as ``-max(-z)``) along a dim other than 0:
  the rise of the maximum goes to the input's arg-max, the drop to the
  reference's, as for max pooling;
* **LayerNorm, RMSNorm, GroupNorm**: written out (centre, square, mean,
  rsqrt, product, affine) so that each step has its exact rule;
* **softmax over the last dim of a 3-D or larger tensor** (attention) and the
  softmax of a written-out **SDPA**: ``exp(z - m) / sum exp(z - m)`` with ``m``
  one constant per pair, exact. A 2-D softmax keeps Captum's rule (see
  :mod:`.deeplift_rules`), for parity with Captum on classifier heads;
* ``nn.MultiheadAttention``'s functional body is looked into;
* in a model whose parameters are all float64, **down-casts** of a tensor
  that carries the inputs (``.to(float32)``, ``.float()``, a softmax's
  ``dtype``) keep float64: Llama's RMSNorm and eager
  softmax compute in float32 whatever the model's dtype, and the multipliers
  of a zero baseline (whose RMSNorm scale is ``1 / sqrt(eps)``) cancel to
  many digits, so a float32 step there costs the sums about 4 digits.

A tensor carries the inputs when it depends on them (read off the autograd
graph) and dim 0 is a multiple of the paired batch ``2N`` (inputs first:
``nn.MultiheadAttention`` folds the heads into dim 0, batch-major). Every
step is exact, so attributions add up to ``F(x) - F(x0)`` up to float
rounding on BERT, GPT2, Llama and ViT.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..._engine.attention import SDPA_FUNCTIONS, decomposed_attention, sdpa_call
from ..._engine.dependence import Dependence
from ..._engine.norms import NORM_FUNCTIONS, norm_call
from ..._engine.overrides import Rule, call_argument, see_inside

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


# How to read ``f(z)`` off a call: ``(z, f)``, or None when the call is not one.
_Unary = Callable[[tuple, dict], "tuple[Any, Callable[[Tensor], Tensor]] | None"]


def _same_call(func: Callable) -> _Unary:
    def value(args, kwargs):
        rest, kw = args[1:], {k: v for k, v in kwargs.items() if k != "inplace"}
        return args[0], lambda z: func(z, *rest, **kw)

    return value


def _power(args: tuple, kwargs: dict) -> tuple[Any, Callable[[Tensor], Tensor]] | None:
    base = kwargs.get("input", args[0] if args else None)
    exponent = call_argument(args, kwargs, 1, "exponent", None)
    if isinstance(base, Tensor) and _scalar(exponent):
        return base, lambda z: torch.pow(z, exponent)
    if _scalar(base) and isinstance(exponent, Tensor):  # torch.pow(2, z)
        return exponent, lambda z: torch.pow(base, z)
    return None  # a tensor exponent: no single-input function


def _scalar_base(args: tuple, kwargs: dict) -> tuple[Any, Callable[[Tensor], Tensor]] | None:
    # ``Tensor.__rpow__(z, base)`` is ``base ** z``
    base = args[1] if len(args) > 1 else None
    return (args[0], lambda z: torch.pow(base, z)) if _scalar(base) else None


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
        table[func] = _power
    table[torch.Tensor.__rpow__] = _scalar_base
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


# ----------------------------------------------------------------- casts

_LOWER_PRECISION = (torch.float32, torch.float16, torch.bfloat16)
_CASTS_TO = {torch.Tensor.float: torch.float32, torch.Tensor.half: torch.float16, torch.Tensor.bfloat16: torch.bfloat16}


def _cast_dtype(func: Callable, args: tuple, kwargs: dict) -> Any:
    """The floating dtype a cast asks for (``Tensor.to`` / ``type`` / ``float`` ...), else None."""
    if func in _CASTS_TO:
        return _CASTS_TO[func]
    given = [a for a in args[1:] if isinstance(a, torch.dtype)] + [kwargs.get("dtype")]
    return next((d for d in given if d is not None), None)


@cache
def _label(func: Callable) -> str:
    name = getattr(func, "__name__", repr(func))
    for owner, prefix in ((F, "F."), (torch.Tensor, "Tensor."), (torch.special, "torch.special."), (torch, "torch.")):
        for attr in (name, f"__{name}__"):  # Tensor.__pow__ is named "pow"
            if getattr(owner, attr, None) is func:
                return prefix + attr
    return name


# ------------------------------------------------------------- the rule set


def before(rule: Rule, fallback: Rule | None) -> Rule:
    """``rule``, or ``fallback`` (else the function itself) where ``rule`` declines the call by returning None."""

    def apply(func, args, kwargs):
        out = rule(func, args, kwargs)
        if out is None:
            return fallback(func, args, kwargs) if fallback is not None else func(*args, **kwargs)
        return out

    return apply


@dataclass
class TransformerRescale:
    """The DeepLift substitutions for transformer operations, for one forward on ``[x; x0]``.

    ``sources`` are the joint leaves (inputs concatenated with baselines);
    they tell the products of two input-carrying tensors from products with
    parameters. Without them, products keep their gradient and element-wise
    functions pair any tensor with an even dim 0. The names of functions met
    on a tensor that depends on the inputs but whose dim 0 is no multiple of
    ``2N`` go to ``unpaired``, of calls with no rule (a tensor exponent) to
    ``uncovered``.
    """

    eps: float = 1e-10
    sources: tuple[Tensor, ...] = ()
    uncovered: list[str] = field(default_factory=list)
    unpaired: list[str] = field(default_factory=list)
    keep_float64: bool = False  # the model is float64 throughout: its down-casts are skipped

    def __post_init__(self) -> None:
        self.depends = Dependence(self.sources)
        self.pairs = self.sources[0].shape[0] if self.sources else 2

    def carries(self, t: Any, name: str | None = None) -> bool:
        """Whether ``t`` is an ``[x; x0]`` tensor of this forward (``name`` is reported when it cannot be paired)."""
        if not (isinstance(t, Tensor) and t.requires_grad and t.is_floating_point()):
            return False
        if self.sources and not self.depends(t):
            return False  # parameters and what is computed from them alone
        if t.dim() >= 1 and t.shape[0] > 0 and t.shape[0] % self.pairs == 0:
            return True
        if name is not None:
            self.unpaired.append(name)
        return False

    # the operations, callable on tensors (rules call them on the pieces they write out)
    def unary(self, fn: Callable[[Tensor], Tensor], z: Tensor, name: str | None = None) -> Tensor:
        """``fn(z)``, with the Rescale multiplier when ``z`` carries the inputs."""
        if not self.carries(z, name):
            return fn(z)
        return _Rescale.apply(z, fn, self.eps)

    def product(self, a: Any, b: Any, op: Callable[[Tensor, Tensor], Tensor] = _multiply, name: str = "mul") -> Tensor:
        """``op(a, b)`` for a bilinear ``op``, split between the factors when both carry the inputs."""
        if self.sources and self.depends(a) and self.depends(b) and self.carries(a, name) and self.carries(b, name):
            return _Product.apply(a, b, op)
        return op(a, b)

    def divide(self, a: Any, b: Any) -> Tensor:
        """``a / b`` as ``a * reciprocal(b)`` when ``b`` carries the inputs."""
        if not self.carries(b, "div"):
            return a / b
        return self.product(a, self.unary(torch.reciprocal, b), name="div")

    def softmax(self, z: Tensor, dim: int = -1) -> Tensor:
        """``exp(z - m) / sum exp(z - m)``, ``m`` one constant per pair: exact through exp, sum and product."""
        if not self.carries(z, "softmax"):
            return torch.softmax(z, dim)
        z1, z0 = _halves(z.detach())
        top = torch.maximum(z1.amax(dim, keepdim=True), z0.amax(dim, keepdim=True))
        hidden = torch.cat((torch.isneginf(top),) * 2)  # rows masked out entirely in both halves
        top = torch.cat((top, top)).masked_fill(hidden, 0.0)
        e = self.unary(torch.exp, z - top)
        # A masked row sums to 0; adding 1 there (a constant) keeps its zeros and its gradients finite.
        total = e.sum(dim, keepdim=True) + hidden.to(e.dtype)
        return self.product(e, self.unary(torch.reciprocal, total), name="softmax")

    def normalise(self, x: Tensor, dims: tuple[int, ...], eps: float, centre: bool) -> Tensor:
        """``(x - mean) / sqrt(mean square + eps)`` over ``dims`` (no centring for RMSNorm), step by step."""
        c = x - x.mean(dims, keepdim=True) if centre else x
        second = self.unary(torch.square, c).mean(dims, keepdim=True)
        return self.product(c, self.unary(torch.rsqrt, second + eps))

    # ------------------------------------------------------------ the rules
    def table(self) -> dict[Callable, Rule]:
        """The rules for :func:`~attribuo._engine.overrides.overriding`, function by function."""
        rules: dict[Callable, Rule] = {}
        for func, spec in UNARY.items():
            rules[func] = self._unary_rule(spec, _label(func))
        products = {
            torch.mul: _multiply, torch.Tensor.mul: _multiply, torch.Tensor.__mul__: _multiply,
            torch.Tensor.__rmul__: _multiply, torch.multiply: _multiply,
            torch.matmul: torch.matmul, torch.Tensor.matmul: torch.matmul, torch.Tensor.__matmul__: torch.matmul,
            torch.bmm: torch.bmm, torch.Tensor.bmm: torch.bmm,
        }
        for func, op in products.items():
            rules[func] = self._product_rule(op, _label(func))
        rules[torch.Tensor.__rmatmul__] = self._product_rule(lambda a, b: torch.matmul(b, a), "matmul")
        rules[torch.einsum] = self._einsum
        rules[torch.baddbmm] = rules[torch.Tensor.baddbmm] = self._baddbmm
        for func in (torch.div, torch.Tensor.div, torch.true_divide, torch.Tensor.__truediv__, torch.divide):
            rules[func] = self._divide
        rules[torch.Tensor.__rtruediv__] = self._divide_into
        for func in (torch.amax, torch.Tensor.amax, torch.max, torch.Tensor.max):
            rules[func] = self._extremum(1.0)
        for func in (torch.amin, torch.Tensor.amin, torch.min, torch.Tensor.min):
            rules[func] = self._extremum(-1.0)
        rules.update({f: self._norm for f in NORM_FUNCTIONS})
        for func in (F.softmax, torch.softmax, torch.Tensor.softmax, torch.special.softmax):
            rules[func] = self._softmax
        rules.update({f: self._sdpa for f in SDPA_FUNCTIONS})
        rules[F.multi_head_attention_forward] = see_inside
        for func in (torch.Tensor.to, torch.Tensor.type, *_CASTS_TO):
            rules[func] = self._cast
        return rules

    def _unary_rule(self, spec: _Unary, name: str) -> Rule:
        def rule(func, args, kwargs):
            call = spec(args, kwargs) if args else None
            if call is None:
                if self.carries(args[0] if args else None) or self.carries(kwargs.get("exponent")):
                    self.uncovered.append(name)
                return func(*args, **kwargs)
            return self.unary(call[1], call[0], name)

        return rule

    def _product_rule(self, op: Callable[[Tensor, Tensor], Tensor], name: str) -> Rule:
        def rule(func, args, kwargs):
            if len(args) != 2 or kwargs:
                return func(*args, **kwargs)
            return self.product(args[0], args[1], op, name)

        return rule

    def _einsum(self, func, args, kwargs):
        operands = args[1:]
        if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
            operands = tuple(operands[0])
        if len(operands) != 2 or kwargs:
            return func(*args, **kwargs)
        equation = args[0]
        return self.product(operands[0], operands[1], lambda a, b: torch.einsum(equation, a, b), "einsum")

    def _baddbmm(self, func, args, kwargs):
        # beta * input + alpha * (batch1 @ batch2): nn.MultiheadAttention's masked scores
        if len(args) != 3 or set(kwargs) - {"beta", "alpha"}:
            return func(*args, **kwargs)
        added, a, b = args
        beta, alpha = kwargs.get("beta", 1), kwargs.get("alpha", 1)
        scores = self.product(a, b, torch.bmm, "baddbmm")
        return (added if beta == 1 else beta * added) + (scores if alpha == 1 else alpha * scores)

    def _divide(self, func, args, kwargs):
        divisor = call_argument(args, kwargs, 1, "other", None)
        if kwargs.get("rounding_mode") is not None or "out" in kwargs or not self.carries(divisor):
            return func(*args, **kwargs)
        return self.divide(args[0], divisor)

    def _divide_into(self, func, args, kwargs):
        # ``Tensor.__rtruediv__(b, a)`` is ``a / b``
        if len(args) != 2 or not self.carries(args[0]):
            return func(*args, **kwargs)
        return self.divide(args[1], args[0])

    def _extremum(self, sign: float) -> Rule:
        # min(z) = -max(-z): one rule for both
        def rule(func, args, kwargs):
            dim = call_argument(args, kwargs, 1, "dim", None)
            keepdim = bool(call_argument(args, kwargs, 2, "keepdim", False))
            z = args[0]
            if not isinstance(dim, int) or isinstance(dim, bool) or "out" in kwargs or not self.carries(z, _label(func)):
                return func(*args, **kwargs)
            dim = dim % z.dim()
            if dim == 0:
                return func(*args, **kwargs)
            values = sign * _MaxRescale.apply(sign * z, dim, keepdim, self.eps)
            if func in (torch.max, torch.Tensor.max, torch.min, torch.Tensor.min):
                at = (sign * z.detach()).argmax(dim, keepdim=keepdim)
                return (torch.return_types.max if sign > 0 else torch.return_types.min)((values, at))
            return values

        return rule

    def _norm(self, func, args, kwargs):
        call = norm_call(func, args, kwargs)
        if not self.carries(call.x, call.kind + "_norm"):
            return func(*args, **kwargs)
        return call.written_out(self.normalise)

    def _softmax(self, func, args, kwargs):
        z = args[0]
        dim = call_argument(args, kwargs, 1, "dim", None)
        dtype = kwargs.get("dtype", None)
        if not isinstance(z, Tensor) or z.dim() < 3 or dim not in (-1, z.dim() - 1) or not self.carries(z):
            return None  # not an attention softmax: the caller's rule decides
        if dtype is not None and not (self.keep_float64 and z.dtype == torch.float64 and dtype in _LOWER_PRECISION):
            z = z.to(dtype)
        return self.softmax(z, -1)

    def _sdpa(self, func, args, kwargs):
        call = sdpa_call(args, kwargs)
        if call is None:
            return func(*args, **kwargs)
        return decomposed_attention(call, matmul=lambda a, b: self.product(a, b, torch.matmul, "sdpa"), softmax=self.softmax)

    def _cast(self, func, args, kwargs):
        z = args[0] if args else None
        keep = (
            self.keep_float64 and isinstance(z, Tensor) and z.dtype == torch.float64
            and _cast_dtype(func, args, kwargs) in _LOWER_PRECISION and self.carries(z)
        )
        if not keep:
            return func(*args, **kwargs)
        if func in _CASTS_TO:
            return z
        # the same call (a device move, say) with float64 for the dtype
        args = tuple(torch.float64 if isinstance(a, torch.dtype) else a for a in args)
        kwargs = {k: torch.float64 if k == "dtype" else v for k, v in kwargs.items()}
        return func(*args, **kwargs)


COVERED: tuple[Callable, ...] = tuple(TransformerRescale().table())
