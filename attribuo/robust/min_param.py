"""MinParamPerturbation: the smallest attack parameter that changes the model's answer."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from enum import Enum
from numbers import Real
from typing import Any

import torch
from torch import Tensor

from .._engine.errors import ArgumentTypeError, ArgumentValueError
from .._engine.inputs import format_additional_args, positive_int
from ._common import check_callable
from ._grouped import grouped_outputs, require_batchable


def drange(min_val: float, max_val: float, step_val: float) -> Iterator[float]:
    """``min_val, min_val + step_val, ...`` below ``max_val``, by repeated addition
    (so float values are exactly those a running sum gives)."""
    value = min_val
    while value < max_val:
        yield value
        value += step_val


def default_correct_fn(model_out: Tensor, target: Any) -> bool:
    """True when the arg max of every example's output equals its ``target`` label."""
    if not isinstance(model_out, Tensor) or model_out.dim() != 2:
        raise ArgumentValueError(
            "the default `correct_fn` needs a 2-D model output (examples x classes); "
            "pass a custom `correct_fn` for other outputs"
        )
    labels = torch.as_tensor(target, device=model_out.device)
    return bool((model_out.argmax(dim=1) == labels).all())


class MinParamPerturbationMode(Enum):
    LINEAR = 0
    BINARY = 1


class MinParamPerturbation:
    """Search the attack parameter ``arg_name`` for the smallest value that fools the model.

    Values ``arg_min, arg_min + arg_step, ...`` below ``arg_max`` are tried
    in order (``mode="linear"``) or bisected (``mode="binary"``, assumes that
    larger values fool the model more). A value fools the model when
    ``correct_fn(model_out, target=..., **correct_fn_kwargs)`` is false for
    one of its ``num_attempts`` attacked copies; the default ``correct_fn``
    compares the output's arg max with ``target`` for every example.

    Example:
        >>> import torch
        >>> from attribuo.robust import MinParamPerturbation
        >>> model = torch.nn.Linear(1, 2)
        >>> with torch.no_grad():
        ...     _ = model.weight.copy_(torch.tensor([[0.0], [1.0]]))
        ...     _ = model.bias.zero_()
        >>> shift = lambda x, delta: x + delta
        >>> search = MinParamPerturbation(model, shift, "delta", 0.0, 2.0, 0.25)
        >>> x_adv, delta = search.evaluate(torch.tensor([[-0.6]]), target=0)
        >>> delta
        0.75
    """

    def __init__(
        self,
        forward_func: Callable,
        attack: Callable,
        arg_name: str,
        arg_min: float,
        arg_max: float,
        arg_step: float,
        mode: str = "linear",
        num_attempts: int = 1,
        preproc_fn: Callable | None = None,
        apply_before_preproc: bool = False,
        correct_fn: Callable | None = None,
    ) -> None:
        check_callable(forward_func, "forward_func")
        check_callable(attack, "attack")
        check_callable(preproc_fn, "preproc_fn", optional=True)
        check_callable(correct_fn, "correct_fn", optional=True)
        if not isinstance(arg_name, str):
            raise ArgumentTypeError(f"`arg_name` must be a str, got {type(arg_name).__name__}")
        for name, value in (("arg_min", arg_min), ("arg_max", arg_max), ("arg_step", arg_step)):
            if isinstance(value, bool) or not isinstance(value, Real):
                raise ArgumentTypeError(f"`{name}` must be a number, got {type(value).__name__}")
        if arg_step <= 0:
            raise ArgumentValueError(f"`arg_step` must be positive, got {arg_step}")
        if not arg_max > arg_min + arg_step:
            raise ArgumentValueError(
                f"`arg_step` ({arg_step}) must be smaller than the range from `arg_min` "
                f"({arg_min}) to `arg_max` ({arg_max})"
            )
        if not isinstance(mode, str) or mode.upper() not in MinParamPerturbationMode.__members__:
            raise ArgumentValueError(f"`mode` must be 'linear' or 'binary', got {mode!r}")
        positive_int(num_attempts, "num_attempts")
        self.forward_func = forward_func
        self.attack = attack
        self.arg_name = arg_name
        self.arg_min = arg_min
        self.arg_max = arg_max
        self.arg_step = arg_step
        self.num_attempts = num_attempts
        self.preproc_fn = preproc_fn
        self.apply_before_preproc = apply_before_preproc
        self.correct_fn = correct_fn if correct_fn is not None else default_correct_fn
        self.mode = MinParamPerturbationMode[mode.upper()]

    def evaluate(
        self,
        inputs: Any,
        additional_forward_args: Any = None,
        target: Any = None,
        perturbations_per_eval: int = 1,
        attack_kwargs: dict[str, Any] | None = None,
        correct_fn_kwargs: dict[str, Any] | None = None,
    ) -> tuple[Any, float | None]:
        """``(perturbed_inputs, value)`` for the smallest fooling value, or ``(None, None)``.

        ``perturbed_inputs`` is the attack's output (before ``preproc_fn`` when
        the attack runs before it). Up to ``perturbations_per_eval`` attacked
        copies are evaluated in one forward call; results do not depend on it.
        """
        per_eval = positive_int(perturbations_per_eval, "perturbations_per_eval")
        if self.correct_fn is default_correct_fn and target is None:
            raise ArgumentValueError("`target` is required with the default `correct_fn`")
        for name, value in (("attack_kwargs", attack_kwargs), ("correct_fn_kwargs", correct_fn_kwargs)):
            if value is not None and not isinstance(value, dict):
                raise ArgumentTypeError(f"`{name}` must be a dict, got {type(value).__name__}")
        args = format_additional_args(additional_forward_args)
        model_input = self.preproc_fn(inputs) if self.preproc_fn is not None else inputs
        require_batchable(model_input, per_eval)
        check_kwargs = dict(correct_fn_kwargs or {})
        if target is not None:
            check_kwargs["target"] = target
        search = _Search(self, inputs, model_input, dict(attack_kwargs or {}), args, check_kwargs)
        if self.mode is MinParamPerturbationMode.LINEAR:
            return search.linear(per_eval)
        return search.binary(per_eval)


