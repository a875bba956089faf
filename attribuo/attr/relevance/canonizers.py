"""LRP canonizers: rewrite a model into an equivalent one that LRP rules treat better.

:class:`MergeBatchNorm` folds a BatchNorm (eval mode) into the Linear or
Conv layer that produces its input, for the duration of one call: the pair
becomes one affine layer with one rule, the user's model is not changed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..._engine.forward import run_forward
from ..._engine.hooks import forward_hooks, forward_pre_hooks
from .composites import LINEAR_LAYERS
from .propagation import Merged


def _linear_function(module: nn.Module) -> Callable[[dict, tuple, dict], Tensor]:
    if isinstance(module, nn.Linear):
        return lambda p, args, kwargs: F.linear(args[0], p["weight"], p["bias"])
    return lambda p, args, kwargs: module._conv_forward(args[0], p["weight"], p["bias"])


def merged_parameters(layer: nn.Module, norm: _BatchNorm) -> dict[str, Tensor]:
    """Weight and bias of ``norm(layer(x))`` as one affine layer (eval-mode statistics)."""
    with torch.no_grad():
        weight = layer.weight.detach()
        scale = torch.rsqrt(norm.running_var + norm.eps)
        if norm.weight is not None:
            scale = scale * norm.weight
        shift = -norm.running_mean * scale
        if norm.bias is not None:
            shift = shift + norm.bias
        bias = layer.bias.detach() if layer.bias is not None else torch.zeros_like(shift)
        return {
            "weight": weight * scale.reshape((-1,) + (1,) * (weight.dim() - 1)),
            "bias": bias * scale + shift,
        }


class MergeBatchNorm:
    """Canonizer: fold each eval-mode BatchNorm into the Linear/Conv layer feeding it.

    The pair is found by following one traced forward (the BatchNorm's
    input must be exactly the layer's output). During the LRP call the
    layer computes ``norm(layer(x))`` with merged parameters and takes the
    layer's rule; the BatchNorm passes its input through. The model itself
    is never modified.

    Example:
        >>> import torch
        >>> from attribuo.attr import LRP
        >>> from attribuo.attr.relevance import MergeBatchNorm
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.ReLU(),
        ...                             torch.nn.Linear(4, 2)).eval()
        >>> LRP(model, canonizers=[MergeBatchNorm()]).attribute(torch.rand(2, 3), target=0).shape
        torch.Size([2, 3])
    """

    def find(
        self, model: nn.Module, inputs: tuple[Tensor, ...], args: tuple[Any, ...]
    ) -> tuple[dict[nn.Module, Merged], set[nn.Module]]:
        """``({layer: Merged}, {bypassed norms})`` for ``model`` run on ``inputs``."""
        produced: list[tuple[Tensor, nn.Module]] = []
        pairs: list[tuple[nn.Module, _BatchNorm]] = []

        def record(module, _args, output):
            produced.append((output, module))

        def match(module, args):
            if module.training or module.running_mean is None:
                return
            for output, layer in produced:
                if args and args[0] is output:
                    pairs.append((layer, module))

        layers = [m for m in model.modules() if type(m) in LINEAR_LAYERS]
        norms = [m for m in model.modules() if isinstance(m, _BatchNorm)]
        with (
            torch.no_grad(),
            forward_hooks((m, record) for m in layers),
            forward_pre_hooks((m, match) for m in norms),
        ):
            run_forward(model, inputs, None, args)
        merged = {
            layer: Merged(merged_parameters(layer, norm), _linear_function(layer)) for layer, norm in pairs
        }
        return merged, {norm for _, norm in pairs}
