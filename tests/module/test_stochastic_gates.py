"""Stochastic gates against closed forms, Monte Carlo estimates and properties."""

from __future__ import annotations

import math
from statistics import NormalDist

import pytest
import torch
from torch.testing import assert_close

from attribuo._engine.errors import ArgumentTypeError, ArgumentValueError
from attribuo.module import (
    BinaryConcreteStochasticGates,
    GaussianStochasticGates,
    StochasticGatesBase,
)

F64 = torch.float64
CLASSES = [BinaryConcreteStochasticGates, GaussianStochasticGates]
PARAM = {BinaryConcreteStochasticGates: "log_alpha_param", GaussianStochasticGates: "mu"}
# trained values spanning closed, partly open and fully open gates
VALUES = {
    BinaryConcreteStochasticGates: [-4.0, -1.3, -0.05, 0.0, 0.6, 2.5, 5.0],
    GaussianStochasticGates: [-0.7, -0.01, 0.0, 0.2, 0.55, 0.99, 1.6],
}


def pretrained(cls, **kwargs):
    return cls._from_pretrained(torch.tensor(VALUES[cls], dtype=F64), **kwargs)


def sigmoid(v: float) -> float:
    return 1 / (1 + math.exp(-v))


def logit(p: float) -> float:
    return math.log(p / (1 - p))


def hard_concrete_eval_gate(log_alpha: float, lower: float, upper: float) -> float:
    return min(1.0, max(0.0, sigmoid(log_alpha) * (upper - lower) + lower))


def hard_concrete_tail(log_alpha: float, threshold: float, temperature, lower, upper) -> float:
    """P(stretched concrete > threshold), derived from the sampling formula.

    stretched > t  <=>  s > c with c = (t - lower) / (upper - lower)
                   <=>  logit(u) > temperature * logit(c) - log_alpha
                   <=>  u > sigmoid(temperature * logit(c) - log_alpha)
    """
    c = (threshold - lower) / (upper - lower)
    return 1 - sigmoid(temperature * logit(c) - log_alpha)


# ----------------------------------------------------------------- eval mode


@pytest.mark.parametrize("bounds", [(-0.1, 1.1), (-0.5, 1.02)])
def test_hard_concrete_eval_gates_closed_form(bounds):
    lower, upper = bounds
    gates = pretrained(BinaryConcreteStochasticGates, lower_bound=lower, upper_bound=upper).eval()
    expected = torch.tensor(
        [hard_concrete_eval_gate(a, lower, upper) for a in VALUES[BinaryConcreteStochasticGates]],
        dtype=F64,
    )
    raw = torch.tensor(
        [sigmoid(a) * (upper - lower) + lower for a in VALUES[BinaryConcreteStochasticGates]],
        dtype=F64,
    )
    assert_close(gates.get_gate_values(), expected)
    assert_close(gates.get_gate_values(clamp=False), raw)
    x = torch.randn(5, 7, dtype=F64)
    gated, _ = gates(x)
    assert_close(gated, x * expected)


def test_gaussian_eval_gates_closed_form():
    gates = pretrained(GaussianStochasticGates).eval()
    mu = VALUES[GaussianStochasticGates]
    expected = torch.tensor([min(1.0, max(0.0, m)) for m in mu], dtype=F64)
    assert_close(gates.get_gate_values(), expected)
    assert_close(gates.get_gate_values(clamp=False), torch.tensor(mu, dtype=F64))
    x = torch.randn(4, 7, dtype=F64)
    assert_close(gates(x)[0], x * expected)


@pytest.mark.parametrize("cls", CLASSES)
def test_eval_is_deterministic_and_train_is_random(cls):
    gates = pretrained(cls)
    x = torch.ones(64, 7, dtype=F64)
    gates.eval()
    first, second = gates(x)[0], gates(x)[0]
    assert torch.equal(first, second)
    assert torch.equal(first, first[:1].expand_as(first))  # same gate for every example
    gates.train()
    a, b = gates(x)[0], gates(x)[0]
    assert not torch.equal(a, b)
    assert not torch.equal(a, a[:1].expand_as(a))  # examples draw their own gates
    assert a.min() >= 0 and a.max() <= 1


# ------------------------------------------------------- active probabilities


@pytest.mark.parametrize("temperature", [2 / 3, 0.3])
def test_hard_concrete_active_probs_closed_form(temperature):
    lower, upper = -0.2, 1.3
    gates = pretrained(
        BinaryConcreteStochasticGates, temperature=temperature, lower_bound=lower, upper_bound=upper
    )
    expected = [
        hard_concrete_tail(a, 0.0, temperature, lower, upper)
        for a in VALUES[BinaryConcreteStochasticGates]
    ]
    assert_close(gates.get_gate_active_probs(), torch.tensor(expected, dtype=F64))


