"""NoiseTunnel: reference aggregation, batching of samples, argument expansion, errors."""

import numpy as np
import pytest
import torch
from models import MLP, TwoInputModel, seeded
from torch import nn

from attribuo._engine.errors import ArgumentTypeError, ArgumentValueError
from attribuo.attr import (
    Attribution,
    GradientShap,
    InputXGradient,
    IntegratedGradients,
    LayerAttribution,
    NoiseTunnel,
    Saliency,
)


def _smooth_mlp():
    return seeded(MLP(n_in=6, n_hidden=10, n_out=3, act=nn.Tanh)).double()


def _noise(x, k, std):
    # NoiseTunnel's documented draw: (batch * k, ...) standard normals in float32, scaled.
    return (torch.randn((x.shape[0] * k,) + tuple(x.shape[1:])) * std).to(x.dtype)


def _reference(method_fn, x, k, std, nt_type):
    """Per-sample loop: attribute each noisy copy of each example separately."""
    noise = _noise(x, k, std)
    per = torch.stack(
        [
            torch.stack([method_fn(x[i : i + 1] + noise[i * k + j], i)[0] for j in range(k)])
            for i in range(x.shape[0])
        ]
    )  # [batch, k, ...]
    mean, mean_sq = per.mean(1), (per * per).mean(1)
    return {"smoothgrad": mean, "smoothgrad_sq": mean_sq, "vargrad": mean_sq - mean * mean}[nt_type]


@pytest.mark.parametrize("nt_type", ["smoothgrad", "smoothgrad_sq", "vargrad"])
def test_saliency_matches_per_sample_reference(nt_type):
    model = _smooth_mlp()
    torch.manual_seed(0)
    x = torch.randn(3, 6, dtype=torch.float64)
    targets = [2, 0, 1]
    torch.manual_seed(1)
    got = NoiseTunnel(Saliency(model)).attribute(
        x, nt_type=nt_type, nt_samples=4, stdevs=0.3, target=targets
    )
    torch.manual_seed(1)
    ref = _reference(
        lambda xi, i: Saliency(model).attribute(xi, target=targets[i]), x, 4, 0.3, nt_type
    )
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-12)


def test_integrated_gradients_with_per_example_baselines_matches_reference():
    model = _smooth_mlp()
    torch.manual_seed(2)
    x, b = torch.randn(3, 6, dtype=torch.float64), torch.randn(3, 6, dtype=torch.float64)
    torch.manual_seed(3)
    got, delta = NoiseTunnel(IntegratedGradients(model)).attribute(
        x, nt_samples=3, stdevs=0.2, baselines=b, target=1, n_steps=8, return_convergence_delta=True
    )
    torch.manual_seed(3)
    ig = IntegratedGradients(model)
    ref = _reference(
        lambda xi, i: ig.attribute(xi, b[i : i + 1], target=1, n_steps=8), x, 3, 0.2, "smoothgrad"
    )
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-12)
    assert delta.shape == (9,) and delta.abs().max() < 1e-3


@pytest.mark.parametrize(
    "batch, expected_calls", [(None, [10]), (3, [3, 3, 3, 1]), (10, [10]), (20, [10])]
)
def test_samples_are_batched_into_few_calls(batch, expected_calls):
    calls = []

    class Counting(Saliency):
        def attribute(self, inputs, **kwargs):
            calls.append(inputs.shape[0] // 2)
            return super().attribute(inputs, **kwargs)

    x = torch.randn(2, 6, dtype=torch.float64)
    NoiseTunnel(Counting(_smooth_mlp())).attribute(
        x, nt_samples=10, nt_samples_batch_size=batch, target=0
    )
    assert calls == expected_calls


def test_zero_noise_gives_the_plain_method_whatever_the_batching():
    model = _smooth_mlp()
    x = torch.randn(4, 6, dtype=torch.float64)
    plain = InputXGradient(model).attribute(x, target=[0, 1, 2, 0])
    nt = NoiseTunnel(InputXGradient(model))
    for batch in (None, 1, 3):
        for nt_type, expected in (("smoothgrad", plain), ("smoothgrad_sq", plain * plain)):
            got = nt.attribute(
                x,
                nt_type=nt_type,
                nt_samples=7,
                nt_samples_batch_size=batch,
                stdevs=0.0,
                target=[0, 1, 2, 0],
            )
            torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-14)
        var = nt.attribute(
            x,
            nt_type="vargrad",
            nt_samples=7,
            nt_samples_batch_size=batch,
            stdevs=0.0,
            target=torch.tensor([0, 1, 2, 0]),
        )
        torch.testing.assert_close(var, torch.zeros_like(x), rtol=0, atol=1e-12)


