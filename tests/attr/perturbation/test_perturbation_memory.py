"""Peak memory of perturbation methods on 4 images of 3x224x224 (subprocess, getrusage)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

JOB = Path(__file__).with_name("_perturbation_memory_job.py")
ROOT = Path(__file__).resolve().parents[3]


def _run(method: str, timeout: int) -> tuple[float, float]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, str(JOB), method], capture_output=True, text=True,
                          timeout=timeout, env=env, check=True)
    peak, took = done.stdout.split()
    return float(peak), float(took)


def test_occlusion_224_stays_under_4_gib():
    peak_mib, _ = _run("occlusion", 120)
    assert peak_mib < 4096


@pytest.mark.skipif(not os.environ.get("ATTRIBUO_SLOW"), reason="about a minute; set ATTRIBUO_SLOW=1")
def test_feature_ablation_one_feature_per_pixel_finishes():
    peak_mib, _ = _run("ablation", 900)
    assert peak_mib < 4096