@pytest.mark.parametrize("std", [0.5, 0.2])
def test_gaussian_active_probs_closed_form(std):
    gates = pretrained(GaussianStochasticGates, std=std)
    expected = [1 - NormalDist(m, std).cdf(0.0) for m in VALUES[GaussianStochasticGates]]
    assert_close(gates.get_gate_active_probs(), torch.tensor(expected, dtype=F64))


@pytest.mark.parametrize("cls", CLASSES)
def test_sampled_gates_match_distribution(cls):
    """Fractions of closed and fully open sampled gates match the analytic tails."""
    torch.manual_seed(0)
    gates = pretrained(cls).train()
    n = 100_000
    sampled, _ = gates(torch.ones(n, 7, dtype=F64))
    if cls is BinaryConcreteStochasticGates:
        args = (gates.temperature, gates.lower_bound, gates.upper_bound)
        p_open = [hard_concrete_tail(a, 1.0, *args) for a in VALUES[cls]]
    else:
        p_open = [1 - NormalDist(m, gates.std).cdf(1.0) for m in VALUES[cls]]
    p_active = gates.get_gate_active_probs()
    for observed, p in [
        ((sampled > 0).double().mean(0), p_active),
        ((sampled == 1).double().mean(0), torch.tensor(p_open, dtype=F64)),
    ]:
        tolerance = 5 * torch.sqrt(p * (1 - p) / n) + 1e-4
        assert ((observed - p).abs() <= tolerance).all(), (observed, p)


# ----------------------------------------------------------- reg reductions


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("reduction", ["sum", "mean", "none"])
@pytest.mark.parametrize("train", [True, False])
def test_reg_reduction(cls, reduction, train):
    gates = pretrained(cls, reg_weight=0.3, reg_reduction=reduction).train(train)
    _, reg = gates(torch.randn(3, 7, dtype=F64))
    probs = gates.get_gate_active_probs()
    expected = {"sum": probs.sum(), "mean": probs.mean(), "none": probs}[reduction] * 0.3
    assert reg.shape == expected.shape
    assert_close(reg, expected)


# ---------------------------------------------------------------- masks


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize(
    "mask",
    [
        torch.tensor([[0, 0, 1], [1, 2, 2]]),  # broadcast over the batch
        torch.tensor([[[0, 0, 1], [1, 2, 2]]]),  # explicit batch dim of 1
        torch.tensor([[2], [0]]).expand(2, 3),  # rows share one gate
    ],
)
@pytest.mark.parametrize("train", [True, False])
def test_mask_shares_gates(cls, mask, train):
    batch = 6
    x = torch.randn(batch, 2, 3)
    torch.manual_seed(3)
    masked = cls(3, mask=mask).train(train)
    gated, _ = masked(x)
    # the same draw without a mask: one gate per (example, gate index)
    torch.manual_seed(3)
    plain = cls(3).train(train)
    per_gate, _ = plain(torch.ones(batch, 3))
    index = mask.expand(batch, 2, 3)
    expected = x * torch.gather(per_gate, 1, index.reshape(batch, -1)).reshape(batch, 2, 3)
    assert_close(gated, expected)


@pytest.mark.parametrize("cls", CLASSES)
def test_per_example_mask(cls):
    mask = torch.tensor([[0, 1, 1, 0], [1, 1, 0, 0]])
    gates = cls._from_pretrained(
        torch.tensor([0.3, 0.8] if cls is GaussianStochasticGates else [-0.5, 1.0]), mask=mask
    ).eval()
    values = gates.get_gate_values()
    x = torch.randn(2, 4)
    assert_close(gates(x)[0], x * values[mask])


@pytest.mark.parametrize("cls", CLASSES)
def test_mask_is_copied(cls):
    mask = torch.tensor([0, 1, 1], dtype=torch.int32)
    gates = cls._from_pretrained(torch.tensor([0.1, 0.9]), mask=mask).eval()
    mask[0] = 1
    assert gates.mask.tolist() == [0, 1, 1] and gates.mask.dtype == torch.int64
    x = torch.ones(2, 3)
    values = gates.get_gate_values()
    assert_close(gates(x)[0], values[[0, 1, 1]].expand(2, 3))


# --------------------------------------------------------------- gradients


