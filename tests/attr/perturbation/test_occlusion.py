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


def test_occlusion_of_inputs_with_no_feature_dims():
    # 0-d per example: the window is the one element (Captum's test_simple_multi_input_0d)
    def net(a, b):
        return torch.relu(a - 1) - torch.relu(b)

    x, y = torch.tensor([-10.0, 3.0]), torch.tensor([-5.0, 1.0])
    got = Occlusion(net).attribute((x, y), sliding_window_shapes=((), ()))
    torch.testing.assert_close(got[0], torch.tensor([0.0, 2.0]))
    torch.testing.assert_close(got[1], torch.tensor([0.0, -1.0]))
