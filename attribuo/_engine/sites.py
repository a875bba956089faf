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
    layers: Sequence[nn.Module],
    values: Sequence[tuple[Tensor, ...]],
    use_input: bool = False,
    times: int = 1,
) -> Iterator[list[Captured]]:
    """Substitute ``values[i]`` for the output (or input) of ``layers[i]`` during the block.

    The model continues on copies, so in-place operations after a layer
    (``nn.ReLU(inplace=True)``) neither fail on leaf tensors nor change the
    caller's values. With ``times`` > 1 the values hold ``times`` copies of
    the batch the layer sees (dim 0 ``times`` times as long): the forward ran
    on the untiled inputs and only the part after the layer runs per copy.
    """
    records = [Captured() for _ in layers]
    forward, pre = [], []
    for layer, vals, record in zip(layers, values, records):
        check_module(layer)
        if use_input:
            def pre_hook(module, args, vals=vals, record=record):
                _single_call(record, module)
                record.was_tuple = len(args) > 1
                _check_shapes(args, vals, module, times)
                return tuple(v.clone() for v in vals)

            pre.append((layer, pre_hook))
        else:
            def hook(module, args, output, vals=vals, record=record):
                _single_call(record, module)
                current, record.was_tuple = _as_values(output, module, "output")
                _check_shapes(current, vals, module, times)
                copies = tuple(v.clone() for v in vals)
                return copies if record.was_tuple else copies[0]

            forward.append((layer, hook))
    with owned_hooks(forward, pre):
        yield records


def _check_shapes(
    current: Sequence[Tensor], values: Sequence[Tensor], module: nn.Module, times: int = 1
) -> None:
    def expected(c: Tensor) -> tuple[int, ...]:
        shape = tuple(getattr(c, "shape", ()))
        return (shape[0] * times, *shape[1:]) if shape and times != 1 else shape

    if len(current) != len(values) or any(tuple(v.shape) != expected(c) for c, v in zip(current, values)):
        raise ArgumentValueError(
            f"replacement values for layer {type(module).__name__} have shapes "
            f"{[tuple(v.shape) for v in values]}, expected {[expected(c) for c in current]}"
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
    reuse_prefix: bool = False,
) -> Callable[..., Tensor]:
    """The model as a function of the site's values: ``g(*values) -> model output``.

    ``g`` runs ``forward_func`` on ``call``'s inputs (tiled, with the batched
    additional args, to the batch size of ``values``: whole-batch copies in
    order) while the layer's output (or input) is replaced by ``values``.
    Pass ``g`` as the forward function of a primary method to attribute to
    the layer. ``layer`` may be a list of layers; ``counts[i]`` then says
    how many of ``values`` (in order) belong to ``layer[i]``.

    With ``reuse_prefix`` the part of the model before the layer runs once
    on the untiled inputs and only the rest runs per copy (see
    :class:`PrefixReuse`); the outputs are the same. Only for callers that
    evaluate copies independently (perturbations), not for methods that
    pair the halves of a batch.

    Example:
        >>> import torch
        >>> from attribuo._engine.call import parse_call
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
        >>> x = torch.rand(2, 3)
        >>> g = site_function(net, net[0], parse_call(x), reuse_prefix=True)
        >>> values = torch.rand(6, 4)  # three perturbed copies of the batch of 2
        >>> torch.allclose(g(values), net[1:](values))
        True
    """
    layers = list(layer) if isinstance(layer, (list, tuple)) else [layer]
    n = call.batch
    sizes = list(counts) if counts is not None else None
    reuse = PrefixReuse(forward_func, layers, call, use_input) if reuse_prefix else None

    def g(*values: Tensor) -> Tensor:
        times = values[0].shape[0] // n if n else 1
        if times * n != values[0].shape[0]:
            raise ArgumentValueError(
                f"layer values have batch {values[0].shape[0]}, not a multiple of the "
                f"inputs' batch {n}"
            )
        bounds = [0]
        for size in sizes or [len(values)]:
            bounds.append(bounds[-1] + size)
        per_layer = [tuple(values[a:b]) for a, b in zip(bounds, bounds[1:])]
        if reuse is not None and times > 1:
            return reuse(per_layer, times)
        return _tiled_forward(forward_func, layers, call, per_layer, use_input, times)

    g.wraps_forward = forward_func  # type: ignore[attr-defined]  # what the model is (batching probes)
    g.reuses_prefix = reuse is not None  # type: ignore[attr-defined]  # a copy costs only the suffix
    return g


