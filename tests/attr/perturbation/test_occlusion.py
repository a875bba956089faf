"""Occlusion: sliding windows against hand-computed values."""

import warnings

import torch

from attribuo.attr import Occlusion

warnings.filterwarnings("ignore", message=".*Feature mask.*")


def test_occlusion_hand_computed_1d():
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    attr = Occlusion(lambda t: t.sum(1)).attribute(x, sliding_window_shapes=(2,), strides=2)
    torch.testing.assert_close(attr, torch.tensor([[3.0, 3.0, 7.0, 7.0]]))
    # windows [0,1] [1,2] [2,3]: each covered element averages the windows covering it
    attr = Occlusion(lambda t: t.sum(1)).attribute(x, sliding_window_shapes=(2,), strides=1)
    torch.testing.assert_close(attr, torch.tensor([[3.0, 4.0, 6.0, 7.0]]))
