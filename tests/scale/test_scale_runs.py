"""attribuo.scale: sharded, resumable dataset attribution; 2 processes (gloo) equal 1, a killed run resumes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from attribuo.attr import FeatureAblation, IntegratedGradients
from attribuo.scale import Job, load, run, status, summary
from attribuo.scale.__main__ import main
from tests.models import scale_jobs

ROOT = Path(__file__).resolve().parents[2]
MODEL, DATA = "tests.models.scale_jobs:model", "tests.models.scale_jobs:dataset"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cli(method: str, out: Path, *extra: str) -> list[str]:
    return ["-m", "attribuo.scale", "run", "--model", MODEL, "--dataset", DATA, "--method", method,
            "--batch-size", "5", "--shard-size", "8", "--out", str(out), "--no-progress", *extra]


def _torchrun(args: list[str], env_extra: dict | None = None, wait: bool = True):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **(env_extra or {})}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), *args]
    if not wait:
        return subprocess.Popen(cmd, env=env, cwd=ROOT, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _direct(method_cls, **kwargs):
    """The attributions computed batch by batch by hand, the reference for every run."""
    model, data = scale_jobs.model(), scale_jobs.dataset()
    method = method_cls(model)
    rows = []
    for start in range(0, len(data), 8):  # shards of 8, batches of 5 inside a shard
        stop = min(len(data), start + 8)
        for b in range(start, stop, 5):
            idx = range(b, min(stop, b + 5))
            x = torch.stack([data[i][0] for i in idx])
            y = torch.tensor([data[i][1] for i in idx])
            rows.append(method.attribute(x, target=y, **kwargs))
    return torch.cat(rows)


@pytest.mark.parametrize(("name", "cls", "kwargs"), [
    ("IntegratedGradients", IntegratedGradients, {"n_steps": 8}),
    ("FeatureAblation", FeatureAblation, {}),
])
def test_one_and_two_processes_give_the_direct_numbers(tmp_path, name, cls, kwargs):
    expected = _direct(cls, **kwargs)
    one = tmp_path / "one"
    run(Job(MODEL, DATA, name, attribute_args=kwargs, batch_size=5, shard_size=8), one, progress=False)
    indices, attrs = load(one)
    assert torch.equal(indices, torch.arange(37))
    assert torch.equal(attrs, expected)
    two = tmp_path / "two"
    _torchrun(_cli(name, two, "--attribute-args", json.dumps(kwargs)))
    indices2, attrs2 = load(two)
    assert torch.equal(indices2, indices) and torch.equal(attrs2, attrs)
    stats = summary(two)
    assert int(stats["count"]) == 37
    torch.testing.assert_close(stats["mean_abs_0"], attrs.abs().double().mean(0).float())
    torch.testing.assert_close(stats["mean_0"], attrs.double().mean(0).float())
    manifest = json.loads((two / "manifest.json").read_text())
    assert sorted(e["shard"] for e in manifest["files"]) == list(range(5))


def test_a_killed_run_resumes_with_nothing_lost_or_repeated(tmp_path):
    reference = tmp_path / "reference"
    run(Job(MODEL, DATA, "FeatureAblation", batch_size=5, shard_size=4), reference, progress=False)
    out = tmp_path / "killed"
    args = _cli("FeatureAblation", out, "--shard-size", "4")
    proc = _torchrun(args, {"SCALE_TEST_SLEEP": "0.15"}, wait=False)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(out.glob("shard-*.json"))) < 2:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    written = len(list(out.glob("shard-*.json")))
    assert 2 <= written < 10, "the run must be cut between its first and last shard"
    assert not status(out)["finished"]
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*.safetensors")}
    _torchrun(args + ["--resume"])
    assert status(out)["finished"]
    for name, stamp in stamps.items():  # finished shards were not computed again
        if (out / name.replace(".safetensors", ".json")).exists():
            assert (out / name).stat().st_mtime_ns == stamp
    indices, attrs = load(out)
    ref_indices, ref_attrs = load(reference)
    assert torch.equal(indices, torch.arange(37)) and torch.equal(indices, ref_indices)
    assert torch.equal(attrs, ref_attrs)


def test_a_corrupted_shard_is_recomputed_on_resume(tmp_path):
    out = tmp_path / "run"
    job = Job(MODEL, DATA, "FeatureAblation", batch_size=5, shard_size=8)
    run(job, out, progress=False)
    _, before = load(out)
    shard = out / "shard-00002.safetensors"
    shard.write_bytes(shard.read_bytes()[:-7])
    with pytest.raises(ValueError, match="checksum"):
        load(out)
    run(job, out, resume=True, progress=False)
    _, after = load(out)
    assert torch.equal(after, before)


@pytest.mark.parametrize(("args", "message"), [
    (["--method", "NoSuchMethod"], "not an attribution class"),
    (["--attribute-args", "{n_steps: 3"], "not valid JSON"),
    (["--attribute-args", "[1]"], "JSON object"),
    (["--model", "tests.models.scale_jobs:not_a_model"], "not an nn.Module"),
    (["--model", "nowhere"], "PKG.MOD:FACTORY"),
    (["--target", "soon"], "--target"),
])
def test_bad_arguments_are_clear_errors_before_any_work(tmp_path, capsys, args, message):
    base = {"--model": MODEL, "--dataset": DATA, "--method": "Saliency", "--out": str(tmp_path / "o")}
    for flag, value in zip(args[::2], args[1::2]):
        base[flag] = value
    argv = ["run", "--no-progress"] + [x for kv in base.items() for x in kv]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o" / "job.json").exists()


def test_a_folder_of_another_job_or_an_unresumed_rerun_is_refused(tmp_path):
    out = tmp_path / "run"
    run(Job(MODEL, DATA, "Saliency", batch_size=5, shard_size=8), out, progress=False)
    with pytest.raises(ValueError, match="different job"):
        run(Job(MODEL, DATA, "InputXGradient", batch_size=5, shard_size=8), out, progress=False)
    with pytest.raises(ValueError, match="--resume"):
        run(Job(MODEL, DATA, "Saliency", batch_size=5, shard_size=8), out, progress=False)
    assert main(["status", str(out)]) == 0


def test_convergence_deltas_are_stored_with_delta(tmp_path):
    out = tmp_path / "ig"
    run(Job(MODEL, DATA, "IntegratedGradients", attribute_args={"n_steps": 8}, batch_size=5, shard_size=8,
            delta=True), out, progress=False)
    indices, attrs, deltas = load(out, deltas=True)
    model, data = scale_jobs.model(), scale_jobs.dataset()
    x = torch.stack([data[i][0] for i in range(5)])
    y = torch.tensor([data[i][1] for i in range(5)])
    _, expected = IntegratedGradients(model).attribute(x, target=y, n_steps=8, return_convergence_delta=True)
    assert deltas.shape == (37,)
    torch.testing.assert_close(deltas[:5], expected)
    with pytest.raises(ValueError, match="--delta"):
        plain = tmp_path / "plain"
        run(Job(MODEL, DATA, "Saliency", batch_size=5, shard_size=8), plain, progress=False)
        load(plain, deltas=True)
