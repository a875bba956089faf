"""Train the digits CNN of :mod:`attribuo.insights.example` and save its weights.

``python -m attribuo.insights.train_example`` rewrites ``models/digits_cnn.pt``
(about 20 s on a CPU). Training is seeded, and uses only the training part of
:func:`~attribuo.insights.example.digits_split`; the held-out accuracy is
printed at the end.
"""

from __future__ import annotations

import torch
from torch import nn

from .example import WEIGHTS, DigitsCNN, digits_split


def train(epochs: int = 40, batch_size: int = 64, seed: int = 0) -> DigitsCNN:
    """A :class:`DigitsCNN` trained with Adam on the training split."""
    torch.manual_seed(seed)
    x_train, y_train, _, _ = digits_split()
    model = DigitsCNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(y_train))
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            optimizer.zero_grad()
            loss_fn(model(x_train[idx]), y_train[idx]).backward()
            optimizer.step()
    return model.eval()


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def main() -> None:
    model = train()
    _, _, x_test, y_test = digits_split()
    WEIGHTS.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), WEIGHTS)
    print(f"held-out accuracy {accuracy(model, x_test, y_test):.4f}; saved {WEIGHTS}")


if __name__ == "__main__":
    main()
