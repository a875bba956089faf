"""AttnLRP: each rule against a hand-derived relevance, conservation, hygiene."""

from __future__ import annotations

import math
import threading

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attribuo.attr import LRP, AttnLRP, LayerAttnLRP
from attribuo.attr.relevance import AttnLRPComposite, Composite, EpsilonRule, GammaRule, ZBoxRule
from tests.models import hf

D = torch.float64


def lrp0(x: torch.Tensor, weight: torch.Tensor, relevance_out: torch.Tensor) -> torch.Tensor:
    """LRP-0 through a bias-free linear map ``z = weight @ x`` (the hand-derived reference)."""
    z = weight @ x
    return x * (weight.T @ (relevance_out / z))


class Bilinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 3, bias=False), nn.Linear(4, 3, bias=False)
        self.head = nn.Linear(3, 1, bias=False)

    def forward(self, x):
        return self.head(self.a(x) * self.b(x))


def test_product_of_two_branches_splits_relevance_in_half():
    torch.manual_seed(0)
    model = Bilinear().to(D)
    x = torch.randn(4, dtype=D)
    a, b = model.a.weight @ x, model.b.weight @ x
    relevance_y = a * b * model.head.weight[0]
    expected = lrp0(x, model.a.weight, relevance_y / 2) + lrp0(x, model.b.weight, relevance_y / 2)
    got = AttnLRP(model).attribute(x[None], target=0)[0]
    torch.testing.assert_close(got, expected)
    assert got.sum().item() == pytest.approx(model(x[None]).item(), rel=1e-10)  # bias-free: conserved


def test_product_with_a_parameter_is_linear_not_halved():
    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.tensor([2.0, -1.0, 0.5], dtype=D))

        def forward(self, x):
            return (self.weight * x).sum(-1, keepdim=True)

    x = torch.tensor([[1.0, 2.0, 3.0]], dtype=D)
    got = AttnLRP(Scaled()).attribute(x, target=0)
    torch.testing.assert_close(got, torch.tensor([[2.0, -2.0, 1.5]], dtype=D))


@pytest.mark.parametrize("activation", ["gelu", "silu", "new_gelu", "tanh"])
def test_activations_pass_relevance_unchanged(activation):
    from transformers.activations import NewGELUActivation

    torch.manual_seed(1)
    acts = {"gelu": nn.GELU(), "silu": nn.SiLU(), "new_gelu": NewGELUActivation(), "tanh": nn.Tanh()}
    w1, w2 = torch.randn(5, 3, dtype=D), torch.randn(1, 5, dtype=D)
    model = nn.Sequential(nn.Linear(3, 5, bias=False), acts[activation], nn.Linear(5, 1, bias=False)).to(D)
    model[0].weight.data, model[2].weight.data = w1, w2
    x = torch.randn(3, dtype=D)
    z = w1 @ x
    h = model[1](z)
    expected = lrp0(x, w1, h * w2[0])  # identity rule: R_z = R_h = h * w2
    torch.testing.assert_close(AttnLRP(model).attribute(x[None], target=0)[0], expected)


def test_softmax_rule_is_the_taylor_linearisation():
    torch.manual_seed(2)
    w, u = torch.randn(4, 3, dtype=D), torch.randn(4, dtype=D)

    def f(x):
        return (torch.softmax(x @ w.T, -1) * u).sum(-1)

    x = torch.randn(3, dtype=D)
    z = w @ x
    s = torch.softmax(z, -1)
    relevance_s = s * u
    relevance_z = z * (relevance_s - s * relevance_s.sum())
    expected = lrp0(x, w, relevance_z)
    torch.testing.assert_close(AttnLRP(f).attribute(x[None])[0], expected)


def test_layer_norm_is_linear_with_its_scale_held_constant():
    torch.manual_seed(3)
    norm = nn.LayerNorm(4).to(D)
    norm.weight.data = torch.randn(4, dtype=D)
    u = torch.randn(4, dtype=D)
    x = torch.randn(4, dtype=D)
    sigma = torch.sqrt(x.var(unbiased=False) + norm.eps)
    centre = torch.eye(4, dtype=D) - 1 / 4
    linear = torch.diag(norm.weight / sigma) @ centre  # y = linear @ x
    expected = lrp0(x, linear, (linear @ x) * u)
    got = AttnLRP(lambda t: (norm(t) * u).sum(-1), model=norm).attribute(x[None])[0]
    torch.testing.assert_close(got, expected)


