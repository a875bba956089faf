"""Incremental evaluation of locally perturbed images through convolutional networks.

A perturbed copy that differs from the unperturbed image only inside a box
(an occlusion window, a superpixel) differs, after each layer, only inside
that box's receptive field there. Krypton (Nakandala, Kumar and
Papakonstantinou, SIGMOD 2019) computes each copy only over that region
and splices it into the activations of the unperturbed image. This module
does that on the model's ``torch.fx`` graph:

* one pass over the unperturbed batch records every node's value (the
  *base*);
* a chunk of copies is then carried from node to node as a :class:`Patch`:
  the base plus, per copy, a small block of values at an offset. Convolution,
  max and average pooling grow the block by their receptive field and
  compute only the block; batch norm (eval), ReLU-family and other
  element-wise activations act on the block; residual sums align the two
  blocks. Any other node (flatten, linear, adaptive pooling, ...) receives
  full copies, built by splicing the block into the base, and runs as
  usual, as does everything once a block covers most of its feature map.

The copies are whatever the perturbation method built; the box of each is
found by comparing it with the unperturbed input, so no method's
bookkeeping has to be trusted, and a chunk whose boxes are large runs the
plain model. The numbers are those of the plain forward up to float
rounding (convolution on a window may pick another kernel than on the whole
map); the first chunk of every run is checked against a plain forward of one
copy, and a model this cannot follow (no fx trace, hooks, in-place updates of
shared values) runs the plain way.
"""

from __future__ import annotations

import operator
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from .batching import activation_budget_bytes
from .blocks import (
    PaddedBases,
    Patch,
    align,
    block_index,
    common_span,
    gather_windows,
    materialize,
    pair,
    slide,
    sliding_module,
)

# copies whose box covers more of a feature map than this run (from there on) as full copies
DENSE_FRACTION = 0.45
# input boxes up to this share of the image are worth the splicing
INPUT_FRACTION = 0.3

_ENABLED: ContextVar[bool] = ContextVar("attribuo_incremental", default=True)


@contextmanager
def incremental_evaluation(enabled: bool) -> Iterator[None]:
    """Allow (default) or forbid incremental evaluation of perturbed copies in this block.

    Public as ``attribuo.incremental_evaluation``. Results agree either way
    (to float rounding); turning it off gives the plain path, one batched
    forward per chunk of perturbed copies, e.g. to time or debug it.

    Example:
        >>> import attribuo
        >>> with attribuo.incremental_evaluation(False):
        ...     pass  # perturbation methods here run one plain forward per chunk of copies
    """
    token = _ENABLED.set(bool(enabled))
    try:
        yield
    finally:
        _ENABLED.reset(token)


# ------------------------------------------------------------------ node rules
_POINTWISE_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Hardtanh, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.ELU,
    nn.CELU, nn.SELU, nn.Hardswish, nn.Hardsigmoid, nn.Mish, nn.Softplus, nn.Identity, nn.PReLU,
)
_DROPOUT = (nn.Dropout, nn.Dropout2d, nn.Dropout1d, nn.AlphaDropout)
_POINTWISE_FUNCTIONS = {
    F.relu, torch.relu, F.relu6, F.leaky_relu, F.hardtanh, F.gelu, F.silu, torch.sigmoid, F.sigmoid,
    torch.tanh, F.tanh, F.elu, F.celu, F.selu, F.hardswish, F.hardsigmoid, F.mish, F.softplus,
    torch.relu_, F.relu_,
}
_POINTWISE_METHODS = {"relu", "relu_", "sigmoid", "tanh", "contiguous", "sigmoid_", "tanh_"}
_BINARY = {
    operator.add: torch.add, operator.iadd: torch.add, torch.add: torch.add,
    operator.sub: torch.sub, operator.isub: torch.sub, torch.sub: torch.sub,
    operator.mul: torch.mul, operator.imul: torch.mul, torch.mul: torch.mul,
}
_BINARY_METHODS = {"add": torch.add, "add_": torch.add, "sub": torch.sub, "sub_": torch.sub,
                   "mul": torch.mul, "mul_": torch.mul}
_SCALAR_OPS = {operator.truediv, operator.itruediv, torch.div}


def _is_batch_norm_eval(module: nn.Module) -> bool:
    return (
        type(module) is nn.BatchNorm2d and not module.training and module.running_mean is not None
    )


def _in_place(node: fx.Node, module: nn.Module | None) -> bool:
    if module is not None:
        return bool(getattr(module, "inplace", False))
    if node.kwargs.get("inplace") is True:
        return True
    name = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", "")
    return name.endswith("_") and not name.startswith("__") or name.startswith("__i")


