"""Layer and neuron methods vs Captum and the floor.

A small CNN on 8 RGB 32x32 images, and an embedding + MLP text model on
token ids. The floor of the path methods is one ``torch.autograd.grad`` of
the summed target w.r.t. the inputs expanded to all steps (built already):
a layer path method must at least run every step forward and backward.
"""

from __future__ import annotations

import torch
from captum import attr as captum_attr
from torch import nn

from attribuo import attr as attribuo_attr

from .harness import Case

BATCH = 8
N_STEPS = 50


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.head = nn.Linear(64 * 16 * 16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.relu2(self.conv2(self.pool(self.relu1(self.conv1(x)))))
        return self.head(h.flatten(1))


class TextModel(nn.Module):
    def __init__(self, vocab: int = 5000, dim: int = 64, length: int = 64) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.mlp = nn.Sequential(nn.Linear(dim * length, 256), nn.ReLU(), nn.Linear(256, 4))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.emb(tokens).flatten(1))


def _floor(model: nn.Module, expanded: torch.Tensor, target: int):
    def run():
        leaf = expanded.detach().requires_grad_()
        return torch.autograd.grad(model(leaf)[:, target].sum(), leaf)

    return run


def cases() -> list[Case]:
    torch.manual_seed(0)
    cnn = SmallCNN().eval()
    x = torch.randn(BATCH, 3, 32, 32)
    text = TextModel().eval()
    ids = torch.randint(1, 5000, (BATCH, 64))
    target = 3
    steps_expanded = x.repeat(N_STEPS, 1, 1, 1)

    def both(name: str, *args, **kwargs):
        ours = getattr(attribuo_attr, name)(*args)
        theirs = getattr(captum_attr, name)(*args)
        return lambda: ours.attribute(**kwargs), lambda: theirs.attribute(**kwargs)

    lc = both("LayerConductance", cnn, cnn.conv2, inputs=x, target=target, n_steps=N_STEPS)
    lig = both("LayerIntegratedGradients", text, text.emb, inputs=ids, target=1, n_steps=N_STEPS)
    nc = both("NeuronConductance", cnn, cnn.conv2, inputs=x, neuron_selector=(5, 4, 4),
              target=target, n_steps=N_STEPS)
    gxa = both("LayerGradientXActivation", cnn, cnn.conv1, inputs=x, target=target)
    return [
        Case(f"LayerConductance conv2, n_steps={N_STEPS}, batch {BATCH}", *lc,
             floor=_floor(cnn, steps_expanded, target)),
        Case(f"LayerIntegratedGradients embedding, n_steps={N_STEPS}, batch {BATCH}", *lig),
        Case(f"NeuronConductance conv2, n_steps={N_STEPS}, batch {BATCH}", *nc,
             floor=_floor(cnn, steps_expanded, target)),
        Case(f"LayerGradientXActivation conv1, batch {BATCH}", *gxa),
    ]
