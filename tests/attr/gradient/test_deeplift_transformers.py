"""DeepLift on transformer operations: hand-derived multipliers and summation-to-delta."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attribuo.attr import DeepLift, DeepLiftShap, LayerDeepLift
from attribuo.attr.gradient.deeplift_ops import COVERED
from attribuo.attr.gradient.deeplift_rules import WATCHED
from tests.models import hf

D = torch.float64


def _multipliers(f, x, x0):
    return DeepLift(f, multiply_by_inputs=False).attribute(x, baselines=x0)


def _delta(f, x, x0, **kwargs):
    """The largest ``|sum of attributions - (F(x) - F(x0))|``, failing on any warning (uncovered or unpaired)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        attributions, delta = DeepLift(f).attribute(x, baselines=x0, return_convergence_delta=True, **kwargs)
    assert torch.isfinite(attributions).all()
    return delta.abs().max().item()


# ------------------------------------------------------ element-wise rules

_UNARY = {
    "gelu": F.gelu,
    "gelu_tanh": lambda t: F.gelu(t, approximate="tanh"),
    "silu": F.silu,
    "selu": F.selu,
    "celu": lambda t: F.celu(t, 0.7),
    "mish": F.mish,
    "exp": torch.exp,
    "exp_method": lambda t: t.exp(),
    "log": torch.log,
    "sqrt": lambda t: t.sqrt(),
    "rsqrt": torch.rsqrt,
    "reciprocal": torch.reciprocal,
    "erf": torch.erf,
    "special_erf": torch.special.erf,
    "square": torch.square,
    "pow2": lambda t: t.pow(2),
    "pow3": lambda t: torch.pow(t, 3),
    "dunder_pow": lambda t: t**1.5,
    "dunder_square": lambda t: t**2,
    "dunder_cube": lambda t: t**3,
    "scalar_base": lambda t: 2.0**t,
    "torch_pow_scalar_base": lambda t: torch.pow(3.0, t),
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
}


@pytest.mark.parametrize("name", list(_UNARY))
def test_elementwise_multiplier_is_the_secant_slope_or_the_derivative(name):
    f = _UNARY[name]
    x = torch.tensor([[0.5, 2.0, 1.3, 0.9]], dtype=D)
    x0 = torch.tensor([[1.5, 0.25, 1.3, 3.0]], dtype=D)  # third entry: x == x0, the derivative
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = _multipliers(lambda t: f(t).sum(-1), x, x0)
    secant = (f(x) - f(x0)) / (x - x0)
    at = x[0, 2].clone().requires_grad_()
    (slope,) = torch.autograd.grad(f(at), at)
    expected = secant.clone()
    expected[0, 2] = slope
    torch.testing.assert_close(got, expected)


def test_exp_multiplier_by_hand():
    x, x0 = torch.tensor([[1.0, -2.0]], dtype=D), torch.tensor([[0.0, 1.0]], dtype=D)
    expected = torch.tensor([[math.e - 1, (math.exp(-2) - math.e) / -3.0]], dtype=D)
    torch.testing.assert_close(_multipliers(lambda t: torch.exp(t).sum(-1), x, x0), expected)


# -------------------------------------------------------------- products


def test_product_multiplier_is_the_other_factor_pair_mean():
    torch.manual_seed(0)
    a_w, b_w, u = torch.randn(4, 3, dtype=D), torch.randn(4, 3, dtype=D), torch.randn(3, dtype=D)

    def f(x):
        return ((x @ a_w) * (x @ b_w) * u).sum(-1)

    x, x0 = torch.randn(2, 4, dtype=D), torch.randn(2, 4, dtype=D)
    a_mean, b_mean = (x @ a_w + x0 @ a_w) / 2, (x @ b_w + x0 @ b_w) / 2
    expected = (b_mean * u) @ a_w.T + (a_mean * u) @ b_w.T
    torch.testing.assert_close(_multipliers(f, x, x0), expected)
    assert _delta(f, x, x0) < 1e-12


