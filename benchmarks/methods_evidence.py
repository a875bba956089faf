"""Attribution methods scored on an image task whose evidence is known.

Task: 1x16x16 images of uniform noise in [0, 0.4]; class 1 images also hold
a bright 4x4 square (value 1) at a random place, class 0 images none. A small
CNN (two convolutions, global max-pool) is trained on CPU in a few seconds;
every method explains the class-1 logit of ``N_EVAL`` held-out class-1
images, and :func:`attribuo.metrics.evaluate` scores them:

* relevance mass accuracy (relevance inside the square over all relevance,
  signed sums as in Quantus, so negative relevance outside gives values
  above 1; higher is better, a uniform map gives 16/256 = 0.06),
* pointing game (the top pixel is in the square),
* pixel flipping (area under the class-1 probability while the most
  relevant pixels go to 0, 16 per step; lower is better),
* sparseness (Gini index; higher is more concentrated),

and the time of each method's explanation of the batch.

Run ``python -m benchmarks.methods_evidence``; the table is printed and
written to ``benchmarks/results/methods_evidence.md``.
"""

from __future__ import annotations

import importlib
import time
from pathlib import Path

import torch
from torch import Tensor, nn

from attribuo.metrics import (
    evaluate,
    pixel_flipping,
    pointing_game,
    relevance_mass_accuracy,
    sparseness,
)

SIZE, PATCH, N_TRAIN, N_EVAL = 16, 4, 2048, 64
RESULTS = Path(__file__).parent / "results" / "methods_evidence.md"


def make_data(n: int, seed: int) -> tuple[Tensor, Tensor, Tensor]:
    """``(images, labels, masks)``: half the images hold the square (label 1, mask = the square)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, SIZE, SIZE, generator=g) * 0.4
    y = torch.arange(n) % 2
    masks = torch.zeros(n, 1, SIZE, SIZE)
    corners = torch.randint(0, SIZE - PATCH + 1, (n, 2), generator=g)
    for i in torch.nonzero(y).flatten().tolist():
        r, c = corners[i].tolist()
        x[i, :, r:r + PATCH, c:c + PATCH] = 1.0
        masks[i, :, r:r + PATCH, c:c + PATCH] = 1
    return x, y, masks


class EvidenceCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Linear(8, 2)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.head(h.amax(dim=(2, 3)))


def train(seed: int = 0) -> EvidenceCNN:
    torch.manual_seed(seed)
    model = EvidenceCNN()
    x, y, _ = make_data(N_TRAIN, seed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):
        for i in range(0, N_TRAIN, 256):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[i:i + 256]), y[i:i + 256]).backward()
            opt.step()
    return model.eval()


def methods() -> dict[str, object]:
    """The methods compared: the classic three and the newer ones this library has."""
    from attribuo.attr import IntegratedGradients, Occlusion, Saliency

    def occlusion(model, inputs, target):
        return Occlusion(model).attribute(inputs, sliding_window_shapes=(1, 4, 4), strides=(1, 2, 2),
                                          target=target)

    found: dict[str, object] = {"Saliency": Saliency, "IntegratedGradients": IntegratedGradients,
                                "Occlusion (4x4, stride 2)": occlusion}
    attr = importlib.import_module("attribuo.attr")
    for name in ("IDGI", "GuidedIntegratedGradients", "BlurIntegratedGradients", "XRAI", "RISE",
                 "SobolAttribution"):
        cls = getattr(attr, name, None)
        if cls is not None:
            found[name] = cls
    return found


def main() -> None:
    torch.set_num_threads(1)
    started = time.perf_counter()
    model = train()
    x, y, masks = make_data(2 * N_EVAL, seed=1)
    keep = y == 1
    x, masks = x[keep], masks[keep]
    accuracy = float((model(make_data(512, 2)[0]).argmax(1) == make_data(512, 2)[1]).float().mean())
    ev = evaluate(methods(), [(relevance_mass_accuracy, {"masks": masks}), (pointing_game, {"masks": masks}),
                              (pixel_flipping, {"features_in_step": 16}), sparseness],
                  model, x, target=1)
    rows = {(r["method"], r["metric"]): r for r in ev.rows()}
    lines = [f"Held-out accuracy {accuracy:.3f}; {len(x)} class-1 images; "
             f"{time.perf_counter() - started:.0f} s in all.", "",
             "| method | relevance mass (higher) | pointing game (higher) | pixel flipping AUC (lower) "
             "| sparseness | explain (s) |", "|---|---|---|---|---|---|"]
    for method in ev.methods:
        cells = [rows[(method, m)]["mean"] for m in ev.metrics]
        seconds = ev.explain_seconds[method]
        lines.append(f"| {method} | " + " | ".join(f"{c:.3f}" for c in cells) + f" | {seconds:.2f} |")
    text = "\n".join(lines)
    print(text)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(text + "\n")


if __name__ == "__main__":
    main()
