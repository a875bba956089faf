"""Side-by-side timing of attribuo and Captum in one process.

Each benchmark module ``benchmarks/bench_*.py`` defines ``cases()``,
returning :class:`Case` objects. A case holds zero-argument callables for
attribuo, for Captum (at its defaults and optionally at its best settings)
and optionally the *floor*: the least work any implementation must do
(e.g. one batched autograd call over the expanded inputs).
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch


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
    return row


def format_rows(rows: list[dict]) -> str:
    header = (
        "| case | attribuo (ms) | Captum (ms) | speed-up | Captum best (ms) | "
        "speed-up vs best | floor (ms) | attribuo / floor |"
    )
    lines = [header, "|" + "---|" * 8]

    def ms(row, key):
        return f"{row[key] * 1e3:.1f}" if key in row else "-"

    def ratio(row, key):
        return f"{row[key]:.2f}x" if key in row else "-"

    for r in rows:
        lines.append(
            f"| {r['name']} | {ms(r, 'attribuo_s')} | {ms(r, 'captum_s')} | {ratio(r, 'speedup')} | "
            f"{ms(r, 'captum_best_s')} | {ratio(r, 'speedup_vs_best')} | {ms(r, 'floor_s')} | "
            f"{ratio(r, 'x_floor')} |"
        )
    return "\n".join(lines)