def test_hard_concrete_eval_gradient_closed_form():
    weight, lower, upper = 0.7, -0.1, 1.1
    gates = pretrained(BinaryConcreteStochasticGates, reg_weight=weight).eval()
    x = torch.randn(4, 7, dtype=F64)
    gated, reg = gates(x)
    (gated.sum() + reg).backward()
    expected = []
    for k, a in enumerate(VALUES[BinaryConcreteStochasticGates]):
        s = sigmoid(a)
        raw = s * (upper - lower) + lower
        inside = 0 < raw < 1
        p = sigmoid(a - gates.active_prob_offset)
        expected.append(
            float(x[:, k].sum()) * s * (1 - s) * (upper - lower) * inside + weight * p * (1 - p)
        )
    assert_close(gates.log_alpha_param.grad, torch.tensor(expected, dtype=F64))


def test_gaussian_eval_gradient_closed_form():
    weight, std = 0.4, 0.5
    gates = pretrained(GaussianStochasticGates, reg_weight=weight, std=std).eval()
    x = torch.randn(4, 7, dtype=F64)
    gated, reg = gates(x)
    (gated.sum() + reg).backward()
    # torch.clamp passes the gradient at the bounds themselves (mu = 0 is in VALUES)
    expected = [
        float(x[:, k].sum()) * (0 <= m <= 1) + weight * NormalDist().pdf(m / std) / std
        for k, m in enumerate(VALUES[GaussianStochasticGates])
    ]
    assert_close(gates.mu.grad, torch.tensor(expected, dtype=F64))


@pytest.mark.parametrize("cls", CLASSES)
def test_training_gradient_matches_finite_differences(cls):
    gates = pretrained(cls).train()
    name = PARAM[cls]
    x = torch.randn(5, 7, dtype=F64)

    def loss(param):
        torch.manual_seed(11)  # the same noise for every evaluation
        gated, reg = torch.func.functional_call(gates, {name: param}, (x,))
        return (gated * torch.arange(7, dtype=F64)).sum() + reg

    param = getattr(gates, name).detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(loss, (param,), eps=1e-7, atol=1e-6)
    loss(param).backward()
    assert param.grad.abs().sum() > 0


# ------------------------------------------------------------- dtypes, state


@pytest.mark.parametrize("cls", CLASSES)
def test_float64_module_samples_in_float64(cls):
    torch.manual_seed(0)
    gates = cls(6).double().train()
    gated, reg = gates(torch.ones(50, 6, dtype=F64))
    assert gated.dtype == F64 and reg.dtype == F64
    interior = gated[(gated > 0) & (gated < 1)]
    # float64 noise: values are not all representable in float32
    assert not torch.equal(interior, interior.float().double())


@pytest.mark.parametrize("cls", CLASSES)
def test_float64_input_promotes(cls):
    gates = cls(4).eval()
    x = torch.randn(2, 4, dtype=F64)
    gated, _ = gates(x)
    assert gated.dtype == F64
    assert_close(gated, x * gates.get_gate_values().double())


@pytest.mark.parametrize("cls", CLASSES)
def test_from_pretrained_keeps_values_dtype_and_options(cls):
    values = torch.tensor(VALUES[cls], dtype=F64)
    mask = torch.arange(7).repeat(2)
    gates = cls.from_pretrained(values, mask=mask, reg_weight=0.25, reg_reduction="mean")
    param = getattr(gates, PARAM[cls])
    assert isinstance(param, torch.nn.Parameter) and param.dtype == F64
    assert torch.equal(param.detach(), values) and param.data_ptr() != values.data_ptr()
    assert gates.n_gates == 7 and gates.reg_weight == 0.25 and gates.reg_reduction == "mean"
    assert torch.equal(gates.mask, mask)
    assert set(gates.state_dict()) == {PARAM[cls], "mask"}


@pytest.mark.parametrize("cls", CLASSES)
def test_input_not_modified_and_fx_traceable(cls):
    mask = torch.tensor([0, 1, 1, 2])
    gates = cls(3, mask=mask).train()
    traced = torch.fx.symbolic_trace(gates)
    x = torch.randn(3, 4)
    before = x.clone()
    torch.manual_seed(5)
    eager = gates(x)
    torch.manual_seed(5)
    from_trace = traced(x)
    assert torch.equal(x, before)
    assert_close(from_trace[0], eager[0])
    assert_close(from_trace[1], eager[1])


