"""Attention rollout, attention flow and Chefer's relevance against hand computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from attribuo.attr import AttentionFlow, AttentionRelevance, AttentionRollout
from attribuo.attr.attention.maps import collect_maps
from attribuo.attr.attention.rollout import _max_flow_scores
from tests.models import hf


def _encoder(layers: int = 2, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
    return nn.TransformerEncoder(layer, layers, enable_nested_tensor=False).double().eval()


def _residual(a: np.ndarray) -> np.ndarray:
    a = 0.5 * a + 0.5 * np.eye(a.shape[-1])
    return a / a.sum(-1, keepdims=True)


def test_rollout_is_the_product_of_residual_attention_matrices():
    model = _encoder(3)
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    maps = [m.mean(1).numpy() for m in collect_maps(model, x).maps]
    assert len(maps) == 3
    for b in range(2):
        total = np.eye(5)
        for a in maps:
            total = _residual(a[b]) @ total
        got = AttentionRollout(model).attribute(x, position=2)[b].numpy()
        np.testing.assert_allclose(got, total[2], rtol=1e-10)
    assert torch.allclose(AttentionRollout(model).attribute(x).sum(1), torch.ones(2, dtype=torch.float64))


def test_head_fusion_max_uses_the_largest_head():
    model = _encoder(1)
    x = torch.randn(1, 4, 8, dtype=torch.float64)
    a = collect_maps(model, x).maps[0].amax(1)[0].numpy()
    got = AttentionRollout(model, head_fusion="max").attribute(x)[0].numpy()
    np.testing.assert_allclose(got, _residual(a)[0], rtol=1e-10)


def test_max_flow_on_hand_made_graphs():
    # one layer: the only path from input j to the sink is the edge A[sink, j]
    a = np.array([[0.6, 0.4], [0.3, 0.7]])
    np.testing.assert_allclose(_max_flow_scores([a], 0, 1e6), a[0], atol=1e-6)
    # two layers: flow from j is limited by min over cuts: j -> k (a1[k, j]) -> sink (a2[sink, k])
    a1 = np.array([[0.5, 0.5], [0.5, 0.5]])
    a2 = np.array([[0.9, 0.1], [0.5, 0.5]])
    expected = [min(0.5, 0.9) + min(0.5, 0.1)] * 2
    np.testing.assert_allclose(_max_flow_scores([a1, a2], 0, 1e6), expected, atol=1e-6)


def test_attention_flow_on_one_layer_equals_rollout():
    model = _encoder(1)
    x = torch.randn(2, 4, 8, dtype=torch.float64)
    flow = AttentionFlow(model).attribute(x, position=1)
    roll = AttentionRollout(model).attribute(x, position=1)
    torch.testing.assert_close(flow, roll, atol=1e-5, rtol=0)


class _HandAttention(nn.Module):
    """Two explicit softmax self-attention layers with residuals and a linear head."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.w = nn.ParameterList([nn.Parameter(torch.randn(3, 6, 6, dtype=torch.float64) / 3) for _ in range(2)])
        self.head = nn.Linear(6, 2).double()

    def forward(self, x):
        for w in self.w:
            q, k, v = (x @ m for m in w)
            a = torch.softmax((q @ k.transpose(-1, -2))[:, None] / 6**0.5, dim=-1)  # (batch, 1 head, t, t)
            x = x + (a @ v[:, None])[:, 0]
        return self.head(x[:, 0])


def test_generic_variant_matches_the_hand_computed_formula():
    model = _HandAttention()
    x = torch.randn(2, 5, 6, dtype=torch.float64)
    maps = collect_maps(model, x, target=1, gradients=True)
    expected = torch.eye(5, dtype=torch.float64).expand(2, 5, 5)
    for a, g in zip(maps.maps, maps.gradients):
        expected = expected + (a * g).clamp(min=0).mean(1) @ expected
    got = AttentionRelevance(model, "generic").attribute(x, target=1)
    torch.testing.assert_close(got, expected[:, 0])
    # the gradients are those of the explained logit
    x_ = x.clone().requires_grad_()
    logit = model(x_)[:, 1].sum()
    assert maps.scores is not None and torch.allclose(maps.scores.sum(), logit.detach())