def _tiled_forward(
    forward_func: Callable, layers: list[nn.Module], call: Call,
    per_layer: list[tuple[Tensor, ...]], use_input: bool, times: int,
) -> Any:
    """The whole model on ``times`` tiled copies of the inputs, the sites replaced."""
    tiled = call.expanded(times)
    with replacing_all(layers, per_layer, use_input):
        return forward_func(*tiled.inputs, *tiled.args)


class _NotReusable(Exception):
    """The model's output under prefix reuse is not one row block per copy."""


class PrefixReuse:
    """Evaluate ``times`` replaced copies of a site with the prefix computed once.

    The model before the site does not depend on the replacement values, so
    it runs on the ``n`` untiled inputs and the site's hook hands the
    ``times * n`` replacement values to the rest of the model. Tensors
    computed before the site (residual skips, masks) and batched extra
    arguments then have batch ``n`` where the rest of the model sees
    ``times * n``; with ``n == 1`` broadcasting tiles them exactly, so for
    ``n > 1`` a second mode runs each example on its own (prefix at batch 1,
    the rest at batch ``times``). A model may still disagree (one that
    reshapes with a batch size read from its input), so the first call
    compares one copy with the plain tiled forward; on any error or
    mismatch the modes are dropped and the plain forward runs from then on.
    One instance serves one attribution (one thread).

    Example:
        >>> import torch
        >>> from attribuo._engine.call import parse_call
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
        >>> reuse = PrefixReuse(net, [net[1]], parse_call(torch.rand(1, 3)))
        >>> out = reuse([(torch.rand(5, 4),)], 5)  # five copies, one prefix forward
        >>> out.shape, reuse.modes
        (torch.Size([5, 2]), ['batch'])
    """

    def __init__(self, forward_func: Callable, layers: list[nn.Module], call: Call, use_input: bool = False) -> None:
        self.forward_func, self.layers, self.call, self.use_input = forward_func, layers, call, use_input
        # modes still worth trying, best first: the whole batch at once, then one example at a time
        self.modes = ["batch", "each"] if call.batch > 1 else ["batch"]
        self.checked = False

    def __call__(self, per_layer: list[tuple[Tensor, ...]], times: int) -> Any:
        while self.modes:
            try:
                out = self._run(self.modes[0], per_layer, times)
                if self.checked or self._agrees(out, per_layer, times):
                    self.checked = True
                    return out
            except Exception:  # noqa: BLE001 (this mode does not suit the model: the plain forward decides)
                pass
            self.modes.pop(0)
            self.checked = False  # the next mode is compared on its first use too
        return _tiled_forward(self.forward_func, self.layers, self.call, per_layer, self.use_input, times)

    def _run(self, mode: str, per_layer: list[tuple[Tensor, ...]], times: int) -> Tensor:
        if mode == "batch":
            return self._prefix_once(self.call, per_layer, times)
        n = self.call.batch
        # example i's copies are rows i, n + i, 2n + i, ... of the copy-major values
        outs = [
            self._prefix_once(
                self.call.take(i, i + 1),
                [tuple(v.reshape(times, n, *v.shape[1:])[:, i] for v in vals) for vals in per_layer],
                times,
            )
            for i in range(n)
        ]
        stacked = torch.stack(outs, 1)  # [times, n, ...]: back to copy-major order
        return stacked.reshape(times * n, *stacked.shape[2:])

    def _prefix_once(self, call: Call, per_layer: list[tuple[Tensor, ...]], times: int) -> Tensor:
        with replacing_all(self.layers, per_layer, self.use_input, times=times) as records:
            out = self.forward_func(*call.inputs, *call.args)
        _require_called(records, self.layers)
        if not isinstance(out, Tensor) or out.dim() == 0 or out.shape[0] != times * call.batch:
            raise _NotReusable
        return out

    def _agrees(self, out: Tensor, per_layer: list[tuple[Tensor, ...]], times: int) -> bool:
        """Whether the last copy of ``out`` is what the plain forward gives for it."""
        n = self.call.batch
        last = [tuple(v[(times - 1) * n :] for v in vals) for vals in per_layer]
        plain = _tiled_forward(self.forward_func, self.layers, self.call, last, self.use_input, 1)
        mine = out[(times - 1) * n :].detach()
        if not isinstance(plain, Tensor) or plain.shape != mine.shape or plain.dtype != mine.dtype:
            return False
        plain = plain.detach()
        if not plain.is_floating_point() and not plain.is_complex():
            return bool(torch.equal(plain, mine))
        # a different batch may round differently; a model mixing copies differs by far more
        scale = float(plain.abs().nan_to_num(0, 0, 0).max()) if plain.numel() else 0.0
        return bool(torch.allclose(mine, plain, rtol=1e-4, atol=1e-6 * max(1.0, scale), equal_nan=True))
