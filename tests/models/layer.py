"""Models for the layer and neuron tests: a CNN and an embedding + MLP text model."""

from __future__ import annotations

import torch
from torch import nn


class TextModel(nn.Module):
    """Token ids ``[N, L]`` -> embeddings -> MLP -> 3 logits.

    A float input is taken to be the embeddings already (``[N, L, dim]``),
    so input-gradient methods can run on the same network.
    """

    def __init__(self, vocab: int = 20, dim: int = 6, length: int = 5, hidden: int = 8):
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.fc1 = nn.Linear(dim * length, hidden)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(hidden, 3)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = tokens if tokens.is_floating_point() else self.emb(tokens)
        return self.fc2(self.relu(self.fc1(x.flatten(1))))


def text_model() -> TextModel:
    torch.manual_seed(3)
    model = TextModel().double()
    for p in model.parameters():
        nn.init.normal_(p, std=0.5)
    return model.eval()


def tokens(n: int = 4, length: int = 5, seed: int = 4) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, 20, (n, length), generator=g)


class CNN(nn.Module):
    """Conv -> ReLU -> Conv -> MaxPool -> Linear.

    No two non-linearities touch: where they do (ReLU -> MaxPool) Captum's
    DeepLift is knowingly incomplete and attribuo's is not
    (tests/parity/test_deeplift_parity.py), which is no layer question.
    """

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(6 * 4 * 4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.conv2(self.relu1(self.conv1(x)))).flatten(1))


def cnn() -> CNN:
    torch.manual_seed(2)
    model = CNN().double()
    for p in model.parameters():
        nn.init.normal_(p, std=0.5)
    return model.eval()