@pytest.mark.parametrize(
    "op",
    [
        lambda a, b: a @ b.transpose(-1, -2),
        lambda a, b: torch.matmul(a, b.transpose(-1, -2)),
        lambda a, b: torch.bmm(a, b.transpose(-1, -2).expand(-1, 3, -1)),
        lambda a, b: torch.einsum("nik,njk->nij", a, b),
        lambda a, b: a * b,  # broadcast over dim 1
    ],
)
def test_matrix_products_split_with_the_other_factor_pair_mean(op):
    # a: (N, 2, 3), b: (N, 1, 3) broadcast against it; both linear in x, so the
    # reference multipliers are the gradient of op(a, mean b) + op(mean a, b).
    torch.manual_seed(5)
    wa, wb = torch.randn(6, 6, dtype=D), torch.randn(6, 3, dtype=D)

    def parts(x):
        return (x @ wa).view(-1, 2, 3), (x @ wb).view(-1, 1, 3)

    def f(x):
        return op(*parts(x)).flatten(1).sum(1)

    x, x0 = torch.randn(2, 6, dtype=D), torch.randn(2, 6, dtype=D)
    (a1, b1), (a0, b0) = parts(x), parts(x0)
    xr = x.clone().requires_grad_()
    a, b = parts(xr)
    linearised = op(a, (b1 + b0) / 2).sum() + op((a1 + a0) / 2, b).sum()
    (expected,) = torch.autograd.grad(linearised, xr)
    torch.testing.assert_close(_multipliers(f, x, x0), expected)
    assert _delta(f, x, x0) < 1e-12


def test_division_is_a_product_with_the_reciprocal():
    x = torch.tensor([[3.0, 2.0]], dtype=D)
    x0 = torch.tensor([[1.0, 4.0]], dtype=D)
    got = _multipliers(lambda t: t[:, 0] / t[:, 1], x, x0)
    recip_mean = (1 / 2.0 + 1 / 4.0) / 2
    a_mean = (3.0 + 1.0) / 2
    recip_slope = (1 / 2.0 - 1 / 4.0) / (2.0 - 4.0)
    torch.testing.assert_close(got, torch.tensor([[recip_mean, a_mean * recip_slope]], dtype=D))
    for f in (lambda t: 1.0 / (t * t + 1).sum(1), lambda t: torch.div(t[:, 0], t[:, 1] + 5) * t[:, 0]):
        assert _delta(f, x, x0) < 1e-12


def test_products_with_parameters_stay_linear_even_with_even_sizes():
    # every weight below has dim 0 equal to the paired batch 2N = 2 (or 4)
    torch.manual_seed(1)
    layer = nn.Linear(3, 4).to(D)
    scale = nn.Parameter(torch.randn(2, 4, dtype=D))
    square = nn.Parameter(torch.randn(4, 4, dtype=D))

    def f(x):
        h = layer(x) * scale[0] + x @ torch.ones(3, 2, dtype=D) @ scale
        h = h * torch.exp(scale).sum(0) + torch.matmul(h, square.t()) + h @ square / (scale * scale).sum()
        return torch.einsum("ni,ij->nj", h, square).sum(-1)

    for n in (1, 2):
        x, x0 = torch.randn(n, 3, dtype=D), torch.randn(n, 3, dtype=D)
        xr = x.clone().requires_grad_()
        (gradient,) = torch.autograd.grad(f(xr).sum(), xr)  # f is linear: multipliers are its gradient
        torch.testing.assert_close(_multipliers(f, x, x0), gradient)


# ---------------------------------------------------------------- max / min


def test_max_over_a_dim_sends_its_change_to_the_arg_maxima():
    x = torch.tensor([[1.0, 5.0, 2.0]], dtype=D)
    x0 = torch.tensor([[3.0, 0.0, 1.0]], dtype=D)
    attributions, delta = DeepLift(lambda t: torch.amax(t, dim=1)).attribute(x, baselines=x0, return_convergence_delta=True)
    torch.testing.assert_close(attributions, torch.tensor([[0.0, 2.0, 0.0]], dtype=D))
    assert delta.abs().max() < 1e-12
    values = DeepLift(lambda t: t.max(dim=1).values * 2).attribute(x, baselines=x0)
    torch.testing.assert_close(values.sum(), torch.tensor(4.0, dtype=D))
    # the minimum falls from 1 to 0: the rise of -min goes to the reference's arg-min
    lowest = DeepLift(lambda t: torch.min(t, 1, keepdim=True)[0][:, 0]).attribute(x, baselines=x0)
    torch.testing.assert_close(lowest, torch.tensor([[0.0, 1.0, 0.0]], dtype=D))


def test_max_and_min_add_up_on_random_rows():
    torch.manual_seed(6)
    x, x0 = torch.randn(3, 4, 5, dtype=D), torch.randn(3, 4, 5, dtype=D)
    assert _delta(lambda t: torch.amax(t, -1).sum(1) - t.amin(dim=1).sum(1) + t.max(2).values.mean(1), x, x0) < 1e-12


# -------------------------------------------------------- normalisations

_W, _B = torch.randn(6, dtype=D, generator=torch.Generator().manual_seed(9)), torch.linspace(-1, 1, 6, dtype=D)