def _attention_reference(x, wq, wk, wv, u):
    """Explicit AttnLRP relevance through one single-head self-attention (T x d input)."""
    q, k, v = x @ wq, x @ wk, x @ wv
    scale = 1 / math.sqrt(q.shape[-1])
    scores = q @ k.T * scale
    a = torch.softmax(scores, -1)
    o = a @ v
    r_o = o * u
    share = r_o / o  # (i, c)
    r_a = 0.5 * a * (share @ v.T)  # sum_c a_ij v_jc R_ic / o_ic
    r_v = 0.5 * v * (a.T @ share)
    r_s = scores * (r_a - a * r_a.sum(-1, keepdim=True))
    share_s = r_s / scores
    r_q = 0.5 * q * (share_s @ k) * scale
    r_k = 0.5 * k * (share_s.T @ q) * scale

    def back(r, y, w):  # LRP-0 through y = x @ w, row by row
        return x * ((r / y) @ w.T)

    return back(r_q, q, wq) + back(r_k, k, wk) + back(r_v, v, wv)


@pytest.mark.parametrize("spelling", ["sdpa", "eager"])
def test_attention_head_matches_the_explicit_rules(spelling):
    torch.manual_seed(4)
    t, d = 5, 3
    wq, wk, wv = (torch.randn(d, d, dtype=D) for _ in range(3))
    u = torch.randn(t, d, dtype=D)

    def f(x):  # x: (batch, t, d)
        q, k, v = ((x @ w)[:, None] for w in (wq, wk, wv))
        if spelling == "sdpa":
            o = F.scaled_dot_product_attention(q, k, v)
        else:
            o = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), -1) @ v
        return (o[:, 0] * u).sum((1, 2))

    x = torch.randn(t, d, dtype=D)
    expected = _attention_reference(x, wq, wk, wv, u)
    torch.testing.assert_close(AttnLRP(f).attribute(x[None])[0], expected)


def _relu_mlp():
    torch.manual_seed(5)
    return nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3)).to(D)


@pytest.mark.parametrize("rule", [lambda: EpsilonRule(0.1), lambda: GammaRule(0.25)])
def test_linear_rules_in_gradient_form_equal_explicit_lrp(rule):
    model = _relu_mlp()
    x = torch.randn(3, 4, dtype=D)
    explicit = LRP(model, composite=Composite([(nn.Linear, rule)])).attribute(x, target=1)
    gradient_form = AttnLRP(model, Composite([(nn.Linear, rule)])).attribute(x, target=1)
    through_lrp = LRP(model, composite=AttnLRPComposite([(nn.Linear, rule)])).attribute(x, target=1)
    torch.testing.assert_close(gradient_form, explicit)
    torch.testing.assert_close(through_lrp, explicit)


def test_rules_that_change_inputs_are_refused():
    with pytest.raises(TypeError, match="ZBoxRule"):
        AttnLRP(_relu_mlp(), Composite([(nn.Linear, lambda: ZBoxRule(-1.0, 1.0))]))
    with pytest.raises(ValueError, match="attention_rule"):
        AttnLRP(_relu_mlp(), attention_rule="cp")


# ------------------------------------------------------- real architectures
def _families():
    return {
        "gpt2": (lambda: hf.gpt2().to(D), "transformer.drop"),
        "llama": (lambda: hf.llama().to(D), "model.embed_tokens"),
        "bert": (lambda: hf.bert().to(D), "bert.embeddings"),
    }


@pytest.mark.parametrize("family", ["gpt2", "llama", "bert"])
def test_constant_attention_conserves_relevance_and_both_attention_kernels_agree(family):
    build, layer_name = _families()[family]
    model = build()
    layer = model.get_submodule(layer_name)
    ids = torch.randint(1000, 3000, (2, 6), generator=torch.Generator().manual_seed(0))
    target = 7 if family != "bert" else 1
    results = {}
    for kernel in ("sdpa", "eager"):
        model.set_attn_implementation(kernel)
        for rule in ("attnlrp", "constant"):
            explainer = LayerAttnLRP(model, layer, attention_rule=rule)
            results[kernel, rule] = explainer.attribute(ids, target=target, return_convergence_delta=True)
    logits = model(ids).logits
    score = logits[:, -1, target] if logits.dim() == 3 else logits[:, target]
    relevance, delta = results["sdpa", "constant"]
    assert relevance.shape == (2, 6, 64)
    assert (delta.abs() / score.abs()).max() < 1e-6
    for rule in ("attnlrp", "constant"):
        torch.testing.assert_close(results["sdpa", rule][0], results["eager", rule][0], rtol=1e-6, atol=1e-9)
    assert torch.isfinite(results["sdpa", "attnlrp"][0]).all()


