"""Compatibility fixes found by running Captum's layer/neuron tests against attribuo.

Each test checks a closed-form value or a property, not Captum's output.
"""

import warnings

import pytest
import torch
from torch import nn

from attribuo.attr import (
    IntegratedGradients,
    InterpretableEmbeddingBase,
    LayerIntegratedGradients,
    NeuronDeepLift,
    NeuronGradient,
    NeuronIntegratedGradients,
    TokenReferenceBase,
    configure_interpretable_embedding_layer,
    remove_interpretable_embedding_layer,
)


class _TextNet(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.inner = nn.Module()
        self.inner.emb = nn.Embedding(10, 4).double()
        self.lin = nn.Linear(4, 2).double()

    def forward(self, tokens):
        return self.lin(torch.tanh(self.inner.emb(tokens)).sum(1))


def test_interpretable_embedding_round_trip_matches_layer_ig():
    net = _TextNet()
    original = net.inner.emb
    tokens = torch.tensor([[1, 4, 2], [3, 0, 7]])
    base = torch.zeros_like(tokens)
    lig = LayerIntegratedGradients(net, net.inner.emb).attribute(tokens, base, target=1)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        emb = configure_interpretable_embedding_layer(net, "inner.emb")
    assert isinstance(net.inner.emb, InterpretableEmbeddingBase)
    x, b = emb.indices_to_embeddings(tokens), emb.indices_to_embeddings(base)
    ig = IntegratedGradients(net).attribute(x, b, target=1)
    remove_interpretable_embedding_layer(net, emb)

    assert net.inner.emb is original
    torch.testing.assert_close(lig, ig)


def test_interpretable_embedding_twice_is_an_error():
    net = _TextNet()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        configure_interpretable_embedding_layer(net, "inner.emb")
        with pytest.raises(AssertionError, match="embedding_layer_name"):
            configure_interpretable_embedding_layer(net, "inner.emb")


def test_token_reference():
    ref = TokenReferenceBase(reference_token_idx=3).generate_reference(4, torch.device("cpu"))
    assert ref.tolist() == [3, 3, 3, 3]


def _relu_net():
    torch.manual_seed(1)
    lin = nn.Linear(3, 4).double()
    return nn.Sequential(lin, nn.ReLU()), lin


def test_callable_selector_may_return_batch_total_for_gradients():
    net, lin = _relu_net()
    x = torch.rand(5, 3, dtype=torch.float64)
    # sum over the whole batch: per-example gradient is that of each example's sum
    total = NeuronGradient(net, lin).attribute(x, lambda out: out.sum())
    per_example = NeuronGradient(net, lin).attribute(x, lambda out: out.sum(1))
    torch.testing.assert_close(total, per_example)
    torch.testing.assert_close(total, lin.weight.sum(0).expand(5, 3))
    ig_total = NeuronIntegratedGradients(net, net[1]).attribute(x, lambda out: out.sum())
    ig_rows = NeuronIntegratedGradients(net, net[1]).attribute(x, lambda out: out.sum(1))
    torch.testing.assert_close(ig_total, ig_rows)


class _PoolNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4, bias=False).double()
        self.pool = nn.MaxPool1d(4)

    def forward(self, x):
        return self.pool(self.lin(x).unsqueeze(1)).squeeze(1)


def test_index_selector_with_size_one_trailing_dims():
    net = _PoolNet()
    x = torch.rand(2, 4, dtype=torch.float64)
    # pool output is [batch, 1, 1]; index 0 leaves one neuron of shape (1,)
    short = NeuronDeepLift(net, net.pool).attribute(x, 0)
    full = NeuronDeepLift(net, net.pool).attribute(x, (0, 0))
    torch.testing.assert_close(short, full)


def test_metric_submodule_paths_expose_module_helpers():
    # Captum code imports default_perturb_func from the sensitivity module itself
    from attribuo.metrics._core.sensitivity import default_perturb_func, sensitivity_max

    from attribuo.metrics.sensitivity import default_perturb_func as direct

    assert default_perturb_func is direct and callable(sensitivity_max)
    x = torch.zeros(4, 3, dtype=torch.float64)
    noisy = default_perturb_func(x, 0.1)
    assert noisy.dtype == torch.float64 and bool((noisy.abs() <= 0.1).all())
