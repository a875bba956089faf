"""One intra-op thread for work too small to share.

A perturbation method on a small (tabular) model evaluates a few thousand
copies through a few layers and fits a small regression: microseconds of
arithmetic per op. Spread over torch's thread pool every op waits until all
its threads are scheduled; on a busy machine that is a scheduler quantum
(milliseconds) per op, tens of times the work itself. Such work runs on one
thread (:func:`serial_threads`), decided by :func:`is_small_work`; the
caller's thread count comes back on every exit path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor

SMALL_COPY_ELEMENTS = 4096  # elements of one example: tabular rows, not images
SMALL_WORK = 1 << 28  # parameters x copies (about the multiply-adds of a dense model's forwards)


@contextmanager
def serial_threads(enabled: bool = True) -> Iterator[None]:
    """Run the block on one intra-op thread when ``enabled``; the previous count restored after.

    Example:
        >>> import torch
        >>> before = torch.get_num_threads()
        >>> with serial_threads():
        ...     inside = torch.get_num_threads()
        >>> inside, torch.get_num_threads() == before
        (1, True)
    """
    threads = torch.get_num_threads()
    if not enabled or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def is_small_work(forward_func: Callable, inputs: Sequence[Tensor], copies: int) -> bool:
    """Whether ``copies`` evaluations of a CPU ``nn.Module`` on ``inputs`` are small enough for one thread.

    Only models whose size can be read (``nn.Module``: parameters) qualify;
    for any other function the cost of a forward is unknown.

    Example:
        >>> import torch
        >>> is_small_work(torch.nn.Linear(20, 3), (torch.zeros(1, 20),), copies=200)
        True
        >>> is_small_work(lambda x: x.sum(1), (torch.zeros(1, 20),), copies=200)
        False
    """
    if not isinstance(forward_func, torch.nn.Module) or not inputs:
        return False
    if any(t.device.type != "cpu" for t in inputs):
        return False
    batch = max(1, inputs[0].shape[0] if inputs[0].dim() else 1)
    per_example = sum(t.numel() for t in inputs) // batch
    if per_example > SMALL_COPY_ELEMENTS:
        return False
    parameters = sum(p.numel() for p in forward_func.parameters())
    return parameters * max(copies, 1) * batch <= SMALL_WORK
