"""GuidedBackprop / Deconvolution's native-ReLU fast path against the autograd.Function reference.

The fast path runs torch's own ReLU and adjusts its backward node; the
reference (``relu_rules``) replaces every ReLU by a Python autograd
Function with the rule's backward. Both must give the same numbers on a
residual CNN with BatchNorm, on every ReLU spelling, and on the cases the
fast path hands to the reference (an in-place ReLU on a view).
"""

import pytest
import torch
from torch import nn

from attribuo._engine.overrides import overriding, relu_rules
from attribuo.attr import Deconvolution, GuidedBackprop, Saliency
from attribuo.attr.gradient.guided_backprop import _deconv, _guided
from benchmarks.bench_resnet import resnet

REFERENCE = {GuidedBackprop: _guided, Deconvolution: _deconv}


def _reference(method, model, x, target):
    forward = overriding(model, relu_rules(REFERENCE[method]))
    leaf = x.detach().clone().requires_grad_()
    (grad,) = torch.autograd.grad(forward(leaf)[:, target].sum(), leaf)
    return grad


@pytest.mark.parametrize("method", [GuidedBackprop, Deconvolution])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_residual_bn_cnn_matches_the_function_reference(method, dtype):
    model = resnet().to(dtype)
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32, dtype=dtype)
    before = x.clone()
    got = method(model).attribute(x, target=3)
    torch.testing.assert_close(got, _reference(method, model, x, 3), atol=1e-6, rtol=0)
    assert torch.equal(x, before)  # the user's tensor is untouched
    # the rule was applied: the result is not the plain gradient
    assert not torch.allclose(got, Saliency(model).attribute(x, target=3, abs=False))


class _Spellings(nn.Module):
    """Every ReLU spelling, an in-place one on a view, and a ReLU on a constant."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.a, self.b, self.c = nn.Linear(6, 8), nn.Linear(8, 8), nn.Linear(8, 3)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        h = self.act(self.a(x))
        h = torch.relu(self.b(h)) + nn.functional.relu(h) + self.b(h).relu()
        h = h * 1.0
        h[:, :4].relu_()  # in place on a view: its node is the view's, not a ReLU's
        h = torch.relu_(h - 0.1)
        return self.c(h) + torch.relu(torch.ones(3))  # no graph behind this one


@pytest.mark.parametrize("method", [GuidedBackprop, Deconvolution])
def test_every_spelling_matches_the_function_reference(method):
    model = _Spellings()
    torch.manual_seed(2)
    x = torch.randn(5, 6)
    got = method(model).attribute(x, target=1)
    torch.testing.assert_close(got, _reference(method, model, x, 1), atol=1e-6, rtol=0)


def test_no_hooks_outlive_the_call():
    model = resnet()
    torch.manual_seed(3)
    x = torch.randn(1, 3, 16, 16)
    GuidedBackprop(model).attribute(x, target=0)
    leaf = x.clone().requires_grad_()
    (plain,) = torch.autograd.grad(model(leaf)[:, 0].sum(), leaf)
    torch.testing.assert_close(Saliency(model).attribute(x, target=0, abs=False), plain, atol=0, rtol=0)
    assert all(not m._forward_hooks and not m._backward_hooks for m in model.modules())
