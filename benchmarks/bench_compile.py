"""Repeated perturbation attributions: eager forward vs ``compile_forward`` (inductor, CPU).

Every row is one method on one model, timed per ``attribute()`` call after a
warm-up that pays the compilation. The *attribuo* column is the compiled
forward (``Method(compile_forward(model))``), the *Captum* column holds
attribuo's own eager call (``Method(model)``, what a user runs without
compiling): Captum itself is not timed here. ``speed-up`` is therefore
eager / compiled. The row name carries the first compiled call (the
compile, timed in :func:`cases`) and, where compiling pays, the break-even:
``first-call overhead / per-call saving`` is measured by :func:`main` (``python -m
benchmarks.bench_compile``) and printed below the table.

Models: an MLP (20 -> 64 -> 64 -> 3, batch 16) with FeatureAblation and
ShapleyValueSampling (10 samples); a small CNN and a residual CNN with
BatchNorm on 4 images of 3x64x64 with Occlusion (3x8x8 windows, stride 8:
64 windows) and FeatureAblation on 8x8 superpixels (64 features).
"""

from __future__ import annotations

import sys
import time
import warnings

import torch
from torch import nn

from .harness import Case, format_rows, run_case


class MLP(nn.Module):
    # each model its own class: dynamo caches compiled code per code object
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 3))

    def forward(self, x):
        return self.net(x)


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        )
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


class Block(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels)
        self.conv2, self.bn2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels)

    def forward(self, x):
        return torch.relu(x + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))


class ResCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.stage1 = Block(16)
        self.down = nn.Sequential(nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU())
        self.stage2 = Block(32)
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        x = self.stage2(self.down(self.stage1(self.stem(x))))
        return self.head(x.mean((2, 3)))


def _model(cls: type[nn.Module]) -> nn.Module:
    torch.manual_seed(0)
    model = cls()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    return model.eval()


class _CountingInductor:
    """Inductor, counting the graphs it compiles (0 would mean the rows time eager twice)."""

    def __init__(self) -> None:
        self.graphs = 0

    def __call__(self, gm, example_inputs):
        self.graphs += 1
        return torch._dynamo.lookup_backend("inductor")(gm, example_inputs)


def _superpixels(size: int = 64, cell: int = 8) -> torch.Tensor:
    blocks = torch.arange(size) // cell
    ids = blocks[:, None] * (size // cell) + blocks[None, :]
    return ids.reshape(1, 1, size, size).expand(1, 3, size, size)


def _runs():
    """(model name, model, inputs, target, method name, attribute kwargs)."""
    g = torch.Generator().manual_seed(0)
    tabular = torch.randn(16, 20, generator=g)
    images = torch.randn(4, 3, 64, 64, generator=g)
    mlp, cnn, res = _model(MLP), _model(SmallCNN), _model(ResCNN)
    occlusion = {"sliding_window_shapes": (3, 8, 8), "strides": 8}
    return [
        ("MLP20 batch 16", mlp, tabular, torch.arange(16) % 3, "FeatureAblation", {}),
        ("MLP20 batch 16", mlp, tabular, torch.arange(16) % 3, "ShapleyValueSampling", {"n_samples": 10}),
        ("CNN 4x3x64x64", cnn, images, 1, "Occlusion", occlusion),
        ("CNN 4x3x64x64", cnn, images, 1, "FeatureAblation", {"feature_mask": _superpixels()}),
        ("ResCNN+BN 4x3x64x64", res, images, 1, "Occlusion", occlusion),
        ("ResCNN+BN 4x3x64x64", res, images, 1, "FeatureAblation", {"feature_mask": _superpixels()}),
    ]


def cases() -> list[Case]:
    warnings.filterwarnings("ignore")
    import attribuo.attr as aa
    from attribuo import compile_forward

    out, compiled_models = [], {}
    for model_name, model, x, target, method, kwargs in _runs():
        eager = getattr(aa, method)(model)
        if id(model) not in compiled_models:  # one wrapper per model, shared by its methods
            backend = _CountingInductor()
            compiled_models[id(model)] = (compile_forward(model, backend=backend), backend)
        fast_forward, backend = compiled_models[id(model)]
        fast = getattr(aa, method)(fast_forward)

        def run_fast(fast=fast, x=x, t=target, kw=kwargs):
            torch.manual_seed(0)
            return fast.attribute(x, target=t, **kw)

        def run_eager(eager=eager, x=x, t=target, kw=kwargs):
            torch.manual_seed(0)
            return eager.attribute(x, target=t, **kw)

        before = backend.graphs
        start = time.perf_counter()
        compiled_out = run_fast()  # pays the compile (nothing new if another method already did)
        first = time.perf_counter() - start
        if fast_forward.fell_back or backend.graphs == 0:
            raise RuntimeError(f"{model_name}: the forward did not compile; the rows would time eager twice")
        error = (compiled_out - run_eager()).abs().max().item()
        out.append(
            Case(
                f"{method} {model_name}: compiled (attribuo col) vs eager attribuo (Captum col); "
                f"first compiled call {first:.1f} s, {backend.graphs - before} new graph(s)",
                run_fast,
                run_eager,
                repeats=5,
                extra={"first_call_s": first, "new_graphs": backend.graphs - before, "max_abs_diff": error},
            )
        )
    return out


def break_even(row: dict, case: Case) -> str:
    """How many ``attribute`` calls pay back the first call's overhead (or 'never')."""
    saving = row["captum_s"] - row["attribuo_s"]
    overhead = case.extra["first_call_s"] - row["attribuo_s"]
    if saving <= 0:
        return "never (compiled is not faster)"
    return f"{max(overhead, 0.0) / saving:.0f} calls"


def main(argv: list[str]) -> None:
    torch.set_num_threads(max(1, torch.get_num_threads()))
    rows = []
    for case in cases():
        row = run_case(case)
        rows.append(row)
        print(format_rows([row]).splitlines()[-1], flush=True)
        print(
            f"    first call {case.extra['first_call_s']:.2f} s, max |compiled - eager| "
            f"{case.extra['max_abs_diff']:.1e}, break-even {break_even(row, case)}",
            flush=True,
        )
    print()
    print(format_rows(rows))


if __name__ == "__main__":
    main(sys.argv[1:])
