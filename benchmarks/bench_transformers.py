"""Transformer-native methods against one forward plus one backward of the same model.

GPT2 and Llama built from configs (4 layers, width 256, random weights,
SDPA attention), 128 tokens, batch 1 and 8. The floor is the least any
gradient-based explanation costs: one forward and ``torch.autograd.grad`` of
the explained logit w.r.t. the token embeddings. AttnLRP (issue: at most
1.5x that floor) and Chefer's AttentionRelevance are compared with it and,
as the Captum column, with Captum's LayerGradientXActivation at the
embeddings (gradient times input, the one Captum method of the same cost;
Captum has no transformer rules).
"""

from __future__ import annotations

import warnings

import torch

from .harness import Case


def _models():
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM
    from transformers.utils import logging

    logging.set_verbosity_error()
    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=4, n_embd=256, n_head=8, vocab_size=8000, n_positions=256)).eval()
    llama = LlamaForCausalLM(
        LlamaConfig(
            num_hidden_layers=4, hidden_size=256, intermediate_size=512, num_attention_heads=8,
            num_key_value_heads=4, vocab_size=8000, max_position_embeddings=256,
        )
    ).eval()
    return {"GPT2": gpt2, "Llama": llama}


def _floor(model, ids):
    embedding = model.get_input_embeddings()

    def run():
        embeds = embedding(ids).detach().requires_grad_()
        logit = model(inputs_embeds=embeds).logits[:, -1, 7].sum()
        torch.autograd.grad(logit, embeds)

    return run


def cases() -> list[Case]:
    warnings.filterwarnings("ignore")
    import captum.attr as ca

    import attribuo.attr as aa

    out = []
    for name, model in _models().items():
        embedding = model.get_input_embeddings()
        ours = aa.LayerAttnLRP(model, embedding)
        chefer = aa.AttentionRelevance(model)
        theirs = ca.LayerGradientXActivation(lambda ids, m=model: m(ids).logits[:, -1], embedding)
        for batch in (1, 8):
            ids = torch.randint(0, 8000, (batch, 128), generator=torch.Generator().manual_seed(batch))
            out.append(
                Case(
                    f"LayerAttnLRP, {name} 4x256, batch {batch}, 128 tokens (Captum: LayerGradientXActivation)",
                    lambda ours=ours, ids=ids: ours.attribute(ids, target=7),
                    lambda theirs=theirs, ids=ids: theirs.attribute(ids, target=7),
                    floor=_floor(model, ids),
                    repeats=5,
                )
            )
        ids = torch.randint(0, 8000, (1, 128), generator=torch.Generator().manual_seed(3))
        out.append(
            Case(
                f"AttentionRelevance (Chefer), {name} 4x256, batch 1, 128 tokens (Captum: LayerGradientXActivation)",
                lambda chefer=chefer, ids=ids: chefer.attribute(ids, target=7),
                lambda theirs=theirs, ids=ids: theirs.attribute(ids, target=7),
                floor=_floor(model, ids),
                repeats=5,
            )
        )
    return out
