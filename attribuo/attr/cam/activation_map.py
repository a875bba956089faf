"""Class activation maps: LayerGradCam (Captum's) and the CAM family.

Every variant is the same computation -- a map ``sum_c w_c * A_c`` over the
channels ``c`` of a layer's activations ``A`` -- and differs only in its
channel weighting :meth:`ClassActivationMap.channel_weights`, which may be
one weight per channel (GradCAM, GradCAM++, XGradCAM, ScoreCAM, EigenCAM)
or one per position (HiResCAM, LayerCAM):

=====================  =====================================================
LayerGradCam           ``mean_spatial(dY/dA)`` (Selvaraju et al., 2017)
GradCamPlusPlus        ``sum_spatial(alpha * relu(dY/dA))`` (Chattopadhay et al., 2018)
XGradCam               ``sum_spatial(A * dY/dA) / sum_spatial(A)`` (Fu et al., 2020)
HiResCam               ``dY/dA`` element-wise (Draelos and Carin, 2020)
LayerCam               ``relu(dY/dA)`` element-wise (Jiang et al., 2021)
ScoreCam               ``softmax_c Y(x * upsampled normalised A_c)`` (Wang et al., 2020)
EigenCam               first principal direction of ``A`` (Muhammad and Yeasin, 2020)
=====================  =====================================================

Maps can be upsampled to the input size (``upsample_to_input``) through
:meth:`LayerAttribution.interpolate`. For transformer layers whose output is
``[batch, tokens, channels]``, pass ``reshape_transform=token_grid()`` so the
tokens become a ``[batch, channels, height, width]`` map.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..._engine.call import Call, parse_call
from ..._engine.errors import ArgumentValueError
from ..._engine.forward import scalar_per_example
from ..._engine.sites import site_gradients, site_values
from ..base import GradientAttribution, LayerAttribution

TensorOrTuple = Tensor | tuple[Tensor, ...]


def token_grid(skip_tokens: int = 1, height: int | None = None, width: int | None = None) -> Callable:
    """A ``reshape_transform`` for ViT-style ``[batch, tokens, channels]`` layers.

    Drops the first ``skip_tokens`` tokens (class token), lays the rest on a
    ``height x width`` grid (square by default) and puts channels first.

    Example:
        >>> import torch
        >>> token_grid()(torch.zeros(2, 1 + 16, 8)).shape
        torch.Size([2, 8, 4, 4])
    """

    def reshape(t: Tensor) -> Tensor:
        if t.dim() != 3:
            raise ArgumentValueError(f"token_grid expects [batch, tokens, channels], got {tuple(t.shape)}")
        t = t[:, skip_tokens:]
        tokens = t.shape[1]
        h = height or (tokens // width if width else math.isqrt(tokens))
        w = width or tokens // h
        if h * w != tokens:
            raise ArgumentValueError(f"{tokens} tokens do not form a {h} x {w} grid; pass height and width")
        return t.reshape(t.shape[0], h, w, t.shape[2]).permute(0, 3, 1, 2)

    return reshape


def spatial_mean(t: Tensor) -> Tensor:
    return t.mean(tuple(range(2, t.dim())), keepdim=True) if t.dim() > 2 else t


def spatial_sum(t: Tensor) -> Tensor:
    return t.sum(tuple(range(2, t.dim())), keepdim=True) if t.dim() > 2 else t


def safe_div(num: Tensor, den: Tensor) -> Tensor:
    return torch.where(den != 0, num / torch.where(den != 0, den, 1), torch.zeros_like(num))


@dataclass
class CamContext:
    """What a weighting may need besides activations and gradients: the model and the call."""

    forward_func: Callable
    call: Call

    @property
    def inputs(self) -> tuple[Tensor, ...]:
        return self.call.inputs


class ClassActivationMap(LayerAttribution, GradientAttribution):
    """Shared body of the CAM family; subclasses define ``channel_weights``."""

    needs_gradients = True
    relu_by_default = True
    target_free = False  # the map does not depend on `target` (EigenCam)

    def __init__(
        self,
        forward_func: Callable,
        layer: nn.Module,
        device_ids: list[int] | None = None,
        reshape_transform: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        LayerAttribution.__init__(self, forward_func, layer, device_ids)
        self.reshape_transform = reshape_transform

    def channel_weights(self, acts: Tensor, grads: Tensor | None, context: CamContext) -> Tensor:
        """Weights broadcastable against ``acts`` ([N, C, 1, ...] or [N, C, *spatial])."""
        raise NotImplementedError

    def attribute(
        self,
        inputs: TensorOrTuple,
        target: Any = None,
        additional_forward_args: Any = None,
        attribute_to_layer_input: bool = False,
        relu_attributions: bool | None = None,
        attr_dim_summation: bool = True,
        grad_kwargs: dict[str, Any] | None = None,
        upsample_to_input: bool = False,
        interpolate_mode: str = "nearest",
    ) -> TensorOrTuple:
        """The weighted activation map of the layer for ``target``.

        Returns a tensor shaped like the layer (channels summed to 1 unless
        ``attr_dim_summation=False``), or a tuple for layers with several
        tensors. ``relu_attributions`` keeps the positive part (default:
        False for LayerGradCam as in Captum, True for the other variants).
        ``upsample_to_input`` resizes the map to the spatial size of the
        first input with ``interpolate_mode``.
        """
        call = parse_call(inputs, target, additional_forward_args)
        if self.needs_gradients:
            (record,) = site_gradients(
                self.forward_func, [self.layer], call, attribute_to_layer_input, grad_kwargs
            )
            grads = record.grads
        else:
            with torch.no_grad():
                (record,) = site_values(
                    self.forward_func, [self.layer], call.inputs, call.args, attribute_to_layer_input, stop=True
                )
            grads = (None,) * len(record.values)
            if self.target_free and not call.target.is_none:
                with torch.no_grad():  # the map ignores `target`, but a wrong one is still an error
                    scalar_per_example(call.forward(self.forward_func), call.batch)
        context = CamContext(self.forward_func, call)
        relu = self.relu_by_default if relu_attributions is None else relu_attributions
        maps = []
        for acts, g in zip(record.values, grads):
            if self.reshape_transform is not None:
                acts = self.reshape_transform(acts)
                g = None if g is None else self.reshape_transform(g)
            cam = self.channel_weights(acts, g, context) * acts
            if attr_dim_summation:
                cam = cam.sum(1, keepdim=True)
            if relu:
                cam = F.relu(cam)
            if upsample_to_input:
                cam = LayerAttribution.interpolate(cam, tuple(call.inputs[0].shape[2:]), interpolate_mode)
            maps.append(cam)
        return maps[0] if len(maps) == 1 else tuple(maps)
