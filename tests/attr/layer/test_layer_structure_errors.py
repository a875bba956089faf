"""Layers that cannot be attributed as given: a clear error instead of zeros or a torch trace."""

import pytest
import torch
from torch import nn

from attribuo._engine.errors import ArgumentTypeError, ArgumentValueError
from attribuo.attr import LayerConductance, LayerGradientXActivation, LayerIntegratedGradients


def test_listed_layer_feeding_another_listed_layer_is_rejected():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    x = torch.rand(2, 3)
    with pytest.raises(ArgumentValueError, match=r"layer\[0\] \(Linear\)"):
        LayerIntegratedGradients(net, [net[0], net[2]]).attribute(x, target=0)
    # asking for materialized gradients accepts the zeros, as in Captum
    first, _ = LayerIntegratedGradients(net, [net[0], net[2]]).attribute(
        x, target=0, grad_kwargs={"materialize_grads": True}
    )
    assert bool((first == 0).all())
    # two layers on separate branches both reach the output: accepted, and each complete on its own
    branches = _TwoBranches()
    attrs = LayerIntegratedGradients(branches, [branches.left, branches.right]).attribute(x, target=0)
    assert all(bool(a.abs().sum() > 0) for a in attrs)


class _TwoBranches(nn.Module):
    def __init__(self):
        super().__init__()
        self.left, self.right = nn.Linear(3, 2), nn.Linear(3, 2)

    def forward(self, x):
        return self.left(x) * self.right(x)


class _Block(nn.Module):
    """Returns ``(hidden, None)``, as attention blocks that skip their weights do."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 3)

    def forward(self, x):
        return self.lin(x), None


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.block, self.head = _Block(), nn.Linear(3, 2)

    def forward(self, x):
        return self.head(self.block(x)[0])


@pytest.mark.parametrize("method", [LayerIntegratedGradients, LayerGradientXActivation, LayerConductance])
def test_layer_output_tuple_with_none_names_the_position(method):
    net = _Net()
    with pytest.raises(ArgumentTypeError, match=r"position 1 \(NoneType\)"):
        method(net, net.block).attribute(torch.rand(2, 3), target=0)
    # the block's tensor-valued submodule works
    assert method(net, net.block.lin).attribute(torch.rand(2, 3), target=0).shape == (2, 3)
