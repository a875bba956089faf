"""Run one perturbation method on 4 images of 3x224x224 and print the peak RSS (MiB).

Executed in a subprocess by test_perturbation_memory.py so that the peak
belongs to this job alone.
"""

import resource
import sys
import time

import torch
from torch import nn

from attribuo.attr import FeatureAblation, Occlusion


def main(method: str) -> None:
    torch.manual_seed(0)
    # a tiny CNN: one strided conv and a linear read-out, cheap enough for ~200k copies
    model = nn.Sequential(nn.Conv2d(3, 2, 8, stride=8), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 28 * 28, 3)).eval()
    images = torch.rand(4, 3, 224, 224)
    start = time.perf_counter()
    if method == "occlusion":
        attr = Occlusion(model).attribute(images, sliding_window_shapes=(3, 16, 16), strides=8, target=0)
    else:
        pixels = torch.arange(224 * 224).reshape(1, 1, 224, 224)
        attr = FeatureAblation(model).attribute(images, target=0, feature_mask=pixels)
    took = time.perf_counter() - start
    assert attr.shape == images.shape and bool(torch.isfinite(attr).all())
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{peak_mib:.1f} {took:.2f}")


if __name__ == "__main__":
    main(sys.argv[1])
