"""Side-by-side timing of attribuo and Captum in one process.

Each benchmark module ``benchmarks/bench_*.py`` defines ``cases()``,
returning :class:`Case` objects. A case holds zero-argument callables for
attribuo, for Captum (at its defaults and optionally at its best settings)
and optionally the *floor*: the least work any implementation must do
(e.g. one batched autograd call over the expanded inputs).
"""

from __future__ import annotations

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


def best_time(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``fn`` over ``repeats`` runs after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run_case(case: Case) -> dict:
    torch.manual_seed(0)
    row = {"name": case.name}
    row["attribuo_s"] = best_time(case.attribuo, case.repeats)
    row["captum_s"] = best_time(case.captum, case.repeats)
    row["speedup"] = row["captum_s"] / row["attribuo_s"]
    if case.captum_best is not None:
        row["captum_best_s"] = best_time(case.captum_best, case.repeats)
        row["speedup_vs_best"] = row["captum_best_s"] / row["attribuo_s"]
    if case.floor is not None:
        row["floor_s"] = best_time(case.floor, case.repeats)
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
