"""Conservation of AttnLRP relevance on each model family (float64, random weights).

For each model and attention rule: the explained logit minus the summed
relevance at the source (the residual stream's input: embeddings plus
positions), relative to the logit, median and max over 8 sequences of 12
tokens (ViT: 8 images). Run ``python -m benchmarks.transformer_conservation``.
"""

from __future__ import annotations

import torch
from torch import nn

from attribuo.attr import AttnLRP, LayerAttnLRP
from tests.models import hf


def _encoder() -> nn.Module:
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(64, 4, 128, dropout=0.0, batch_first=True)
    model = nn.Sequential(nn.TransformerEncoder(layer, 2, enable_nested_tensor=False), nn.Flatten(), nn.Linear(64 * 12, 3))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.zero_()
    return model.eval()


def rows() -> list[tuple[str, str, float, float]]:
    """``(model, rule, median relative gap, max relative gap)`` per model and rule."""
    ids = torch.randint(1000, 3000, (8, 12), generator=torch.Generator().manual_seed(0))
    cases = [
        ("GPT2 (2 layers, sdpa)", hf.gpt2(), "transformer.drop", ids, 7),
        ("Llama (RoPE, GQA, RMSNorm)", hf.llama(), "model.embed_tokens", ids, 7),
        ("BERT classifier", hf.bert(), "bert.embeddings", ids, 1),
        ("ViT (32 px, 8 px patches)", hf.vit(), "vit.embeddings", torch.randn(8, 3, 32, 32), 1),
        ("nn.TransformerEncoder, no biases", _encoder(), None, torch.randn(8, 12, 64), 1),
    ]
    out = []
    for name, model, layer_name, inputs, target in cases:
        model = model.to(torch.float64)
        inputs = inputs.to(torch.float64) if inputs.is_floating_point() else inputs
        for rule in ("attnlrp", "constant"):
            if layer_name is None:
                explainer = AttnLRP(model, attention_rule=rule)
            else:
                explainer = LayerAttnLRP(model, model.get_submodule(layer_name), attention_rule=rule)
            relevance, delta = explainer.attribute(inputs, target=target, return_convergence_delta=True)
            total = relevance.flatten(1).sum(1)
            gap = (delta / (delta + total)).abs()
            out.append((name, rule, gap.median().item(), gap.max().item()))
    return out


def main() -> None:
    print("| model | attention rule | median gap | max gap |")
    print("|---|---|---|---|")
    for name, rule, median, worst in rows():
        print(f"| {name} | {rule} | {median:.2e} | {worst:.2e} |")


if __name__ == "__main__":
    main()
