"""Fast Gradient Sign Method (Goodfellow et al., 2015)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from .._engine.forward import outside_inference_mode
from .._engine.inputs import is_tuple, restore_form
from ._common import (
    attack_arguments,
    attack_inputs,
    check_callable,
    clamp_bounds,
    loss_gradients,
    real_number,
)
from .perturbation import Perturbation

TensorOrTuple = Tensor | tuple[Tensor, ...]


def sign_step(
    inputs: tuple[Tensor, ...],
    grads: tuple[Tensor, ...],
    epsilon: float,
    targeted: bool,
    masks: tuple[Tensor | None, ...],
    zero_thresh: float,
) -> tuple[Tensor, ...]:
    """Move each element ``epsilon`` along the sign of its loss gradient.

    Up the loss for an untargeted attack, down it for a targeted one;
    elements whose gradient is within ``zero_thresh`` of zero stay put.
    """
    scale = -epsilon if targeted else epsilon
    out = []
    for x, g, m in zip(inputs, grads, masks):
        step = scale * torch.sign(g)
        if m is not None:
            step = step * m
        out.append(torch.where(g.abs() > zero_thresh, x + step, x))
    return tuple(out)


class FGSM(Perturbation):
    """Fast Gradient Sign Method: one step of size ``epsilon`` along the loss gradient's sign.

    Untargeted: ``x' = x + epsilon * sign(dL(x, y)/dx)`` (push away from the
    true label ``y``). Targeted: ``x' = x - epsilon * sign(dL(x, t)/dx)``
    (pull towards the label ``t``). The result is clamped to
    ``[lower_bound, upper_bound]``. The default loss is ``-log`` of the
    output picked by ``target`` (suits models that output probabilities);
    ``loss_func(outputs, target)`` replaces it and may return one loss per
    example or one for the batch.

    Attributes ``bound`` (the clamp) and ``zero_thresh`` (gradients at most
    this large count as zero, default ``1e-6``) may be overwritten.

    Example:
        >>> import torch
        >>> from attribuo.robust import FGSM
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Softmax(dim=1))
        >>> x = torch.rand(4, 3)
        >>> x_adv = FGSM(model, lower_bound=0.0, upper_bound=1.0).perturb(x, 0.1, target=0)
        >>> bool(((x_adv - x).abs() <= 0.1 + 1e-6).all())
        True
    """

    def __init__(
        self,
        forward_func: Callable,
        loss_func: Callable | None = None,
        lower_bound: float = float("-inf"),
        upper_bound: float = float("inf"),
    ) -> None:
        check_callable(forward_func, "forward_func")
        check_callable(loss_func, "loss_func", optional=True)
        self.lower_bound, self.upper_bound, self.bound = clamp_bounds(lower_bound, upper_bound)
        self.forward_func = forward_func
        self.loss_func = loss_func
        self.zero_thresh = 1e-6

    @outside_inference_mode
    def perturb(
        self,
        inputs: TensorOrTuple,
        epsilon: float,
        target: Any,
        additional_forward_args: Any = None,
        targeted: bool = False,
        mask: TensorOrTuple | None = None,
    ) -> TensorOrTuple:
        """The adversarial inputs, in the form of ``inputs``.

        ``target`` holds the true labels (untargeted) or the labels to reach
        (``targeted=True``), in any ``target`` form, or whatever
        ``loss_func`` takes. ``mask`` (0/1, broadcastable to each input)
        limits which elements move.
        """
        xs, n = attack_inputs(inputs)
        eps = real_number(epsilon, "epsilon")
        masks, tgt, args = attack_arguments(xs, n, mask, self.loss_func, target, additional_forward_args)
        return restore_form(is_tuple(inputs), self._step(xs, eps, tgt, args, bool(targeted), masks))

    def _step(
        self,
        xs: tuple[Tensor, ...],
        epsilon: float,
        target: Any,
        args: tuple[Any, ...],
        targeted: bool,
        masks: tuple[Tensor | None, ...],
    ) -> tuple[Tensor, ...]:
        """One bounded FGSM step on validated arguments (PGD calls this every iteration)."""
        grads = loss_gradients(self.forward_func, self.loss_func, xs, target, args)
        moved = sign_step(xs, grads, epsilon, targeted, masks, self.zero_thresh)
        return tuple(self.bound(x) for x in moved)
