"""Layer sites: read, differentiate or replace the input or output of a module.

Layer and neuron methods bind a primary algorithm to a *site*: a module's
output (or, with ``attribute_to_layer_input``, its input). This file holds
the forward hooks for that:

- :func:`capture` records the values at a site during a forward, optionally
  kept in the autograd graph so gradients with respect to them can be taken;
  :func:`site_values` and :func:`site_gradients` run one forward with it;
- :func:`replacing_all` substitutes given values for the sites during a forward;
- :func:`site_function` turns "the model with this site replaced" into a
  function of the site's values, so any primary method (integrated
  gradients, DeepLift, ablation, ...) can be applied to a layer unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .call import Call
from .errors import ArgumentTypeError, ArgumentValueError
from .forward import run_forward, scalar_per_example
from .hooks import owned_hooks


@dataclass
class Captured:
    """What one site saw in a forward.

    ``values``: the site's tensors; ``was_tuple``: whether the module gave
    (or took) several; ``calls``: how often it ran; ``grads``: the gradients
    of the targeted output w.r.t. ``values`` (filled by :func:`site_gradients`).
    """

    values: tuple[Tensor, ...] = ()
    was_tuple: bool = False
    calls: int = 0
    grads: tuple[Tensor, ...] = ()


class StopForward(BaseException):
    """Raised by a capturing hook to end a forward early (not an ``Exception``,
    so a model's own ``except Exception`` cannot swallow it)."""


def _as_values(value: Any, layer: nn.Module, where: str) -> tuple[tuple[Tensor, ...], bool]:
    if isinstance(value, Tensor):
        return (value,), False
    if isinstance(value, (tuple, list)) and all(isinstance(v, Tensor) for v in value):
        return tuple(value), True
    if isinstance(value, (tuple, list)):
        bad = [f"{i} ({type(v).__name__})" for i, v in enumerate(value) if not isinstance(v, Tensor)]
        raise ArgumentTypeError(
            f"the {where} of layer {type(layer).__name__} is a {type(value).__name__} of "
            f"{len(value)} with non-tensors at position {', '.join(bad)}; layer attribution needs "
            "a tensor or a tuple of tensors there (attribute a submodule that returns the tensor "
            "you want, e.g. the block's first output)"
        )
    raise ArgumentTypeError(
        f"the {where} of layer {type(layer).__name__} is {type(value).__name__}; layer "
        "attribution needs a tensor or a tuple of tensors there"
    )


def _differentiable(values: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    # A site outside the graph (e.g. the first, parameter-free layer on inputs
    # that do not require grad) becomes a leaf, so gradients w.r.t. it exist.
    if not torch.is_grad_enabled():
        return values
    return tuple(
        v.detach().requires_grad_() if v.is_floating_point() and not v.requires_grad else v
        for v in values
    )


def check_module(layer: Any) -> nn.Module:
    if not isinstance(layer, nn.Module):
        raise ArgumentTypeError(f"`layer` must be a torch.nn.Module, got {type(layer).__name__}")
    return layer


def _single_call(record: Captured, layer: nn.Module) -> None:
    record.calls += 1
    if record.calls > 1:
        raise ArgumentValueError(
            f"`layer` {type(layer).__name__} runs more than once in one forward pass; "
            "attribution to a reused module is ambiguous, so it is not supported. "
            "Give each use its own module instance."
        )


@contextmanager
def capture(
    layers: Sequence[nn.Module],
    use_input: bool = False,
    keep_graph: bool = False,
    stop: bool = False,
) -> Iterator[list[Captured]]:
    """Record the output (or input) of each of ``layers`` during the block's forwards.

    With ``keep_graph`` the recorded tensors stay in the autograd graph (the
    model continues on a copy, so later in-place operations cannot corrupt
    the gradient with respect to them); without it a copy is recorded, for
    the same reason. With ``stop`` the forward is cut short (by
    :class:`StopForward`, which :func:`site_values` catches) once every
    layer has been seen, for objectives that need nothing after the layers.
    """
    records = [Captured() for _ in layers]

    def maybe_stop() -> None:
        if stop and all(r.calls for r in records):
            raise StopForward

    forward, pre = [], []
    for layer, record in zip(layers, records):
        check_module(layer)
        if use_input:
            def pre_hook(module, args, record=record):
                _single_call(record, module)
                record.values, record.was_tuple = _as_values(args, module, "input")
                record.was_tuple = len(args) > 1
                if keep_graph:
                    record.values = _differentiable(record.values)
                copies = tuple(a.clone() for a in record.values)
                if not keep_graph:
                    record.values, copies = copies, None
                maybe_stop()
                return copies

            pre.append((layer, pre_hook))
        else:
            def hook(module, args, output, record=record):
                _single_call(record, module)
                record.values, record.was_tuple = _as_values(output, module, "output")
                if keep_graph:
                    record.values = _differentiable(record.values)
                copies = tuple(v.clone() for v in record.values)
                if not keep_graph:
                    record.values = copies
                maybe_stop()
                if keep_graph:
                    return copies if record.was_tuple else copies[0]
                return None

            forward.append((layer, hook))
    with owned_hooks(forward, pre):
        yield records


@contextmanager
def replacing_all(
    layers: Sequence[nn.Module], values: Sequence[tuple[Tensor, ...]], use_input: bool = False
) -> Iterator[list[Captured]]:
    """Substitute ``values[i]`` for the output (or input) of ``layers[i]`` during the block.

    The model continues on copies, so in-place operations after a layer
    (``nn.ReLU(inplace=True)``) neither fail on leaf tensors nor change the
    caller's values.
    """
    records = [Captured() for _ in layers]
    forward, pre = [], []
    for layer, vals, record in zip(layers, values, records):
        check_module(layer)
        if use_input:
            def pre_hook(module, args, vals=vals, record=record):
                _single_call(record, module)
                record.was_tuple = len(args) > 1
                _check_shapes(args, vals, module)
                return tuple(v.clone() for v in vals)

            pre.append((layer, pre_hook))
        else:
            def hook(module, args, output, vals=vals, record=record):
                _single_call(record, module)
                current, record.was_tuple = _as_values(output, module, "output")
                _check_shapes(current, vals, module)
                copies = tuple(v.clone() for v in vals)
                return copies if record.was_tuple else copies[0]

            forward.append((layer, hook))
    with owned_hooks(forward, pre):
        yield records


def _check_shapes(current: Sequence[Tensor], values: Sequence[Tensor], module: nn.Module) -> None:
    if len(current) != len(values) or any(c.shape != v.shape for c, v in zip(current, values)):
        raise ArgumentValueError(
            f"replacement values for layer {type(module).__name__} have shapes "
            f"{[tuple(v.shape) for v in values]}, expected {[tuple(c.shape) for c in current]}"
        )


def _require_called(records: Sequence[Captured], layers: Sequence[nn.Module]) -> None:
    for record, layer in zip(records, layers):
        if record.calls == 0:
            raise ArgumentValueError(
                f"`layer` {type(layer).__name__} was not called during the forward pass"
            )


def site_values(
    forward_func: Callable,
    layers: Sequence[nn.Module],
    inputs: tuple[Tensor, ...],
    additional_args: tuple[Any, ...] = (),
    use_input: bool = False,
    keep_graph: bool = False,
    stop: bool = False,
) -> list[Captured]:
    """Run one forward (cut short after the layers with ``stop``); what each layer saw or gave."""
    with capture(layers, use_input, keep_graph, stop) as records:
        try:
            run_forward(forward_func, inputs, None, additional_args)
        except StopForward:
            pass
    _require_called(records, layers)
    return records


def site_gradients(
    forward_func: Callable,
    layers: Sequence[nn.Module],
    call: Call,
    use_input: bool = False,
    grad_kwargs: dict | None = None,
) -> list[Captured]:
    """Gradients of the targeted output (summed over examples) w.r.t. each layer's values.

    One forward of ``call``; returns one record per layer, its ``values``
    detached and its ``grads`` filled.
    """
    with torch.enable_grad(), capture(layers, use_input, keep_graph=True) as records:
        output = call.forward(forward_func)
        _require_called(records, layers)
        values = scalar_per_example(output, call.batch)
        flat = [v for r in records for v in r.values]
        # Unused sites get zero gradients whatever the caller's grad_kwargs say.
        kwargs = {**(grad_kwargs or {}), "allow_unused": True, "materialize_grads": True}
        grads = torch.autograd.grad(values.sum(), flat, **kwargs)
    start = 0
    for record in records:
        record.grads = tuple(grads[start : start + len(record.values)])
        start += len(record.values)
        record.values = tuple(v.detach() for v in record.values)
    return records


def site_function(
    forward_func: Callable,
    layer: nn.Module | Sequence[nn.Module],
    call: Call,
    use_input: bool = False,
    counts: Sequence[int] | None = None,
) -> Callable[..., Tensor]:
    """The model as a function of the site's values: ``g(*values) -> model output``.

    ``g`` runs ``forward_func`` on ``call``'s inputs (tiled, with the batched
    additional args, to the batch size of ``values``: whole-batch copies in
    order) while the layer's output (or input) is replaced by ``values``.
    Pass ``g`` as the forward function of a primary method to attribute to
    the layer. ``layer`` may be a list of layers; ``counts[i]`` then says
    how many of ``values`` (in order) belong to ``layer[i]``.
    """
    layers = list(layer) if isinstance(layer, (list, tuple)) else [layer]
    n = call.batch
    sizes = list(counts) if counts is not None else None

    def g(*values: Tensor) -> Tensor:
        times = values[0].shape[0] // n if n else 1
        if times * n != values[0].shape[0]:
            raise ArgumentValueError(
                f"layer values have batch {values[0].shape[0]}, not a multiple of the "
                f"inputs' batch {n}"
            )
        tiled = call.expanded(times)
        bounds = [0]
        for size in sizes or [len(values)]:
            bounds.append(bounds[-1] + size)
        per_layer = [tuple(values[a:b]) for a, b in zip(bounds, bounds[1:])]
        with replacing_all(layers, per_layer, use_input):
            return forward_func(*tiled.inputs, *tiled.args)

    g.wraps_forward = forward_func  # type: ignore[attr-defined]  # what the model is (batching probes)
    return g
