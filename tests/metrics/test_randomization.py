"""Model parameter randomisation check and the Spearman correlation it uses."""

from __future__ import annotations

import copy

import pytest
import torch
from scipy.stats import spearmanr
from torch import nn

from attribuo._engine.errors import ArgumentTypeError, ArgumentValueError
from attribuo.attr import InputXGradient, Saliency
from attribuo.metrics import model_parameter_randomization, spearman_correlation


class WithUnused(nn.Module):
    """A trained-looking linear map plus a layer the forward never uses."""

    def __init__(self, n=64):
        super().__init__()
        self.unused = nn.Linear(3, 3)
        self.fc = nn.Linear(n, 2)
        with torch.no_grad():  # structured 'trained' weights: |w| rises with the index
            self.fc.weight.copy_(torch.linspace(-1, 1, n).sign() * torch.linspace(0.1, 2, n))

    def forward(self, x):
        return self.fc(x)


def state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("ties", [False, True])
def test_spearman_matches_scipy(ties):
    torch.manual_seed(0)
    a, b = torch.randn(5, 30), torch.randn(5, 30)
    if ties:
        a, b = a.round(), (b * 0.5).round()
    got = spearman_correlation(a, b)
    expected = torch.tensor([spearmanr(a[i], b[i]).statistic for i in range(5)],
                            dtype=torch.float32)
    torch.testing.assert_close(got, expected)


def test_unchanged_function_high_randomised_low_and_user_model_untouched():
    model = WithUnused()
    model.train()
    model.fc.bias.requires_grad_(False)
    hook = model.fc.register_forward_hook(lambda *a: None)
    before = state(model)
    x = torch.randn(4, 64)
    rng_before = torch.random.get_rng_state()

    result = model_parameter_randomization(model, Saliency, x, target=0, seed=3)

    assert result.layers == ["fc", "unused"]  # output side first
    torch.testing.assert_close(result.reference, torch.ones(4))
    # after 'fc' is random the saliency map is unrelated to the trained one
    assert float(result.correlations[0].abs().max()) < 0.4
    # randomising the unused layer as well changes nothing further
    torch.testing.assert_close(result.correlations[1], result.correlations[0])
    # the user's model: same parameters, mode, flags, hooks; global RNG untouched by `seed`
    for k, v in state(model).items():
        assert torch.equal(v, before[k])
    assert model.training and not model.fc.bias.requires_grad
    assert len(model.fc._forward_hooks) == 1
    assert torch.equal(torch.random.get_rng_state(), rng_before)
    hook.remove()


def test_randomised_correlation_matches_manual_computation():
    model = WithUnused()
    x = torch.randn(3, 64)
    result = model_parameter_randomization(model, Saliency, x, layers=["unused", "fc"],
                                           target=1, seed=11)
    assert result.layers == ["unused", "fc"]
    torch.testing.assert_close(result.correlations[0], torch.ones(3))  # unused layer only
    torch.manual_seed(11)
    manual = copy.deepcopy(model)
    manual.unused.reset_parameters()
    manual.fc.reset_parameters()
    trained = model.fc.weight[1].abs().detach()
    randomised = manual.fc.weight[1].abs().detach()
    expected = spearmanr(trained, randomised).statistic
    torch.testing.assert_close(result.correlations[1],
                               torch.full((3,), expected, dtype=torch.float32))


def test_independent_mode_restores_each_layer():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 2))
    x = torch.randn(5, 6)

    def explain(m, inputs, target):
        return InputXGradient(m).attribute(inputs, target=target)

    got = model_parameter_randomization(model, explain, x, cascading=False, absolute=False,
                                        target=0, seed=2)
    torch.manual_seed(2)
    reference = explain(model, x, 0).detach()
    expected = []
    for name in ["2", "0"]:  # each alone, in order, drawing from the same stream
        m = copy.deepcopy(model)
        dict(m.named_modules())[name].reset_parameters()
        expected.append(spearman_correlation(reference, explain(m, x, 0).detach()))
    torch.testing.assert_close(got.correlations, torch.stack(expected))


def test_errors():
    model = nn.Linear(3, 1)
    x = torch.randn(2, 3)
    with pytest.raises(ArgumentValueError, match="layers"):
        model_parameter_randomization(model, Saliency, x, layers=["nope"])
    with pytest.raises(ArgumentTypeError, match="layers"):
        model_parameter_randomization(model, Saliency, x, layers="weight")
    with pytest.raises(ArgumentTypeError, match="explanation"):
        model_parameter_randomization(model, 3, x)
    with pytest.raises(ArgumentTypeError, match="model"):
        model_parameter_randomization(lambda t: t, Saliency, x)
