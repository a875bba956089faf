"""The common arguments of an ``attribute`` call, validated once.

Almost every method starts by checking ``inputs``, finding the batch size,
parsing ``target`` and normalising ``additional_forward_args``; and ends by
giving the result back in the form of ``inputs``. :func:`parse_call` does the
first part and :meth:`Call.result` the last. In between, every evaluation of
the model goes through the :class:`Call`: :meth:`Call.expanded` is the call
for several copies of each example (path steps, perturbations, samples), with
``target`` and batched ``additional_forward_args`` expanded alike, and
:meth:`Call.forward` / :meth:`Call.gradients` run it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from .forward import output_gradients, run_forward
from .inputs import (
    as_tuple,
    batch_size,
    expand_additional_args,
    expand_batch,
    format_additional_args,
    grad_ready,
    is_batched,
    is_tuple,
    require_floating,
    restore_form,
    rows,
)
from .targets import Target, parse_target


@dataclass(frozen=True)
class Call:
    """Validated ``inputs`` (as a tuple), their batch size, ``target`` and extra args.

    Example:
        >>> import torch
        >>> from attribuo._engine.call import parse_call
        >>> call = parse_call(torch.zeros(3, 2), target=[0, 1, 1])
        >>> call.batch, call.args
        (3, ())
        >>> call.result((torch.ones(3, 2),)).shape  # a tensor, as the inputs were
        torch.Size([3, 2])
        >>> twice = call.expanded(2)  # two copies of the batch, targets following
        >>> twice.batch, twice.target.per_example.flatten().tolist()
        (6, [0, 1, 1, 0, 1, 1])
    """

    inputs: tuple[Tensor, ...]
    was_tuple: bool
    batch: int
    target: Target
    args: tuple[Any, ...]
    # the latest expansion of target and args, reused by loops whose chunks share a size
    _expansion: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def result(self, values: Sequence[Any]) -> Any:
        """``values`` (one per input) in the form the user passed ``inputs`` in."""
        return restore_form(self.was_tuple, values)

    def expanded(
        self, times: int, *, interleave: bool = False, inputs: tuple[Tensor, ...] | None = None
    ) -> Call:
        """This call on ``times`` copies of each example.

        The copies are stacked batch after batch (``interleave=False``: the
        layout of path steps and perturbations) or each example repeated in
        place (``interleave=True``: noise samples, baseline pairs); the
        per-example ``target`` and the tensor ``additional_forward_args``
        whose dim 0 is the batch follow the same layout. ``inputs`` are the
        expanded inputs when the caller built them (path points, perturbed
        copies); otherwise the inputs are tiled.
        """
        if times == 1 and inputs is None:
            return self
        key = (times, interleave)
        cached = self._expansion.get(key)
        if cached is None:
            self._expansion.clear()  # one size at a time: no more expanded args live than needed
            cached = (
                self.target.repeat(times, interleave),
                expand_additional_args(self.args, self.batch, times, interleave),
            )
            self._expansion[key] = cached
        if inputs is None:
            inputs = tuple(expand_batch(x, times, interleave) for x in self.inputs)
        return Call(inputs, self.was_tuple, self.batch * times, *cached)

    def take(self, start: int, stop: int) -> Call:
        """This call restricted to examples ``start:stop``."""
        return Call(
            tuple(x[start:stop] for x in self.inputs),
            self.was_tuple,
            stop - start,
            self.target.take(start, stop),
            tuple(a[start:stop] if is_batched(a, self.batch) else a for a in self.args),
        )

    def with_inputs(self, inputs: tuple[Tensor, ...], args: tuple[Any, ...] | None = None) -> Call:
        """The same examples, target and (unless given) args with other ``inputs``.

        For baselines, path points of the same batch, or a layer's values
        (then with ``args=()``: the layer's function needs no extra args).
        """
        return Call(tuple(inputs), self.was_tuple, self.batch, self.target, self.args if args is None else args)

    def forward(self, forward_func: Callable) -> Any:
        """``forward_func(*inputs, *args)`` with the target selected."""
        return run_forward(forward_func, self.inputs, self.target, self.args)

    def gradients(self, forward_func: Callable) -> tuple[Tensor, ...]:
        """Gradients of the targeted output, summed over examples, w.r.t. the inputs.

        The inputs must require grad (:func:`~.inputs.grad_ready`).
        """
        return output_gradients(forward_func, self.inputs, self.target, self.args)


def parse_call(
    inputs: Any,
    target: Any = None,
    additional_forward_args: Any = None,
    *,
    floating: bool = False,
    require_equal_batch: bool = True,
    name: str = "inputs",
) -> Call:
    """Check and normalise the arguments every ``attribute`` method shares.

    In this order: ``inputs`` must be a tensor or tuple of tensors,
    floating-point when ``floating`` (gradient methods), with a batch dim
    (all of equal size unless ``require_equal_batch=False``, where
    ``inputs[0]`` fixes it); then ``target`` is parsed for that batch.
    ``name`` is the argument errors name for ``inputs``.
    """
    xs = as_tuple(inputs, name)
    if floating:
        require_floating(xs, name)
    n = batch_size(xs, name, require_equal=require_equal_batch)
    return Call(xs, is_tuple(inputs), n, parse_target(target, n), format_additional_args(additional_forward_args))


def input_gradients(
    forward_func: Callable,
    inputs: Any,
    target: Any = None,
    additional_forward_args: Any = None,
) -> tuple[Call, tuple[Tensor, ...]]:
    """Validate user arguments; the call and the gradients of its target w.r.t. the inputs.

    The entry point of the plain-gradient methods: the inputs are
    differentiated as fresh leaves (the user's tensors are untouched), every
    documented ``target`` form is accepted.
    """
    call = parse_call(inputs, target, additional_forward_args, floating=True)
    return call, call.with_inputs(grad_ready(call.inputs)).gradients(forward_func)


def completeness_delta(
    forward_func: Callable, attributions: Sequence[Tensor], starts: tuple[Tensor, ...], call: Call
) -> Tensor:
    """Per example: the sum of ``attributions`` minus ``F(call.inputs) - F(starts)``.

    The convergence delta of every method whose attributions should add up
    to the change of the output between ``starts`` and the inputs. The
    attributions may live elsewhere than the inputs (a layer): only their
    batch must match.
    """
    n = call.batch
    with torch.no_grad():
        end = _per_example(call.forward(forward_func), n)
        start = _per_example(call.with_inputs(starts).forward(forward_func), n)
        total = sum(rows(a).sum(1) for a in attributions)
    return total - (end - start)


def _per_example(output: Tensor, n: int) -> Tensor:
    if output.dim() == 0:
        return output.reshape(1).expand(n)
    return rows(output).sum(1)
