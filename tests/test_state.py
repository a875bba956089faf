"""After every call -- also one that raises -- the model and inputs are as before.

One registry of methods; each is run once normally and once with a bad
target, and the model's hooks, training mode and ``requires_grad`` flags and
the inputs' values and flags are compared with a snapshot.
"""

import pytest
import torch
from models import SmallCNN, seeded

import attribuo.attr as A


def _model():
    model = seeded(SmallCNN())
    model.train()  # a non-default mode that must survive
    model.conv2.weight.requires_grad_(False)
    return model


# name -> (constructor(model), extra attribute kwargs)
REGISTRY = {
    "Saliency": (lambda m: A.Saliency(m), {}),
    "InputXGradient": (lambda m: A.InputXGradient(m), {}),
    "GuidedBackprop": (lambda m: A.GuidedBackprop(m), {}),
    "Deconvolution": (lambda m: A.Deconvolution(m), {}),
}


def _snapshot(model, x):
    hooks = [
        (len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks),
         len(getattr(m, "_backward_pre_hooks", {})))
        for m in model.modules()
    ]
    return {
        "hooks": hooks,
        "modes": [m.training for m in model.modules()],
        "flags": [p.requires_grad for p in model.parameters()],
        "params": [p.detach().clone() for p in model.parameters()],
        "x": x.clone(),
        "x_grad": x.requires_grad,
        "global_hooks": (
            len(torch.nn.modules.module._global_forward_hooks),
            len(torch.nn.modules.module._global_forward_pre_hooks),
        ),
    }


def _assert_same(before, after):
    assert after["hooks"] == before["hooks"]
    assert after["modes"] == before["modes"]
    assert after["flags"] == before["flags"]
    assert after["global_hooks"] == before["global_hooks"]
    for p, q in zip(before["params"], after["params"]):
        assert torch.equal(p, q)
    assert torch.equal(after["x"], before["x"])
    assert after["x_grad"] == before["x_grad"]


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_no_leftover_state(name):
    make, kwargs = REGISTRY[name]
    model = _model()
    torch.manual_seed(0)
    x = torch.randn(3, 1, 8, 8)
    before = _snapshot(model, x)
    method = make(model)
    method.attribute(x, target=1, **kwargs)
    after_x = _snapshot(model, x)
    _assert_same(before, after_x)
    with pytest.raises((ValueError, TypeError)):
        method.attribute(x, target=99, **kwargs)
    _assert_same(before, _snapshot(model, x))
