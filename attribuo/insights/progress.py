"""Progress and cancellation of one Insights request, shared by the worker and the server.

The visualizer reports each finished unit of work (one example attributed
by one model) and checks for cancellation between units and before every
forward the methods run, so that a cancelled request stops within one
(batched) forward pass.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .._engine.forward import before_each_forward


class Cancelled(Exception):
    """The request was cancelled (its client left or pressed Cancel)."""


class Progress:
    """Thread-safe counters of one request, plus its cancel flag.

    Example:
        >>> p = Progress()
        >>> p.start(4); p.advance(); p.snapshot()["done"]
        1
        >>> p.cancel(); p.cancelled
        True
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cancel = threading.Event()
        self.total = 0
        self.done = 0
        self.started = time.monotonic()

    def start(self, total: int) -> None:
        """Set the number of units the request will do (it may grow)."""
        with self._lock:
            self.total = max(self.total, int(total))

    def advance(self, units: int = 1) -> None:
        with self._lock:
            self.done += units
            self.total = max(self.total, self.done)

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def check(self) -> None:
        """Raise :class:`Cancelled` once :meth:`cancel` was called."""
        if self._cancel.is_set():
            raise Cancelled("the request was cancelled")

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"done": self.done, "total": self.total,
                    "elapsed": round(time.monotonic() - self.started, 3)}


@contextmanager
def checked_forwards(progress: Progress | None) -> Iterator[None]:
    """While inside, the methods check ``progress`` for cancellation before each forward.

    The check belongs to this thread only (a context variable, not a hook on
    ``model``), so another thread explaining with the same model is not
    stopped by this request's cancel, and the model is left untouched.

    Example:
        >>> p = Progress(); p.cancel()
        >>> with checked_forwards(p):
        ...     pass  # a method's forward here would raise Cancelled
    """
    if progress is None:
        yield
        return
    with before_each_forward(progress.check):
        yield
