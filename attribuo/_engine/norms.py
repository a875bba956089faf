"""LayerNorm, RMSNorm and GroupNorm calls, written out around a caller's normalisation step.

Attribution rules treat normalisation specially (AttnLRP holds the scale
constant, DeepLift splits the product of the centred input and its scale),
but the layout of the three calls (which dims, which eps, the affine part)
is the same for all of them; it lives here once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .overrides import call_argument

# normalise(x, dims, eps, centre): (x - mean if centre) / sqrt(mean square + eps) over dims
Normalise = Callable[[Tensor, tuple, float, bool], Tensor]



def _last_dims(shape: Any) -> tuple[int, ...]:
    count = 1 if isinstance(shape, int) else len(tuple(shape))
    return tuple(range(-count, 0))


@dataclass(frozen=True)
class NormCall:
    """One normalisation call: its input, how it normalises, and its affine part."""

    x: Tensor
    kind: str  # "layer", "rms" or "group"
    dims: tuple[int, ...]
    eps: float
    weight: Tensor | None
    bias: Tensor | None
    groups: int = 1

    def written_out(self, normalise: Normalise) -> Tensor:
        """The call's output with ``normalise`` as its normalisation step."""
        x = self.x
        if self.kind == "group":
            y = normalise(x.reshape(x.shape[0], self.groups, -1), (-1,), self.eps, True).reshape(x.shape)
            affine = (1, -1) + (1,) * (x.dim() - 2)
            weight = self.weight.reshape(affine) if self.weight is not None else None
            bias = self.bias.reshape(affine) if self.bias is not None else None
        else:
            y = normalise(x, self.dims, self.eps, self.kind == "layer")
            weight, bias = self.weight, self.bias
        y = y * weight if weight is not None else y
        return y + bias if bias is not None else y


def _layer(args: tuple, kwargs: dict) -> NormCall:
    return NormCall(
        args[0], "layer", _last_dims(call_argument(args, kwargs, 1, "normalized_shape")), call_argument(args, kwargs, 4, "eps", 1e-5),
        call_argument(args, kwargs, 2, "weight"), call_argument(args, kwargs, 3, "bias"),
    )


def _rms(args: tuple, kwargs: dict) -> NormCall:
    x, eps = args[0], call_argument(args, kwargs, 3, "eps")
    eps = torch.finfo(x.dtype).eps if eps is None else eps
    return NormCall(x, "rms", _last_dims(call_argument(args, kwargs, 1, "normalized_shape")), eps, call_argument(args, kwargs, 2, "weight"), None)


def _group(args: tuple, kwargs: dict) -> NormCall:
    return NormCall(
        args[0], "group", (-1,), call_argument(args, kwargs, 4, "eps", 1e-5), call_argument(args, kwargs, 2, "weight"),
        call_argument(args, kwargs, 3, "bias"), int(call_argument(args, kwargs, 1, "num_groups")),
    )


NORM_FUNCTIONS: dict[Callable, Callable[[tuple, dict], NormCall]] = {
    F.layer_norm: _layer, torch.layer_norm: _layer, F.group_norm: _group,
}
if hasattr(F, "rms_norm"):
    NORM_FUNCTIONS[F.rms_norm] = _rms


def norm_call(func: Callable, args: tuple, kwargs: dict) -> NormCall:
    """The parsed call of one of :data:`NORM_FUNCTIONS`.

    Example:
        >>> import torch, torch.nn.functional as F
        >>> x = torch.randn(2, 5)
        >>> call = norm_call(F.layer_norm, (x, (5,)), {})
        >>> plain = lambda t, dims, eps, centre: (t - t.mean(dims, keepdim=True)) * torch.rsqrt(t.var(dims, unbiased=False, keepdim=True) + eps)
        >>> torch.allclose(call.written_out(plain), F.layer_norm(x, (5,)), atol=1e-6)
        True
    """
    return NORM_FUNCTIONS[func](args, kwargs)
