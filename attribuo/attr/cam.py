"""Class activation maps: LayerGradCam (Captum's) and the CAM family.

Every variant is the same computation -- a map ``sum_c w_c * A_c`` over the
channels ``c`` of a layer's activations ``A`` -- and differs only in its
channel weighting :meth:`_ClassActivationMap.channel_weights`, which may be
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

from .._engine.batching import bytes_per_copy, chunk_ranges, items_per_chunk
from .._engine.call import parse_call
from .._engine.errors import ArgumentValueError
from .._engine.forward import run_forward, scalar_per_example
from .._engine.inputs import expand_additional_args, expand_batch
from .._engine.sites import site_gradients, site_values
from .._engine.targets import Target
from .base import GradientAttribution, LayerAttribution

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


def _spatial_mean(t: Tensor) -> Tensor:
    return t.mean(tuple(range(2, t.dim())), keepdim=True) if t.dim() > 2 else t


def _spatial_sum(t: Tensor) -> Tensor:
    return t.sum(tuple(range(2, t.dim())), keepdim=True) if t.dim() > 2 else t


def _safe_div(num: Tensor, den: Tensor) -> Tensor:
    return torch.where(den != 0, num / torch.where(den != 0, den, 1), torch.zeros_like(num))


@dataclass
class CamContext:
    """What a weighting may need besides activations and gradients."""

    forward_func: Callable
    inputs: tuple[Tensor, ...]
    target: Target
    additional_args: tuple[Any, ...]


class _ClassActivationMap(LayerAttribution, GradientAttribution):
    """Shared body of the CAM family; subclasses define ``channel_weights``."""

    needs_gradients = True
    relu_by_default = True

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
        xs, tgt, args = call.inputs, call.target, call.args
        if self.needs_gradients:
            (record,) = site_gradients(
                self.forward_func, [self.layer], xs, tgt, args, attribute_to_layer_input, grad_kwargs
            )
            grads = record.extra["grads"]
        else:
            with torch.no_grad():
                (record,) = site_values(self.forward_func, [self.layer], xs, args, attribute_to_layer_input, stop=True)
            grads = (None,) * len(record.values)
        context = CamContext(self.forward_func, xs, tgt, args)
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
                cam = LayerAttribution.interpolate(cam, tuple(xs[0].shape[2:]), interpolate_mode)
            maps.append(cam)
        return maps[0] if len(maps) == 1 else tuple(maps)


class LayerGradCam(_ClassActivationMap):
    """GradCAM (Selvaraju et al., 2017), as Captum's ``LayerGradCam``.

    Channel weights are the spatially averaged gradients of the target
    output with respect to the layer; the map is the weighted sum of the
    layer's channels. ``relu_attributions=False`` by default (Captum).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from attribuo.attr import LayerGradCam
        >>> model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(48, 2))
        >>> grad_cam = LayerGradCam(model, model[0])
        >>> grad_cam.attribute(torch.rand(2, 1, 6, 6), target=1).shape  # one map per example
        torch.Size([2, 1, 4, 4])
        >>> grad_cam.attribute(torch.rand(2, 1, 6, 6), target=1, upsample_to_input=True).shape
        torch.Size([2, 1, 6, 6])
    """

    relu_by_default = False

    def channel_weights(self, acts: Tensor, grads: Tensor | None, context: CamContext) -> Tensor:
        return _spatial_mean(grads)


class GradCamPlusPlus(_ClassActivationMap):
    """GradCAM++: positive gradients weighted by ``alpha = g^2 / (2 g^2 + sum(A) g^3)``.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from attribuo.attr import GradCamPlusPlus
        >>> model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(48, 2))
        >>> cam = GradCamPlusPlus(model, model[1]).attribute(torch.rand(2, 1, 6, 6), target=0)
        >>> cam.shape, bool((cam >= 0).all())  # the positive part by default
        (torch.Size([2, 1, 4, 4]), True)
    """

    def channel_weights(self, acts: Tensor, grads: Tensor | None, context: CamContext) -> Tensor:
        g2 = grads**2
        alpha = _safe_div(g2, 2 * g2 + _spatial_sum(acts) * grads**3)
        return _spatial_sum(alpha * F.relu(grads))


class XGradCam(_ClassActivationMap):
    """XGradCAM: weights ``sum(A * g) / sum(A)`` per channel.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from attribuo.attr import XGradCam
        >>> model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(48, 2))
        >>> cams = XGradCam(model, model[1]).attribute(torch.rand(2, 1, 6, 6), 0, attr_dim_summation=False)
        >>> cams.shape  # one map per channel
        torch.Size([2, 3, 4, 4])
    """

    def channel_weights(self, acts: Tensor, grads: Tensor | None, context: CamContext) -> Tensor:
        return _safe_div(_spatial_sum(acts * grads), _spatial_sum(acts))


class HiResCam(_ClassActivationMap):
    """HiResCAM: the gradient itself, position by position (no averaging).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from attribuo.attr import HiResCam
        >>> model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(48, 2))
        >>> x = torch.rand(2, 1, 6, 6)
        >>> cam = HiResCam(model, model[1]).attribute(x, target=0, relu_attributions=False)
        >>> # the model is linear after the layer, so the map adds up to the output less the bias
        >>> torch.allclose(cam.sum((1, 2, 3)), model(x)[:, 0] - model[3].bias[0], atol=1e-5)
        True
    """

    def channel_weights(self, acts: Tensor, grads: Tensor | None, context: CamContext) -> Tensor:
        return grads


class LayerCam(_ClassActivationMap):
    """LayerCAM: the positive part of the gradient, position by position.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from attribuo.attr import LayerCam
        >>> model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(48, 2))
        >>> cam = LayerCam(model, model[1]).attribute(torch.rand(2, 1, 6, 6), target=0, upsample_to_input=True)
        >>> cam.shape  # resized to the input
        torch.Size([2, 1, 6, 6])
    """

    def channel_weights(self, acts: Tensor, grads: Tensor | None, context: CamContext) -> Tensor:
        return F.relu(grads)


_UPSAMPLE = {3: "linear", 4: "bilinear", 5: "trilinear"}


class ScoreCam(_ClassActivationMap):
    """ScoreCAM: each channel weighted by the target score of the input masked by it.

    Channel ``k`` is upsampled to the input size, scaled to [0, 1] per
    example, multiplied into every input with those spatial dims, and the
    target output of the masked input is its score; weights are the softmax
    of the scores over channels. No gradients: masked forwards run under
    ``torch.no_grad`` in batches of ``internal_batch_size`` channels (default:
    as many as the memory budget allows).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from attribuo.attr import ScoreCam
        >>> model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(48, 2))
        >>> score_cam = ScoreCam(model, model[1], internal_batch_size=2)  # two channels a forward
        >>> score_cam.attribute(torch.rand(2, 1, 6, 6), target=0).shape
        torch.Size([2, 1, 4, 4])
    """

    needs_gradients = False

    def __init__(
        self,
        forward_func: Callable,
        layer: nn.Module,
        device_ids: list[int] | None = None,
        reshape_transform: Callable[[Tensor], Tensor] | None = None,
        internal_batch_size: int | None = None,
    ) -> None:
        super().__init__(forward_func, layer, device_ids, reshape_transform)
        self.internal_batch_size = internal_batch_size

    def channel_weights(self, acts: Tensor, grads: Tensor | None, context: CamContext) -> Tensor:
        n, c = acts.shape[:2]
        masks = []
        for x in context.inputs:
            if x.dim() != acts.dim():
                masks.append(None)
                continue
            up = F.interpolate(acts, tuple(x.shape[2:]), mode=_UPSAMPLE[acts.dim()])
            flat = up.reshape(n, c, -1)
            low = flat.min(-1, keepdim=True).values
            high = flat.max(-1, keepdim=True).values
            masks.append(_safe_div(flat - low, high - low).reshape(up.shape).to(x.dtype))
        if all(m is None for m in masks):
            raise ArgumentValueError(
                "ScoreCam needs an input with the layer's number of dims to mask; "
                f"the layer gives {acts.dim()}-D maps"
            )
        size = items_per_chunk(c, bytes_per_copy(context.inputs), self.internal_batch_size)
        scores = []
        with torch.no_grad():
            for start, stop in chunk_ranges(c, size):
                k = stop - start
                masked = tuple(
                    expand_batch(x, k) if m is None
                    # [k, N, 1, *S] * [1, N, C_in, *S] -> channel-major batch
                    else (m[:, start:stop].transpose(0, 1).unsqueeze(2) * x.unsqueeze(0)).flatten(0, 1)
                    for x, m in zip(context.inputs, masks)
                )
                out = run_forward(
                    context.forward_func,
                    masked,
                    context.target.repeat(k),
                    expand_additional_args(context.additional_args, n, k),
                )
                scores.append(scalar_per_example(out, n * k).reshape(k, n))
        weights = torch.softmax(torch.cat(scores).transpose(0, 1), dim=1)
        return weights.reshape((n, c) + (1,) * (acts.dim() - 2)).to(acts.dtype)


class EigenCam(_ClassActivationMap):
    """EigenCAM: projection of the activations on their first principal direction.

    The ``[positions, channels]`` activation matrix of each example is
    decomposed by SVD; the map is its projection on the first right
    singular vector, signed so the map sums to a positive value. Gradient-
    and target-free.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from attribuo.attr import EigenCam
        >>> model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(48, 2))
        >>> EigenCam(model, model[1]).attribute(torch.rand(2, 1, 6, 6)).shape  # no target needed
        torch.Size([2, 1, 4, 4])
    """

    needs_gradients = False

    def channel_weights(self, acts: Tensor, grads: Tensor | None, context: CamContext) -> Tensor:
        n, c = acts.shape[:2]
        matrix = acts.reshape(n, c, -1).transpose(1, 2)  # [N, positions, C]
        v = torch.linalg.svd(matrix, full_matrices=False).Vh[:, 0, :]  # [N, C]
        sign = torch.where((matrix @ v.unsqueeze(-1)).sum((1, 2)) < 0, -1.0, 1.0).to(v.dtype)
        return (v * sign[:, None]).reshape((n, c) + (1,) * (acts.dim() - 2))