class _Runner:
    """The traced graph, its base values, and the evaluation of chunks of copies."""

    def __init__(self, graph: fx.GraphModule, image: Tensor) -> None:
        self.gm = graph
        self.nodes = list(graph.graph.nodes)
        placeholders = [n for n in self.nodes if n.op == "placeholder"]
        if not placeholders or any(n.args == () for n in placeholders[1:]):
            raise _Unsupported("the model takes more than one tensor")
        self.input = placeholders[0]
        self.varying = self._descendants(self.input)
        self._check_in_place()
        self.last_use = {}
        for i, node in enumerate(self.nodes):
            for arg in node.all_input_nodes:
                self.last_use[arg] = i
        self.base = self._run_base(image)
        self.padded = PaddedBases()

    @staticmethod
    def _descendants(start: fx.Node) -> set[fx.Node]:
        seen, todo = {start}, [start]
        while todo:
            for user in todo.pop().users:
                if user not in seen:
                    seen.add(user)
                    todo.append(user)
        return seen

    def _module(self, node: fx.Node) -> nn.Module | None:
        return self.gm.get_submodule(node.target) if node.op == "call_module" else None

    def _check_in_place(self) -> None:
        # an in-place update is followed only when nothing else reads what it overwrites
        for node in self.nodes:
            if node in self.varying and node.op != "placeholder" and _in_place(node, self._module(node)):
                first = node.args[0] if node.args else None
                if isinstance(first, fx.Node) and len(first.users) > 1:
                    raise _Unsupported("an in-place update of a value that is read elsewhere")

    def _execute(self, node: fx.Node, args: tuple, kwargs: dict) -> Any:
        if node.op == "call_module":
            return self._module(node)(*args, **kwargs)
        if node.op == "call_function":
            return node.target(*args, **kwargs)
        if node.op == "call_method":
            return getattr(args[0], node.target)(*args[1:], **kwargs)
        if node.op == "get_attr":
            value = self.gm
            for part in node.target.split("."):
                value = getattr(value, part)
            return value
        raise _Unsupported(f"fx node {node.op}")

    def _run_base(self, image: Tensor) -> dict[fx.Node, Any]:
        env: dict[fx.Node, Any] = {}
        kept = 0
        for node in self.nodes:
            if node.op == "placeholder":
                env[node] = image if node is self.input else node.args[0]
                continue
            if node.op == "output":
                env[node] = fx.node.map_arg(node.args[0], env.__getitem__)
                break
            args = fx.node.map_arg(node.args, env.__getitem__)
            kwargs = fx.node.map_arg(node.kwargs, env.__getitem__)
            if node in self.varying and _in_place(node, self._module(node)) and args:
                args = (args[0].clone(),) + tuple(args[1:])  # keep the operand's base intact
            env[node] = value = self._execute(node, args, kwargs)
            if isinstance(value, Tensor) and node in self.varying:
                kept += value.numel() * value.element_size()
                if kept > activation_budget_bytes():  # a large batch: the plain path holds less
                    raise _Unsupported("the unperturbed activations exceed the activation budget")
        return env

    # ------------------------------------------------------------ one chunk
    def run(self, copies: Tensor, top: Tensor, left: Tensor, height: int, width: int) -> Any:
        n = self.base[self.input].shape[0]
        p = copies.shape[0] // n
        c, h, w = copies.shape[1:]
        flat = copies.reshape(p, n * c, h * w)
        index = block_index(top, left, height, width, w)
        values = flat.gather(2, index[:, None, :].expand(p, n * c, -1)).reshape(p * n, c, height, width)
        env: dict[fx.Node, Any] = {self.input: Patch(self.base[self.input], values, top, left)}
        for i, node in enumerate(self.nodes):
            if node.op == "placeholder":
                if node is not self.input:
                    env[node] = self.base[node]
                continue
            if node.op == "output":
                return _map_patches(fx.node.map_arg(node.args[0], env.__getitem__), self._dense)
            if node not in self.varying:
                env[node] = self.base[node]
                continue
            args = fx.node.map_arg(node.args, env.__getitem__)
            kwargs = fx.node.map_arg(node.kwargs, env.__getitem__)
            if isinstance(args[0] if args else None, Patch) and _in_place(node, self._module(node)):
                first = args[0]  # its own values: an alias elsewhere must not see the update
                args = (Patch(first.base, first.values.clone(), first.top, first.left),) + tuple(args[1:])
            out = self._rule(node, args, kwargs)
            if out is None:
                args, kwargs = _map_patches(args, self._dense), _map_patches(kwargs, self._dense)
                out = self._execute(node, args, kwargs)
            env[node] = out
            for arg in node.all_input_nodes:  # free what no later node reads
                if self.last_use.get(arg) == i and arg is not self.input:
                    env.pop(arg, None)
        raise _Unsupported("the graph has no output")

    def _dense(self, value: Any) -> Any:
        return materialize(value) if isinstance(value, Patch) else value

    def _finish(self, patch: Patch) -> Patch | Tensor:
        """Full copies once the block covers most of the map (splicing would cost more)."""
        h, w = patch.base.shape[-2:]
        bh, bw = patch.values.shape[-2:]
        return materialize(patch) if bh * bw > DENSE_FRACTION * h * w else patch

    def _rule(self, node: fx.Node, args: tuple, kwargs: dict) -> Any:
        """The node on patches, or None when it needs full copies."""
        first = args[0] if args else None
        if not isinstance(first, Patch) and not (len(args) > 1 and isinstance(args[1], Patch)):
            return None
        out_base = self.base[node]
        module = self._module(node)
        if module is not None:
            if kwargs or len(args) != 1:
                return None
            if type(module) in _POINTWISE_MODULES or _is_batch_norm_eval(module) or (
                type(module) in _DROPOUT and not module.training
            ):
                return Patch(out_base, module(first.values), first.top, first.left)
            if type(module) is nn.AdaptiveAvgPool2d and pair(module.output_size) == (1, 1):
                return self._global_mean(first, out_base)
            layer = sliding_module(module)
            if layer is None:
                return None
            return self._finish(slide(first, layer, out_base, self.padded))
        if node.op == "call_method" and node.target in ("size", "dim") or (
            node.target is getattr and len(args) == 2 and args[1] == "shape"
        ):
            return self._shape(node, first, args, kwargs)
        if _is_global_mean(node, args, kwargs):
            return self._global_mean(first, out_base)
        if node.op == "call_method" and node.target in _POINTWISE_METHODS and len(args) == 1 and not kwargs:
            return Patch(out_base, getattr(first.values, node.target)(), first.top, first.left)
        if node.op == "call_function" and node.target in _POINTWISE_FUNCTIONS:
            if not isinstance(first, Patch) or any(isinstance(a, (Tensor, Patch)) for a in args[1:]) or any(
                isinstance(v, (Tensor, Patch)) for v in kwargs.values()
            ):
                return None
            return Patch(out_base, node.target(first.values, *args[1:], **kwargs), first.top, first.left)
        binary = _BINARY.get(node.target) if node.op == "call_function" else (
            _BINARY_METHODS.get(node.target) if node.op == "call_method" else None
        )
        if binary is not None and len(args) == 2 and not kwargs:
            return self._binary(binary, args, out_base)
        if node.op == "call_function" and node.target in _SCALAR_OPS and len(args) == 2 and not kwargs:
            if isinstance(first, Patch) and _is_number(args[1]):
                return Patch(out_base, torch.div(first.values, args[1]), first.top, first.left)
        return None

    def _global_mean(self, patch: Any, out_base: Tensor) -> Tensor | None:
        """The spatial mean of every copy: the base's, corrected by what the block changes."""
        if not isinstance(patch, Patch) or not patch.values.is_floating_point():
            return None
        n, c, h, w = patch.base.shape
        bh, bw = patch.values.shape[-2:]
        flat = self.padded.get(patch.base, 0, 0, 0.0)
        before = gather_windows(flat, block_index(patch.top, patch.left, bh, bw, w), patch.copies)  # [P, K, N*C]
        change = (patch.values.reshape(patch.copies, n, c, -1).sum(3) - before.sum(1).view(patch.copies, n, c))
        out = out_base.unsqueeze(0) + (change / (h * w)).reshape((patch.copies,) + tuple(out_base.shape))
        return out.reshape((patch.copies * n,) + tuple(out_base.shape[1:]))

    def _binary(self, op: Callable, args: tuple, out_base: Tensor) -> Patch | None:
        a, b = args
        if isinstance(a, Patch) and isinstance(b, Patch):
            if a.base.shape != b.base.shape:
                return None
            va, vb, top, left = align(a, b, self.padded)
            return Patch(out_base, op(va, vb), top, left)
        patch, other = (a, b) if isinstance(a, Patch) else (b, a)
        if not _is_number(other):
            return None
        values = op(patch.values, other) if patch is a else op(other, patch.values)
        return Patch(out_base, values, patch.top, patch.left)

    def _shape(self, node: fx.Node, patch: Any, args: tuple, kwargs: dict) -> Any:
        if not isinstance(patch, Patch):
            return None
        shape = patch.full_shape
        if node.target == "dim":
            return len(shape)
        if node.target is getattr:
            return shape
        dim = args[1] if len(args) > 1 else kwargs.get("dim")
        return shape if dim is None else shape[dim]


