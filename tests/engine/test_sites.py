"""Layer sites against the same model written in two halves by hand."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from attribuo._engine.call import parse_call
from attribuo._engine.sites import (
    capture,
    replacing_all,
    site_function,
    site_gradients,
    site_values,
)


class TwoStage(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.first, self.second = nn.Linear(3, 4).double(), nn.Linear(4, 2).double()
        self.act = nn.ReLU(inplace=True)  # in place after the site: the site's values must survive

    def forward(self, x, shift):
        return self.second(self.act(self.first(x)) + shift)


def _data(n=3):
    g = torch.Generator().manual_seed(5)
    return torch.randn(n, 3, generator=g, dtype=torch.float64), torch.randn(n, 4, generator=g, dtype=torch.float64)


def test_site_values_are_the_layer_output_and_input():
    model, (x, shift) = TwoStage(), _data()
    (out,) = site_values(model, [model.first], (x,), (shift,))
    torch.testing.assert_close(out.values[0], model.first(x), rtol=0, atol=0)
    (inp,) = site_values(model, [model.second], (x,), (shift,), use_input=True)
    torch.testing.assert_close(inp.values[0], torch.relu(model.first(x)) + shift, rtol=0, atol=0)
    assert out.calls == 1 and not out.was_tuple


def test_site_gradients_match_the_hand_split_model():
    model, (x, shift) = TwoStage(), _data()
    (record,) = site_gradients(model, [model.first], parse_call(x, [0, 1, 0], shift))
    hidden = model.first(x).detach().requires_grad_()
    out = model.second(torch.relu(hidden) + shift)
    (expected,) = torch.autograd.grad(out[[0, 1, 2], [0, 1, 0]].sum(), hidden)
    torch.testing.assert_close(record.grads[0], expected, rtol=0, atol=0)
    torch.testing.assert_close(record.values[0], hidden.detach(), rtol=0, atol=0)


def test_site_function_is_the_rest_of_the_model():
    model, (x, shift) = TwoStage(), _data()
    g = site_function(model, model.first, parse_call(x, None, shift))
    values = torch.randn(6, 4, dtype=torch.float64)  # two copies of the batch
    expected = model.second(torch.relu(values) + torch.cat([shift, shift]))
    torch.testing.assert_close(g(values), expected, rtol=0, atol=0)
    assert values.min() < 0  # the in-place ReLU ran on a copy
    with pytest.raises(ValueError, match="not a multiple"):
        g(torch.randn(4, 4, dtype=torch.float64))


def test_replacing_all_checks_shapes_and_calls():
    model, (x, shift) = TwoStage(), _data()
    with pytest.raises(ValueError, match="replacement values"):
        with replacing_all([model.first], [(torch.zeros(3, 5, dtype=torch.float64),)]):
            model(x, shift)
    twice = nn.Sequential(model.first, nn.Linear(4, 3).double(), model.first)
    with pytest.raises(ValueError, match="more than once"):
        site_values(twice, [model.first], (x,))
    with pytest.raises(ValueError, match="was not called"):
        site_values(model, [nn.Linear(3, 3)], (x,), (shift,))


def test_hooks_are_removed_on_every_exit():
    model, (_, shift) = TwoStage(), _data()
    with pytest.raises(RuntimeError, match="inside"):
        with capture([model.first]):
            raise RuntimeError("inside")
    with pytest.raises(RuntimeError):  # the model itself fails midway
        site_values(model, [model.first, model.second], (torch.zeros(3, 7, dtype=torch.float64),), (shift,))
    assert not model.first._forward_hooks and not model.first._forward_pre_hooks
    assert not model.second._forward_hooks and not model.second._forward_pre_hooks
