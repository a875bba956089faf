"""Prefix reuse of layer perturbation methods against the plain tiled path.

With prefix reuse the model before the layer runs once on the untiled
inputs; results must equal the plain path (the whole model on tiled copies)
on models whose rest uses tensors from before the layer, batched extra
arguments, masks, and one model that naive reuse gets silently wrong.
"""

from __future__ import annotations

import threading

import pytest
import torch
from torch import nn

from attribuo._engine.call import parse_call
from attribuo._engine.sites import PrefixReuse, site_function
from attribuo.attr import (
    FeatureAblation,
    FeaturePermutation,
    LayerFeatureAblation,
    LayerFeaturePermutation,
)
from attribuo.attr.layer.common import layer_form, layer_values_at

PPE = [1, 3, None]


def _plain(method: str, model, layer, x, target, args=None, layer_mask=None, use_input=False, ppe=None):
    """The reference: the primary method on the layer with the whole model run per copy."""
    call = parse_call(x, None, args)
    (values,) = layer_values_at(model, [layer], call, use_input)
    g = site_function(model, layer, call, use_input, reuse_prefix=False)
    if method == "ablation":
        return FeatureAblation(g).attribute(layer_form(values), None, target, None, layer_mask, ppe)
    torch.manual_seed(3)
    return FeaturePermutation(g).attribute(layer_form(values), target, None, layer_mask, ppe)


def _reused(method: str, model, layer, x, target, args=None, layer_mask=None, use_input=False, ppe=None):
    if method == "ablation":
        return LayerFeatureAblation(model, layer).attribute(
            x, None, target, args, layer_mask, use_input, ppe
        )
    torch.manual_seed(3)
    return LayerFeaturePermutation(model, layer).attribute(x, target, args, layer_mask, ppe)


class BatchSeen:
    """The largest batch a module sees while the block runs (the prefix's work per forward)."""

    def __init__(self, module: nn.Module) -> None:
        self.module, self.largest = module, 0

    def __enter__(self):
        def hook(_m, args):
            self.largest = max(self.largest, args[0].shape[0])

        self.handle = self.module.register_forward_pre_hook(hook)
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def _same(a, b):
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(inplace=True), nn.Linear(8, 3)
    ).eval()


class Block(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c)

    def forward(self, x):
        h = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(x + self.bn2(self.conv2(h)))  # skip from before conv2


class ResCNN(nn.Module):
    def __init__(self, c: int = 4) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.stem = nn.Sequential(nn.Conv2d(3, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU())
        self.block1, self.block2 = Block(c), Block(c)
        self.head = nn.Linear(c, 3)
        for m in self.modules():  # non-trivial running statistics
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
        self.eval()

    def forward(self, x):
        return self.head(self.block2(self.block1(self.stem(x))).mean((2, 3)))


class Scaled(nn.Module):
    """The rest of the model reads an extra argument with a batch dim."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(2)
        self.first, self.second = nn.Linear(4, 6), nn.Linear(6, 2)

    def forward(self, x, scale):
        return self.second(torch.tanh(self.first(x))) * scale + scale


class BatchReshape(nn.Module):
    """Reads the batch size from its input after the layer: naive reuse mixes the copies."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(4)
        self.first, self.head = nn.Linear(4, 6), nn.Linear(6, 2)

    def forward(self, x):
        h = torch.relu(self.first(x))
        z = h.reshape(x.shape[0], -1)
        z = z - z.mean(1, keepdim=True)  # with more rows than x, a mean over several copies
        return self.head(z.reshape(-1, h.shape[1]))


class Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(5)
        layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 3, enable_nested_tensor=False)
        self.head = nn.Linear(16, 2)
        self.eval()

    def forward(self, x, mask):
        return self.head(self.encoder(x, src_key_padding_mask=mask).mean(1))


