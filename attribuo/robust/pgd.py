"""Projected Gradient Descent (Madry et al., 2018)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from .._engine.errors import ArgumentTypeError, ArgumentValueError
from .._engine.forward import outside_inference_mode
from .._engine.inputs import is_tuple, restore_form
from ._common import attack_arguments, attack_inputs, check_callable, clamp_bounds, real_number
from .fgsm import FGSM
from .perturbation import Perturbation

TensorOrTuple = Tensor | tuple[Tensor, ...]
_NORMS = ("Linf", "L2")


def project(center: Tensor, point: Tensor, radius: float, norm: str) -> Tensor:
    """The point of the ``norm`` ball of ``radius`` around each example of ``center``
    nearest to ``point`` (for L2, ``torch.renorm``'s scaling, as Captum uses)."""
    diff = point - center
    if norm == "Linf":
        return center + diff.clamp(-radius, radius)
    return center + torch.renorm(diff, 2, 0, radius)


def random_point(center: Tensor, radius: float, norm: str, mask: Tensor | None) -> Tensor:
    """A point drawn uniformly from the ``norm`` ball of ``radius`` around each example.

    Random numbers are drawn in Captum's order (L2: a normal direction for
    the whole batch, then one uniform radius per example), so the same seed
    gives the same start. Unlike Captum, each example's radius scales its
    own direction for every batch size.
    """
    if norm == "Linf":
        offset = torch.rand_like(center) * radius * 2 - radius
    else:
        n = center.shape[0]
        direction = torch.randn_like(center)
        flat = direction.reshape(n, -1)
        unit = (flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-12)).reshape(center.shape)
        dims = center[0].numel()
        # default dtype as Captum draws it, then the input's dtype
        r = (torch.rand(n, device=center.device) ** (1.0 / dims) * radius).to(center.dtype)
        offset = r.reshape((n,) + (1,) * (center.dim() - 1)) * unit
    if mask is not None:
        offset = offset * mask
    return center + offset


class PGD(Perturbation):
    """Projected Gradient Descent: repeated FGSM steps kept inside a ball around the inputs.

    Each of ``step_num`` steps moves by ``step_size`` along the sign of the
    loss gradient (towards the ``target`` label when ``targeted=True``),
    projects back into the ``norm`` ball (``"Linf"`` or ``"L2"``, per
    example) of ``radius`` around the original inputs and clamps to
    ``[lower_bound, upper_bound]``. ``random_start=True`` starts from a
    uniform random point of the ball. Loss and ``target`` as in
    :class:`FGSM`.

    Example:
        >>> import torch
        >>> from attribuo.robust import PGD
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Softmax(dim=1))
        >>> x = torch.rand(4, 3)
        >>> x_adv = PGD(model).perturb(x, radius=0.1, step_size=0.02, step_num=10, target=0)
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
        self.lower_bound, self.upper_bound, self.bound = clamp_bounds(lower_bound, upper_bound)
        self.forward_func = forward_func
        # the unbounded FGSM that takes each step; overwrite its zero_thresh to tune it
        self.fgsm = FGSM(forward_func, loss_func)

    @outside_inference_mode
    def perturb(
        self,
        inputs: TensorOrTuple,
        radius: float,
        step_size: float,
        step_num: int,
        target: Any,
        additional_forward_args: Any = None,
        targeted: bool = False,
        random_start: bool = False,
        norm: str = "Linf",
        mask: TensorOrTuple | None = None,
    ) -> TensorOrTuple:
        """The adversarial inputs, in the form of ``inputs``; see the class docstring."""
        xs, n = attack_inputs(inputs)
        r = real_number(radius, "radius", minimum=0.0)
        step = real_number(step_size, "step_size")
        if isinstance(step_num, bool) or not isinstance(step_num, int):
            raise ArgumentTypeError(f"`step_num` must be an int, got {type(step_num).__name__}")
        if step_num < 0:
            raise ArgumentValueError(f"`step_num` must be >= 0, got {step_num}")
        if norm not in _NORMS:
            raise ArgumentValueError(f"`norm` must be 'Linf' or 'L2', got {norm!r}")
        masks, tgt, args = attack_arguments(xs, n, mask, self.fgsm.loss_func, target, additional_forward_args)

        current = xs
        if random_start:
            current = tuple(
                self.bound(random_point(x, r, norm, m)) for x, m in zip(xs, masks)
            )
        for _ in range(step_num):
            moved = self.fgsm._step(current, step, tgt, args, bool(targeted), masks)
            current = tuple(
                self.bound(project(x, p, r, norm)).detach() for x, p in zip(xs, moved)
            )
        return restore_form(is_tuple(inputs), current)
