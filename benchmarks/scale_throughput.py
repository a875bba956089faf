"""Examples per second of ``attribuo.scale`` with 1 and 2 ``torchrun`` processes on this machine.

    python -m benchmarks.scale_throughput

IntegratedGradients (n_steps 16) over 512 3x32x32 images of a small CNN,
batches of 32, shards of 64. Each run is a whole ``torchrun`` command
(process start-up and the import of torch included); the processes share
the machine's cores (``OMP_NUM_THREADS`` = cores / processes).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import TensorDataset

from .bench_perturbation import _cnn

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = 512


def model() -> nn.Module:
    return _cnn()


def dataset() -> TensorDataset:
    gen = torch.Generator().manual_seed(0)
    return TensorDataset(torch.rand(EXAMPLES, 3, 32, 32, generator=gen), torch.randint(0, 10, (EXAMPLES,), generator=gen))


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timed(processes: int, out: Path) -> float:
    cores = os.cpu_count() or 1
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(max(1, cores // processes))}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", str(processes),
           "--master_addr", "127.0.0.1", "--master_port", str(_port()), "-m", "attribuo.scale", "run",
           "--model", "benchmarks.scale_throughput:model", "--dataset", "benchmarks.scale_throughput:dataset",
           "--method", "IntegratedGradients", "--attribute-args", json.dumps({"n_steps": 16}),
           "--batch-size", "32", "--shard-size", "64", "--out", str(out), "--no-progress"]
    start = time.perf_counter()
    subprocess.run(cmd, env=env, cwd=ROOT, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    print("| processes | wall (s) | examples/s |")
    print("|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for processes in (1, 2):
            took = timed(processes, Path(tmp) / f"p{processes}")
            print(f"| {processes} | {took:.1f} | {EXAMPLES / took:.0f} |", flush=True)


if __name__ == "__main__":
    main()
