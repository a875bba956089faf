"""InterpretableEmbeddingBase and TokenReferenceBase (Captum's embedding utilities).

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