@pytest.mark.parametrize("family", ["bert", "gpt2", "llama"])
def test_every_method_gives_the_same_scores_with_sdpa_and_eager_attention(family):
    model = getattr(hf, family)()
    ids = torch.randint(1000, 3000, (2, 6), generator=torch.Generator().manual_seed(0))
    results = {}
    for kernel in ("sdpa", "eager"):
        model.set_attn_implementation(kernel)
        for name, method in [
            ("rollout", AttentionRollout(model)),
            ("flow", AttentionFlow(model)),
            ("chefer", AttentionRelevance(model)),
            ("generic", AttentionRelevance(model, "generic")),
        ]:
            results[kernel, name] = method.attribute(ids, target=1)
    for name in ("rollout", "flow", "chefer", "generic"):
        assert results["sdpa", name].shape == (2, 6)
        assert torch.isfinite(results["sdpa", name]).all()
        torch.testing.assert_close(results["sdpa", name], results["eager", name], rtol=1e-4, atol=1e-6)


def test_decoders_are_explained_at_their_last_token():
    model = hf.gpt2()
    ids = torch.randint(1000, 3000, (1, 6))
    rollout = AttentionRollout(model)
    torch.testing.assert_close(rollout.attribute(ids), rollout.attribute(ids, position=5))
    # causal: the first token's row has all its mass on itself
    assert rollout.attribute(ids, position=0)[0, 1:].abs().max() == 0
    chefer = AttentionRelevance(model)
    top = model(ids).logits[0, -1].argmax().item()
    torch.testing.assert_close(chefer.attribute(ids), chefer.attribute(ids, target=top))


def test_vision_transformer_scores_one_value_per_patch():
    model = hf.vit()  # 32 x 32 pixels in 8 x 8 patches: 16 patches and [CLS]
    pixels = torch.randn(2, 3, 32, 32)
    for method in (AttentionRollout(model), AttentionRelevance(model), AttentionRelevance(model, "generic")):
        assert method.attribute(pixels, target=0).shape == (2, 16)


def test_multihead_attention_modules_with_weights_are_recorded():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.MultiheadAttention(8, 2, batch_first=True)

        def forward(self, x):
            out, _ = self.attn(x, x, x)  # need_weights=True: torch's explicit path
            return out

    maps = collect_maps(Block().eval(), torch.randn(3, 4, 8)).maps
    assert [tuple(m.shape) for m in maps] == [(3, 2, 4, 4)]
    torch.testing.assert_close(maps[0].sum(-1), torch.ones(3, 2, 4))


def test_clear_errors():
    with pytest.raises(ValueError, match="no attention maps"):
        AttentionRollout(nn.Linear(4, 2)).attribute(torch.randn(2, 4))
    with pytest.raises(ValueError, match="head_fusion"):
        AttentionRollout(_encoder(), head_fusion="median")
    with pytest.raises(ValueError, match="position"):
        AttentionRollout(_encoder()).attribute(torch.randn(1, 4, 8, dtype=torch.float64), position=9)
    with pytest.raises(ValueError, match="variant"):
        AttentionRelevance(_encoder(), variant="lrp")
    with pytest.raises(ValueError, match="discard_ratio"):
        AttentionRollout(_encoder(), discard_ratio=1.5)


def test_padding_with_an_attention_mask_leaves_the_real_tokens_scores_unchanged():
    from attribuo.attr import LayerAttnLRP

    model = hf.bert().double()
    ids = torch.randint(1000, 3000, (1, 5), generator=torch.Generator().manual_seed(5))
    padded = torch.cat([ids, torch.zeros(1, 3, dtype=torch.long)], 1)
    mask = torch.tensor([[1] * 5 + [0] * 3])
    rollout = AttentionRollout(model)
    alone = rollout.attribute(ids)
    with_pads = rollout.attribute(padded, additional_forward_args={"attention_mask": mask})
    torch.testing.assert_close(with_pads[:, :5], alone)
    assert with_pads[:, 5:].abs().max() == 0
    lrp = LayerAttnLRP(model, model.bert.embeddings)
    torch.testing.assert_close(
        lrp.attribute(padded, target=1, additional_forward_args={"attention_mask": mask})[:, :5],
        lrp.attribute(ids, target=1),
    )
