"""ScoreCAM: channels weighted by the target score of the input masked by them."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..._engine.batching import bytes_per_copy, chunks
from ..._engine.errors import ArgumentValueError
from ..._engine.forward import scalar_per_example
from ..._engine.inputs import expand_batch
from .activation_map import CamContext, ClassActivationMap, safe_div

_UPSAMPLE = {3: "linear", 4: "bilinear", 5: "trilinear"}


class ScoreCam(ClassActivationMap):
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
            flat = up.flatten(2)
            low = flat.min(-1, keepdim=True).values
            high = flat.max(-1, keepdim=True).values
            masks.append(safe_div(flat - low, high - low).reshape(up.shape).to(x.dtype))
        if all(m is None for m in masks):
            raise ArgumentValueError(
                "ScoreCam needs an input with the layer's number of dims to mask; "
                f"the layer gives {acts.dim()}-D maps"
            )
        scores = []
        with torch.no_grad():
            for start, stop in chunks(c, bytes_per_copy(context.inputs), items=self.internal_batch_size):
                k = stop - start
                masked = tuple(
                    expand_batch(x, k) if m is None
                    # [k, N, 1, *S] * [1, N, C_in, *S] -> channel-major batch
                    else (m[:, start:stop].transpose(0, 1).unsqueeze(2) * x.unsqueeze(0)).flatten(0, 1)
                    for x, m in zip(context.inputs, masks)
                )
                out = context.call.expanded(k, inputs=masked).forward(context.forward_func)
                scores.append(scalar_per_example(out, n * k).reshape(k, n))
        weights = torch.softmax(torch.cat(scores).transpose(0, 1), dim=1)
        return weights.reshape((n, c) + (1,) * (acts.dim() - 2)).to(acts.dtype)
