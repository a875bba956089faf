"""Guided GradCAM: guided backpropagation times the upsampled GradCAM map."""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor, nn

from ..._engine.errors import ArgumentValueError
from ..._engine.inputs import as_tuple, is_tuple, restore_form
from ..base import GradientAttribution, LayerAttribution
from ..gradient.guided_backprop import GuidedBackprop
from .gradient_weighted import LayerGradCam

TensorOrTuple = Tensor | tuple[Tensor, ...]


class GuidedGradCam(GradientAttribution):
    """Guided GradCAM (Selvaraju et al., 2017), as Captum's ``GuidedGradCam``.

    The GradCAM map of ``layer`` (positive part) is upsampled to each
    input's spatial size with ``interpolate_mode`` and multiplied by the
    guided-backpropagation attribution of that input. Inputs whose size the
    map cannot be resized to get an empty tensor and a warning (as in
    Captum).

    Example:
        >>> import torch
        >>> from attribuo.attr import GuidedGradCam
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3), torch.nn.ReLU(),
        ...                             torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(3, 2))
        >>> GuidedGradCam(model, model[0]).attribute(torch.rand(2, 1, 6, 6), target=1).shape
        torch.Size([2, 1, 6, 6])
    """

    def __init__(self, model: nn.Module, layer: nn.Module, device_ids: list[int] | None = None) -> None:
        super().__init__(model)
        self.grad_cam = LayerGradCam(model, layer, device_ids)
        self.guided_backprop = GuidedBackprop(model)

    def attribute(
        self,
        inputs: TensorOrTuple,
        target: Any = None,
        additional_forward_args: Any = None,
        interpolate_mode: str = "nearest",
        attribute_to_layer_input: bool = False,
    ) -> TensorOrTuple:
        """Element-wise product of guided backprop and upsampled GradCAM; form of ``inputs``."""
        xs = as_tuple(inputs)
        cam = self.grad_cam.attribute(
            xs, target, additional_forward_args, attribute_to_layer_input, relu_attributions=True
        )
        if isinstance(cam, tuple):
            raise ArgumentValueError(
                "GuidedGradCam needs a `layer` with a single tensor output (or input)"
            )
        guided = as_tuple(self.guided_backprop.attribute(xs, target, additional_forward_args))
        results = []
        for x, g in zip(xs, guided):
            try:
                results.append(g * LayerAttribution.interpolate(cam, tuple(x.shape[2:]), interpolate_mode))
            except (ValueError, RuntimeError, TypeError):
                warnings.warn(
                    "GradCAM map could not be resized to an input's spatial size; returning an "
                    "empty tensor for that input",
                    stacklevel=2,
                )
                results.append(torch.empty(0))
        return restore_form(is_tuple(inputs), results)
