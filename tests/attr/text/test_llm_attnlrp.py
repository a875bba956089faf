"""LLMGradientAttribution over LayerAttnLRP: each response token explained in one batched pass."""

from __future__ import annotations

import torch

from attribuo.attr import LayerAttnLRP, LLMGradientAttribution, TextTokenInput
from tests.models import hf


def test_each_row_is_attnlrp_of_that_tokens_log_probability():
    model, tokenizer = hf.gpt2().double(), hf.minilm_tokenizer()
    prompt = TextTokenInput("the cat sat on the mat", tokenizer)
    response = tokenizer.encode("and slept well", add_special_tokens=False)
    result = LLMGradientAttribution(LayerAttnLRP(model, model.get_input_embeddings()), tokenizer).attribute(
        prompt, target=torch.tensor(response)
    )
    ids = prompt.to_model_input()
    n = ids.shape[1]
    assert result.token_attr.shape == (len(response), n)
    for i, token in enumerate(response):
        full = torch.cat([ids, torch.tensor([response[:i]], dtype=ids.dtype)], 1)

        def log_prob(x, token=token):
            return torch.log_softmax(model(x).logits[:, -1], -1)[:, token]

        expected = LayerAttnLRP(log_prob, model.get_input_embeddings(), model=model).attribute(full)
        torch.testing.assert_close(result.token_attr[i], expected[0, :n].sum(-1), rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(result.seq_attr, result.token_attr.sum(0))
