"""CAMs weighted by gradients: GradCAM, GradCAM++, XGradCAM, HiResCAM, LayerCAM."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor

from .activation_map import (
    CamContext,
    ClassActivationMap,
    TensorOrTuple,
    safe_div,
    spatial_mean,
    spatial_sum,
)


class LayerGradCam(ClassActivationMap):
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

    def attribute(
        self,
        inputs: TensorOrTuple,
        target: Any = None,
        additional_forward_args: Any = None,
        attribute_to_layer_input: bool = False,
        relu_attributions: bool = False,
        attr_dim_summation: bool = True,
        grad_kwargs: dict[str, Any] | None = None,
        upsample_to_input: bool = False,
        interpolate_mode: str = "nearest",
    ) -> TensorOrTuple:
        """The GradCAM map of the layer for ``target`` (Captum's defaults; see the base class)."""
        return super().attribute(
            inputs, target, additional_forward_args, attribute_to_layer_input, relu_attributions,
            attr_dim_summation, grad_kwargs, upsample_to_input, interpolate_mode,
        )

    def channel_weights(self, acts: Tensor, grads: Tensor | None, context: CamContext) -> Tensor:
        return spatial_mean(grads)


class GradCamPlusPlus(ClassActivationMap):
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
        alpha = safe_div(g2, 2 * g2 + spatial_sum(acts) * grads**3)
        return spatial_sum(alpha * F.relu(grads))


class XGradCam(ClassActivationMap):
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
        return safe_div(spatial_sum(acts * grads), spatial_sum(acts))


class HiResCam(ClassActivationMap):
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


class LayerCam(ClassActivationMap):
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
