"""Forward hooks that act only on the forwards of the call that registered them.

A module hook is global: once registered, it fires for every forward of
the module, in any thread. A server that explains requests in several
threads with one model would see one request's hooks change another's
forward. Every hook attribuo registers is therefore *owned*: it is wrapped
so that it acts only while its owner, a token held in a
:class:`contextvars.ContextVar`, is active, which is true only in the
thread (or task) that entered the block, for the block's duration. In every
other forward the wrapped hook returns None, which leaves the module's
input and output as they are. Hooks are removed on every exit path.

Rule substitution (:mod:`.overrides`) needs no such care: a
``TorchFunctionMode`` is already local to the thread that enters it.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import wraps
from typing import Any

from torch import nn
from torch.utils.hooks import RemovableHandle

# the owners whose hooks may act in this thread / task now
_ACTIVE: ContextVar[frozenset[int]] = ContextVar("attribuo_active_hooks", default=frozenset())


@contextmanager
def removing(handles: list[RemovableHandle]) -> Iterator[list[RemovableHandle]]:
    """Remove every handle in ``handles`` on exit, whatever happens inside."""
    try:
        yield handles
    finally:
        for h in handles:
            h.remove()
        handles.clear()


_OWNERS = itertools.count()


@contextmanager
def _owner() -> Iterator[int]:
    owner = next(_OWNERS)
    previous = _ACTIVE.get()
    _ACTIVE.set(previous | {owner})
    try:
        yield owner
    finally:
        _ACTIVE.set(previous)


def _owned(hook: Callable, owner: int) -> Callable:
    @wraps(hook)
    def run(*args: Any, **kwargs: Any) -> Any:
        if owner not in _ACTIVE.get():
            return None  # a forward of another thread or call: leave it alone
        return hook(*args, **kwargs)

    return run


@contextmanager
def owned_hooks(
    forward: Iterable[tuple[nn.Module, Callable]] = (),
    pre: Iterable[tuple[nn.Module, Callable]] = (),
    *,
    with_kwargs: bool = False,
) -> Iterator[None]:
    """Register forward hooks (``forward``) and pre-hooks (``pre``) owned by this block.

    They act only on forwards run inside the block, by the thread (or
    asyncio task) that entered it, and are removed when it exits.

    Example:
        >>> import threading, torch
        >>> layer = torch.nn.Linear(2, 2)
        >>> seen = []
        >>> with owned_hooks([(layer, lambda m, a, out: seen.append("here"))]):
        ...     _ = layer(torch.zeros(1, 2))
        ...     other = threading.Thread(target=layer, args=(torch.zeros(1, 2),))
        ...     other.start(); other.join()  # another thread's forward: not seen
        >>> seen, len(layer._forward_hooks)
        (['here'], 0)
    """
    with _owner() as owner, removing([]) as handles:
        for module, hook in pre:
            handles.append(module.register_forward_pre_hook(_owned(hook, owner), with_kwargs=with_kwargs))
        for module, hook in forward:
            handles.append(module.register_forward_hook(_owned(hook, owner), with_kwargs=with_kwargs))
        yield


@contextmanager
def forward_hooks(
    pairs: Iterable[tuple[nn.Module, Callable]], *, with_kwargs: bool = False
) -> Iterator[None]:
    """Owned forward hooks ``(module, hook)`` for the duration of the block (see :func:`owned_hooks`)."""
    with owned_hooks(forward=pairs, with_kwargs=with_kwargs):
        yield


@contextmanager
def forward_pre_hooks(
    pairs: Iterable[tuple[nn.Module, Callable]], *, with_kwargs: bool = False
) -> Iterator[None]:
    """Owned forward pre-hooks ``(module, hook)`` for the duration of the block."""
    with owned_hooks(pre=pairs, with_kwargs=with_kwargs):
        yield


@contextmanager
def preserved_state(model: object) -> Iterator[None]:
    """Restore training mode and parameters' ``requires_grad`` of ``model`` on exit."""
    if not isinstance(model, nn.Module):
        yield
        return
    modes = [(m, m.training) for m in model.modules()]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode
        for p, flag in flags:
            p.requires_grad_(flag)


def modules_of(forward_func: object) -> nn.Module | None:
    """The ``nn.Module`` behind ``forward_func`` (the module or its bound method)."""
    if isinstance(forward_func, nn.Module):
        return forward_func
    owner = getattr(forward_func, "__self__", None)
    return owner if isinstance(owner, nn.Module) else None
