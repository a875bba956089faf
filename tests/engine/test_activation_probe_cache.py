"""The remembered activation probe runs once per model, mode and input signature."""

import gc
import weakref

import torch
from torch import nn

from attribuo._engine import batching
from attribuo._engine.batching import activation_bytes, remembered_activation_bytes
from attribuo._engine.paths import path_weights


class _Counting(nn.Module):
    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.lin = nn.Linear(4, width)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.lin(x).relu()


def test_same_signature_probes_once_with_the_same_answer():
    model = _Counting()
    x = torch.randn(3, 4)
    first = remembered_activation_bytes(model, (x,), (), grad=True)
    assert first > 0 and model.calls == 1
    assert remembered_activation_bytes(model, (torch.randn(3, 4),), (), grad=True) == first
    assert model.calls == 1
    without_grad = remembered_activation_bytes(model, (x,), (), grad=False)
    assert 0 < without_grad and model.calls == 2  # a different estimate: its own probe
    assert remembered_activation_bytes(model, (x,), (), grad=False) == without_grad
    assert model.calls == 2


def test_new_shape_mode_or_module_probes_again():
    model = _Counting()
    small = remembered_activation_bytes(model, (torch.randn(3, 4),), (), grad=True)
    big = remembered_activation_bytes(model, (torch.randn(30, 4),), (), grad=True)
    assert model.calls == 2 and big > small
    model.eval()  # modules start in training mode
    remembered_activation_bytes(model, (torch.randn(3, 4),), (), grad=True)
    assert model.calls == 3
    model.lin = nn.Linear(4, 64)  # a swapped layer creates larger activations
    wider = remembered_activation_bytes(model, (torch.randn(3, 4),), (), grad=True)
    assert model.calls == 4 and wider > small


def test_extra_args_take_part_and_unhashable_ones_disable_caching():
    class WithScale(_Counting):
        def forward(self, x, scale):
            return super().forward(x) * (scale if not isinstance(scale, list) else scale[0])

    model = WithScale()
    x = torch.randn(2, 4)
    remembered_activation_bytes(model, (x,), (2.0,), grad=True)
    remembered_activation_bytes(model, (x,), (3.0,), grad=True)
    assert model.calls == 2
    remembered_activation_bytes(model, (x,), ([2.0],), grad=True)
    remembered_activation_bytes(model, (x,), ([2.0],), grad=True)
    assert model.calls == 4


def test_cache_does_not_keep_the_model_alive():
    model = _Counting()
    remembered_activation_bytes(model, (torch.randn(2, 4),), (), grad=True)
    assert model in batching._PROBES
    alive = weakref.ref(model)
    del model
    gc.collect()
    assert alive() is None  # other entries may come and go with other tests' models


def test_gauss_legendre_weights_are_fresh_lists_each_call():
    alphas, weights = path_weights("gausslegendre", 7)
    alphas.append(5.0)
    weights[0] = 0.0
    again_a, again_w = path_weights("gausslegendre", 7)
    assert len(again_a) == 7 and again_w[0] > 0
    assert abs(sum(again_w) - 1.0) < 1e-12


def test_plain_probe_always_runs_and_wrappers_are_not_remembered():
    model = _Counting()
    x = torch.randn(2, 4)
    assert activation_bytes(model, (x,), (), grad=True) == activation_bytes(model, (x,), (), grad=True)
    assert model.calls == 2
    bound = model.forward  # a bound method: rebuilt on every access, never a cache key
    remembered_activation_bytes(bound, (x,), (), grad=True)
    remembered_activation_bytes(bound, (x,), (), grad=True)
    assert model.calls == 4


def test_path_methods_probe_once_across_calls():
    from attribuo.attr import IntegratedGradients, LayerConductance

    model = _Counting(width=16)
    x = torch.randn(3, 4)
    first = IntegratedGradients(model).attribute(x, target=1, n_steps=8)
    assert model.calls == 2  # the probe and one chunk of 8 steps
    again = IntegratedGradients(model).attribute(x, target=1, n_steps=8)
    assert model.calls == 3 and torch.equal(first, again)
    LayerConductance(model, model.lin).attribute(x, target=1, n_steps=8)
    assert model.calls == 4  # same model and inputs: the remembered probe serves it too
