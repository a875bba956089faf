"""Completeness, non-sensitivity, input invariance: Quantus 0.6 parity, known answers, chunks, errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from models import SmallCNN, seeded
from torch import nn

from attribuo._engine.errors import ArgumentTypeError, ArgumentValueError
from attribuo.attr import InputXGradient, Saliency
from attribuo.metrics.axiomatic import completeness, input_invariance, non_sensitivity

quantus = pytest.importorskip("quantus")


@pytest.fixture(autouse=True)
def quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def q_call(metric, model, x, y, a, **kwargs):
    out = metric(model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=a.numpy(), device="cpu", **kwargs)
    return np.asarray(out, dtype=np.float64)


class IntegerLinear(nn.Module):
    """A linear read-out with integer weights: sums and differences are exact in float32."""

    def __init__(self, features: int = 16, n_out: int = 3):
        super().__init__()
        self.fc = nn.Linear(features, n_out, bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(torch.arange(features * n_out).view(n_out, features) % 5 - 2.0)

    def forward(self, x):
        return self.fc(x.flatten(1))


class HalfCNN(nn.Module):
    """A CNN that reads only the left half (4 of 8 columns) of its image."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.fc = nn.Linear(3 * 8 * 4, 3)

    def forward(self, x):
        return self.fc(torch.tanh(self.conv(x[..., :4])).flatten(1))


# --- completeness ----------------------------------------------------------------------------


def test_completeness_matches_quantus_on_exact_and_broken_sums():
    model = IntegerLinear().eval()
    torch.manual_seed(0)
    x = torch.randint(0, 5, (4, 1, 4, 4)).float()
    y = torch.tensor([0, 1, 2, 1])
    exact = (x - x.flatten(1).amin(1).view(-1, 1, 1, 1)) * model.fc.weight[y].view(4, 1, 4, 4).detach()
    a = exact.clone()
    a[1, 0, 0, 0] += 1.0  # one example off by one
    a[3] = torch.randn(1, 4, 4)
    theirs = q_call(quantus.Completeness(normalise=False, disable_warnings=True), model, x, y, a)
    ours = completeness(model, x, a, y, normalise=False)
    np.testing.assert_array_equal(ours.numpy(), theirs)
    assert ours.tolist() == [1.0, 0.0, 1.0, 0.0]


@pytest.mark.parametrize("baseline", ["black", "white", 0.5])
def test_completeness_default_normalise_matches_quantus(baseline):
    model = IntegerLinear().eval()
    torch.manual_seed(1)
    x = torch.randint(0, 5, (3, 1, 4, 4)).float()
    y = torch.tensor([0, 1, 2])
    a = torch.randn(3, 1, 4, 4)
    theirs = q_call(quantus.Completeness(perturb_baseline=baseline, disable_warnings=True), model, x, y, a)
    np.testing.assert_array_equal(completeness(model, x, a, y, perturb_baseline=baseline).numpy(), theirs)


def test_completeness_gap_and_output_func_against_a_slow_reference():
    torch.manual_seed(2)
    model = seeded(SmallCNN(1), 2)
    x, y = torch.rand(3, 1, 8, 8), torch.tensor([0, 3, 1])
    a = torch.randn(3, 1, 8, 8) * 0.01

    def slow(tol):
        out = []
        for i in range(3):
            xi = x[i:i + 1]
            base = torch.full_like(xi, float(xi.min()))
            change = 2 * float(model(xi)[0, y[i]] - model(base)[0, y[i]])
            out.append(float(abs(a[i].double().sum() - change) <= tol))
        return out

    for tol in (0.0, 0.5, 5.0):
        got = completeness(model, x, a, y, normalise=False, atol=tol, output_func=lambda d: 2 * d)
        assert got.tolist() == slow(tol)


def test_completeness_known_answer_exact_beats_random():
    torch.manual_seed(3)
    model = nn.Linear(6, 2)
    x = torch.rand(5, 6)
    exact = (x - x.amin(1, keepdim=True)) * model.weight[1].detach()
    assert completeness(model, x, exact, 1, normalise=False, atol=1e-5).tolist() == [1.0] * 5
    assert completeness(model, x, torch.randn(5, 6), 1, normalise=False, atol=1e-5).tolist() == [0.0] * 5


