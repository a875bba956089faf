"""GuidedBackprop and Deconvolution: every ReLU spelling, a closed form."""

import pytest
import torch
from models import FunctionalReLUModel, ModuleReLUModel, seeded

from attribuo.attr import Deconvolution, GuidedBackprop, Saliency


@pytest.mark.parametrize("spelling", ["F.relu", "torch.relu", "Tensor.relu", "inplace", "reused"])
@pytest.mark.parametrize("method", [GuidedBackprop, Deconvolution])
def test_modified_relu_rules_see_every_spelling(spelling, method):
    model = seeded(FunctionalReLUModel(spelling))
    reference = ModuleReLUModel(model)
    torch.manual_seed(3)
    x = torch.randn(6, 6)
    expected = method(reference).attribute(x, target=1)
    got = method(model).attribute(x, target=1)
    torch.testing.assert_close(got, expected, atol=0, rtol=0)
    # and it really differs from the plain gradient, so the rule was applied
    assert not torch.allclose(got, Saliency(model).attribute(x, target=1, abs=False))


def test_guided_backprop_closed_form_one_hidden_layer():
    # f(x) = v . relu(W x): guided gradient = W^T (relu(v) * 1[Wx > 0])
    torch.manual_seed(0)
    W, v = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    x = torch.randn(5, 3, dtype=torch.float64)

    def f(inp):
        return (torch.relu(inp @ W.T) * v).sum(1)

    hidden = x @ W.T
    guided = ((hidden > 0) * v.clamp(min=0)) @ W
    deconv = (v.clamp(min=0) * torch.ones_like(hidden)) @ W
    torch.testing.assert_close(GuidedBackprop(f).attribute(x), guided)
    torch.testing.assert_close(Deconvolution(f).attribute(x), deconv)
