"""attribuo.module against Captum 0.9.0: same seed, same arguments, same numbers."""

from __future__ import annotations

import captum.module as C
import pytest
import torch
from torch.testing import assert_close

import attribuo.module as A

NAMES = ["BinaryConcreteStochasticGates", "GaussianStochasticGates"]
OPTIONS = {
    "BinaryConcreteStochasticGates": [
        {},
        dict(reg_weight=0.3, temperature=0.4, lower_bound=-0.3, upper_bound=1.05, eps=1e-6),
    ],
    "GaussianStochasticGates": [{}, dict(reg_weight=0.3, std=0.2)],
}
PARAM = {"BinaryConcreteStochasticGates": "log_alpha_param", "GaussianStochasticGates": "mu"}
MASK = torch.tensor([[0, 1, 1], [2, 2, 3]])


def cases():
    for name in NAMES:
        for options in OPTIONS[name]:
            for masked in (False, True):
                for reduction in ("sum", "mean", "none"):
                    yield name, options, masked, reduction


def run(module_cls, kwargs, x, train, seed, reg_backward=True):
    """Build, run twice (the RNG stream must advance alike), backprop; collect everything."""
    torch.manual_seed(seed)
    gates = module_cls(**kwargs).train(train)
    outputs = []
    for _ in range(2):
        gated, reg = gates(x)
        outputs += [gated.detach(), reg.detach()]
    (gated * torch.linspace(-1, 1, gated[0].numel()).reshape(gated[0].shape)).sum().backward()
    if reg_backward:
        reg.sum().backward()
    param = getattr(gates, PARAM[module_cls.__name__])
    return outputs + [
        param.detach().clone(),
        param.grad,
        gates.get_gate_values(),
        gates.get_gate_values(clamp=False),
        gates.get_gate_active_probs(),
    ]


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("name, options, masked, reduction", list(cases()))
def test_gates_match_captum(name, options, masked, reduction, train):
    n_gates = 4 if masked else 6
    kwargs = dict(n_gates=n_gates, reg_reduction=reduction, **options)
    if masked:
        kwargs["mask"] = MASK
    x = torch.randn(5, 2, 3, generator=torch.Generator().manual_seed(1))
    # Captum scales the unreduced penalty in place, which breaks its backward through the
    # sigmoid (hard concrete, reduction "none"); compare gradients of the gated output only
    # there, and check ours separately in test_unreduced_penalty_is_differentiable
    reg_backward = not (name == "BinaryConcreteStochasticGates" and reduction == "none")
    ours = run(getattr(A, name), kwargs, x, train, seed=7, reg_backward=reg_backward)
    theirs = run(getattr(C, name), kwargs, x, train, seed=7, reg_backward=reg_backward)
    for a, c in zip(ours, theirs, strict=True):
        assert a.dtype == c.dtype and a.shape == c.shape
        assert_close(a, c, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("train", [True, False])
def test_from_pretrained_matches_captum(name, train):
    values = torch.tensor([-1.5, 0.1, 0.45, 2.0])
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(2))
    results = []
    for package in (A, C):
        torch.manual_seed(3)
        gates = getattr(package, name)._from_pretrained(values, reg_weight=0.5).train(train)
        gated, reg = gates(x)
        results.append((gated, reg, gates.get_gate_values(), gates.get_gate_active_probs()))
    for a, c in zip(*results, strict=True):
        assert_close(a, c, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", NAMES)
def test_float64_input_and_state_dict_match_captum(name):
    torch.manual_seed(0)
    theirs = getattr(C, name)(4, mask=torch.tensor([0, 1, 2, 3, 3])).train()
    ours = getattr(A, name)(4, mask=torch.tensor([0, 1, 2, 3, 3])).train()
    ours.load_state_dict(theirs.state_dict(), strict=True)  # same parameter and buffer names
    x = torch.randn(6, 5, dtype=torch.float64)
    torch.manual_seed(4)
    gated_c, reg_c = theirs(x)
    torch.manual_seed(4)
    gated_a, reg_a = ours(x)
    assert gated_a.dtype == gated_c.dtype == torch.float64
    assert_close(gated_a, gated_c)
    assert_close(reg_a, reg_c)


@pytest.mark.parametrize("name", NAMES)
def test_unreduced_penalty_is_differentiable(name):
    """Where Captum's backward fails (see above), ours gives the gradient of the summed penalty."""
    grads = {}
    for reduction in ("none", "sum"):
        torch.manual_seed(0)
        gates = getattr(A, name)(3, reg_weight=0.4, reg_reduction=reduction)
        _, reg = gates(torch.ones(2, 3))
        reg.sum().backward()
        grads[reduction] = getattr(gates, PARAM[name]).grad
    assert grads["none"].abs().min() > 0
    assert_close(grads["none"], grads["sum"])
    if name == "BinaryConcreteStochasticGates":
        torch.manual_seed(0)
        captum_gates = C.BinaryConcreteStochasticGates(3, reg_weight=0.4, reg_reduction="none")
        _, reg = captum_gates(torch.ones(2, 3))
        with pytest.raises(RuntimeError, match="inplace"):
            reg.sum().backward()
