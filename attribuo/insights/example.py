"""Insights on a small CNN for scikit-learn's 8x8 handwritten digits (and the other examples).

Run ``python -m attribuo.insights.example`` and open the printed address.
The data ships with scikit-learn and the trained weights ship with this
package (``models/digits_cnn.pt``, made by ``train_example.py``), so nothing
is downloaded. ``--example tabular`` serves the breast-cancer logistic
regression (:mod:`.tabular_example`) and ``--example text`` the MiniLM
sentence-topic example (:mod:`.text_example`) instead.

Example:
    >>> from attribuo.insights.example import build_visualizer
    >>> vis = build_visualizer()
    >>> vis.classes[:3]
    ['0', '1', '2']
"""

from __future__ import annotations

import argparse
import importlib
import json
import urllib.request
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from .features import ImageFeature
from .visualizer import AttributionVisualizer, Batch

WEIGHTS = Path(__file__).resolve().parent / "models" / "digits_cnn.pt"
SPLIT_SEED = 0
TEST_FRACTION = 0.3
# --example NAME -> module with its build_visualizer(); imported only when chosen (MiniLM is slow)
EXAMPLES = {
    "digits": __name__,
    "tabular": f"{__package__}.tabular_example",
    "text": f"{__package__}.text_example",
}


class DigitsCNN(nn.Module):
    """Two 3x3 convolutions, a 2x2 max-pool and two linear layers: 1x8x8 -> 10 logits."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(32 * 4 * 4, 64)
        self.relu3 = nn.ReLU()
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.relu2(self.conv2(self.relu1(self.conv1(x)))))
        return self.fc2(self.relu3(self.fc1(x.flatten(1))))


def digits_split() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(x_train, y_train, x_test, y_test)``: images scaled to [0, 1], shape (N, 1, 8, 8).

    A fixed, stratified split; the test part is held out from training.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(digits.target, dtype=torch.int64)
    idx_train, idx_test = train_test_split(
        torch.arange(len(y)).numpy(), test_size=TEST_FRACTION, random_state=SPLIT_SEED,
        stratify=y.numpy(),
    )
    idx_train, idx_test = torch.as_tensor(idx_train), torch.as_tensor(idx_test)
    return x[idx_train], y[idx_train], x[idx_test], y[idx_test]


def load_model() -> DigitsCNN:
    """The trained model, in eval mode."""
    model = DigitsCNN()
    model.load_state_dict(torch.load(WEIGHTS, map_location="cpu", weights_only=True))
    return model.eval()


def build_visualizer(batch_size: int = 8) -> AttributionVisualizer:
    """An :class:`AttributionVisualizer` over the held-out digits."""
    _, _, x_test, y_test = digits_split()
    dataset = [
        Batch(x_test[i : i + batch_size], y_test[i : i + batch_size])
        for i in range(0, len(y_test), batch_size)
    ]
    feature = ImageFeature(
        "Digit",
        baseline_transforms=[torch.zeros_like],  # a blank image
        input_transforms=[],
    )
    return AttributionVisualizer(
        models=[load_model()],
        classes=[str(d) for d in range(10)],
        features=[feature],
        dataset=dataset,
        score_func=lambda out: torch.softmax(out, dim=1),
    )


def example_builder(name: str) -> Callable[[], AttributionVisualizer]:
    """The ``build_visualizer`` of example ``name`` (one of :data:`EXAMPLES`).

    Example:
        >>> example_builder("digits") is build_visualizer
        True
    """
    if name not in EXAMPLES:
        raise ValueError(f"unknown example {name!r}; choose one of {sorted(EXAMPLES)}")
    return importlib.import_module(EXAMPLES[name]).build_visualizer


def _check(port: int) -> None:
    """Ask the running app for its config and one batch, over HTTP."""
    base = f"http://127.0.0.1:{port}"
    with urllib.request.urlopen(f"{base}/api/config", timeout=30) as r:
        config = json.load(r)
    body = json.dumps({"method": "Saliency", "num_examples": 2}).encode()
    req = urllib.request.Request(f"{base}/api/fetch", data=body,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        examples = json.load(r)["examples"]
    methods = ", ".join(m["id"] for m in config["methods"])
    features = ", ".join(f"{f['name']} ({f['type']})" for f in config["features"])
    actual = examples[0]["actual"]
    print(f"check: features [{features}]; methods [{methods}]; fetched {len(examples)} examples, "
          f"first predicted {examples[0]['predicted'][0]['label']} "
          f"(true {actual['label'] if actual else 'unknown'})")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=None, help="port (default: a free one)")
    parser.add_argument("--bind-all", action="store_true",
                        help="listen on every interface, not only 127.0.0.1")
    parser.add_argument("--host-name", action="append", default=[], metavar="NAME",
                        help="a host name the app answers to besides IP addresses and localhost "
                             "(e.g. this machine's name on the network, with --bind-all); repeatable")
    parser.add_argument("--check", action="store_true",
                        help="start, answer one request over HTTP, stop (no blocking)")
    parser.add_argument("--example", choices=list(EXAMPLES), default="digits",
                        help="digits (CNN, the default), tabular (breast cancer) or text (MiniLM)")
    args = parser.parse_args(argv)
    vis = example_builder(args.example)()
    if args.check:
        port = vis.serve(port=args.port, bind_all=args.bind_all, allowed_hosts=args.host_name)
        try:
            _check(port)
        finally:
            vis.stop()
        return
    print("Serving until interrupted (Ctrl-C to stop).", flush=True)
    try:
        vis.serve(blocking=True, port=args.port, bind_all=args.bind_all,
                  allowed_hosts=args.host_name)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
