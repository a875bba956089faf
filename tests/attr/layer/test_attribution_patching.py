"""Attribution patching against exact activation patching, and exact patching against a slow loop.

Known answer: where the model is linear after the site, the first-order
estimate is exact. On a 2-layer GPT-2 (random weights, built from a config)
the estimate correlates with exact patching (Pearson r printed with ``-s``),
and exact patching matches a slow hook-per-site loop.
"""

import pytest
import torch
from models.hf import gpt2
from models.methods import model as registry_cnn
from torch import nn

from attribuo._engine.errors import ArgumentTypeError, ArgumentValueError
from attribuo.attr.layer.attribution_patching import ActivationPatching, AttributionPatching

F64 = torch.float64


class TinyEncoder(nn.Module):
    """Embedding -> 2 encoder layers -> Linear -> mean over positions -> Linear."""

    def __init__(self, vocab=20, width=16, heads=4, classes=3):
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(vocab, width)
        layer = nn.TransformerEncoderLayer(width, heads, 32, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.proj = nn.Linear(width, width)
        self.head = nn.Linear(width, classes)

    def forward(self, ids):
        return self.head(self.proj(self.encoder(self.embed(ids))).mean(1))


def _ids(n=3, t=5, vocab=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(0, vocab, (n, t), generator=g)
    corrupt = clean.clone()
    corrupt[:, 1] = (clean[:, 1] + 7) % vocab
    corrupt[:, 3] = (clean[:, 3] + 3) % vocab
    return clean, corrupt


def _pearson(x, y):
    x, y = torch.cat([e.flatten() for e in x]), torch.cat([e.flatten() for e in y])
    return float(torch.corrcoef(torch.stack([x.double(), y.double()]))[0, 1])


def _slow_patching(model, layer, clean, corrupt, metric, groups, use_input=False):
    """The definition: one forward per example and group, a hook patching that group only."""
    seen = {}

    def record(module, args, out=None):
        seen["v"] = (args[0] if use_input else out).detach().clone()

    def values(x):
        h = layer.register_forward_pre_hook(record) if use_input else layer.register_forward_hook(record)
        try:
            with torch.no_grad():
                score = metric(model(x))
        finally:
            h.remove()
        return seen["v"], score

    a_clean, _ = values(clean)
    _, base = values(corrupt)
    out = torch.zeros(clean.shape[0], len(groups), dtype=base.dtype)
    for n in range(clean.shape[0]):
        for g, where in enumerate(groups):
            def patch(module, args, output=None, n=n, where=where):
                v = (args[0] if use_input else output).clone()
                v[0][where] = a_clean[n][where]
                return (v,) if use_input else v

            h = layer.register_forward_pre_hook(patch) if use_input else layer.register_forward_hook(patch)
            try:
                with torch.no_grad():
                    out[n, g] = metric(model(corrupt[n : n + 1]))[0] - base[n]
            finally:
                h.remove()
    return out


def _positions(t):
    return [(i,) for i in range(t)]


def _heads(h, width):
    d = width // h
    return [(Ellipsis, slice(i * d, (i + 1) * d)) for i in range(h)]


# ------------------------------------------------------------------ known answer
def test_exact_where_the_model_is_linear_after_the_site():
    model = TinyEncoder().double().eval()
    clean, corrupt = _ids()
    c = 2
    last = model.encoder.layers[-1]
    a_clean, a_corrupt = model.encoder(model.embed(clean)), model.encoder(model.embed(corrupt))
    # after the encoder: proj, mean over 5 positions, head row c
    w = (model.proj.weight.T @ model.head.weight[c]) / clean.shape[1]
    expected = ((a_clean - a_corrupt) @ w).detach()  # [N, positions]
    for cls in (AttributionPatching, ActivationPatching):
        got = cls(model, last).attribute(clean, corrupt, target=c)
        torch.testing.assert_close(got, expected)
        torch.testing.assert_close(cls(model, last).attribute(clean, corrupt, target=c, per="layer"), expected.sum(1))
        # heads at the projection's input (the encoder output split into 4 heads of 4)
        heads = cls(model, model.proj, n_heads=4).attribute(
            clean, corrupt, target=c, per="head", attribute_to_layer_input=True
        )
        split = ((a_clean - a_corrupt) * w).detach().reshape(3, 5, 4, 4).sum((1, 3))
        torch.testing.assert_close(heads, split)


def test_activation_patching_matches_the_slow_loop_on_a_nonlinear_site():
    model = TinyEncoder().double().eval()
    clean, corrupt = _ids()
    first = model.encoder.layers[0]
    metric = lambda out: out[:, 0] - out[:, 1]  # noqa: E731 (a logit difference)
    got = ActivationPatching(model, first).attribute(clean, corrupt, metric=metric)
    torch.testing.assert_close(got, _slow_patching(model, first, clean, corrupt, metric, _positions(5)))
    # attention and the MLP come after this site: the estimate is only approximate here
    atp = AttributionPatching(model, first).attribute(clean, corrupt, metric=metric)
    r = _pearson([atp], [got])
    print(f"TransformerEncoder first layer: Pearson r = {r:.4f}")
    assert r > 0.8


# ------------------------------------------------------------------ GPT-2
@pytest.fixture(scope="module")
def lm():
    model = gpt2(layers=2)
    g = torch.Generator().manual_seed(0)
    clean = torch.randint(1000, 3000, (2, 6), generator=g)
    corrupt = clean.clone()
    corrupt[:, 2] = torch.randint(3000, 4000, (2,), generator=g)
    return model, clean, corrupt


def _logit_diff(out):
    return out.logits[:, -1, 1500] - out.logits[:, -1, 1600]


def test_gpt2_estimate_correlates_with_exact_patching(lm):
    model, clean, corrupt = lm
    blocks = list(model.transformer.h)
    cases = {
        "blocks/position": (blocks, "position", False),
        "mlp/position": ([b.mlp for b in blocks], "position", False),
        "heads": ([b.attn.c_proj for b in blocks], "head", True),
    }
    for name, (layers, per, use_input) in cases.items():
        kwargs = dict(metric=_logit_diff, per=per, attribute_to_layer_input=use_input)
        atp = AttributionPatching(model, layers).attribute(clean, corrupt, **kwargs)
        exact = ActivationPatching(model, layers).attribute(clean, corrupt, **kwargs)
        assert [e.shape for e in atp] == [e.shape for e in exact]
        r = _pearson(atp, exact)
        print(f"GPT-2 {name}: Pearson r(attribution patching, activation patching) = {r:.4f}")
        assert r > 0.95
    # the heads are read from config.num_attention_heads: 4 of them
    assert exact[0].shape == (2, 4)


def test_gpt2_exact_patching_matches_the_slow_loop(lm):
    model, clean, corrupt = lm
    block, proj = model.transformer.h[0], model.transformer.h[1].attn.c_proj
    block_exact = ActivationPatching(model, block).attribute(clean, corrupt, metric=_logit_diff)
    slow = _slow_patching(model, block, clean, corrupt, _logit_diff, _positions(6))
    torch.testing.assert_close(block_exact, slow, atol=1e-5, rtol=1e-4)
    got = ActivationPatching(model, proj).attribute(
        clean, corrupt, metric=_logit_diff, per="head", attribute_to_layer_input=True
    )
    slow = _slow_patching(model, proj, clean, corrupt, _logit_diff, _heads(4, 64), use_input=True)
    torch.testing.assert_close(got, slow, atol=1e-5, rtol=1e-4)
    # positions before the corrupted token (causal attention) are the same in both runs: no effect
    atp = AttributionPatching(model, block).attribute(clean, corrupt, metric=_logit_diff)
    assert torch.equal(atp[:, :2], torch.zeros(2, 2)) and torch.equal(block_exact[:, :2], torch.zeros(2, 2))


def test_default_metric_is_the_targeted_logit(lm):
    model, clean, corrupt = lm
    block = model.transformer.h[1]
    for cls in (AttributionPatching, ActivationPatching):
        by_target = cls(model, block).attribute(clean, corrupt, target=1500)
        by_metric = cls(model, block).attribute(clean, corrupt, metric=lambda o: o.logits[:, -1, 1500])
        torch.testing.assert_close(by_target, by_metric)
        # target=None: each example's top class on the clean run, also in the corrupted run
        top = model(clean).logits[:, -1].argmax(-1)
        chosen = lambda o, top=top: o.logits[:, -1].gather(1, top[:, None])[:, 0]  # noqa: E731
        torch.testing.assert_close(cls(model, block).attribute(clean, corrupt), cls(model, block).attribute(
            clean, corrupt, metric=chosen))


def test_position_effects_add_up_to_the_linear_approximation_of_the_total(lm):
    _, clean, _ = lm
    model = gpt2(layers=2).double()  # float64: the second-order term must stand out of rounding
    blocks = list(model.transformer.h)
    embeds = model.transformer.wte(clean).detach()
    noise = torch.randn(embeds.shape, generator=torch.Generator().manual_seed(3), dtype=F64)
    forward = lambda e: model(inputs_embeds=e).logits  # noqa: E731 (floating inputs)
    metric = lambda out: out[:, -1, 1500] - out[:, -1, 1600]  # noqa: E731
    errors = []
    for eps in (0.002, 0.001):  # 10% and 5% of the embeddings' scale
        corrupt = embeds + eps * noise
        total = (metric(forward(embeds)) - metric(forward(corrupt))).detach()
        atp = AttributionPatching(forward, blocks)
        by_position = atp.attribute(embeds, corrupt, metric=metric)
        by_layer = atp.attribute(embeds, corrupt, metric=metric, per="layer")
        for p, whole in zip(by_position, by_layer):
            torch.testing.assert_close(p.sum(1), whole, atol=1e-6, rtol=1e-4)
        by_head = AttributionPatching(forward, [b.attn.c_proj for b in blocks], n_heads=4).attribute(
            embeds, corrupt, metric=metric, per="head", attribute_to_layer_input=True)
        by_head_position = AttributionPatching(forward, [b.attn.c_proj for b in blocks]).attribute(
            embeds, corrupt, metric=metric, attribute_to_layer_input=True)
        for h, p in zip(by_head, by_head_position):
            torch.testing.assert_close(h.sum(1), p.sum(1), atol=1e-6, rtol=1e-4)
        # a block's output is the whole residual stream: patching all of it gives the clean metric
        exact = ActivationPatching(forward, blocks[0]).attribute(embeds, corrupt, metric=metric, per="layer")
        torch.testing.assert_close(exact, total, atol=1e-5, rtol=1e-4)
        errors.append((float((by_layer[0] - total).abs().max()), float(total.abs().max())))
    # the first-order error falls quadratically with the size of the corruption (the total linearly)
    print("per-layer estimate: |error| / |total effect| at eps 0.002: {:.2e} / {:.2e}, at 0.001: "
          "{:.2e} / {:.2e}".format(*errors[0], *errors[1]))
    assert errors[1][0] < errors[0][0] / 3 and errors[0][0] < 0.02 * errors[0][1]


# ------------------------------------------------------------------ invariances and state
def test_batch_and_chunk_invariance():
    model = TinyEncoder().double().eval()
    clean, corrupt = _ids(n=4)
    layers = [model.encoder.layers[0], model.encoder.layers[1]]
    metric = lambda out: out[:, 0]  # noqa: E731
    for cls in (AttributionPatching, ActivationPatching):
        whole = cls(model, layers).attribute(clean, corrupt, metric=metric)
        for i in range(4):
            one = cls(model, layers).attribute(clean[i : i + 1], corrupt[i : i + 1], metric=metric)
            for w, o in zip(whole, one):
                torch.testing.assert_close(w[i : i + 1], o)
    exact = ActivationPatching(model, layers)
    ref = exact.attribute(clean, corrupt, metric=metric)
    for chunk in (1, 2, 5):
        for a, b in zip(ref, exact.attribute(clean, corrupt, metric=metric, perturbations_per_eval=chunk)):
            torch.testing.assert_close(a, b)


def _snapshot(model):
    return (
        [(len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks)) for m in model.modules()],
        [m.training for m in model.modules()],
        [p.requires_grad for p in model.parameters()],
        [p.detach().clone() for p in model.parameters()],
        [p.grad for p in model.parameters()],
    )


def _same(a, b):
    assert a[:3] == b[:3]
    assert all(torch.equal(p, q) for p, q in zip(a[3], b[3]))
    assert all(g is None for g in b[4])


def test_no_leftover_state_also_after_an_error():
    model = TinyEncoder().double().train()  # dropout 0: training mode is deterministic
    model.proj.weight.requires_grad_(False)
    clean, corrupt = _ids()
    keep = (clean.clone(), corrupt.clone())
    before = _snapshot(model)
    layers = [model.encoder.layers[1], model.proj]
    for cls in (AttributionPatching, ActivationPatching):
        cls(model, layers).attribute(clean, corrupt, target=0)
        _same(before, _snapshot(model))

        def failing(out):
            raise RuntimeError("metric failed")

        with pytest.raises(RuntimeError, match="metric failed"):
            cls(model, layers).attribute(clean, corrupt, metric=failing)
        _same(before, _snapshot(model))
        with pytest.raises(ArgumentValueError):
            cls(model, layers).attribute(clean, corrupt, target=99)
        _same(before, _snapshot(model))
    assert torch.equal(clean, keep[0]) and torch.equal(corrupt, keep[1])


def test_image_model_and_float_inputs_untouched():
    # the cross-method registry's CNN: conv2's channels are the "positions"
    model = registry_cnn()
    x = torch.randn(3, 1, 8, 8, requires_grad=True)
    base = torch.zeros(3, 1, 8, 8)
    x0 = x.detach().clone()
    for cls in (AttributionPatching, ActivationPatching):
        method = cls(model, model.conv2)
        got = method.attribute(x, base, target=1)
        assert got.shape == (3, model.conv2.out_channels)
        # corrupted inputs in the forms baselines take: a number, a batch of one
        torch.testing.assert_close(method.attribute(x, 0.0, target=1), got)
        torch.testing.assert_close(method.attribute(x, base[:1], target=1), got)
        assert method.attribute(x[:0], 0.0, target=1).shape == (0, model.conv2.out_channels)
        with pytest.raises(ArgumentValueError, match="`corrupted_inputs`"):
            method.attribute(x, None, target=1)
    assert torch.equal(x.detach(), x0) and x.grad is None and x.requires_grad


def test_tuple_site_patches_its_first_tensor():
    class Pair(nn.Module):
        def forward(self, h):
            return 2 * h, h.sum(-1)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.inner, self.pair, self.out = nn.Linear(3, 4), Pair(), nn.Linear(4, 2)

        def forward(self, x):
            h, s = self.pair(torch.tanh(self.inner(x)))
            return self.out(h).sum(1) + s.sum(1, keepdim=True)

    net = Net().double()
    x, y = torch.rand(2, 5, 3, dtype=F64), torch.rand(2, 5, 3, dtype=F64)
    atp = AttributionPatching(net, net.pair).attribute(x, y, target=0)
    exact = ActivationPatching(net, net.pair).attribute(x, y, target=0)
    h = lambda v: torch.tanh(net.inner(v))  # noqa: E731
    # only the first output is patched; the sum output keeps its corrupted value
    torch.testing.assert_close(exact, (2 * (h(x) - h(y)) @ net.out.weight[0]).detach())
    torch.testing.assert_close(atp, exact)


# ------------------------------------------------------------------ bad input
def test_bad_input_names_the_argument():
    model = TinyEncoder().eval()
    clean, corrupt = _ids()
    layer = model.encoder.layers[0]
    for cls in (AttributionPatching, ActivationPatching):
        method = cls(model, layer)
        with pytest.raises(ArgumentValueError, match="`per`"):
            method.attribute(clean, corrupt, per="neuron")
        with pytest.raises(ArgumentTypeError, match="`metric`"):
            method.attribute(clean, corrupt, metric="logit")
        with pytest.raises(ArgumentValueError, match="`target` or `metric`"):
            method.attribute(clean, corrupt, target=0, metric=lambda o: o[:, 0])
        with pytest.raises(ArgumentValueError, match="`metric`"):
            method.attribute(clean, corrupt, metric=lambda o: o)  # [N, classes], not [N]
        with pytest.raises(ArgumentValueError, match="`corrupted_inputs`"):
            method.attribute(clean, corrupt[:2], target=0)
        with pytest.raises(ArgumentValueError, match="`corrupted_inputs`"):
            method.attribute(clean, corrupt[:, :4], target=0)  # shorter prompt: sites differ
        with pytest.raises(ArgumentValueError, match="`n_heads`"):
            method.attribute(clean, corrupt, target=0, per="head")
        with pytest.raises(ArgumentValueError, match="`n_heads`"):
            cls(model, layer, n_heads=0)
        with pytest.raises(ArgumentValueError, match="n_heads"):
            cls(model, layer, n_heads=5).attribute(clean, corrupt, target=0, per="head")
        with pytest.raises(ArgumentValueError, match="not called"):
            cls(model, nn.Linear(2, 2)).attribute(clean, corrupt, target=0)
        with pytest.raises(ArgumentTypeError, match="`layer`"):
            cls(model, "encoder")
    with pytest.raises(ArgumentTypeError, match="floating-point"):
        AttributionPatching(model, model.embed).attribute(clean, corrupt, target=0, attribute_to_layer_input=True)