def test_vit_relevance_at_the_embeddings_is_conserved_and_pixels_have_their_shape():
    model = hf.vit().to(D)
    pixels = torch.randn(2, 3, 32, 32, dtype=D)
    _, delta = LayerAttnLRP(model, model.vit.embeddings, attention_rule="constant").attribute(
        pixels, target=1, return_convergence_delta=True
    )
    score = model(pixels).logits[:, 1]
    assert (delta.abs() / score.abs()).max() < 1e-6
    assert AttnLRP(model).attribute(pixels, target=1).shape == pixels.shape


def test_torch_transformer_encoder_without_biases_conserves_relevance():
    torch.manual_seed(6)
    layer = nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=True)
    encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
    model = nn.Sequential(encoder, nn.Flatten(), nn.Linear(16 * 5, 3)).to(D).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.zero_()
    x = torch.randn(3, 5, 16, dtype=D)
    _, delta = AttnLRP(model, attention_rule="constant").attribute(x, target=2, return_convergence_delta=True)
    assert (delta.abs() / model(x)[:, 2].abs()).max() < 1e-6


def test_batch_results_equal_one_example_at_a_time():
    model = hf.llama().to(D)
    ids = torch.randint(1000, 3000, (3, 5), generator=torch.Generator().manual_seed(1))
    explainer = LayerAttnLRP(model, model.model.embed_tokens)
    together = explainer.attribute(ids, target=11)
    alone = torch.cat([explainer.attribute(ids[i : i + 1], target=11) for i in range(3)])
    torch.testing.assert_close(together, alone)


def test_hooks_state_and_inputs_are_left_as_they_were():
    model = hf.gpt2().train()
    ids = torch.randint(1000, 3000, (2, 5))
    before = ids.clone()
    LayerAttnLRP(model, model.transformer.wte).attribute(ids, target=3)
    assert model.training and all(m.training for m in model.modules())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    assert torch.equal(ids, before)
    x = torch.randn(2, 5, 64)
    copy = x.clone()
    AttnLRP(model.eval()).attribute(x, target=3)
    assert torch.equal(x, copy)


def test_layer_that_never_runs_is_reported():
    model = _relu_mlp()
    with pytest.raises(ValueError, match="was not called"):
        LayerAttnLRP(model, nn.Linear(2, 2)).attribute(torch.randn(2, 4, dtype=D), target=0)


def test_two_threads_share_one_model():
    model = hf.gpt2()
    ids = torch.randint(1000, 3000, (2, 5), generator=torch.Generator().manual_seed(2))
    explainer = LayerAttnLRP(model, model.transformer.wte)
    expected = explainer.attribute(ids, target=4)
    found: list[torch.Tensor] = []
    threads = [threading.Thread(target=lambda: found.append(explainer.attribute(ids, target=4))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(found) == 2
    for result in found:
        torch.testing.assert_close(result, expected)


def test_target_none_explains_the_top_next_token():
    model = hf.gpt2()
    ids = torch.randint(1000, 3000, (2, 5))
    top = model(ids).logits[:, -1].argmax(-1)
    auto = LayerAttnLRP(model, model.transformer.wte).attribute(ids)
    explicit = LayerAttnLRP(model, model.transformer.wte).attribute(ids, target=top.tolist())
    torch.testing.assert_close(auto, explicit)


def test_layer_lrp_with_the_transformer_composite_is_layer_attnlrp():
    from attribuo.attr import LayerLRP

    model = hf.llama()
    ids = torch.randint(1000, 3000, (2, 5), generator=torch.Generator().manual_seed(3))
    embed = model.model.embed_tokens
    through_lrp, delta = LayerLRP(model, embed, composite=AttnLRPComposite()).attribute(
        ids, target=2, return_convergence_delta=True
    )
    direct, direct_delta = LayerAttnLRP(model, embed).attribute(ids, target=2, return_convergence_delta=True)
    torch.testing.assert_close(through_lrp, direct)
    torch.testing.assert_close(delta, direct_delta)