_NORMS = {
    "layer_norm": lambda t: F.layer_norm(t, (6,), _W, _B),
    "LayerNorm": lambda t: nn.LayerNorm(6).to(D)(t),
    "rms_norm": lambda t: F.rms_norm(t, (6,), _W, 1e-6),
    "group_norm": lambda t: F.group_norm(t.reshape(-1, 2, 3), 2).reshape(-1, 6),
    "activations": lambda t: F.gelu(t, approximate="tanh") * F.silu(t) + F.mish(t) - torch.rsqrt(t * t + 1) + t.pow(3),
    # Llama's RMSNorm: float32 inside a float64 model
    "llama_rms_norm": lambda t: _W * (t.float() * torch.rsqrt(t.to(torch.float32).pow(2).mean(-1, keepdim=True) + 1e-6)).to(t.dtype),
}


@pytest.mark.parametrize("name", list(_NORMS))
@pytest.mark.parametrize("zero_baseline", [True, False])
def test_normalisations_and_activations_add_up_to_the_output_difference(name, zero_baseline):
    torch.manual_seed(2)
    head = torch.randn(6, dtype=D)
    x = torch.randn(3, 6, dtype=D)
    x0 = torch.zeros(3, 6, dtype=D) if zero_baseline else 0.3 * torch.randn(3, 6, dtype=D)
    # the down-casts run in float64 here (the delta's plain forwards in float32: their rounding is what is left)
    tolerance = 1e-6 if name == "llama_rms_norm" else 1e-10
    assert _delta(lambda t: (_NORMS[name](t) * head).sum(-1), x, x0) < tolerance


def test_rms_norm_with_its_default_eps():
    # float64's eps scales a zero baseline by 1e8 (and the split's two terms cancel to 8 digits): a random baseline
    torch.manual_seed(2)
    x, x0 = torch.randn(3, 6, dtype=D), 0.3 * torch.randn(3, 6, dtype=D)
    assert _delta(lambda t: F.rms_norm(t, (6,)).sum(-1) + F.rms_norm(t, (6,)).exp().sum(-1), x, x0) < 1e-10


# ---------------------------------------------------------------- attention


def test_attention_softmax_is_exact_and_masked_scores_give_no_nan():
    torch.manual_seed(7)
    keep = torch.tensor([True, True, False, True])

    def f(x, fill):
        s = x.view(-1, 2, 4, 4)
        s = s.masked_fill(~keep, fill) if fill is not None else s
        return (torch.softmax(s, -1) * torch.arange(4.0, dtype=D)).sum((1, 2, 3))

    x, x0 = 3 * torch.randn(2, 32, dtype=D), torch.randn(2, 32, dtype=D)
    for fill in (None, float("-inf"), torch.finfo(D).min):
        assert _delta(lambda t, fill=fill: f(t, fill), x, x0) < 1e-12


def test_sdpa_with_a_fully_masked_row():
    keep = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0], [1, 0, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    additive = torch.zeros(4, 4, dtype=D).masked_fill(~keep, float("-inf"))  # passes NaN on where masked_fill would not

    def f(x, mask):
        q = x.view(x.shape[0], 1, 4, 2)
        return F.scaled_dot_product_attention(q, 2 * q, q.tanh(), attn_mask=mask).sum((1, 2, 3))

    torch.manual_seed(8)
    x, x0 = torch.randn(2, 8, dtype=D), torch.randn(2, 8, dtype=D)
    for mask in (keep, additive):
        assert _delta(lambda t, mask=mask: f(t, mask), x, x0) < 1e-12


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
    x, x0 = torch.randn(2, 4, 8, dtype=D), torch.zeros(2, 4, 8, dtype=D)
    assert _delta(_Block().to(D), x, x0, target=1) < 1e-10


def test_torch_transformer_encoder_layer():
    torch.manual_seed(4)
    layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True, activation="gelu")
    model = nn.Sequential(layer, nn.Flatten(), nn.Linear(40, 3)).to(D).eval()
    x, x0 = torch.randn(3, 5, 8, dtype=D), torch.randn(3, 5, 8, dtype=D)
    assert _delta(model, x, x0, target=2) < 1e-10