def test_subclass_with_own_distribution():
    class Always(StochasticGatesBase):
        def __init__(self, n):
            super().__init__(n, reg_reduction="none")
            self.value = torch.nn.Parameter(torch.full((n,), 1.5))

        def _get_gate_values(self):
            return self.value

        def _sample_gate_values(self, batch_size):
            return self.value.expand(batch_size, -1)

        def _get_gate_active_probs(self):
            return torch.ones_like(self.value)

    gated, reg = Always(3)(torch.full((2, 3), 2.0))
    assert_close(gated, torch.full((2, 3), 2.0))  # clamped to 1
    assert_close(reg, torch.ones(3))
    with pytest.raises(TypeError):
        StochasticGatesBase(3)  # abstract


# ------------------------------------------------------ feature selection


@pytest.mark.parametrize("cls", CLASSES)
def test_feature_selection_closes_useless_gates(cls):
    torch.manual_seed(0)
    x = torch.randn(256, 8, dtype=F64)
    y = 2 * x[:, 0] - 1.5 * x[:, 1] + x[:, 2]  # features 3..7 are noise
    gates = cls(8, reg_weight=0.05).double()
    linear = torch.nn.Linear(8, 1).double()
    optimiser = torch.optim.Adam([*gates.parameters(), *linear.parameters()], lr=0.05)
    for _ in range(200):
        gated, reg = gates(x)
        loss = ((linear(gated).squeeze(1) - y) ** 2).mean() + reg
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    values = gates.get_gate_values()
    assert (values[:3] == 1).all(), values
    assert (values[3:] == 0).all(), values
    probs = gates.get_gate_active_probs()
    assert probs[:3].min() > 0.95 and probs[3:].max() < 0.1, probs


# ------------------------------------------------------------ bad arguments


BAD_INIT = [
    (dict(n_gates=0), ArgumentValueError, "n_gates"),
    (dict(n_gates=2.5), ArgumentTypeError, "n_gates"),
    (dict(n_gates=True), ArgumentTypeError, "n_gates"),
    (dict(n_gates=3, mask=[0, 1, 2]), ArgumentTypeError, "mask"),
    (dict(n_gates=3, mask=torch.tensor([0.0, 1.0, 2.0])), ArgumentTypeError, "mask"),
    (dict(n_gates=3, mask=torch.tensor([0, 1, 1])), ArgumentValueError, "mask"),
    (dict(n_gates=3, mask=torch.tensor([-1, 1, 2])), ArgumentValueError, "mask"),
    (dict(n_gates=3, reg_weight="big"), ArgumentTypeError, "reg_weight"),
    (dict(n_gates=3, reg_weight=float("nan")), ArgumentValueError, "reg_weight"),
    (dict(n_gates=3, reg_reduction="avg"), ArgumentValueError, "reg_reduction"),
]
BAD_CONCRETE = [
    (dict(temperature=0.0), "temperature"),
    (dict(temperature=1.0), "temperature"),
    (dict(lower_bound=0.0), "lower_bound"),
    (dict(upper_bound=1.0), "upper_bound"),
    (dict(eps=0.5), "eps"),
    (dict(eps=-1e-3), "eps"),
]


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("kwargs, error, name", BAD_INIT)
def test_bad_constructor_arguments(cls, kwargs, error, name):
    with pytest.raises(error, match=f"`{name}`"):
        cls(**kwargs)


@pytest.mark.parametrize("kwargs, name", BAD_CONCRETE)
def test_bad_concrete_arguments(kwargs, name):
    with pytest.raises(ArgumentValueError, match=f"`{name}`"):
        BinaryConcreteStochasticGates(3, **kwargs)


@pytest.mark.parametrize("std", [0.0, -0.5])
def test_bad_std(std):
    with pytest.raises(ArgumentValueError, match="`std`"):
        GaussianStochasticGates(3, std=std)


@pytest.mark.parametrize("cls", CLASSES)
def test_bad_forward_and_accessor_arguments(cls):
    gates = cls(4)
    with pytest.raises(ArgumentValueError, match="`input_tensor`.*5 elements"):
        gates(torch.ones(2, 5))
    with pytest.raises(ArgumentValueError, match="`input_tensor`"):
        gates(torch.ones(4))
    with pytest.raises(ArgumentTypeError, match="`input_tensor`"):
        gates([[1.0] * 4])
    with pytest.raises(ArgumentTypeError, match="`clamp`"):
        gates.get_gate_values(clamp="no")
    masked = cls(2, mask=torch.tensor([0, 1, 1]))
    with pytest.raises(ArgumentValueError, match="`mask`"):
        masked(torch.ones(2, 4))
    with pytest.raises(ArgumentValueError, match="`log_alpha_param`|`mu`"):
        cls._from_pretrained(torch.zeros(2, 2))
    with pytest.raises(ArgumentTypeError, match="`log_alpha_param`|`mu`"):
        cls._from_pretrained([0.0, 1.0])