# --- non-sensitivity --------------------------------------------------------------------------


@pytest.mark.parametrize("baseline,softmax", [("black", True), ("white", False), (0.0, True)])
def test_non_sensitivity_matches_quantus(baseline, softmax):
    torch.manual_seed(4)
    model = seeded(HalfCNN(), 4)
    x, y = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 0])
    a = torch.randn(4, 1, 8, 8)
    a[:, :, :, 4:] = 0.0  # right half unattributed: the model ignores it
    a[1, :, :, :2] = 0.0  # some read features unattributed too
    a[2, :, :, 6:] = 1.0  # some ignored features attributed
    q = quantus.NonSensitivity(perturb_baseline=baseline, disable_warnings=True)
    theirs = q_call(q, model, x, y, a, softmax=softmax)
    ours = non_sensitivity(model, x, a, y, perturb_baseline=baseline, softmax=softmax)
    np.testing.assert_array_equal(ours.numpy(), theirs)
    assert len(set(theirs.tolist())) > 1


def test_non_sensitivity_groups_against_a_slow_reference():
    torch.manual_seed(5)
    model = seeded(HalfCNN(), 5)
    x, y = torch.rand(3, 1, 8, 8), torch.tensor([2, 1, 0])
    a = torch.randn(3, 1, 8, 8)
    a[:, :, :, 3:] = 0.0
    step, eps = 3, 1e-5
    got = non_sensitivity(model, x, a, y, features_in_step=step, normalise=False, abs=True, softmax=False)
    for i in range(3):
        flat_x, flat_a = x[i].flatten(), a[i].abs().flatten()
        base = float(flat_x.min())
        ref = float(model(x[i:i + 1])[0, y[i]])
        violations = 0
        for g in range(0, 64, step):
            z = flat_x.clone()
            z[g:g + step] = base
            moved = abs(float(model(z.view(1, 1, 8, 8))[0, y[i]]) - ref) >= eps
            violations += moved != bool((flat_a[g:g + step] >= eps).any())
        assert got[i] == violations


def test_non_sensitivity_known_answer_and_chunks():
    torch.manual_seed(6)
    model = nn.Linear(8, 2)
    with torch.no_grad():
        model.weight[:, 4:] = 0.0  # ignores half its inputs
    x = torch.rand(6, 8) + 0.1
    exact = (x - x.amin(1, keepdim=True)) * model.weight[0].detach()
    exact[torch.arange(6), (x - x.amin(1, keepdim=True)).argmin(1)] = 0.0  # the minimum does not move
    random = torch.rand(6, 8) + 0.5
    ours = non_sensitivity(model, x, exact, 0, softmax=False)
    assert ours.tolist() == [0.0] * 6
    assert torch.all(non_sensitivity(model, x, random, 0, softmax=False) > ours)
    for size in (1, 6, 20):
        torch.testing.assert_close(non_sensitivity(model, x, random, 0, max_examples_per_batch=size),
                                   non_sensitivity(model, x, random, 0))


def test_per_pixel_attributions_remove_every_channel():
    torch.manual_seed(7)
    model = seeded(SmallCNN(3), 7)
    x, y = torch.rand(2, 3, 8, 8), torch.tensor([0, 1])
    a = torch.randn(2, 1, 8, 8)
    ours = non_sensitivity(model, x, a, y, softmax=False)
    assert ours.shape == (2,) and torch.all(ours <= 64)


# --- input invariance -------------------------------------------------------------------------