@pytest.mark.parametrize("need_weights", [True, False])
def test_multihead_attention_with_and_without_weights(need_weights):
    # with weights, torch folds the heads into dim 0 (batch-major) and uses baddbmm and bmm
    torch.manual_seed(10)
    attention, head = nn.MultiheadAttention(8, 2, batch_first=True).to(D).eval(), nn.Linear(8, 3).to(D)
    causal = torch.zeros(5, 5, dtype=D).masked_fill(torch.ones(5, 5, dtype=torch.bool).triu(1), float("-inf"))

    def f(x):
        out, _ = attention(x, x, x, need_weights=need_weights, attn_mask=causal)
        return head(F.gelu(out).mean(1))

    assert _delta(f, torch.randn(3, 5, 8, dtype=D), torch.randn(3, 5, 8, dtype=D), target=1) < 1e-10


# ---------------------------------------------------------- Hugging Face

_TOLERANCE = 1e-6  # relative to |F(x) - F(x0)|; Llama's own float32 RMSNorm rounds the plain forward to ~1e-7


def _logit(logits):
    """Label 1 of a classifier, or token 1 at the last position of a language model."""
    return logits[:, 1] if logits.dim() == 2 else logits[:, -1, 1]


def _relative(delta, attributions):
    return (delta.abs() / (attributions.flatten(1).sum(1) - delta).abs()).max().item()


@pytest.mark.parametrize("family", ["bert", "gpt2", "llama"])
@pytest.mark.parametrize("kernel", ["sdpa", "eager"])
def test_hugging_face_models_add_up_with_no_uncovered_operation(family, kernel):
    model = getattr(hf, family)().to(D)
    model.set_attn_implementation(kernel)
    ids = torch.randint(1000, 3000, (2, 6), generator=torch.Generator().manual_seed(0))
    target = 1 if family == "bert" else (-1, 5)
    explainer = LayerDeepLift(lambda i: model(i).logits, model.get_input_embeddings())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        attributions, delta = explainer.attribute(ids, baselines=0, target=target, return_convergence_delta=True)
    assert _relative(delta, attributions) < _TOLERANCE


@pytest.mark.parametrize("family", ["bert", "gpt2"])
@pytest.mark.parametrize("kernel", ["sdpa", "eager"])
def test_hugging_face_models_with_padding_masks(family, kernel):
    model = getattr(hf, family)().to(D)
    model.set_attn_implementation(kernel)
    ids = torch.randint(1000, 3000, (2, 6), generator=torch.Generator().manual_seed(1))
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
    embeddings = model.get_input_embeddings()(ids).detach()

    def logit(e, m):
        return _logit(model(inputs_embeds=e, attention_mask=m).logits)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        attributions, delta = DeepLift(logit).attribute(
            embeddings, baselines=0, additional_forward_args=(mask,), return_convergence_delta=True
        )
    assert torch.isfinite(attributions).all() and _relative(delta, attributions) < _TOLERANCE


@pytest.mark.parametrize("family", ["bert", "gpt2", "llama"])
def test_deeplift_shap_with_three_baselines(family):
    model = getattr(hf, family)().to(D)
    embeddings = model.get_input_embeddings()(torch.randint(1000, 3000, (2, 5))).detach()
    baselines = 0.02 * torch.randn(3, 5, 64, dtype=D, generator=torch.Generator().manual_seed(1))

    def logit(e):
        return _logit(model(inputs_embeds=e).logits)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        attributions, delta = DeepLiftShap(logit).attribute(embeddings, baselines=baselines, return_convergence_delta=True)
    assert attributions.shape == embeddings.shape and delta.shape == (6,)
    assert delta.abs().max() < 1e-6 * (1e-3 + attributions.abs().sum())


# ------------------------------------------------------------- reporting


def test_covered_functions_are_not_watched_and_the_rest_is_reported():
    assert not set(COVERED) & set(WATCHED)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        DeepLift(lambda t: (t**t).sum(1)).attribute(torch.rand(2, 3, dtype=D) + 1)  # a tensor exponent
        DeepLift(lambda t: torch.exp(t.sum(0, keepdim=True)).expand(t.shape[0], -1).sum(1)).attribute(
            torch.rand(2, 3, dtype=D)  # a (1, 3) tensor of the inputs: no pairs along dim 0
        )
    messages = [str(r.message) for r in record]
    assert any("no Rescale rule for Tensor.__pow__" in m for m in messages)
    assert any("could not pair" in m and "torch.exp" in m for m in messages)


def test_a_float32_model_that_casts_its_float64_inputs_still_runs():
    class Casting(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = nn.Linear(4, 2)

        def forward(self, x):
            h = x.float()  # tabular data often arrives as float64
            return self.layer(F.gelu(h) * h)

    x, x0 = torch.randn(3, 4, dtype=D), torch.zeros(3, 4, dtype=D)
    _, delta = DeepLift(Casting()).attribute(x, baselines=x0, target=0, return_convergence_delta=True)
    assert delta.abs().max() < 1e-5
