"""MinParamPerturbation: known thresholds on a hand-built model, grouping, bad input."""

from __future__ import annotations

import math

import pytest
import torch
from models.robust import Threshold

from attribuo._engine.errors import ArgumentTypeError, ArgumentValueError
from attribuo.robust import FGSM, MinParamPerturbation

X = torch.tensor([[-0.6, 3.0]], dtype=torch.float64)


def shift(x, delta):
    return x + delta


class Counting:
    """Wraps a forward function and counts its calls and the rows it saw."""

    def __init__(self, forward):
        self.forward, self.calls, self.rows = forward, 0, []

    def __call__(self, x, *args):
        self.calls += 1
        self.rows.append(x.shape[0])
        return self.forward(x, *args)


def expected_first(threshold, arg_min, arg_max, step):
    """The first grid value (by running sum, as the search walks) above ``threshold``."""
    value = arg_min
    while value < arg_max:
        if value > threshold:
            return value
        value += step
    return None


@pytest.mark.parametrize("mode", ["linear", "binary"])
@pytest.mark.parametrize("per_eval", [1, 3, 50])
def test_finds_known_threshold(mode, per_eval):
    # class 1 wins once x0 + delta > 0, i.e. delta > 0.6: first grid value 0.75
    search = MinParamPerturbation(Threshold(), shift, "delta", 0.0, 2.0, 0.25, mode=mode)
    adv, delta = search.evaluate(X, target=0, perturbations_per_eval=per_eval)
    assert delta == 0.75
    torch.testing.assert_close(adv, X + 0.75)


@pytest.mark.parametrize("mode", ["linear", "binary"])
@pytest.mark.parametrize("threshold", [0.055, 0.335, 0.715, 1.295])  # off the grid
def test_threshold_on_fine_grid(mode, threshold):
    x = torch.tensor([[-threshold]], dtype=torch.float64)
    search = MinParamPerturbation(Threshold(), shift, "delta", 0.0, 1.5, 0.01, mode=mode)
    _, delta = search.evaluate(x, target=0, perturbations_per_eval=7)
    expected = expected_first(threshold, 0.0, 1.5, 0.01)
    if mode == "linear":
        assert delta == expected
    else:  # bisection computes min + k * step rather than a running sum
        assert math.isclose(delta, expected, abs_tol=1e-9)


def test_grouping_cuts_forward_calls_but_not_results():
    results = {}
    for per_eval in (1, 4):
        model = Counting(Threshold())
        search = MinParamPerturbation(model, shift, "delta", 0.0, 2.0, 0.1)
        x = torch.tensor([[-0.55, 1.0]], dtype=torch.float64)
        results[per_eval] = (search.evaluate(x, target=0, perturbations_per_eval=per_eval), model)
    (adv1, d1), m1 = results[1]
    (adv4, d4), m4 = results[4]
    assert d1 == d4 and torch.equal(adv1, adv4)
    assert d1 == pytest.approx(0.6) and m1.calls == 7  # 0.0, 0.1, ..., 0.6
    assert m4.calls == 2 and max(m4.rows) == 4


def test_not_fooled_returns_none():
    search = MinParamPerturbation(Threshold(), shift, "delta", 0.0, 0.5, 0.1)
    assert search.evaluate(X, target=0, perturbations_per_eval=2) == (None, None)


def test_additional_args_expanded_per_copy():
    offsets = torch.tensor([[0.2], [0.0]], dtype=torch.float64)  # batch of 2
    x = torch.tensor([[-0.6, 0.0], [-0.9, 0.0]], dtype=torch.float64)
    search = MinParamPerturbation(Threshold(), shift, "delta", 0.0, 2.0, 0.25)
    # example 0 flips at delta > 0.4 (0.5); the default correct_fn needs every example right
    _, delta = search.evaluate(x, additional_forward_args=offsets, target=[0, 0],
                               perturbations_per_eval=3)
    assert delta == 0.5


def test_num_attempts_any_attempt_counts():
    calls = []

    def alternating(x, delta):
        calls.append(delta)
        return x + (delta if len(calls) % 2 == 0 else -delta)  # every other attempt goes up

    search = MinParamPerturbation(Threshold(), alternating, "delta", 0.0, 2.0, 0.25,
                                  num_attempts=2)
    adv, delta = search.evaluate(X, target=0)
    assert delta == 0.75 and adv[0, 0] > 0


def test_custom_correct_fn_and_preproc():
    def correct(out, target, margin):
        return bool((out[:, 1] < margin).all())

    search = MinParamPerturbation(Threshold(), shift, "delta", 0.0, 3.0, 0.5,
                                  preproc_fn=lambda x: x * 2, apply_before_preproc=True,
                                  correct_fn=correct)
    # model sees 2 * (x + delta); fooled when 2 * (-0.6 + delta) >= 1, i.e. delta >= 1.1
    adv, delta = search.evaluate(X, target=0, correct_fn_kwargs={"margin": 1.0})
    assert delta == 1.5
    torch.testing.assert_close(adv, X + 1.5)  # the attack output, before preproc_fn


def test_fgsm_epsilon_search():
    class Probs(torch.nn.Module):
        def forward(self, x):
            return torch.softmax(Threshold()(x), dim=1)

    search = MinParamPerturbation(Probs(), FGSM(Probs()), "epsilon", 0.0, 2.0, 0.125)
    _, eps = search.evaluate(X, target=0, attack_kwargs={"target": 0})
    assert eps == 0.625  # FGSM moves x0 by +eps: the first grid value above 0.6


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        (dict(arg_step=5.0), ArgumentValueError, "arg_step"),
        (dict(arg_step=-0.1), ArgumentValueError, "arg_step"),
        (dict(mode="ternary"), ArgumentValueError, "mode"),
        (dict(num_attempts=0), ArgumentValueError, "num_attempts"),
        (dict(arg_min="0"), ArgumentTypeError, "arg_min"),
        (dict(attack=None), ArgumentTypeError, "attack"),
    ],
)
def test_bad_constructor_arguments(kwargs, error, name):
    args = dict(forward_func=Threshold(), attack=shift, arg_name="delta", arg_min=0.0,
                arg_max=2.0, arg_step=0.25) | kwargs
    with pytest.raises(error, match=f"`{name}`"):
        MinParamPerturbation(**args)


def test_bad_evaluate_arguments():
    search = MinParamPerturbation(Threshold(), shift, "delta", 0.0, 2.0, 0.25)
    with pytest.raises(ArgumentValueError, match="`target`"):
        search.evaluate(X)
    with pytest.raises(ArgumentValueError, match="`perturbations_per_eval`"):
        search.evaluate(X, target=0, perturbations_per_eval=0)
    raw = MinParamPerturbation(lambda s: torch.zeros(1, 2), lambda s, delta: s, "delta",
                               0.0, 2.0, 0.25, correct_fn=lambda out: True)
    with pytest.raises(ArgumentTypeError, match="`perturbations_per_eval`"):
        raw.evaluate("a raw string input", perturbations_per_eval=2)
    assert raw.evaluate("a raw string input") == (None, None)
