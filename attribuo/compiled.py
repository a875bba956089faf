"""An opt-in ``torch.compile`` of the forward function for repeated no-grad evaluations.

Perturbation methods (Occlusion, FeatureAblation, ShapleyValueSampling,
KernelShap, Lime, FeaturePermutation) run the model many times under
``torch.no_grad()`` on chunks of perturbed copies whose batch size varies
from call to call (the last chunk is smaller). :func:`compile_forward` wraps
a model so that exactly those forwards run through ``torch.compile``, with
the batch dim marked dynamic so that new chunk sizes reuse the compiled
graph instead of recompiling.

Every other forward runs the model as it is (eagerly):

* forwards with gradients enabled (gradient methods, or any call outside
  ``torch.no_grad()``): they stay exact, and need no compiled backward;
* forwards while hooks are registered on the wrapped module (the user's, or
  those a layer method registers), while any attribuo hook is active in the
  calling thread, or while a ``TorchFunctionMode`` / ``TorchDispatchMode``
  is active (attribuo's rule substitution, its activation probe): a compiled
  graph does not re-check hooks added after it was built, so it would
  silently skip them;
* every forward after compilation failed once (no C++ compiler, a backend
  error, an unsupported model): the failure is reported by one warning.

So ``compile_forward`` is for input-level methods. Layer, neuron and
gradient methods given a compiled forward still give their eager results,
at eager speed.
"""

from __future__ import annotations

import inspect
import threading
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules import module as _module_globals

from ._engine.errors import ArgumentTypeError, ArgumentValueError

# attribuo's layer methods mark their hooks active in this ContextVar (see _engine/hooks.py);
# a non-empty set means the forward about to run belongs to such a call
from ._engine.hooks import _ACTIVE, modules_of

__all__ = ["CompiledForward", "compile_forward"]


def _compile_options() -> frozenset[str]:
    # the keyword arguments this torch's torch.compile takes (``model`` is ours to give)
    return frozenset(inspect.signature(torch.compile).parameters) - {"model"}


class CompiledForward:
    """A forward function whose no-grad, hook-free calls run through ``torch.compile``.

    Made by :func:`compile_forward`; call it as the original. ``eager`` is
    the original model or function, ``fell_back`` tells whether compilation
    failed (from then on every call is eager).

    Example:
        >>> import torch
        >>> model = torch.nn.Linear(3, 2)
        >>> fast = compile_forward(model, backend="eager")  # no C++ compiler needed
        >>> x = torch.randn(4, 3)
        >>> with torch.no_grad():
        ...     torch.equal(fast(x), model(x))
        True
        >>> fast.eager is model, fast.fell_back
        (True, False)
    """

    def __init__(self, eager: Callable, options: dict[str, Any]) -> None:
        self.eager = eager
        self.__wrapped__ = eager  # the activation probe and signature checks see the model
        self._module = eager if isinstance(eager, nn.Module) else modules_of(eager)
        # dynamic=None (torch's default) would compile a static graph first and recompile on the
        # second chunk size; marking dim 0 gives one graph for every batch > 1 from the start
        self._mark_batch = options.get("dynamic", None) is None
        self._compiled = _torch_compile(eager, options)
        self._lock = threading.Lock()
        self.fell_back = False

    def __repr__(self) -> str:
        state = "eager after a failed compile" if self.fell_back else "compiled"
        return f"CompiledForward({self.eager!r}, {state})"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.fell_back or not self._may_compile():
            return self.eager(*args, **kwargs)
        try:
            return self._compiled(*(self._marked(a) for a in args), **kwargs)
        except Exception as error:  # noqa: BLE001 (the eager rerun below tells whose error it is)
            failure = error
        # A broken forward raises again here, its own error (outside the except block, so not
        # chained to dynamo's), and compilation stays on; one that runs means compilation failed.
        out = self.eager(*args, **kwargs)
        self._fall_back(failure)
        return out

    def _may_compile(self) -> bool:
        if torch.is_grad_enabled() or _ACTIVE.get():
            return False
        if torch._C._len_torch_function_stack() or torch._C._len_torch_dispatch_stack():
            return False
        if _module_globals._global_forward_hooks or _module_globals._global_forward_pre_hooks:
            return False
        if self._module is not None:
            for m in self._module.modules():
                if m._forward_hooks or m._forward_pre_hooks:
                    return False
        return True

    def _marked(self, value: Any) -> Any:
        if not self._mark_batch or not isinstance(value, Tensor) or value.dim() == 0:
            return value
        # a new tensor object (same storage) carries the mark: the caller's tensor is untouched.
        # maybe_mark_dynamic, not mark_dynamic: a batch of 1 may still specialise (own graph)
        alias = value.detach()
        torch._dynamo.maybe_mark_dynamic(alias, 0)
        return alias

    def _fall_back(self, error: Exception) -> None:
        with self._lock:  # two threads failing at once: one warning
            if self.fell_back:
                return
            self.fell_back = True
        warnings.warn(
            f"compile_forward: torch.compile failed ({_describe(error)}); "
            "running the forward eagerly from now on",
            RuntimeWarning,
            stacklevel=3,
        )


