"""Guided IG: a slow per-example reference from the paper, completeness, closed forms, chunking, errors."""

import math

import numpy as np
import pytest
import torch
from models import MLP, TwoInputModel, seeded
from torch import nn

from attribuo._engine.errors import ArgumentTypeError, ArgumentValueError
from attribuo.attr import IntegratedGradients
from attribuo.attr.gradient.guided_ig import GuidedIntegratedGradients


def _mlp():
    return seeded(MLP(n_in=12, n_hidden=16, n_out=3, act=nn.Tanh)).double()


def _reference(grad, x_in, x_base, steps, fraction, max_dist):
    """Kapishnikov et al. (2021), Algorithm 1, for one example in numpy, one feature set at a time.

    Step t aims at an L1 distance to the input of (1 - t / steps) of the total; features may
    stray at most max_dist (as a fraction of the path) from the straight line. Repeatedly:
    lagging features catch up to the band's lower edge; if the target is met the step ends;
    otherwise the `fraction` of features with the smallest |gradient| (among those not yet at
    the band's upper edge) move toward that edge, all the way or just enough to meet the target.
    """
    x, attr = x_base.copy(), np.zeros_like(x_in)
    d = x_in - x_base
    total = np.abs(d).sum()
    if total == 0:
        return attr
    for t in range(steps):
        g = grad(x)
        mag = np.abs(g)
        a = (t + 1) / steps
        lo, hi = max(a - max_dist, 0.0), min(a + max_dist, 1.0)
        x_lo, x_hi = x_base + d * lo, x_base + d * hi
        goal = total * (1 - a)
        while True:
            old = x.copy()
            with np.errstate(divide="ignore", invalid="ignore"):
                where = np.where(d != 0, (x - x_base) / d, hi)
            x[where < lo] = x_lo[where < lo]
            now = np.abs(x - x_in).sum()
            if math.isclose(goal, now, rel_tol=1e-9, abs_tol=1e-9):
                attr += (x - old) * g
                break
            mag[x == x_hi] = np.inf
            threshold = np.sort(mag)[int(np.floor(fraction * (mag.size - 1)))]
            chosen = (mag <= threshold) & np.isfinite(mag)
            room = (np.abs(x - x_hi) * chosen).sum()
            gamma = (now - goal) / room if room > 0 else np.inf
            if gamma > 1:
                x[chosen] = x_hi[chosen]
            else:
                x[chosen] = (x + (x_hi - x) * gamma)[chosen]
            attr += (x - old) * g
            if gamma <= 1:
                break
    return attr


def _reference_batch(model, x, b, target, **kw):
    out = []
    for i in range(x.shape[0]):
        def grad(z):
            p = torch.tensor(z, dtype=torch.float64).unsqueeze(0).requires_grad_()
            return torch.autograd.grad(model(p)[0, target], p)[0][0].numpy()

        out.append(_reference(grad, x[i].numpy().copy(), b[i].numpy().copy(), **kw))
    return torch.tensor(np.stack(out))


@pytest.mark.parametrize("steps, fraction, max_dist", [(30, 0.25, 0.02), (20, 0.1, 0.1), (12, 0.5, 1.0), (8, 1.0, 0.05)])
def test_matches_the_slow_reference(steps, fraction, max_dist):
    model = _mlp()
    torch.manual_seed(0)
    x, b = torch.randn(4, 12, dtype=torch.float64), torch.randn(4, 12, dtype=torch.float64) * 0.1
    x[0, 3] = b[0, 3]  # a feature that does not move
    got = GuidedIntegratedGradients(model).attribute(
        x, b, target=2, n_steps=steps, fraction=fraction, max_dist=max_dist
    )
    want = _reference_batch(model, x, b, 2, steps=steps, fraction=fraction, max_dist=max_dist)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)
    assert got[0, 3] == 0


def test_completeness_improves_with_steps():
    model = _mlp()
    torch.manual_seed(1)
    x = torch.randn(5, 12, dtype=torch.float64)
    gig = GuidedIntegratedGradients(model)
    errors = [gig.attribute(x, target=0, n_steps=n, return_convergence_delta=True)[1].abs().max() for n in (20, 200)]
    assert errors[1] < 1e-2 and errors[1] < errors[0] / 4  # a Riemann sum: first order in 1 / n_steps