class _Search:
    """One evaluate call: attacks the inputs at parameter values and tests the model."""

    def __init__(
        self,
        owner: MinParamPerturbation,
        inputs: Any,
        model_input: Any,
        attack_kwargs: dict[str, Any],
        args: tuple[Any, ...],
        check_kwargs: dict[str, Any],
    ) -> None:
        self.owner = owner
        self.inputs = inputs
        self.model_input = model_input
        self.attack_kwargs = attack_kwargs
        self.args = args
        self.check_kwargs = check_kwargs

    def attack(self, value: float) -> tuple[Any, Any]:
        """``(model input, attack output)`` at parameter ``value``."""
        o = self.owner
        kwargs = {**self.attack_kwargs, o.arg_name: value}
        if o.apply_before_preproc:
            attacked = o.attack(self.inputs, **kwargs)
            return (o.preproc_fn(attacked) if o.preproc_fn else attacked), attacked
        attacked = o.attack(self.model_input, **kwargs)
        return attacked, attacked

    def first_fooled(self, model_inputs: list[Any]) -> int | None:
        """Index of the first input the model gets wrong, from one forward call."""
        outputs = grouped_outputs(self.owner.forward_func, model_inputs, self.args)
        for i, out in enumerate(outputs):
            if not self.owner.correct_fn(out, **self.check_kwargs):
                return i
        return None

    def linear(self, per_eval: int) -> tuple[Any, float | None]:
        o = self.owner
        pending: list[tuple[Any, Any, float]] = []

        def check() -> tuple[Any, float] | None:
            hit = self.first_fooled([p[0] for p in pending])
            found = None if hit is None else (pending[hit][1], pending[hit][2])
            pending.clear()
            return found

        for value in drange(o.arg_min, o.arg_max, o.arg_step):
            for _ in range(o.num_attempts):
                model_in, attacked = self.attack(value)
                pending.append((model_in, attacked, value))
                if len(pending) == per_eval and (found := check()) is not None:
                    return found
        if pending and (found := check()) is not None:
            return found
        return None, None

    def binary(self, per_eval: int) -> tuple[Any, float | None]:
        o = self.owner
        low, high = o.arg_min, o.arg_max
        best_value: float | None = None
        best_input: Any = None
        while high > low:
            steps = ((high - low) // o.arg_step) // 2
            if steps == 0 and low + o.arg_step < high:
                steps = 1
            mid = low + steps * o.arg_step
            fooled = False
            pending: list[tuple[Any, Any]] = []
            for attempt in range(o.num_attempts):
                pending.append(self.attack(mid))
                if len(pending) == per_eval or attempt == o.num_attempts - 1:
                    hit = self.first_fooled([p[0] for p in pending])
                    if hit is not None:
                        fooled = True
                        high = mid
                        if best_value is None or best_value > mid:
                            best_value, best_input = mid, pending[hit][1]
                        break
                    pending = []
            if math.isclose(low, mid):
                break
            if not fooled:
                low = mid
        return best_input, best_value
