"""Hook registration that always cleans up, and model-state guards."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

from torch import nn
from torch.utils.hooks import RemovableHandle


@contextmanager
def removing(handles: list[RemovableHandle]) -> Iterator[list[RemovableHandle]]:
    """Remove every handle in ``handles`` on exit, whatever happens inside."""
    try:
        yield handles
    finally:
        for h in handles:
            h.remove()
        handles.clear()


@contextmanager
def forward_hooks(
    pairs: Iterable[tuple[nn.Module, Callable]], *, with_kwargs: bool = False
) -> Iterator[None]:
    """Register ``(module, hook)`` forward hooks for the duration of the block."""
    with removing([]) as handles:
        for module, hook in pairs:
            handles.append(module.register_forward_hook(hook, with_kwargs=with_kwargs))
        yield


@contextmanager
def forward_pre_hooks(
    pairs: Iterable[tuple[nn.Module, Callable]], *, with_kwargs: bool = False
) -> Iterator[None]:
    """Register ``(module, hook)`` forward pre-hooks for the duration of the block."""
    with removing([]) as handles:
        for module, hook in pairs:
            handles.append(module.register_forward_pre_hook(hook, with_kwargs=with_kwargs))
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
