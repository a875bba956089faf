"""The benchmark harness's peak-memory tracker on known allocation patterns."""

from __future__ import annotations

import torch

from benchmarks.harness import Case, PeakMemory, format_rows, peak_bytes, run_case

MIB = 1 << 20


def _mib_tensor(mib: float) -> torch.Tensor:
    return torch.empty(int(mib * MIB), dtype=torch.uint8)


def test_freed_tensor_peak_is_the_largest_live_one():
    def pattern():
        a = _mib_tensor(4)
        del a
        b = _mib_tensor(2)
        return b.sum()

    assert peak_bytes(pattern) == 4 * MIB


def test_live_tensors_add_up():
    def pattern():
        a = _mib_tensor(4)
        b = _mib_tensor(2)
        return a, b

    assert peak_bytes(pattern) == 6 * MIB


def test_current_drops_when_storage_is_freed_and_views_add_nothing():
    with PeakMemory() as tracker:
        a = torch.zeros(MIB // 4)  # 1 MiB of float32
        view = a[: MIB // 8]
        view.add_(1.0)  # in place on a counted storage
        assert tracker.current == MIB
        del a, view
        assert tracker.current == 0
    assert tracker.peak == MIB


def test_existing_tensors_and_their_views_are_not_counted():
    weight = torch.randn(512, 512)  # 1 MiB, allocated before the tracker

    def pattern():
        weight.t().mul_(1.0)  # a view and an in-place op: no new storage

    assert peak_bytes(pattern) == 0


def test_backward_allocations_are_seen():
    x = torch.randn(256, 1024, requires_grad=True)  # 1 MiB

    def pattern():
        # The forward peaks at 1 MiB (exp's output, saved for backward); the backward
        # holds that and the 1 MiB gradient at once.
        (y,) = torch.autograd.grad(x.exp().sum(), x)
        return y

    assert 2 * MIB <= peak_bytes(pattern) < 2 * MIB + 1024


def test_run_case_reports_peaks_unless_disabled(monkeypatch):
    case = Case("alloc", attribuo=lambda: _mib_tensor(1), captum=lambda: _mib_tensor(3), repeats=1)
    row = run_case(case)
    assert row["attribuo_peak_b"] == MIB and row["captum_peak_b"] == 3 * MIB
    table = format_rows([row])
    assert "attribuo peak (MiB)" in table and "| 1.0 | 3.0 |" in table
    monkeypatch.setenv("BENCH_MEMORY", "0")
    row = run_case(case)
    assert "attribuo_peak_b" not in row
    assert format_rows([row]).splitlines()[-1].endswith("| - | - |")