@pytest.mark.parametrize("ppe", PPE)
@pytest.mark.parametrize("method", ["ablation", "permutation"])
def test_mlp(method, ppe):
    model, x = _mlp(), torch.randn(4, 5, generator=torch.Generator().manual_seed(1))
    before = x.clone()
    t = [0, 1, 2, 0]
    with BatchSeen(model[0]) as seen:
        ours = _reused(method, model, model[2], x, t, ppe=ppe)
    _same(ours, _plain(method, model, model[2], x, t, ppe=ppe))
    assert seen.largest == 4  # the prefix never ran on tiled copies
    assert torch.equal(x, before)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


@pytest.mark.parametrize("ppe", PPE)
@pytest.mark.parametrize("batch", [1, 3])
def test_residual_cnn_inside_block(batch, ppe):
    model = ResCNN()
    x = torch.randn(batch, 3, 8, 8, generator=torch.Generator().manual_seed(batch))
    layer = model.block1.conv2
    mask = torch.arange(4).reshape(1, 4, 1, 1)  # one feature per channel
    with BatchSeen(model.stem) as seen:
        ours = _reused("ablation", model, layer, x, 1, layer_mask=mask, ppe=ppe)
    _same(ours, _plain("ablation", model, layer, x, 1, layer_mask=mask, ppe=ppe))
    if ppe != 1:  # with several copies per forward, the stem ran on one copy of the examples
        assert seen.largest == batch
    if batch > 1:  # permutation shuffles across the examples of the batch
        _same(
            _reused("permutation", model, layer, x, 2, layer_mask=mask, ppe=ppe),
            _plain("permutation", model, layer, x, 2, layer_mask=mask, ppe=ppe),
        )


@pytest.mark.parametrize("ppe", PPE)
def test_layer_input(ppe):
    model = ResCNN()
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(7))
    layer = model.block2.conv1
    mask = torch.arange(4).reshape(1, 4, 1, 1)
    ours = _reused("ablation", model, layer, x, 0, layer_mask=mask, use_input=True, ppe=ppe)
    _same(ours, _plain("ablation", model, layer, x, 0, layer_mask=mask, use_input=True, ppe=ppe))
    mlp, xs = _mlp(), torch.randn(3, 5)
    _same(
        _reused("ablation", mlp, mlp[2], xs, 1, use_input=True, ppe=ppe),
        _plain("ablation", mlp, mlp[2], xs, 1, use_input=True, ppe=ppe),
    )


@pytest.mark.parametrize("ppe", PPE)
@pytest.mark.parametrize("batch", [1, 3])
def test_batched_additional_args(batch, ppe):
    model = Scaled()
    g = torch.Generator().manual_seed(9)
    x, scale = torch.randn(batch, 4, generator=g), torch.rand(batch, 1, generator=g) + 0.5
    with BatchSeen(model.first) as seen:
        ours = _reused("ablation", model, model.first, x, 1, args=(scale,), ppe=ppe)
    _same(ours, _plain("ablation", model, model.first, x, 1, args=(scale,), ppe=ppe))
    if ppe != 1:
        assert seen.largest == batch


@pytest.mark.parametrize("ppe", PPE)
@pytest.mark.parametrize("batch", [1, 3])
def test_silently_wrong_model_falls_back(batch, ppe):
    model, x = BatchReshape(), torch.randn(batch, 4, generator=torch.Generator().manual_seed(2))
    ours = _reused("ablation", model, model.first, x, 0, ppe=ppe)
    _same(ours, _plain("ablation", model, model.first, x, 0, ppe=ppe))
    # the naive result differs, so the check had something to catch
    call = parse_call(x)
    (values,) = layer_values_at(model, [model.first], call, False)
    copies = torch.cat([values[0], values[0] * 2])
    reuse = PrefixReuse(model, [model.first], call)
    with torch.no_grad():
        plain = site_function(model, model.first, call)(copies)
        assert torch.equal(reuse([(copies,)], 2), plain)
        naive = reuse._run("batch", [(copies,)], 2)
    assert reuse.modes == [] and not torch.allclose(naive, plain, atol=1e-3)


