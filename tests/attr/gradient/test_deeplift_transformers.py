"""DeepLift on transformer operations: hand-derived multipliers and summation-to-delta."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attribuo.attr import DeepLift, DeepLiftShap, LayerDeepLift
from tests.models import hf

D = torch.float64


def _multipliers(f, x, x0):
    return DeepLift(f, multiply_by_inputs=False).attribute(x, baselines=x0)


def test_exp_multiplier_is_the_secant_slope():
    x, x0 = torch.tensor([[1.0, -2.0, 0.5]], dtype=D), torch.tensor([[0.0, 1.0, 0.5]], dtype=D)
    got = _multipliers(lambda t: torch.exp(t).sum(-1), x, x0)
    expected = torch.tensor([[(torch.e - 1) / 1.0, (torch.e**-2 - torch.e) / -3.0, torch.exp(torch.tensor(0.5)).item()]], dtype=D)
    torch.testing.assert_close(got, expected)


def test_product_multiplier_is_the_other_factor_pair_mean():
    torch.manual_seed(0)
    a_w, b_w, u = torch.randn(4, 3, dtype=D), torch.randn(4, 3, dtype=D), torch.randn(3, dtype=D)

    def f(x):
        return ((x @ a_w) * (x @ b_w) * u).sum(-1)

    x, x0 = torch.randn(2, 4, dtype=D), torch.randn(2, 4, dtype=D)
    a_mean, b_mean = (x @ a_w + x0 @ a_w) / 2, (x @ b_w + x0 @ b_w) / 2
    expected = (b_mean * u) @ a_w.T + (a_mean * u) @ b_w.T
    torch.testing.assert_close(_multipliers(f, x, x0), expected)
    attributions, delta = DeepLift(f).attribute(x, baselines=x0, return_convergence_delta=True)
    assert delta.abs().max() < 1e-12


def test_products_with_parameters_stay_linear_even_with_even_sizes():
    torch.manual_seed(1)
    layer = nn.Linear(3, 4).to(D)
    scale = nn.Parameter(torch.randn(2, 4, dtype=D))  # dim 0 equals the paired batch below

    def f(x):
        return (layer(x) * scale[0] + x @ torch.ones(3, 2, dtype=D) @ scale).sum(-1)

    x, x0 = torch.randn(1, 3, dtype=D), torch.randn(1, 3, dtype=D)
    xr = x.clone().requires_grad_()
    (gradient,) = torch.autograd.grad(f(xr).sum(), xr)  # f is affine: multipliers are its gradient
    torch.testing.assert_close(_multipliers(f, x, x0), gradient)


def test_max_over_a_dim_sends_its_change_to_the_arg_maxima():
    x = torch.tensor([[1.0, 5.0, 2.0]], dtype=D)
    x0 = torch.tensor([[3.0, 0.0, 1.0]], dtype=D)
    attributions, delta = DeepLift(lambda t: torch.amax(t, dim=1)).attribute(x, baselines=x0, return_convergence_delta=True)
    torch.testing.assert_close(attributions, torch.tensor([[-0.0, 2.0, 0.0]], dtype=D))
    assert delta.abs().max() < 1e-12
    values = DeepLift(lambda t: t.max(dim=1).values * 2).attribute(x, baselines=x0)
    torch.testing.assert_close(values.sum(), torch.tensor(4.0, dtype=D))


_W, _B = torch.randn(6, dtype=D, generator=torch.Generator().manual_seed(9)), torch.linspace(-1, 1, 6, dtype=D)


@pytest.mark.parametrize(
    "norm",
    [
        lambda t: F.layer_norm(t, (6,), _W, _B),
        lambda t: F.rms_norm(t, (6,), _W),
        lambda t: F.group_norm(t.reshape(-1, 2, 3), 2).reshape(-1, 6),
        lambda t: F.gelu(t, approximate="tanh") * F.silu(t) + F.mish(t) - torch.rsqrt(t * t + 1) + t.pow(3),
    ],
)
def test_normalisations_and_activations_add_up_to_the_output_difference(norm):
    torch.manual_seed(2)
    head = torch.randn(6, dtype=D)
    x, x0 = torch.randn(3, 6, dtype=D), torch.randn(3, 6, dtype=D)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "no Rescale rule" warning
        _, delta = DeepLift(lambda t: (norm(t) * head).sum(-1)).attribute(x, baselines=x0, return_convergence_delta=True)
    assert delta.abs().max() < 1e-10


class _Block(nn.Module):
    """Hand-written attention with a padding mask, LayerNorm and a SwiGLU MLP."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.qkv = nn.Linear(8, 24)
        self.norm = nn.LayerNorm(8)
        self.gate, self.up, self.down = nn.Linear(8, 16), nn.Linear(8, 16), nn.Linear(16, 8)
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        q, k, v = self.qkv(x).chunk(3, -1)
        scores = (q @ k.transpose(-1, -2))[:, None] / 8**0.5
        scores = scores.masked_fill(torch.tensor([False, False, False, True]), float("-inf"))
        x = self.norm(x + (torch.softmax(scores, -1) @ v[:, None])[:, 0])
        x = x + self.down(F.silu(self.gate(x)) * self.up(x))
        return self.head(F.gelu(x).mean(1))


def test_hand_written_block_with_masked_attention():
    model = _Block().to(D)
    x, x0 = torch.randn(2, 4, 8, dtype=D), torch.zeros(2, 4, 8, dtype=D)
    attributions, delta = DeepLift(model).attribute(x, baselines=x0, target=1, return_convergence_delta=True)
    assert torch.isfinite(attributions).all() and delta.abs().max() < 1e-10


def test_torch_transformer_encoder_layer():
    torch.manual_seed(4)
    layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True, activation="gelu")
    model = nn.Sequential(layer, nn.Flatten(), nn.Linear(40, 3)).to(D).eval()
    x, x0 = torch.randn(3, 5, 8, dtype=D), torch.randn(3, 5, 8, dtype=D)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, delta = DeepLift(model).attribute(x, baselines=x0, target=2, return_convergence_delta=True)
    assert delta.abs().max() < 1e-10


@pytest.mark.parametrize("family", ["bert", "gpt2", "llama"])
@pytest.mark.parametrize("kernel", ["sdpa", "eager"])
def test_hugging_face_models_add_up_with_no_uncovered_operation(family, kernel):
    model = getattr(hf, family)().to(D)
    model.set_attn_implementation(kernel)
    ids = torch.randint(1000, 3000, (2, 6), generator=torch.Generator().manual_seed(0))
    target = 1 if family == "bert" else (-1, 5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        explainer = LayerDeepLift(lambda i: model(i).logits, model.get_input_embeddings())
        _, delta = explainer.attribute(ids, baselines=0, target=target, return_convergence_delta=True)
    # Llama's RMSNorm computes in float32 whatever the model's dtype
    assert delta.abs().max() < (5e-5 if family == "llama" else 1e-10)


def test_deeplift_shap_on_gpt2_embeddings():
    model = hf.gpt2().to(D)
    embeddings = model.get_input_embeddings()(torch.randint(1000, 3000, (2, 5))).detach()
    baselines = 0.02 * torch.randn(3, 5, 64, dtype=D, generator=torch.Generator().manual_seed(1))

    def next_token(e):
        return model(inputs_embeds=e).logits[:, -1, 9]

    attributions, delta = DeepLiftShap(next_token).attribute(embeddings, baselines=baselines, return_convergence_delta=True)
    assert attributions.shape == embeddings.shape
    assert delta.abs().max() < 1e-10