class _Unsupported(Exception):
    """The model cannot be followed incrementally (it then runs the plain way)."""


def _is_global_mean(node: fx.Node, args: tuple, kwargs: dict) -> bool:
    """``F.adaptive_avg_pool2d(x, 1)`` or a mean over both spatial dims."""
    if node.op == "call_function" and node.target is F.adaptive_avg_pool2d:
        size = args[1] if len(args) > 1 else kwargs.get("output_size")
        return len(args) + len(kwargs) == 2 and size is not None and pair(size) == (1, 1)
    is_mean = (node.op == "call_method" and node.target == "mean") or (
        node.op == "call_function" and node.target is torch.mean
    )
    if not is_mean or set(kwargs) - {"dim", "keepdim"}:
        return False
    dim = args[1] if len(args) > 1 else kwargs.get("dim")
    keep = args[2] if len(args) > 2 else kwargs.get("keepdim", False)
    return isinstance(dim, (tuple, list)) and sorted(d % 4 for d in dim) == [2, 3] and isinstance(keep, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _map_patches(value: Any, fn: Callable[[Any], Any]) -> Any:
    if isinstance(value, Patch):
        return fn(value)
    if isinstance(value, tuple):
        return tuple(_map_patches(v, fn) for v in value)
    if isinstance(value, list):
        return [_map_patches(v, fn) for v in value]
    if isinstance(value, dict):
        return {k: _map_patches(v, fn) for k, v in value.items()}
    return value


# ------------------------------------------------------------------ the forward
def _hooked(model: nn.Module) -> bool:
    from torch.nn.modules import module as module_state

    if any(
        getattr(module_state, name, None)
        for name in ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_forward_hooks_always_called")
    ):
        return True
    return any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


class _ThreadTracer(fx.Tracer):
    """An fx tracer that leaves other threads' forwards alone.

    While fx traces, ``nn.Module.__call__`` and ``__getattr__`` are patched
    for the whole process; a model running in another thread then reaches
    this tracer. Those calls get the plain module call and the plain
    attribute, so a server's other requests run as usual.
    """

    def __init__(self) -> None:
        super().__init__()
        self.thread = threading.get_ident()

    def call_module(self, m: nn.Module, forward: Callable, args: tuple, kwargs: dict) -> Any:
        if threading.get_ident() != self.thread:
            return forward(*args, **kwargs)
        return super().call_module(m, forward, args, kwargs)

    def getattr(self, attr: str, attr_val: Any, parameter_proxy_cache: dict) -> Any:
        if threading.get_ident() != self.thread:
            return attr_val
        return super().getattr(attr, attr_val, parameter_proxy_cache)


_TRACE_LOCK = threading.Lock()  # fx's patching is process-wide: one trace at a time
_TRACES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _fingerprint(model: nn.Module) -> tuple:
    return tuple((name, id(m), type(m), m.training) for name, m in model.named_modules())


def traced(model: nn.Module) -> fx.GraphModule:
    """The fx graph of ``model``, traced once per model structure (a failure is remembered too)."""
    key = _fingerprint(model)
    with _TRACE_LOCK:
        hit = _TRACES.get(model)
        if hit is not None and hit[0] == key:
            if hit[1] is None:
                raise _Unsupported("fx could not trace this model")
            return hit[1]
        try:
            graph = _ThreadTracer().trace(model, concrete_args=_defaults(model))
            module = fx.GraphModule(model, graph)
        except Exception:
            _TRACES[model] = (key, None)
            raise
        _TRACES[model] = (key, module)
    return module


def _as_module(forward_func: Any) -> nn.Module | None:
    """The module behind ``model`` or ``model.forward``."""
    if isinstance(forward_func, nn.Module):
        return forward_func
    owner = getattr(forward_func, "__self__", None)
    if isinstance(owner, nn.Module) and getattr(forward_func, "__func__", None) is type(owner).forward:
        return owner
    return None


def _defaults(model: nn.Module) -> dict[str, Any]:
    """Every parameter after the image at its default, so the trace takes the branches a plain call takes."""
    import inspect

    params = list(inspect.signature(model.forward).parameters.values())[1:]
    if any(p.default is inspect.Parameter.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params):
        raise _Unsupported("the model needs more than one argument")
    return {p.name: p.default for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def _boxes(copies: Tensor, image: Tensor) -> tuple[Tensor, Tensor, int, int]:
    """Per copy, the top-left corner and one common size of the box holding every change."""
    n = image.shape[0]
    p = copies.shape[0] // n
    changed = (copies.reshape((p,) + tuple(image.shape)) != image.unsqueeze(0)).any(1).any(1)  # [P, H, W]
    rows, cols = changed.any(2), changed.any(1)

    def extent(mask: Tensor) -> tuple[Tensor, Tensor]:
        length = mask.shape[1]
        first = mask.to(torch.uint8).argmax(1)
        last = length - 1 - mask.flip(1).to(torch.uint8).argmax(1)
        return first, torch.maximum(last, first)

    (r0, r1), (c0, c1) = extent(rows), extent(cols)
    top, height = common_span(r0, r1, image.shape[2])
    left, width = common_span(c0, c1, image.shape[3])
    return top, left, height, width


class IncrementalForward:
    """A model as a function of perturbed copies of one batch of images, computed incrementally.

    Called with copies ``[P * N, C, H, W]`` of the batch it was built for
    (copy-major), it returns what the model returns on them. Copies that
    change only a small box are carried through the network as blocks (see
    the module docstring); other chunks, and models it cannot follow, run
    the plain model.

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1), torch.nn.ReLU(),
        ...                           torch.nn.Flatten(), torch.nn.Linear(2 * 16 * 16, 1)).eval()
        >>> x = torch.rand(1, 1, 16, 16)
        >>> copies = x.repeat(4, 1, 1, 1)
        >>> for k in range(4):
        ...     copies[k, :, 4 * k:4 * k + 2, 3:5] = 0
        >>> fast = IncrementalForward.build(net, x)
        >>> torch.allclose(fast(copies), net(copies), atol=1e-6)
        True
    """

    def __init__(self, model: nn.Module, runner: _Runner, image: Tensor) -> None:
        self.model, self.runner, self.image = model, runner, image
        self.checked = False
        self.dense_chunks = 0

    @classmethod
    def build(cls, model: Any, image: Tensor) -> IncrementalForward | None:
        """For ``model`` and the unperturbed batch ``image``; None where it does not apply."""
        model = _as_module(model)
        if not _ENABLED.get() or model is None or isinstance(model, fx.GraphModule):
            return None
        if not isinstance(image, Tensor) or image.dim() != 4 or not image.is_floating_point() or not image.shape[0]:
            return None
        if image.shape[-1] * image.shape[-2] < 64 or _hooked(model) or torch._C._is_torch_function_mode_enabled():
            return None
        try:
            with torch.no_grad():
                runner = _Runner(traced(model), image)
        except Exception:  # noqa: BLE001 -- any model fx cannot follow runs the plain way
            return None
        return cls(model, runner, image)

    def __call__(self, copies: Tensor) -> Any:
        if self.runner is None or copies.shape[1:] != self.image.shape[1:] or self.dense_chunks >= 2:
            return self.model(copies)
        top, left, height, width = _boxes(copies, self.image)
        if height * width > INPUT_FRACTION * self.image.shape[2] * self.image.shape[3]:
            self.dense_chunks += 1  # perturbations that are not local (e.g. growing coalitions)
            return self.model(copies)
        self.dense_chunks = 0
        try:
            out = self.runner.run(copies, top, left, height, width)
        except Exception:  # noqa: BLE001 -- an op it cannot follow on these shapes: plain from now on
            self.runner = None
            return self.model(copies)
        if not self.checked:
            self.checked = True
            n = self.image.shape[0]
            plain = self.model(copies[:n])
            if not _same(out, plain, n):
                self.runner = None
                return self.model(copies)
        return out


def _same(out: Any, plain: Any, n: int) -> bool:
    """Whether ``out``'s first copy agrees with the plain forward of that copy."""
    if isinstance(plain, Tensor):
        if not isinstance(out, Tensor) or out.dim() == 0 or out.shape[1:] != plain.shape[1:]:
            return False
        if not out.is_floating_point():
            return bool(torch.equal(out[:n], plain))
        scale = float(plain.detach().abs().max()) if plain.numel() else 0.0
        return bool(torch.allclose(out[:n], plain, rtol=1e-4, atol=1e-5 * max(scale, 1.0)))
    return False