def test_tuple_inputs_per_input_stdevs_and_batched_additional_args():
    class Scaled(nn.Module):
        def forward(self, a, b, scale):
            return torch.tanh(a * scale).sum(1, keepdim=True) + (b * b).sum(1, keepdim=True)

    torch.manual_seed(4)
    a, b = torch.randn(2, 3, dtype=torch.float64), torch.randn(2, 2, dtype=torch.float64)
    scale = torch.tensor([[1.0], [3.0]], dtype=torch.float64)
    model = Scaled()
    torch.manual_seed(5)
    got = NoiseTunnel(Saliency(model)).attribute(
        (a, b), nt_samples=3, stdevs=(0.1, 0.0), additional_forward_args=(scale,), abs=False
    )
    torch.manual_seed(5)
    noise_a = _noise(a, 3, 0.1)
    _noise(b, 3, 0.0)
    ref_a = torch.stack(
        [
            torch.stack(
                [
                    (1 - torch.tanh((a[i] + noise_a[i * 3 + j]) * scale[i]) ** 2) * scale[i]
                    for j in range(3)
                ]
            ).mean(0)
            for i in range(2)
        ]
    )
    torch.testing.assert_close(got[0], ref_a, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(got[1], 2 * b, rtol=1e-12, atol=1e-12)  # noise-free input


def test_draw_baseline_from_distribution_for_integrated_gradients():
    model = _smooth_mlp()
    torch.manual_seed(6)
    x, dist = torch.randn(2, 6, dtype=torch.float64), torch.randn(5, 6, dtype=torch.float64)
    torch.manual_seed(7)
    np.random.seed(7)
    got = NoiseTunnel(IntegratedGradients(model)).attribute(
        x,
        nt_samples=4,
        stdevs=0.1,
        draw_baseline_from_distrib=True,
        baselines=dist,
        target=0,
        n_steps=6,
    )
    torch.manual_seed(7)
    np.random.seed(7)
    rows = np.random.choice(5, 8)
    ig = IntegratedGradients(model)
    noise = _noise(x, 4, 0.1)
    ref = torch.stack(
        [
            torch.stack(
                [
                    ig.attribute(
                        x[i : i + 1] + noise[i * 4 + j], dist[rows[i * 4 + j]], target=0, n_steps=6
                    )[0]
                    for j in range(4)
                ]
            ).mean(0)
            for i in range(2)
        ]
    )
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-12)


def test_deltas_are_passed_through_for_every_sample():
    model = _smooth_mlp()
    x = torch.randn(3, 6, dtype=torch.float64)
    torch.manual_seed(8)
    np.random.seed(8)
    nt = NoiseTunnel(GradientShap(model))
    assert nt.has_convergence_delta() and nt.multiplies_by_inputs
    attr, delta = nt.attribute(
        x,
        nt_samples=5,
        nt_samples_batch_size=2,
        stdevs=0.1,
        baselines=torch.randn(4, 6, dtype=torch.float64),
        n_samples=2,
        target=0,
        return_convergence_delta=True,
    )
    assert attr.shape == x.shape and delta.shape == (3 * 5 * 2,)


def test_layer_form_is_kept():
    class TwoPieces(LayerAttribution):
        """A stand-in layer method: returns a tuple whatever the input form."""

        def attribute(self, inputs, target=None):
            return (inputs[:, :2] * 2, inputs.sum(1, keepdim=True))

    x = torch.randn(3, 4, dtype=torch.float64)
    out = NoiseTunnel(TwoPieces(lambda t: t, None)).attribute(x, nt_samples=4, stdevs=0.0)
    assert isinstance(out, tuple) and out[0].shape == (3, 2) and out[1].shape == (3, 1)
    torch.testing.assert_close(out[0], 2 * x[:, :2])


@pytest.mark.parametrize(
    "kwargs, error, name",
    [
        ({"nt_type": "smooth"}, ArgumentValueError, "nt_type"),
        ({"nt_samples": 0}, ArgumentValueError, "nt_samples"),
        ({"nt_samples_batch_size": 0}, ArgumentValueError, "nt_samples_batch_size"),
        ({"stdevs": (0.1, 0.1)}, ArgumentValueError, "stdevs"),
        ({"stdevs": -0.5}, ArgumentValueError, "stdevs"),
        ({"stdevs": "0.1"}, ArgumentTypeError, "stdevs"),
        ({"n_samples": 4}, ArgumentTypeError, "n_samples"),
        ({"return_convergence_delta": True}, ArgumentValueError, "return_convergence_delta"),
    ],
)
def test_bad_arguments_are_named_and_draw_nothing(kwargs, error, name):
    x = torch.randn(2, 6, dtype=torch.float64)
    nt = NoiseTunnel(Saliency(_smooth_mlp()))
    state = torch.get_rng_state()
    with pytest.raises(error, match=f"`{name}"):
        nt.attribute(x, target=0, **kwargs)
    assert torch.equal(torch.get_rng_state(), state)


def test_wrapping_something_else_is_an_error():
    with pytest.raises(ArgumentTypeError, match="attribution_method"):
        NoiseTunnel(_smooth_mlp())


def test_integer_inputs_are_rejected():
    class Ids(Attribution):
        def attribute(self, inputs):
            return inputs.float()

    with pytest.raises(ArgumentTypeError, match="floating"):
        NoiseTunnel(Ids(lambda t: t)).attribute(torch.tensor([[1, 2]]))


def test_inputs_untouched_and_two_input_model_shapes():
    model = seeded(TwoInputModel()).double()
    x = (torch.randn(2, 4, dtype=torch.float64), torch.randn(2, 3, dtype=torch.float64))
    before = tuple(t.clone() for t in x)
    out = NoiseTunnel(Saliency(model)).attribute(x, nt_type="vargrad", stdevs=0.5, target=1)
    assert tuple(o.shape for o in out) == ((2, 4), (2, 3))
    assert all(torch.equal(a, b) for a, b in zip(x, before))
