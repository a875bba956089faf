"""Memory: IntegratedGradients chunks its steps under a budget instead of expanding them all.

200 steps on 8 images of 3x224x224 expand to 1600 images (963 MB of input
alone, as much again for its gradient). Captum builds them all at once;
attribuo evaluates as many steps per forward as fit the memory budget, so
the peak stays far below, and the result is the same as one unchunked run.
"""

import json
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from attribuo.attr import IntegratedGradients

_BIG_CASE = r"""
import json, resource, torch
from torch import nn
from attribuo.attr import IntegratedGradients
torch.manual_seed(0)
model = nn.Sequential(
    nn.Conv2d(3, 8, 4, stride=4), nn.ReLU(),
    nn.Conv2d(8, 8, 3, padding=1, stride=2), nn.ReLU(),
    nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10),
).eval()
x = torch.rand(8, 3, 224, 224)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
attr, delta = IntegratedGradients(model).attribute(
    x, target=0, n_steps=200, return_convergence_delta=True)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"before_kib": before, "peak_kib": peak, "shape": list(attr.shape),
                  "max_delta": delta.abs().max().item(), "finite": bool(attr.isfinite().all())}))
"""


def test_integrated_gradients_200_steps_on_224px_images_stays_under_4_gib():
    env = {k: v for k, v in os.environ.items() if k != "ATTRIBUO_MEMORY_BUDGET_MB"}
    env.setdefault("OMP_NUM_THREADS", "2")
    run = subprocess.run(
        [sys.executable, "-c", _BIG_CASE], capture_output=True, text=True, env=env, timeout=300
    )
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout.strip().splitlines()[-1])
    peak_mib = report["peak_kib"] / 1024
    grown_mib = (report["peak_kib"] - report["before_kib"]) / 1024
    assert peak_mib < 4096, report
    # far below the 1600 expanded images alone (918 MiB): the steps were chunked
    expanded_mib = 1600 * 3 * 224 * 224 * 4 / 2**20
    assert grown_mib < expanded_mib / 2, report
    assert report["shape"] == [8, 3, 224, 224] and report["finite"]
    assert report["max_delta"] < 1e-2  # still a faithful integral


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4, 3)
        self.forwards = 0

    def forward(self, x):
        self.forwards += 1
        return self.head(torch.tanh(self.conv(x)).mean((2, 3)))


@pytest.mark.parametrize("method", ["gausslegendre", "riemann_trapezoid"])
def test_budget_chunked_result_equals_one_unchunked_run(method, monkeypatch):
    torch.manual_seed(0)
    model = _Net().double().eval()
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64)
    ig = IntegratedGradients(model)
    unchunked = ig.attribute(x, target=[0, 2], n_steps=60, method=method, internal_batch_size=120)
    assert model.forwards == 1
    # a budget of about 5 copies of the batch: 12 forwards of 5 steps
    monkeypatch.setenv("ATTRIBUO_MEMORY_BUDGET_MB", str(5 * x.numel() * 8 / 2**20))
    model.forwards = 0
    chunked = ig.attribute(x, target=[0, 2], n_steps=60, method=method)
    assert model.forwards == 1 + 12  # a probe forward measures the activations, then 12 chunks
    torch.testing.assert_close(chunked, unchunked, rtol=1e-12, atol=1e-14)


class _Wide(nn.Module):
    """Activations 64 times the input: the input budget alone would put every step in one chunk."""

    def __init__(self):
        super().__init__()
        self.up, self.down = nn.Linear(16, 1024), nn.Linear(1024, 2)
        self.forwards = 0

    def forward(self, x):
        self.forwards += 1
        return self.down(torch.tanh(self.up(x)))


def test_chunks_are_capped_by_the_activations_of_a_probe_forward(monkeypatch):
    from attribuo._engine.batching import activation_bytes

    torch.manual_seed(0)
    model, x = _Wide().double(), torch.rand(4, 16, dtype=torch.float64)
    per_step = activation_bytes(model, (x,), (), grad=True)
    assert per_step >= 2 * 4 * 1024 * 8  # at least the two [4, 1024] float64 activations
    model.forwards = 0
    unchunked = IntegratedGradients(model).attribute(x, target=1, n_steps=40, internal_batch_size=160)
    assert model.forwards == 1
    # activations of 8 steps fit the budget; the inputs of all 40 fit theirs
    monkeypatch.setenv("ATTRIBUO_ACTIVATION_BUDGET_MB", str(8.5 * per_step / 2**20))
    model.forwards = 0
    capped = IntegratedGradients(model).attribute(x, target=1, n_steps=40)
    assert model.forwards == 1 + 5  # the probe, then 5 chunks of 8 steps
    torch.testing.assert_close(capped, unchunked, rtol=1e-12, atol=1e-14)


def test_a_users_own_function_is_never_probed():
    from attribuo._engine.batching import activation_bytes

    calls = []
    assert activation_bytes(lambda t: calls.append(t) or t.sum(1), (torch.ones(2, 3),), (), grad=True) == 0
    assert calls == []  # no extra call of a function that may have side effects