def _describe(error: BaseException) -> str:
    """``Type: first line`` of ``error``, and of its root cause (dynamo wraps backend errors)."""

    def line(e: BaseException) -> str:
        text = str(e).strip()
        return f"{type(e).__name__}: {text.splitlines()[0] if text else 'no message'}"

    root, seen = error, 0
    while seen < 16:
        inner = getattr(root, "inner_exception", None) or root.__cause__
        if not isinstance(inner, BaseException):
            break
        root, seen = inner, seen + 1
    return line(error) if root is error else f"{line(error)} caused by {line(root)}"


def _torch_compile(eager: Callable, options: dict[str, Any]) -> Callable:
    known = _compile_options()
    for name in options:
        if name not in known:
            raise ArgumentTypeError(
                f"compile_forward got an unknown keyword argument `{name}`; torch.compile takes "
                f"{', '.join(sorted(known))}"
            )
    backend = options.get("backend")
    if backend is not None and not (isinstance(backend, str) or callable(backend)):
        raise ArgumentTypeError(f"`backend` must be a backend name or a callable, got {type(backend).__name__}")
    for flag in ("fullgraph", "disable"):
        if flag in options and not isinstance(options[flag], bool):
            raise ArgumentTypeError(f"`{flag}` must be a bool, got {type(options[flag]).__name__}")
    if options.get("dynamic") not in (None, True, False):
        raise ArgumentTypeError(f"`dynamic` must be None, True or False, got {options['dynamic']!r}")
    try:
        return torch.compile(eager, **options)
    except Exception as error:  # noqa: BLE001 (torch reports unknown backends and modes as RuntimeError)
        named = [n for n in ("backend", "mode", "options") if n in options] or sorted(options)
        raise ArgumentValueError(
            f"torch.compile rejected {', '.join(f'`{n}`' for n in named)}: {error}"
        ) from error


def compile_forward(model_or_fn: Callable, **torch_compile_kwargs: Any) -> CompiledForward:
    """Wrap a model so that the no-grad forwards of perturbation methods run compiled.

    Returns a callable to use as any method's ``forward_func``, e.g.
    ``Occlusion(compile_forward(model))``. ``torch_compile_kwargs`` go to
    ``torch.compile`` (``backend``, ``mode``, ``options``, ...). Unless
    ``dynamic`` is given, dim 0 of every tensor argument is marked dynamic,
    so chunks of any batch size share one compiled graph (a batch of 1 may
    get its own). The first no-grad call pays the compilation (seconds to
    tens of seconds with inductor on a CPU); it pays back only over many
    ``attribute`` calls on the same model, on models whose forward costs
    more than its Python overhead (convolutions, not tiny MLPs).

    Forwards with gradients enabled, with hooks on the model, inside
    attribuo's layer methods or under a torch function mode run eagerly
    (see :mod:`attribuo.compiled`), and so does every call after a failed
    compilation, which warns once. Calls from several threads are safe.

    Example:
        >>> import torch
        >>> from attribuo.attr import FeatureAblation
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
        >>> x = torch.randn(5, 4)
        >>> fast = FeatureAblation(compile_forward(model, backend="eager")).attribute(x, target=1)
        >>> torch.allclose(fast, FeatureAblation(model).attribute(x, target=1))
        True
    """
    if isinstance(model_or_fn, CompiledForward):
        raise ArgumentValueError("`model_or_fn` is already a compile_forward wrapper; pass its `.eager`")
    if not callable(model_or_fn):
        raise ArgumentTypeError(
            f"`model_or_fn` must be an nn.Module or a callable, got {type(model_or_fn).__name__}"
        )
    return CompiledForward(model_or_fn, dict(torch_compile_kwargs))
