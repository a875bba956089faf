"""Text methods on a transformer encoder, vs Captum.

``torch.nn.TransformerEncoder`` (4 layers, d_model 128, 4 heads, eval mode)
over a token embedding, mean-pooled into a linear head; 64 tokens, batch 1
and 8. LayerIntegratedGradients runs on token ids through the embedding;
the other rows attribute to the embedded input (the model from the
embeddings on): Saliency, InputXGradient, FeatureAblation with one feature
per token position, and LayerConductance of encoder layer 2. Both
libraries get the same arguments, Captum's defaults otherwise.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from .bench_perturbation import _floor
from .harness import Case, paired

VOCAB, D_MODEL, HEADS, LAYERS, TOKENS, CLASSES = 1000, 128, 4, 4, 64, 5
TARGET = 2


class FromEmbeddings(nn.Module):
    """The encoder and head: embedded tokens ``[batch, tokens, d_model]`` to class logits."""

    def __init__(self) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(D_MODEL, HEADS, dim_feedforward=4 * D_MODEL, dropout=0.1, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, LAYERS, enable_nested_tensor=False)
        self.head = nn.Linear(D_MODEL, CLASSES)

    def forward(self, embedded: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(embedded).mean(1))


class TextEncoder(nn.Module):
    """Token ids to class logits."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(VOCAB, D_MODEL)
        self.body = FromEmbeddings()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.body(self.emb(ids))




def cases() -> list[Case]:
    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    model = TextEncoder().eval()
    body = model.body
    positions = torch.arange(TOKENS).reshape(1, TOKENS, 1)  # one feature per token, all of d_model
    out = []
    for batch in (1, 8):
        torch.manual_seed(batch)
        ids = torch.randint(1, VOCAB, (batch, TOKENS))
        with torch.no_grad():
            embedded = model.emb(ids)
        tag = f"Encoder{LAYERS}x{D_MODEL} {TOKENS} tok b{batch}"
        emb_args = {"inputs": embedded, "target": TARGET}
        rows = [
            (f"LayerIntegratedGradients embedding {tag}",
             paired("LayerIntegratedGradients", model, model.emb, inputs=ids, target=TARGET), None),
            (f"Saliency embedded {tag}", paired("Saliency", body, **emb_args), None),
            (f"InputXGradient embedded {tag}", paired("InputXGradient", body, **emb_args), None),
            (f"FeatureAblation per token {tag}",
             paired("FeatureAblation", body, **emb_args, feature_mask=positions), _floor(body, embedded, TOKENS)),
            (f"LayerConductance layer 2 {tag} n20",
             paired("LayerConductance", body, body.encoder.layers[2], **emb_args, n_steps=20), None),
        ]
        for name, (ours, theirs), floor in rows:
            out.append(Case(name, ours, theirs, floor=floor, repeats=3))
    return out
