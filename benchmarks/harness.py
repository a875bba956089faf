"""Side-by-side timing of attribuo and Captum in one process.

Each benchmark module ``benchmarks/bench_*.py`` defines ``cases()``,
returning :class:`Case` objects. A case holds zero-argument callables for
attribuo, for Captum (at its defaults and optionally at its best settings)
and optionally the *floor*: the least work any implementation must do
(e.g. one batched autograd call over the expanded inputs).

After timing, each contender runs once more under :class:`PeakMemory`,
which reports the peak bytes of tensor storage the call created (set
``BENCH_MEMORY=0``, or ``Case(memory=False)``, to skip that run).
"""

from __future__ import annotations

import os
import statistics
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch.utils._python_dispatch import TorchDispatchMode


@dataclass
class Case:
    name: str
    attribuo: Callable[[], object]
    captum: Callable[[], object]
    captum_best: Callable[[], object] | None = None
    floor: Callable[[], object] | None = None
    repeats: int = 5
    notes: str = ""
    extra: dict = field(default_factory=dict)
    memory: bool = True


class PeakMemory(TorchDispatchMode):
    """Peak bytes of live tensor storage created while the mode is active.

    On CPU ``tracemalloc`` does not see torch's allocator, so every op's
    output is inspected at the dispatcher instead (forward and backward ops
    alike: autograd carries the mode into the backward). A storage counts
    its ``nbytes`` from the first op that returns it until its Python object
    is collected (storages keep one Python object for life, so a
    ``weakref.finalize`` on it fires when the memory is freed). Tensors that
    existed before (inputs, parameters) are not counted; views and in-place
    results add nothing; a storage that an ``out=`` op grows is re-counted.

    Example:
        >>> with PeakMemory() as pm:
        ...     a = torch.empty(1024, dtype=torch.uint8)
        ...     del a
        ...     b = torch.empty(512, dtype=torch.uint8)
        >>> pm.peak, pm.current
        (1024, 512)
    """

    def __init__(self) -> None:
        super().__init__()
        self.current = 0
        self.peak = 0
        self._sizes: dict[int, int] = {}  # data_ptr -> bytes counted for that live storage

    def _freed(self, key: int) -> None:
        self.current -= self._sizes.pop(key, 0)

    def _track(self, t: torch.Tensor) -> None:
        storage = t.untyped_storage()
        key, size = storage.data_ptr(), storage.nbytes()
        if key == 0 or size == 0:
            return
        counted = self._sizes.get(key)
        if counted is None:
            weakref.finalize(storage, self._freed, key)
            counted = 0
        if size > counted:
            self._sizes[key] = size
            self.current += size - counted
            self.peak = max(self.peak, self.current)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        # An output sharing an argument's storage (a view, an in-place result, ``weight.t()``)
        # is memory that already existed: count only fresh storages.
        given = {
            a.untyped_storage().data_ptr()
            for a in torch.utils._pytree.tree_leaves((args, kwargs))
            if isinstance(a, torch.Tensor) and a.layout == torch.strided and not a.is_meta
        }
        for t in torch.utils._pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor) and not t.is_meta and t.layout == torch.strided:
                if t.untyped_storage().data_ptr() not in given:
                    self._track(t)
        return out

    def __exit__(self, *exc):
        # Storages freed later are no longer this run's concern.
        result = super().__exit__(*exc)
        self._sizes = {}
        return result


def peak_bytes(fn: Callable[[], object]) -> int:
    """Peak bytes of tensor storage ``fn()`` creates (its result is dropped before returning)."""
    with PeakMemory() as tracker:
        fn()
    return tracker.peak


def memory_enabled(case: Case) -> bool:
    """Whether ``case`` gets a peak-memory run (``BENCH_MEMORY=0`` turns every one off)."""
    return case.memory and os.environ.get("BENCH_MEMORY", "1") not in ("0", "", "false", "no")


def _once(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run_case(case: Case, repeats: int | None = None) -> dict:
    """Median time of each contender, measured round-robin after one warm-up each.

    Interleaving the contenders within every repeat spreads machine noise
    over all of them instead of biasing whichever ran during a slow spell.
    ``BENCH_REPEATS`` overrides the case's repeat count.
    """
    repeats = repeats or int(os.environ.get("BENCH_REPEATS", case.repeats))
    contenders = {"attribuo_s": case.attribuo, "captum_s": case.captum}
    if case.captum_best is not None:
        contenders["captum_best_s"] = case.captum_best
    if case.floor is not None:
        contenders["floor_s"] = case.floor
    torch.manual_seed(0)
    for fn in contenders.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in contenders}
    for _ in range(repeats):
        for key, fn in contenders.items():
            times[key].append(_once(fn))
    row: dict = {"name": case.name}
    row.update({k: statistics.median(v) for k, v in times.items()})
    row["speedup"] = row["captum_s"] / row["attribuo_s"]
    if "captum_best_s" in row:
        row["speedup_vs_best"] = row["captum_best_s"] / row["attribuo_s"]
    if "floor_s" in row:
        row["x_floor"] = row["attribuo_s"] / row["floor_s"]
    if memory_enabled(case):
        # Separate runs: the dispatch mode slows every op, so it must not touch the timings.
        row["attribuo_peak_b"] = peak_bytes(case.attribuo)
        row["captum_peak_b"] = peak_bytes(case.captum)
    return row


def format_rows(rows: list[dict]) -> str:
    header = (
        "| case | attribuo (ms) | Captum (ms) | speed-up | Captum best (ms) | "
        "speed-up vs best | floor (ms) | attribuo / floor | attribuo peak (MiB) | Captum peak (MiB) |"
    )
    lines = [header, "|" + "---|" * 10]

    def ms(row, key):
        return f"{row[key] * 1e3:.1f}" if key in row else "-"

    def ratio(row, key):
        return f"{row[key]:.2f}x" if key in row else "-"

    def mib(row, key):
        return f"{row[key] / (1 << 20):.1f}" if key in row else "-"

    for r in rows:
        lines.append(
            f"| {r['name']} | {ms(r, 'attribuo_s')} | {ms(r, 'captum_s')} | {ratio(r, 'speedup')} | "
            f"{ms(r, 'captum_best_s')} | {ratio(r, 'speedup_vs_best')} | {ms(r, 'floor_s')} | "
            f"{ratio(r, 'x_floor')} | {mib(r, 'attribuo_peak_b')} | {mib(r, 'captum_peak_b')} |"
        )
    return "\n".join(lines)


def quiet(fn: Callable[[], object]) -> Callable[[], object]:
    """``fn`` with warnings silenced (Captum warns on some calls; keep that out of the timing)."""
    import warnings

    def run():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fn()

    return run


def paired(name: str, model: object, *init: object, **kwargs: object) -> tuple[Callable[[], object], Callable[[], object]]:
    """The same ``attribute(**kwargs)`` call of class ``name`` in attribuo and in Captum."""
    import captum.attr as ca

    import attribuo.attr as aa

    ours, theirs = getattr(aa, name)(model, *init), getattr(ca, name)(model, *init)
    return quiet(lambda: ours.attribute(**kwargs)), quiet(lambda: theirs.attribute(**kwargs))