def test_idgi_variant_is_complete():
    model = _mlp()
    torch.manual_seed(2)
    x, b = torch.randn(3, 12, dtype=torch.float64), torch.randn(3, 12, dtype=torch.float64)
    attr, delta = GuidedIntegratedGradients(model).attribute(
        x, b, target=1, n_steps=15, idgi=True, return_convergence_delta=True
    )
    assert delta.abs().max() < 1e-12


def test_linear_model_gets_gradient_times_difference():
    # a constant gradient: every feature's moves add up to x_i - b_i whatever the path
    w = torch.randn(12, dtype=torch.float64)
    x, b = torch.randn(3, 12, dtype=torch.float64), torch.randn(3, 12, dtype=torch.float64)
    attr = GuidedIntegratedGradients(lambda t: (t @ w).unsqueeze(1)).attribute(x, b, target=0, n_steps=9)
    torch.testing.assert_close(attr, w * (x - b), rtol=1e-10, atol=1e-12)


def test_no_deviation_is_integrated_gradients():
    model = _mlp()
    torch.manual_seed(3)
    x = torch.randn(3, 12, dtype=torch.float64)
    gig = GuidedIntegratedGradients(model).attribute(x, target=1, n_steps=10, max_dist=0.0)
    ig = IntegratedGradients(model).attribute(x, target=1, n_steps=10, method="riemann_left")
    torch.testing.assert_close(gig, ig, rtol=1e-6, atol=1e-8)  # IG's points are float32 linspace


def test_tuple_inputs_form_one_feature_vector():
    model = seeded(TwoInputModel()).double()
    torch.manual_seed(4)
    x1, x2 = torch.randn(2, 4, dtype=torch.float64), torch.randn(2, 3, dtype=torch.float64)
    a1, a2 = GuidedIntegratedGradients(model).attribute((x1, x2), target=2, additional_forward_args=(0.5,), n_steps=10)

    def joined(z):
        return model(z[:, :4], z[:, 4:], 0.5)

    x = torch.cat([x1, x2], 1)
    want = _reference_batch(joined, x, torch.zeros_like(x), 2, steps=10, fraction=0.25, max_dist=0.02)
    torch.testing.assert_close(torch.cat([a1, a2], 1), want, rtol=1e-9, atol=1e-12)


def test_batch_size_does_not_matter_and_float32_stays_float32():
    model = _mlp().float()
    torch.manual_seed(5)
    x = torch.randn(5, 12)
    gig = GuidedIntegratedGradients(model)
    full = gig.attribute(x, target=[0, 1, 2, 0, 1], n_steps=12)
    assert full.dtype == torch.float32
    for size in (1, 2):
        torch.testing.assert_close(gig.attribute(x, target=[0, 1, 2, 0, 1], n_steps=12, internal_batch_size=size), full)
    torch.testing.assert_close(gig.attribute(x[2:3], target=2, n_steps=12), full[2:3])
    assert torch.equal(gig.attribute(torch.zeros(2, 12), target=0, n_steps=5), torch.zeros(2, 12))


def test_bad_arguments():
    gig = GuidedIntegratedGradients(_mlp())
    x = torch.randn(2, 12, dtype=torch.float64)
    for kwargs, match in [
        ({"fraction": 0.0}, "fraction"), ({"fraction": 1.5}, "fraction"), ({"max_dist": -0.1}, "max_dist"),
        ({"n_steps": 0}, "n_steps"), ({"internal_batch_size": 0}, "internal_batch_size"),
    ]:
        with pytest.raises(ArgumentValueError, match=match):
            gig.attribute(x, target=0, **kwargs)
    with pytest.raises(ArgumentTypeError, match="fraction"):
        gig.attribute(x, target=0, fraction="half")
    with pytest.raises(ArgumentValueError, match="baselines"):
        gig.attribute(x, torch.zeros(3, 12), target=0)