class ValidCNN(nn.Module):
    """No padding in the first layer: a constant input shift is exactly a bias shift."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3)
        self.fc = nn.Linear(3 * 6 * 6, 3)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def explain_saliency(model, inputs, targets, **kwargs):
    x = torch.as_tensor(inputs)
    return Saliency(model).attribute(x, target=torch.as_tensor(targets)).numpy()


def explain_ixg(model, inputs, targets, **kwargs):
    x = torch.as_tensor(inputs)
    return InputXGradient(model).attribute(x, target=torch.as_tensor(targets)).numpy()


def shift_every_element(arr, input_shift, **kwargs):
    # Quantus 0.6's default shift skips element 0 of each example (perturb_batch passes indices[i][1:])
    return arr + np.float32(input_shift)


@pytest.mark.parametrize("net,shift", [(ValidCNN, -1.0), (ValidCNN, 0.5), (SmallCNN, -1.0)])
def test_input_invariance_matches_quantus(net, shift):
    torch.manual_seed(8)
    model = seeded(net(), 8)
    x, y = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 1])
    for method, q_explain in [(Saliency, explain_saliency), (InputXGradient, explain_ixg)]:
        a = torch.as_tensor(q_explain(model, x, y))
        q = quantus.InputInvariance(input_shift=shift, perturb_func=shift_every_element, disable_warnings=True)
        theirs = q_call(q, model, x, y, a, explain_func=q_explain)
        ours = input_invariance(model, x, method, y, input_shift=shift)
        np.testing.assert_array_equal(ours.numpy(), theirs)
        if net is ValidCNN:  # no padding: the shift is absorbed exactly, saliency is invariant
            assert ours.tolist() == ([1.0] * 4 if method is Saliency else [0.0] * 4)


def test_quantus_default_shift_leaves_the_first_element():
    from quantus.functions.perturb_func import baseline_replacement_by_shift, perturb_batch

    x = np.random.RandomState(0).rand(2, 1, 3, 3).astype(np.float32)
    shifted = perturb_batch(baseline_replacement_by_shift, x, indices=np.tile(np.arange(9), (2, 1)),
                            indexed_axes=np.arange(3), input_shift=-1.0)
    change = (shifted - x).reshape(2, -1)
    assert np.all(change[:, 0] == 0) and np.allclose(change[:, 1:], -1.0)


def test_input_invariance_known_answer_linear_and_model_untouched():
    torch.manual_seed(9)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 4), nn.ReLU(), nn.Linear(4, 2))
    x = torch.rand(5, 1, 4, 4)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert input_invariance(model, x, Saliency, 1).tolist() == [1.0] * 5
    assert input_invariance(model, x, InputXGradient, 1).tolist() == [0.0] * 5
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    torch.testing.assert_close(input_invariance(model, x, InputXGradient, 1, max_examples_per_batch=2),
                               input_invariance(model, x, InputXGradient, 1))


# --- bad arguments -----------------------------------------------------------------------------


def test_bad_arguments_are_named():
    model = nn.Linear(4, 2)
    x = torch.rand(3, 4)
    with pytest.raises(ArgumentValueError, match="atol"):
        completeness(model, x, torch.rand(3, 4), 0, atol=-1.0)
    with pytest.raises(ArgumentTypeError, match="output_func"):
        completeness(model, x, torch.rand(3, 4), 0, output_func=3)
    with pytest.raises(ArgumentValueError, match="perturb_baseline"):
        completeness(model, x, torch.rand(3, 4), 0, perturb_baseline="grey")
    with pytest.raises(ArgumentValueError, match="features_in_step"):
        non_sensitivity(model, x, torch.rand(3, 4), 0, features_in_step=0)
    with pytest.raises(ArgumentValueError, match="attributions"):
        non_sensitivity(model, x, torch.rand(3, 5), 0)
    with pytest.raises(ArgumentTypeError, match="softmax"):
        non_sensitivity(model, x, torch.rand(3, 4), 0, softmax="yes")
    with pytest.raises(ArgumentTypeError, match="attributions"):
        input_invariance(model, x, torch.rand(3, 4), 0)
    with pytest.raises(ArgumentTypeError, match="forward_func"):
        input_invariance(lambda z: model(z), x, Saliency, 0)
    with pytest.raises(ArgumentValueError, match="bias"):
        input_invariance(nn.Linear(4, 2, bias=False), x, Saliency, 0)
    with pytest.raises(ArgumentValueError, match="layer"):
        input_invariance(model, x, Saliency, 0, layer=nn.Linear(4, 2))
