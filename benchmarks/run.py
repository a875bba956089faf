"""Run every ``benchmarks/bench_*.py`` (or those named) and print one table.

    python -m benchmarks.run            # all
    python -m benchmarks.run path       # only bench_path.py

Environment: ``BENCH_REPEATS`` (repeats per case), ``BENCH_MEMORY=0`` (no
peak-memory runs), ``BENCH_THREADS`` (torch threads; 1 avoids the
spin-wait stalls of an oversubscribed shared machine) and ``BENCH_FILTER``
(run only cases whose name contains it).
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import sys
import warnings
from pathlib import Path

import torch

from .harness import format_rows, run_case


def main(argv: list[str]) -> None:
    warnings.filterwarnings("ignore")
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", 0)) or max(1, torch.get_num_threads()))
    only = os.environ.get("BENCH_FILTER", "")
    here = Path(__file__).parent
    names = sorted(m.name for m in pkgutil.iter_modules([str(here)]) if m.name.startswith("bench_"))
    if argv:
        names = [n for n in names if n.removeprefix("bench_") in argv]
    rows = []
    for name in names:
        module = importlib.import_module(f"benchmarks.{name}")
        for case in module.cases():
            if only not in case.name:
                continue
            row = run_case(case)
            rows.append(row)
            print(format_rows([row]).splitlines()[-1], flush=True)
    print()
    print(format_rows(rows))


if __name__ == "__main__":
    main(sys.argv[1:])
