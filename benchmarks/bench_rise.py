"""RISE with 4,000 masks on a 224-pixel residual CNN, vs its forward floor.

The model (built here): a stride-2 conv-BN-ReLU stem and a max-pool (to
56x56), three basic residual blocks (widths 16/32/64, the last two strided
with 1x1 conv-BN skips), global average pooling and a linear head, in eval
mode; one 3x224x224 image, target 3. RISE runs at its defaults (7x7 grid,
p = 0.5) with 4,000 masks. Captum has no RISE, so the "Captum" slot holds
the floor, as does the floor: the same 4,000 masked images (masks built in
advance, outside the timing) through the model in the chunks RISE uses, so
the ratio is what mask generation, blending and the saliency product add.
Goal: within 1.1x of the floor.
"""

from __future__ import annotations

import torch
from torch import nn

from attribuo.attr.perturbation.rise import RISE, rise_masks

from .harness import Case

N_MASKS, SIZE, TARGET, SEED = 4000, 224, 3, 0


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.skip = nn.Identity() if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(h)) + self.skip(x))


def residual_cnn() -> nn.Module:
    """The benchmark's model: seeded, non-trivial batch-norm statistics, eval mode."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        Block(16, 16, 1), Block(16, 32, 2), Block(32, 64, 2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10),
    )
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.1, 0.1)
    return model.eval()


def chunk_sizes(model: nn.Module, run) -> list[int]:
    """The batch sizes of the forwards ``run()`` makes (its first is the unmasked input)."""
    sizes: list[int] = []
    handle = model.register_forward_pre_hook(lambda _, args: sizes.append(args[0].shape[0]))
    try:
        run()
    finally:
        handle.remove()
    return sizes[1:]


def cases() -> list[Case]:
    model = residual_cnn()
    torch.manual_seed(1)
    x = torch.rand(1, 3, SIZE, SIZE)

    def ours():
        return RISE(model).attribute(x, target=TARGET, n_masks=N_MASKS, seed=SEED)

    sizes = chunk_sizes(model, ours)
    masks = rise_masks(N_MASKS, (SIZE, SIZE), seed=SEED)[:, None]  # [masks, 1, H, W], built in advance

    def floor():
        with torch.no_grad():
            start = 0
            for size in sizes:
                model(x * masks[start:start + size])
                start += size
            return start

    notes = f"chunks of {sizes[0]} mask(s); Captum has no RISE: its slot holds the floor"
    return [Case(f"RISE {N_MASKS} masks ResNet224 b1 (Captum has none: floor only)", ours, floor, floor=floor,
                 repeats=3, notes=notes)]
