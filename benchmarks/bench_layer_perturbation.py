"""LayerFeatureAblation vs Captum (at its defaults) and the floor.

attribuo runs the model before the layer once per chunk of perturbed
copies (prefix reuse); Captum runs the whole model once per perturbation.
Models: a residual CNN with BatchNorm on 3x64x64 at batch 1 and 8, one
feature per channel of a late layer (the last block) and of an early one
(the first block); a 4-layer ``nn.TransformerEncoder`` (d_model 128, 64
tokens), one feature per token position of layer 2's output. The floor is
the part of the model after the layer on every perturbed copy in one
no-grad forward (the copies built already): the least any layer ablation
must compute.
"""

from __future__ import annotations

import torch
from torch import nn

from .harness import Case


class Block(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))


def _down(c_in: int, c_out: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())


class ResCNN(nn.Module):
    """3x64x64 -> 32@32x32 -> 64@16x16 -> 128@8x8 -> 10, one residual block per stage."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.block1 = _down(3, 32), Block(32)
        self.down2, self.block2 = _down(32, 64), Block(64)
        self.down3, self.block3 = _down(64, 128), Block(128)
        self.head = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.block1(self.stem(x))
        return self.suffix_after_block1(h)

    def suffix_after_block1(self, h: torch.Tensor) -> torch.Tensor:
        return self.suffix_after_block3(self.block3(self.down3(self.block2(self.down2(h)))))

    def suffix_after_block3(self, h: torch.Tensor) -> torch.Tensor:
        return self.head(h.mean((2, 3)))


class Encoder(nn.Module):
    def __init__(self, vocab: int = 1000, d: int = 128, tokens: int = 64) -> None:
        super().__init__()
        self.embed, self.position = nn.Embedding(vocab, d), nn.Parameter(torch.randn(1, tokens, d) * 0.02)
        layer = nn.TransformerEncoderLayer(d, 4, 4 * d, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 4, enable_nested_tensor=False)
        self.head = nn.Linear(d, 2)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embed(ids) + self.position).mean(1))

    def suffix_after_layer2(self, h: torch.Tensor) -> torch.Tensor:
        for layer in self.encoder.layers[2:]:
            h = layer(h)
        return self.head(h.mean(1))


def _floor(suffix, values: torch.Tensor, mask: torch.Tensor, target: int):
    """The suffix on every ablated copy (one per feature id of ``mask``), built beforehand."""
    features = int(mask.max()) + 1
    keep = torch.stack([(mask != f) for f in range(features)])  # [F, 1, ...]
    copies = (values.unsqueeze(0) * keep).reshape(-1, *values.shape[1:])

    def run():
        with torch.no_grad():
            return suffix(copies)[:, target]

    return run


def _case(name, model, layer, x, mask, suffix, values, captum_attr, attribuo_attr, repeats=3):
    ours = attribuo_attr.LayerFeatureAblation(model, layer)
    theirs = captum_attr.LayerFeatureAblation(model, layer)
    return Case(
        name,
        lambda: ours.attribute(x, target=1, layer_mask=mask),
        lambda: theirs.attribute(x, target=1, layer_mask=mask),
        floor=_floor(suffix, values, mask, 1),
        repeats=repeats,
    )


def cases() -> list[Case]:
    from captum import attr as captum_attr

    from attribuo import attr as attribuo_attr

    torch.manual_seed(0)
    cnn = ResCNN().eval()
    for m in cnn.modules():  # trained-looking statistics, so BatchNorm is not the identity
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    encoder = Encoder().eval()
    out = []
    for batch in (1, 8):
        x = torch.randn(batch, 3, 64, 64, generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            early = cnn.block1(cnn.stem(x))
            late = cnn.block3(cnn.down3(cnn.block2(cnn.down2(early))))
        for label, layer, values, suffix in (
            ("late (block3, 128 channels)", cnn.block3, late, cnn.suffix_after_block3),
            ("early (block1, 32 channels)", cnn.block1, early, cnn.suffix_after_block1),
        ):
            mask = torch.arange(values.shape[1]).reshape(1, -1, 1, 1)  # one feature per channel
            out.append(_case(
                f"LayerFeatureAblation ResCNN 64x64 batch {batch}, {label}",
                cnn, layer, x, mask, suffix, values, captum_attr, attribuo_attr,
            ))
        ids = torch.randint(0, 1000, (batch, 64), generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            h = encoder.embed(ids) + encoder.position
            h = encoder.encoder.layers[1](encoder.encoder.layers[0](h))
        positions = torch.arange(64).reshape(1, 64, 1)  # one feature per token position
        out.append(_case(
            f"LayerFeatureAblation Encoder 4x128, 64 tokens batch {batch}, layer 2, per position",
            encoder, encoder.encoder.layers[1], ids, positions, encoder.suffix_after_layer2, h,
            captum_attr, attribuo_attr,
        ))
    return out
