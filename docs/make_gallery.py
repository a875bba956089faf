"""Write one example picture per visualization method to docs/gallery/.

Run from the repository root: ``python docs/make_gallery.py``. The inputs are
synthetic so the script needs no downloads: an image with a bright disk
(the feature a small linear-tanh "disk detector" looks for) and a square
(which counts against it), a two-channel signal with a bump the time-series
detector responds to, and a short sentence with word importances.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from attribuo.attr import InputXGradient, IntegratedGradients  # noqa: E402
from attribuo.attr import visualization as viz  # noqa: E402

OUT = Path(__file__).parent / "gallery"


class DiskDetector(nn.Module):
    """tanh(<template, image>): +1 weight on the disk, -0.5 on the square."""

    def __init__(self, template: torch.Tensor):
        super().__init__()
        self.template = nn.Parameter(template, requires_grad=False)

    def forward(self, x):
        return torch.tanh((x * self.template).flatten(1).sum(1, keepdim=True) / 200)


def image_example() -> tuple[np.ndarray, np.ndarray]:
    size = 64
    yy, xx = np.mgrid[:size, :size]
    disk = (yy - 22) ** 2 + (xx - 40) ** 2 < 12**2
    square = (np.abs(yy - 44) < 9) & (np.abs(xx - 18) < 9)
    rng = np.random.default_rng(0)
    image = 0.25 + 0.08 * rng.standard_normal((size, size, 3))
    image[disk] = [0.95, 0.75, 0.2]
    image[square] = [0.2, 0.45, 0.9]
    image = np.clip(image, 0, 1)
    template = torch.zeros(3, size, size)
    template[:, torch.from_numpy(disk)] = 1.0
    template[:, torch.from_numpy(square)] = -0.5
    model = DiskDetector(template)
    x = torch.tensor(image, dtype=torch.float32).permute(2, 0, 1)[None]
    attr = IntegratedGradients(model).attribute(x, target=0, n_steps=32)
    return attr[0].permute(1, 2, 0).numpy(), image


def timeseries_example() -> tuple[np.ndarray, np.ndarray]:
    t = np.linspace(0, 4 * np.pi, 120)
    bump = np.exp(-((t - 7) ** 2) / 0.5)
    data = np.stack([np.sin(t) + 1.5 * bump, np.cos(t) - 0.8 * bump], axis=1)
    x = torch.tensor(data.T, dtype=torch.float32)[None]
    weights = torch.tensor(np.stack([bump, -bump]), dtype=torch.float32)

    def model(inp):
        return (inp * weights).flatten(1).sum(1, keepdim=True)

    attr = InputXGradient(model).attribute(x, target=0)
    return attr[0].numpy().T, data


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    attr, image = image_example()
    signs = {
        "heat_map": "all",
        "blended_heat_map": "all",
        "original_image": "all",
        "masked_image": "positive",
        "alpha_scaling": "absolute_value",
    }
    for method, sign in signs.items():
        fig, _ = viz.visualize_image_attr(
            attr, image, method=method, sign=sign, show_colorbar=True,
            title=f"{method} (sign={sign})", fig_size=(4, 4.4), use_pyplot=False,
        )
        fig.savefig(OUT / f"{method}.png", dpi=80, bbox_inches="tight")
    fig, _ = viz.visualize_image_attr_multiple(
        attr, image, list(signs), list(signs.values()), titles=list(signs),
        fig_size=(14, 3.4), use_pyplot=False, show_colorbar=True,
    )
    fig.savefig(OUT / "image_attr_multiple.png", dpi=70, bbox_inches="tight")

    ts_attr, data = timeseries_example()
    for method in ("overlay_individual", "overlay_combined", "colored_graph"):
        # a colour map without white keeps the zero-attribution parts of the line visible
        extra = {"cmap": "RdYlGn", "linewidth": 2} if method == "colored_graph" else {}
        fig, _ = viz.visualize_timeseries_attr(
            ts_attr, data, method=method, sign="all", channel_labels=["sin", "cos"],
            show_colorbar=True, title=f"{method} (sign=all)", fig_size=(6, 4), use_pyplot=False,
            **extra,
        )
        fig.savefig(OUT / f"{method}.png", dpi=80, bbox_inches="tight")

    words = ["<s>", "a", "truly", "wonderful", "film", ",", "if", "slow", "<script>", "</s>"]
    scores = torch.tensor([0.0, 0.05, 0.4, 0.9, 0.2, 0.0, -0.1, -0.6, -0.3, 0.0])
    record = viz.VisualizationDataRecord(scores, 0.93, "positive", "positive", "positive",
                                         float(scores.sum()), words, 0.01)
    viz.visualize_text([record], save_path=OUT / "text.html")
    print("wrote", sorted(p.name for p in OUT.iterdir()))


if __name__ == "__main__":
    main()