@pytest.mark.parametrize("ppe", PPE)
@pytest.mark.parametrize("batch", [1, 2])
def test_transformer_encoder_with_padding_mask(batch, ppe):
    model = Encoder()
    x = torch.randn(batch, 6, 16, generator=torch.Generator().manual_seed(3))
    mask = torch.zeros(batch, 6, dtype=torch.bool)
    mask[-1, 4:] = True
    layer = model.encoder.layers[1]
    positions = torch.arange(6).reshape(1, 6, 1)  # one feature per token
    args = dict(args=(mask,), layer_mask=positions, ppe=ppe)
    _same(_reused("ablation", model, layer, x, 1, **args), _plain("ablation", model, layer, x, 1, **args))


@pytest.mark.parametrize("batch", [1, 2])
def test_bert_mid_layer_with_attention_mask(batch):
    pytest.importorskip("transformers")
    from models.hf import bert

    model = bert(layers=3)
    ids = torch.randint(1000, 2000, (batch, 10), generator=torch.Generator().manual_seed(batch))
    attention = torch.ones(batch, 10, dtype=torch.long)
    attention[-1, 7:] = 0

    def logits(ids, attention):
        return model(input_ids=ids, attention_mask=attention).logits

    layer = model.bert.encoder.layer[1]
    positions = torch.arange(10).reshape(1, 10, 1)
    for ppe in (3, None):
        with BatchSeen(model.bert.encoder.layer[0]) as seen:
            ours = _reused("ablation", logits, layer, ids, 1, (attention,), positions, ppe=ppe)
        _same(ours, _plain("ablation", logits, layer, ids, 1, (attention,), positions, ppe=ppe))
        assert seen.largest == batch  # broadcasting masks: the reuse held


def test_layer_run_twice_is_still_reported():
    lin = nn.Linear(3, 3)
    twice = nn.Sequential(lin, nn.ReLU(), lin)
    with pytest.raises(ValueError, match="more than once"):
        LayerFeatureAblation(twice, lin).attribute(torch.randn(2, 3), target=0)
    assert not lin._forward_hooks and not lin._forward_pre_hooks


def test_two_threads_share_one_model():
    model = ResCNN()
    xs = [torch.randn(n, 3, 8, 8, generator=torch.Generator().manual_seed(n)) for n in (1, 3)]
    mask = torch.arange(4).reshape(1, 4, 1, 1)
    expected = [_plain("ablation", model, model.block1.conv2, x, 0, layer_mask=mask) for x in xs]
    results: dict[int, torch.Tensor] = {}

    def work(i):
        for _ in range(3):
            results[i] = LayerFeatureAblation(model, model.block1.conv2).attribute(
                xs[i], target=0, layer_mask=mask
            )

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(2):
        _same(results[i], expected[i])
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_neuron_ablation_stops_at_the_layer():
    from attribuo.attr import NeuronFeatureAblation

    model = _mlp()
    x = torch.randn(3, 5, generator=torch.Generator().manual_seed(6))
    with BatchSeen(model[4]) as head:
        attr = NeuronFeatureAblation(model, model[2]).attribute(x, 1, perturbations_per_eval=2)
    # the neuron is a function of the inputs through the first two modules only
    expected = FeatureAblation(lambda t: model[:3](t)[:, 1]).attribute(x, perturbations_per_eval=2)
    _same(attr, expected)
    assert head.largest == 3  # only the first (unperturbed) forward reached the head
    lin = nn.Linear(5, 5)
    with pytest.raises(ValueError, match="more than once"):
        NeuronFeatureAblation(nn.Sequential(lin, lin), lin).attribute(x, 0)


def test_parity_with_captum_layer_feature_ablation():
    captum_attr = pytest.importorskip("captum.attr")
    model = ResCNN()
    x = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(8))
    mask = torch.arange(4).reshape(1, 4, 1, 1)
    for layer in (model.block1.conv2, model.block2):
        ours = LayerFeatureAblation(model, layer).attribute(x, target=2, layer_mask=mask)
        theirs = captum_attr.LayerFeatureAblation(model, layer).attribute(x, target=2, layer_mask=mask)
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
