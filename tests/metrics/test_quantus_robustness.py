"""Robustness metrics: Quantus 0.6 parity on shared noise, known answers, chunk invariance, errors.

Quantus draws its noise with numpy's global stream; the parity tests give both
sides the same noise through ``perturb_func`` (a replay of fixed arrays, one
per sample). Where Quantus normalises by one maximum for the whole batch, it
is called one example at a time (our normalisation is per example).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from models import SmallCNN, seeded
from torch import nn

from attribuo._engine.errors import ArgumentTypeError, ArgumentValueError
from attribuo.attr import Saliency
from attribuo.metrics.robustness import (
    avg_sensitivity,
    continuity,
    local_lipschitz_estimate,
    max_sensitivity,
    relative_input_stability,
    relative_output_stability,
    relative_representation_stability,
)

quantus = pytest.importorskip("quantus")
S = 6  # samples per metric: small, the draws are shared anyway


@pytest.fixture(autouse=True)
def quiet(monkeypatch):
    # Quantus 0.6's Continuity writes np.NaN, which numpy 2 removed; np.nan is the same value
    monkeypatch.setattr(np, "NaN", np.nan, raising=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def gradient(model, inputs, target):
    """Plain input gradients of the target (a deterministic explainer for both sides)."""
    x = inputs.detach().clone().requires_grad_()
    out = model(x)
    out[torch.arange(len(x)), target].sum().backward()
    return x.grad.detach()


def q_gradient(model, inputs, targets, **kwargs):
    return gradient(model, torch.as_tensor(inputs), torch.as_tensor(targets)).numpy()


def setting(seed=0, n=4):
    torch.manual_seed(seed)
    model = seeded(SmallCNN(1), seed + 1)
    return model, torch.rand(n, 1, 8, 8), torch.randint(0, 4, (n,))


def replay(noise):
    """A (Quantus, ours) pair of perturb functions adding ``noise[s]`` at the s-th call."""
    state = {"q": 0, "o": 0}

    def q_perturb(arr, indices=None, **kwargs):
        s = state["q"]
        state["q"] += 1
        return (arr + noise[s].reshape(arr.shape)).astype(arr.dtype)

    def ours(x):
        s = state["o"]
        state["o"] += 1
        return x + torch.from_numpy(noise[s]).view_as(x)

    return q_perturb, ours


def uniform_noise(shape, low, high, seed=0):
    return np.random.RandomState(seed).uniform(low, high, (S, *shape)).astype(np.float32)


def q_run(metric, model, x, y, a=None):
    a = gradient(model, x, y) if a is None else a
    out = metric(model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=a.numpy(), device="cpu",
                 explain_func=q_gradient)
    return np.asarray(out, dtype=np.float64)


def per_example(make_metric, model, x, y, noise):
    """Quantus one example at a time (its normalisation is per batch), on the same noise."""
    rows = []
    for i in range(len(x)):
        q_perturb, _ = replay(noise[:, i:i + 1])
        rows.append(q_run(make_metric(q_perturb), model, x[i:i + 1], y[i:i + 1])[0])
    return np.array(rows)


def close(ours, theirs, tol=1e-4):
    np.testing.assert_allclose(ours.numpy(), theirs, rtol=tol, atol=1e-6, equal_nan=True)


# --- parity with Quantus --------------------------------------------------------------------


@pytest.mark.parametrize("metric,cls", [(max_sensitivity, "MaxSensitivity"), (avg_sensitivity, "AvgSensitivity")])
@pytest.mark.parametrize("norm", ["fro", "linf"])
def test_sensitivity_matches_quantus(metric, cls, norm):
    model, x, y = setting()
    noise = uniform_noise(x.shape, -0.2, 0.2)
    q_perturb, ours = replay(noise)
    qnorm = {"fro": quantus.norm_func.fro_norm, "linf": quantus.norm_func.linf_norm}[norm]
    q = getattr(quantus, cls)(nr_samples=S, perturb_func=q_perturb, norm_numerator=qnorm, disable_warnings=True)
    theirs = q_run(q, model, x, y)
    close(metric(model, x, gradient, y, nr_samples=S, perturb_func=ours, norm_numerator=norm), theirs)


def test_sensitivity_nan_when_prediction_changes_matches_quantus():
    model, x, y = setting(seed=3, n=6)
    noise = uniform_noise(x.shape, -0.6, 0.6)  # large: some predictions move
    q_perturb, ours = replay(noise)
    q = quantus.MaxSensitivity(nr_samples=S, perturb_func=q_perturb, return_nan_when_prediction_changes=True,
                               disable_warnings=True)
    theirs = q_run(q, model, x, y)
    assert np.isnan(theirs).any() and not np.isnan(theirs).all()
    close(max_sensitivity(model, x, gradient, y, nr_samples=S, perturb_func=ours,
                          return_nan_when_prediction_changes=True), theirs)


def test_local_lipschitz_matches_quantus_per_example_and_batched():
    model, x, y = setting(seed=1)
    noise = np.random.RandomState(1).normal(0.0, 0.1, (S, *x.shape)).astype(np.float32)
    theirs = per_example(lambda p: quantus.LocalLipschitzEstimate(nr_samples=S, perturb_func=p,
                                                                  disable_warnings=True), model, x, y, noise)
    close(local_lipschitz_estimate(model, x, gradient, y, nr_samples=S, perturb_func=replay(noise)[1]), theirs)
    q_perturb, ours = replay(noise)
    q = quantus.LocalLipschitzEstimate(nr_samples=S, perturb_func=q_perturb, normalise=False, disable_warnings=True)
    close(local_lipschitz_estimate(model, x, gradient, y, nr_samples=S, perturb_func=ours, normalise=False),
          q_run(q, model, x, y))


@pytest.mark.parametrize("nr_steps", [4, 5, 28])  # 28 on 8 pixels: dx = 0, every copy fully black
def test_continuity_matches_quantus(nr_steps):
    model, x, y = setting(seed=2, n=3)
    theirs = [q_run(quantus.Continuity(nr_steps=nr_steps, disable_warnings=True), model, x[i:i + 1], y[i:i + 1])[0]
              for i in range(len(x))]
    close(continuity(model, x, gradient, y, nr_steps=nr_steps), np.array(theirs))


def test_continuity_nan_and_unnormalised_match_quantus_batched():
    model, x, y = setting(seed=4, n=5)
    q = quantus.Continuity(nr_steps=5, normalise=False, abs=False, return_nan_when_prediction_changes=True,
                           disable_warnings=True)
    theirs = q_run(q, model, x, y)
    ours = continuity(model, x, gradient, y, nr_steps=5, normalise=False, abs=False,
                      return_nan_when_prediction_changes=True)
    assert np.isnan(theirs).any()
    close(ours, theirs)


@pytest.mark.parametrize("nan", [True, False])
def test_relative_input_and_output_stability_match_quantus(nan):
    model, x, y = setting(seed=5, n=6)
    noise = uniform_noise(x.shape, 0.02, 0.2, seed=5)
    for ours_metric, cls in [(relative_input_stability, "RelativeInputStability"),
                             (relative_output_stability, "RelativeOutputStability")]:
        q_perturb, ours = replay(noise)
        q = getattr(quantus, cls)(nr_samples=S, perturb_func=q_perturb, return_nan_when_prediction_changes=nan,
                                  disable_warnings=True)
        close(ours_metric(model, x, gradient, y, nr_samples=S, perturb_func=ours,
                          return_nan_when_prediction_changes=nan), q_run(q, model, x, y))


def test_relative_stability_normalised_matches_quantus_per_example():
    model, x, y = setting(seed=6, n=3)
    noise = uniform_noise(x.shape, 0.02, 0.2, seed=6)
    theirs = per_example(lambda p: quantus.RelativeInputStability(nr_samples=S, perturb_func=p, normalise=True,
                                                                  disable_warnings=True), model, x, y, noise)
    close(relative_input_stability(model, x, gradient, y, nr_samples=S, perturb_func=replay(noise)[1],
                                   normalise=True), theirs)


@pytest.mark.parametrize("layer", ["conv2", None])
def test_relative_representation_stability_matches_quantus(layer):
    model, x, y = setting(seed=7, n=5)
    noise = uniform_noise(x.shape, 0.02, 0.2, seed=7)
    q_perturb, ours = replay(noise)
    q = quantus.RelativeRepresentationStability(nr_samples=S, perturb_func=q_perturb, disable_warnings=True,
                                                layer_names=None if layer is None else [layer],
                                                return_nan_when_prediction_changes=False)
    theirs = q_run(q, model, x, y)
    ours_scores = relative_representation_stability(model, x, gradient, y, nr_samples=S, perturb_func=ours,
                                                    layer=None if layer is None else getattr(model, layer),
                                                    return_nan_when_prediction_changes=False)
    close(ours_scores, theirs)
    assert all(not m._forward_hooks for m in model.modules())


# --- known answers ----------------------------------------------------------------------------


def noisy_explainer(model, inputs, target):
    return torch.randn(inputs.shape)


@pytest.mark.parametrize("metric", [max_sensitivity, avg_sensitivity, local_lipschitz_estimate, continuity,
                                    relative_input_stability, relative_output_stability])
def test_exact_gradient_of_a_linear_model_beats_a_random_explanation(metric):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 3)).eval()
    x, y = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 0])
    kwargs = {"nr_steps": 5} if metric is continuity else {"nr_samples": 4, "seed": 0}
    if metric in (relative_input_stability, relative_output_stability):
        kwargs["return_nan_when_prediction_changes"] = False
    exact = metric(model, x, Saliency, y, explain_kwargs={"abs": False}, **kwargs)
    random = metric(model, x, noisy_explainer, y, **kwargs)
    assert torch.all(exact < random) and torch.all(exact == 0)


def test_representation_stability_ranks_exact_over_random():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 6), nn.Tanh(), nn.Linear(6, 2)).eval()
    x = torch.rand(5, 8) + 0.5
    kwargs = {"layer": model[0], "nr_samples": 4, "seed": 1, "return_nan_when_prediction_changes": False}
    exact = relative_representation_stability(model, x, Saliency, 0, explain_kwargs={"abs": False}, **kwargs)
    random = relative_representation_stability(model, x, noisy_explainer, 0, **kwargs)
    assert torch.all(exact < random)


# --- chunks, batches, seeds ------------------------------------------------------------------


@pytest.mark.parametrize("metric", [max_sensitivity, local_lipschitz_estimate, relative_output_stability,
                                    relative_representation_stability, continuity])
def test_chunking_does_not_change_scores(metric):
    model, x, y = setting(seed=8, n=3)
    kwargs = {"nr_steps": 5} if metric is continuity else {"nr_samples": 5, "seed": 3}
    if metric is relative_representation_stability:
        kwargs["layer"] = model.conv1
    whole = metric(model, x, Saliency, y, **kwargs)
    for size in (1, 4, 7):
        torch.testing.assert_close(metric(model, x, Saliency, y, max_examples_per_batch=size, **kwargs), whole,
                                   equal_nan=True, rtol=1e-5, atol=1e-7)


def test_scores_do_not_depend_on_the_other_examples():
    model, x, y = setting(seed=9, n=4)
    shift = torch.linspace(-0.1, 0.1, 64).view(1, 8, 8)
    steps = iter(range(100))

    def fixed(z):  # the same perturbation of each example, whatever the batch
        return z + shift * (1 + next(steps) % 3)

    whole = local_lipschitz_estimate(model, x, Saliency, y, nr_samples=3, perturb_func=fixed)
    alone = []
    for i in range(4):
        steps = iter(range(100))
        alone.append(local_lipschitz_estimate(model, x[i:i + 1], Saliency, y[i:i + 1], nr_samples=3,
                                              perturb_func=fixed))
    torch.testing.assert_close(torch.cat(alone), whole, rtol=1e-5, atol=1e-7)


def test_seed_repeats_and_global_stream_is_used_without_one():
    model, x, y = setting(seed=10, n=2)
    a = avg_sensitivity(model, x, Saliency, y, nr_samples=3, seed=5)
    torch.testing.assert_close(a, avg_sensitivity(model, x, Saliency, y, nr_samples=3, seed=5))
    torch.manual_seed(0)
    b = avg_sensitivity(model, x, Saliency, y, nr_samples=3)
    torch.manual_seed(0)
    torch.testing.assert_close(b, avg_sensitivity(model, x, Saliency, y, nr_samples=3))


def test_inputs_and_model_are_left_as_they_were():
    model, x, y = setting(seed=11, n=2)
    model.train()
    before, state = x.clone(), {k: v.clone() for k, v in model.state_dict().items()}
    relative_representation_stability(model, x, Saliency, y, layer=model.conv2, nr_samples=2, seed=0)
    assert torch.equal(x, before) and model.training
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


# --- bad arguments -----------------------------------------------------------------------------


class TupleLayer(nn.Module):
    def forward(self, x):
        return x, x


class WithTuple(nn.Module):
    def __init__(self):
        super().__init__()
        self.pair = TupleLayer()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.pair(x)[0])


def test_bad_arguments_are_named():
    model, x, y = setting(seed=12, n=2)
    with pytest.raises(ArgumentTypeError, match="attributions"):
        max_sensitivity(model, x, torch.ones_like(x), y)
    with pytest.raises(ArgumentValueError, match="nr_samples"):
        avg_sensitivity(model, x, Saliency, y, nr_samples=0)
    with pytest.raises(ArgumentValueError, match="norm_numerator"):
        max_sensitivity(model, x, Saliency, y, nr_samples=2, norm_numerator="nuclear")
    with pytest.raises(ArgumentValueError, match="upper_bound"):
        relative_input_stability(model, x, Saliency, y, nr_samples=2, lower_bound=0.3, upper_bound=0.2)
    with pytest.raises(ArgumentValueError, match="perturb_func"):
        max_sensitivity(model, x, Saliency, y, nr_samples=2, perturb_func=lambda z: z[:1])
    with pytest.raises(ArgumentValueError, match="normalise"):
        local_lipschitz_estimate(model, x, Saliency, y, nr_samples=2, normalise="median")
    with pytest.raises(ArgumentValueError, match="inputs"):
        continuity(nn.Linear(8, 2), torch.rand(3, 8), Saliency, 0)
    with pytest.raises(ArgumentTypeError, match="forward_func"):
        relative_representation_stability(lambda z: model(z), x, Saliency, y, nr_samples=2)
    with pytest.raises(ArgumentValueError, match="layer"):
        relative_representation_stability(model, x, Saliency, y, layer=nn.Linear(2, 2), nr_samples=2)
    with pytest.raises(ArgumentTypeError, match="seed"):
        max_sensitivity(model, x, Saliency, y, nr_samples=2, seed=1.5)


def test_hook_is_removed_when_the_layer_fails():
    model = WithTuple().eval()
    with pytest.raises(ArgumentTypeError, match="layer"):
        relative_representation_stability(model, torch.rand(3, 4), Saliency, 0, layer=model.pair, nr_samples=2)
    assert not model.pair._forward_hooks


def test_perturbed_copies_are_explained_in_batched_calls():
    model, x, y = setting(seed=13, n=3)
    sizes = []

    def counting(m, inputs, target):
        sizes.append(len(inputs))
        return gradient(m, inputs, target)

    max_sensitivity(model, x, counting, y, nr_samples=10, seed=0)
    assert sizes == [3, 30]  # the reference, then all ten copies at once
    sizes.clear()
    max_sensitivity(model, x, counting, y, nr_samples=10, seed=0, max_examples_per_batch=12)
    assert sizes == [3, 12, 12, 6]


class Scaled(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3))

    def forward(self, x, scale):
        return self.net(x) * scale


def test_additional_forward_args_follow_the_copies():
    torch.manual_seed(14)
    model = Scaled().eval()
    x, scale = torch.rand(4, 6), torch.tensor([[1.0], [2.0], [0.5], [3.0]])
    kwargs = {"nr_samples": 3, "perturb_func": lambda z: z + 0.05, "return_nan_when_prediction_changes": False}
    whole = relative_output_stability(model, x, Saliency, 1, additional_forward_args=(scale,), **kwargs)
    alone = torch.cat([relative_output_stability(model, x[i:i + 1], Saliency, 1,
                                                 additional_forward_args=(scale[i:i + 1],), **kwargs)
                       for i in range(4)])
    torch.testing.assert_close(whole, alone, rtol=1e-5, atol=1e-7)
