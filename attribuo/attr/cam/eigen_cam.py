"""EigenCAM: the projection of a layer's activations on their first principal direction."""

from __future__ import annotations

import torch
from torch import Tensor

from .activation_map import CamContext, ClassActivationMap


class EigenCam(ClassActivationMap):
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
    target_free = True

    def channel_weights(self, acts: Tensor, grads: Tensor | None, context: CamContext) -> Tensor:
        n, c = acts.shape[:2]
        matrix = acts.flatten(2).transpose(1, 2)  # [N, positions, C]
        v = torch.linalg.svd(matrix, full_matrices=False).Vh[:, 0, :]  # [N, C]
        sign = torch.where((matrix @ v.unsqueeze(-1)).sum((1, 2)) < 0, -1.0, 1.0).to(v.dtype)
        return (v * sign[:, None]).reshape((n, c) + (1,) * (acts.dim() - 2))
