"""DeepLift's Rescale rule as substitutions for torch's non-linear functions.

DeepLift runs the forward once on the concatenation ``[inputs; baselines]``
(dim 0 holds the ``N`` inputs, then their ``N`` baselines). Every covered
non-linearity ``f`` therefore sees ``z = [x; x0]`` and, instead of its
derivative, passes back the *multiplier* ``(f(x) - f(x0)) / (x - x0)`` to
both halves; where ``|x - x0| < eps`` it falls back to the ordinary
derivative. Because the substitution happens in a
:class:`~torch.overrides.TorchFunctionMode` (see :mod:`.overrides`), the rule
applies to modules, reused modules and functional calls alike.

Covered: ReLU, ELU, LeakyReLU, Sigmoid, Tanh, Softplus (elementwise rule),
Softmax (with Captum's normalisation of the multipliers) and max pooling in
1, 2 and 3 dims (the difference of the pooled maxima is routed to the
arg-max positions); the operations of transformers (GELU, SiLU, products,
normalisation, attention) in :mod:`.deeplift_ops`. Other non-linear functions are watched and reported so
the caller can warn that their ordinary gradients were used.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..._engine.overrides import Rule, call_argument
from .deeplift_ops import COVERED, TransformerRescale, before

# ---------------------------------------------------------------- helpers



def _halves(t: Tensor) -> tuple[Tensor, Tensor]:
    n = t.shape[0] // 2
    return t[:n], t[n:]


def _twice(t: Tensor) -> Tensor:
    return torch.cat((t, t))


def _per_half(t: Tensor, half: Tensor) -> Tensor:
    """``t`` (``[2N, ...]``) times ``half`` (``[N, ...]``) applied to both halves, no copy of ``half``."""
    return (t.view(2, *half.shape) * half).view(t.shape)


def _small_mask(d: Tensor, eps: float, *, overwrite: bool = False) -> Tensor | None:
    """A 0/1 float mask of ``|d| < eps``, or None when no entry is that small.

    Float arithmetic instead of boolean masks and ``torch.where``: on CPU the
    latter are several times slower than the elementwise ops around them.
    With ``overwrite`` the buffer of ``d`` is reused.
    """
    if d.numel() == 0 or eps <= 0:
        return None
    magnitude = d.abs_() if overwrite else d.abs()
    if not bool(magnitude.amin() < eps):
        return None
    return magnitude.neg_().add_(eps).sign_().clamp_(min=0)


def _lerp_halves(half: Tensor, fallback: Tensor, small: Tensor) -> Tensor:
    """Both halves: ``half`` where ``small`` is 0, ``fallback`` where it is 1.

    ``fallback`` (``[2N, ...]``, contiguous) is overwritten with the result.
    """
    view = fallback.view(2, *half.shape)
    torch.lerp(half, view, small, out=view)
    return fallback


def _rescale_ratio(z: Tensor, out: Tensor, eps: float) -> tuple[Tensor, Tensor | None]:
    """``(ratio, small)`` for the ``N`` pairs: ``(out - out0) / (z - z0)`` and the
    :func:`_small_mask` of ``z - z0``; where small the ratio is finite but meaningless.
    """
    z1, z0 = _halves(z)
    o1, o0 = _halves(out)
    d_out = o1 - o0
    d_in = z1 - z0
    ratio = torch.div(d_out, d_in, out=d_out)
    small = _small_mask(d_in, eps, overwrite=True)
    if small is not None:  # rare: redo the division away from zero
        ratio = (o1 - o0).div_((z1 - z0).add_(small))
    return ratio, small


def _pairable(z: Any, min_dim: int = 1) -> bool:
    """Whether ``z`` can hold ``[x; x0]`` along dim 0 and needs a gradient at all."""
    return (
        isinstance(z, Tensor)
        and z.requires_grad
        and z.is_floating_point()
        and z.dim() >= min_dim
        and z.shape[0] % 2 == 0
    )


# ------------------------------------------------------ elementwise rule


@dataclass(frozen=True)
class _Elementwise:
    """An elementwise non-linearity: its value and its ordinary derivative."""

    name: str
    value: Callable[[Tensor, tuple, dict], Tensor]
    # derivative(z, out, args, kwargs): d out / d z elementwise
    derivative: Callable[[Tensor, Tensor, tuple, dict], Tensor]
    inplace: Callable[[Callable, tuple, dict], bool]


class _ElementwiseRescale(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z, spec, args, kwargs, eps, inplace):
        out = spec.value(z, args, kwargs)
        ratio, small = _rescale_ratio(z, out, eps)
        # The multiplier is known after the forward: keep it, not z or out. Both
        # halves share the ratio; only where x == x0 does each need its own slope.
        ctx.full = small is not None
        if ctx.full:
            multiplier = _lerp_halves(ratio, spec.derivative(z, out, args, kwargs).contiguous(), small)
        else:
            multiplier = ratio
        ctx.save_for_backward(multiplier)
        if inplace:
            z.copy_(out)
            ctx.mark_dirty(z)
            return z
        return out

    @staticmethod
    def backward(ctx, grad_out):
        (multiplier,) = ctx.saved_tensors
        grad = grad_out * multiplier if ctx.full else _per_half(grad_out.contiguous(), multiplier)
        return grad, None, None, None, None, None


def _never(func, args, kwargs) -> bool:
    return False


def _always(func, args, kwargs) -> bool:
    return True


def _flag_at(index: int) -> Callable[[Callable, tuple, dict], bool]:
    def inplace(func, args, kwargs) -> bool:
        return bool(call_argument(args, kwargs, index, "inplace", False))

    return inplace


def _one(z: Tensor) -> Tensor:
    return torch.ones((), dtype=z.dtype, device=z.device)


def _relu_value(z, args, kwargs):
    return torch.relu(z)


def _relu_slope(z, out, args, kwargs):
    return (z > 0).to(z.dtype)


def _elu_alpha(args, kwargs) -> float:
    return call_argument(args, kwargs, 1, "alpha", 1.0)


def _elu_value(z, args, kwargs):
    return F.elu(z, _elu_alpha(args, kwargs))


def _elu_slope(z, out, args, kwargs):
    # For z <= 0, d/dz alpha * (exp(z) - 1) = alpha * exp(z) = out + alpha.
    return torch.where(z > 0, _one(z), out + _elu_alpha(args, kwargs))


def _leaky_slope_of(args, kwargs) -> float:
    return call_argument(args, kwargs, 1, "negative_slope", 0.01)


def _leaky_value(z, args, kwargs):
    return F.leaky_relu(z, _leaky_slope_of(args, kwargs))


def _leaky_slope(z, out, args, kwargs):
    neg = torch.full((), _leaky_slope_of(args, kwargs), dtype=z.dtype, device=z.device)
    return torch.where(z > 0, _one(z), neg)


def _sigmoid_value(z, args, kwargs):
    return torch.sigmoid(z)


def _sigmoid_slope(z, out, args, kwargs):
    return out * (1 - out)


def _tanh_value(z, args, kwargs):
    return torch.tanh(z)


def _tanh_slope(z, out, args, kwargs):
    return 1 - out * out


def _softplus_params(args, kwargs) -> tuple[float, float]:
    return call_argument(args, kwargs, 1, "beta", 1.0), call_argument(args, kwargs, 2, "threshold", 20.0)


def _softplus_value(z, args, kwargs):
    beta, threshold = _softplus_params(args, kwargs)
    return F.softplus(z, beta, threshold)


def _softplus_slope(z, out, args, kwargs):
    beta, threshold = _softplus_params(args, kwargs)
    # Above the threshold softplus is the identity.
    return torch.where(z * beta > threshold, _one(z), torch.sigmoid(z * beta))


_RELU = _Elementwise("relu", _relu_value, _relu_slope, _flag_at(1))
_ELU = _Elementwise("elu", _elu_value, _elu_slope, _flag_at(2))
_LEAKY = _Elementwise("leaky_relu", _leaky_value, _leaky_slope, _flag_at(2))
_SIGMOID = _Elementwise("sigmoid", _sigmoid_value, _sigmoid_slope, _never)
_TANH = _Elementwise("tanh", _tanh_value, _tanh_slope, _never)
_SOFTPLUS = _Elementwise("softplus", _softplus_value, _softplus_slope, _never)


def _in_place(spec: _Elementwise) -> _Elementwise:
    return _Elementwise(spec.name, spec.value, spec.derivative, _always)


ELEMENTWISE: dict[Callable, _Elementwise] = {
    F.relu: _RELU,
    torch.relu: _RELU,
    torch.Tensor.relu: _RELU,
    F.relu_: _in_place(_RELU),
    torch.relu_: _in_place(_RELU),
    torch.Tensor.relu_: _in_place(_RELU),
    F.elu: _ELU,
    F.elu_: _in_place(_ELU),
    F.leaky_relu: _LEAKY,
    F.leaky_relu_: _in_place(_LEAKY),
    torch.sigmoid: _SIGMOID,
    torch.Tensor.sigmoid: _SIGMOID,
    torch.special.expit: _SIGMOID,
    torch.sigmoid_: _in_place(_SIGMOID),
    torch.Tensor.sigmoid_: _in_place(_SIGMOID),
    torch.tanh: _TANH,
    torch.Tensor.tanh: _TANH,
    torch.tanh_: _in_place(_TANH),
    torch.Tensor.tanh_: _in_place(_TANH),
    F.softplus: _SOFTPLUS,
}


# ------------------------------------------------------------- softmax


class _SoftmaxRescale(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z, dim, eps):
        out = torch.softmax(z, dim)
        ratio, small = _rescale_ratio(z, out, eps)
        ctx.dim = dim
        ctx.save_for_backward(out, ratio, small)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        out, ratio, small = ctx.saved_tensors
        unnormalised = _per_half(grad_out.contiguous(), ratio)
        if small is not None:
            ordinary = out * (grad_out - (grad_out * out).sum(ctx.dim, keepdim=True))
            unnormalised = unnormalised + _twice(small) * (ordinary - unnormalised)
        # Captum's normalisation: subtract the mean over the whole tensor.
        return unnormalised - unnormalised.sum() / unnormalised.numel(), None, None


def _implicit_softmax_dim(ndim: int) -> int:
    # torch's legacy choice when ``dim`` is not given.
    return 0 if ndim in (0, 1, 3) else 1


def _softmax_rule(dtype_index: int) -> Callable[[Callable, tuple, dict], tuple[Tensor, int] | None]:
    def parse(func, args, kwargs):
        z = args[0]
        dim = call_argument(args, kwargs, 1, "dim", None)
        dtype = call_argument(args, kwargs, dtype_index, "dtype", None)
        if not isinstance(dim, int) and dim is not None:
            return None  # named dims: leave to torch
        if dtype is not None:
            z = z.to(dtype)
        if dim is None:
            dim = _implicit_softmax_dim(z.dim())
        return z, dim

    return parse


SOFTMAX: dict[Callable, Callable] = {
    F.softmax: _softmax_rule(3),  # (input, dim, _stacklevel, dtype)
    torch.softmax: _softmax_rule(2),  # (input, dim, dtype)
    torch.Tensor.softmax: _softmax_rule(2),
    torch.special.softmax: _softmax_rule(2),
}


# ------------------------------------------------------------ max pooling


def _planes(t: Tensor) -> Tensor:
    """``t`` as ``[batch, channels, positions]`` (the layout of max pooling's flat indices)."""
    return t.reshape(t.shape[0], t.shape[1], math.prod(t.shape[2:]))


def _pool_with_indices(pool: Callable, z: Tensor, params: tuple) -> tuple[Tensor, Tensor]:
    """``pool(z, *params, return_indices=True)``, on CPU through a channels-last copy when faster.

    torch's CPU 2-d max pooling of a contiguous NCHW tensor with 8 or more
    channels is several times slower than of the same tensor in channels-last
    layout; both scan each window in the same order, so values and arg-max
    indices (ties and NaNs included) are identical.
    """
    if z.device.type == "cpu" and z.dim() == 4 and z.shape[1] >= 8 and z.is_contiguous():
        out, indices = pool(z.contiguous(memory_format=torch.channels_last), *params, return_indices=True)
        return out.contiguous(), indices.contiguous()
    return pool(z, *params, return_indices=True)


class _MaxPoolRescale(torch.autograd.Function):
    # Everything the rule needs lives at the pooled (output) size: the
    # difference of the two halves at each window's arg-max is gathered once
    # in the forward, and the backward scatters the window values straight to
    # their arg-max positions (``scatter_add`` also sums overlapping windows).
    # No input-sized difference, mask or division is ever formed.

    @staticmethod
    def forward(ctx, z, pool, params, eps):
        out, indices = _pool_with_indices(pool, z, params)
        ctx.mark_non_differentiable(indices)
        ctx.set_materialize_grads(False)  # no zero gradients for the indices
        n = z.shape[0] // 2
        y, y0 = _halves(out)
        at = _planes(indices)
        planes = _planes(z)
        # x - x0 at the input's arg-max (x there is y) and at the reference's (x0 there is y0).
        den = torch.empty_like(out)
        d1, d0 = _halves(den)
        torch.sub(y, torch.gather(planes[n:], 2, at[:n]).view_as(y), out=d1)
        torch.sub(torch.gather(planes[:n], 2, at[n:]).view_as(y0), y0, out=d0)
        # The rise of y above y0 goes to the input's arg-max, the drop below it
        # to the reference's (together y - y0), as in Captum's max-pool rule.
        num = torch.empty_like(out)
        dy = torch.sub(y, y0, out=num[:n])
        torch.clamp(dy, max=0, out=num[n:])
        dy.clamp_(min=0)
        small = _small_mask(den, eps)
        if small is not None:
            den.add_(small)  # finite divisions; the windows where small use the gradient instead
        ctx.z_shape = z.shape
        ctx.save_for_backward(at, num, den, small)
        return out, indices

    @staticmethod
    def backward(ctx, grad_out, _grad_indices):
        if grad_out is None:
            return None, None, None, None
        at, num, den, small = ctx.saved_tensors
        n = ctx.z_shape[0] // 2
        values = grad_out.mul(num).div_(den)
        grad = torch.zeros(ctx.z_shape, dtype=values.dtype, device=values.device)
        planes, at1, at0 = _planes(grad), at[:n], at[n:]
        if small is None:
            # Both halves share one multiplier: (rise + drop) / (x - x0) at each position.
            v1, v0 = _halves(_planes(values))
            planes[:n].scatter_add_(2, at1, v1).scatter_add_(2, at0, v0)
            grad[n:] = grad[:n]
            return grad, None, None, None
        # Where x == x0 each half falls back to the ordinary max-pool gradient:
        # its own windows pass their incoming gradient, the other half's nothing.
        own = _planes(torch.lerp(values, grad_out, small))
        cross = _planes(own.view_as(values) * (1 - small))
        own1, own0 = _halves(own)
        cross1, cross0 = _halves(cross)
        planes[:n].scatter_add_(2, at1, own1).scatter_add_(2, at0, cross0)
        planes[n:].scatter_add_(2, at0, own0).scatter_add_(2, at1, cross1)
        return grad, None, None, None


_POOL_ARGS = ("kernel_size", "stride", "padding", "dilation", "ceil_mode")
_POOL_DEFAULTS = (None, None, 0, 1, False)


@dataclass(frozen=True)
class _Pool:
    dims: int
    pool: Callable  # F.max_poolNd
    returns_indices: Callable[[tuple, dict], bool]


def _flag_return_indices(args, kwargs) -> bool:
    return bool(call_argument(args, kwargs, 6, "return_indices", False))


def _pools() -> dict[Callable, _Pool]:
    table: dict[Callable, _Pool] = {}
    for dims in (1, 2, 3):
        pool = getattr(F, f"max_pool{dims}d")
        table[pool] = _Pool(dims, pool, _flag_return_indices)
        table[getattr(F, f"max_pool{dims}d_with_indices")] = _Pool(dims, pool, lambda a, k: True)
        table[getattr(torch, f"max_pool{dims}d")] = _Pool(dims, pool, lambda a, k: False)
    table[torch.max_pool1d_with_indices] = _Pool(1, F.max_pool1d, lambda a, k: True)
    for dims in (2, 3):
        native = getattr(torch._C._nn, f"max_pool{dims}d_with_indices", None)
        if native is not None:
            table[native] = _Pool(dims, getattr(F, f"max_pool{dims}d"), lambda a, k: True)
    return table


POOLS = _pools()


def _pool_params(args: tuple, kwargs: dict) -> tuple:
    params = [call_argument(args, kwargs, i + 1, n, d) for i, (n, d) in enumerate(zip(_POOL_ARGS, _POOL_DEFAULTS))]
    if isinstance(params[1], (list, tuple)) and len(params[1]) == 0:
        params[1] = None  # ATen spells "stride = kernel size" as []
    return tuple(params)


# ------------------------------------------------- watched non-linearities


def _watched() -> dict[Callable, str]:
    names = {
        F: ["gelu", "silu", "mish", "selu", "celu", "hardtanh", "hardtanh_", "relu6", "hardswish",
            "hardsigmoid", "logsigmoid", "softsign", "softmin", "log_softmax", "tanhshrink",
            "softshrink", "hardshrink", "threshold", "threshold_", "glu", "prelu", "rrelu",
            "rrelu_", "adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_max_pool3d",
            "adaptive_max_pool1d_with_indices", "adaptive_max_pool2d_with_indices",
            "adaptive_max_pool3d_with_indices", "lp_pool1d", "lp_pool2d", "layer_norm",
            "group_norm", "normalize", "scaled_dot_product_attention"],
        torch: ["selu", "selu_", "celu", "celu_", "prelu", "rrelu", "rrelu_", "log_softmax", "exp",
                "exp_", "log", "log_", "sqrt", "rsqrt", "pow", "abs", "sin", "cos", "erf", "square",
                "reciprocal", "lstm", "gru", "rnn_tanh", "rnn_relu", "hardshrink", "logsumexp"],
        torch.Tensor: ["exp", "exp_", "log", "log_", "sqrt", "rsqrt", "pow", "__pow__", "abs", "sin",
                       "cos", "erf", "square", "reciprocal", "log_softmax", "logsumexp"],
        torch.special: ["erf", "expm1", "log1p", "logit", "log_softmax"],
    }
    table: dict[Callable, str] = {}
    for owner, attrs in names.items():
        prefix = {F: "F.", torch: "torch.", torch.Tensor: "Tensor.", torch.special: "torch.special."}[owner]
        for attr in attrs:
            func = getattr(owner, attr, None)
            if func is not None:
                table.setdefault(func, prefix + attr)
    for covered in (*ELEMENTWISE, *SOFTMAX, *POOLS, *COVERED):
        table.pop(covered, None)
    return table


WATCHED = _watched()


# ------------------------------------------------------------ the rule set


@dataclass
class RescaleRules:
    """The Rescale substitutions for one DeepLift forward, and what they met.

    ``table()`` gives the rules for :func:`.overrides.overriding`; after the
    forward, ``uncovered`` names the non-linear functions that ran with their
    ordinary gradient, and ``unpaired`` those whose argument could not be split
    into input and baseline halves along dim 0 (odd size, or no batch dim).

    Example:
        >>> import torch
        >>> from attribuo._engine.overrides import overriding
        >>> rules = RescaleRules(eps=1e-10)
        >>> f = overriding(lambda z: torch.sigmoid(z).sum(), rules.table())
        >>> z = torch.tensor([2.0, 0.0], requires_grad=True)   # [x; x0]
        >>> torch.autograd.grad(f(z), z)[0]                    # (s(2) - s(0)) / 2
        tensor([0.1904, 0.1904])
    """

    eps: float = 1e-10
    sources: tuple[Tensor, ...] = ()  # the joint leaves: products of two of their descendants are split
    keep_float64: bool = False  # a float64 model: skip its down-casts (see deeplift_ops)
    uncovered: list[str] = field(default_factory=list)
    unpaired: list[str] = field(default_factory=list)

    def table(self) -> dict[Callable, Rule]:
        rules: dict[Callable, Rule] = {}
        for func, spec in ELEMENTWISE.items():
            rules[func] = self._elementwise(spec)
        for func, parse in SOFTMAX.items():
            rules[func] = self._softmax(parse)
        for func, pool in POOLS.items():
            rules[func] = self._max_pool(pool)
        for func, name in WATCHED.items():
            rules[func] = self._watch(name)
        ops = TransformerRescale(self.eps, self.sources, self.uncovered, self.unpaired, self.keep_float64)
        for func, rule in ops.table().items():
            rules[func] = before(rule, rules.get(func))
        return rules

    def warn(self, method: str = "DeepLift", stacklevel: int = 3) -> None:
        """Warn once about what the last forward could not treat with a Rescale rule."""
        problems = (
            (self.uncovered, "has no Rescale rule for {}; the ordinary gradient was used there, "
             "so attributions may not add up to the output difference"),
            (self.unpaired, "could not pair inputs with baselines at {} (dim 0 is not the batch of "
             "inputs followed by baselines); the ordinary gradient was used there"),
        )
        for sites, message in problems:
            if sites:
                names = ", ".join(dict.fromkeys(sites))
                warnings.warn(f"{method} " + message.format(names), stacklevel=stacklevel)

    def _skip(self, name: str, z: Any) -> bool:
        if _pairable(z):
            return False
        if isinstance(z, Tensor) and z.requires_grad and z.is_floating_point():
            self.unpaired.append(name)
        return True

    def _elementwise(self, spec: _Elementwise) -> Rule:
        def rule(func, args, kwargs):
            z = args[0]
            if self._skip(spec.name, z):
                return func(*args, **kwargs)
            return _ElementwiseRescale.apply(z, spec, args, kwargs, self.eps, spec.inplace(func, args, kwargs))

        return rule

    def _softmax(self, parse: Callable) -> Rule:
        def rule(func, args, kwargs):
            if self._skip("softmax", args[0]):
                return func(*args, **kwargs)
            parsed = parse(func, args, kwargs)
            if parsed is None:
                self.unpaired.append("softmax")
                return func(*args, **kwargs)
            z, dim = parsed
            return _SoftmaxRescale.apply(z, dim, self.eps)

        return rule

    def _max_pool(self, pool: _Pool) -> Rule:
        name = f"max_pool{pool.dims}d"

        def rule(func, args, kwargs):
            z = args[0]
            # Unbatched pooling inputs have no batch dim to pair along.
            if self._skip(name, z) or z.dim() != pool.dims + 2:
                if _pairable(z):
                    self.unpaired.append(name)
                return func(*args, **kwargs)
            out, indices = _MaxPoolRescale.apply(z, pool.pool, _pool_params(args, kwargs), self.eps)
            return (out, indices) if pool.returns_indices(args, kwargs) else out

        return rule

    def _watch(self, name: str) -> Rule:
        def rule(func, args, kwargs):
            # Only calls on tensors that carry a gradient can bend the attributions.
            if any(isinstance(a, Tensor) and a.requires_grad for a in args):
                self.uncovered.append(name)
            return func(*args, **kwargs)

        return rule
