"""A word tokenizer and a tiny causal LM with the Hugging Face calling conventions (no downloads).

The LM: ``h_i = act(sum_{j<=i} emb(x_j))``, ``logits_i = lin(h_i)``. Its
key/value cache is the running embedding sum, so cached and uncached
decoding give the same numbers, and it supports ``generate`` (greedy).
"""

from __future__ import annotations

from collections import UserDict
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

SOS, UNK, VOCAB = 0, 1, 128


class WordTokenizer:
    """Space-separated one-character words; id = ord(char); '<sos>' = 0, anything else 1."""

    special = {SOS: "<sos>", UNK: "<unk>"}

    def _id(self, word: str) -> int:
        if word == "<sos>":
            return SOS
        return ord(word) if len(word) == 1 and ord(word) < VOCAB else UNK

    def encode(self, text: str, add_special_tokens: bool = True, return_tensors: str | None = None):
        ids = [self._id(w) for w in text.split(" ")]
        if add_special_tokens:
            ids = [SOS, *ids]
        return torch.tensor([ids]) if return_tensors == "pt" else ids

    def convert_ids_to_tokens(self, ids):
        if isinstance(ids, int):
            return self.special.get(ids, chr(ids))
        return [self.special.get(int(i), chr(int(i))) for i in ids]

    def convert_tokens_to_ids(self, tokens):
        if isinstance(tokens, str):
            return self._id(tokens)
        return [self._id(t) for t in tokens]

    def decode(self, ids: Tensor) -> str:
        tokens = self.convert_ids_to_tokens(ids.reshape(-1).tolist())
        return " ".join(tokens)

    def __call__(self, text: str, add_special_tokens: bool = True, return_offsets_mapping: bool = False):
        out = UserDict()
        out["input_ids"] = self.encode(text, add_special_tokens=add_special_tokens)
        if return_offsets_mapping:
            offsets = [(0, 0)] if add_special_tokens else []
            start = 0
            for word in text.split(" "):
                offsets.append((start, start + len(word)))
                start += len(word) + 1
            out["offset_mapping"] = offsets
        return out


@dataclass
class Output:
    logits: Tensor
    past_key_values: Any


class SumLM(nn.Module):
    """Causal LM over running sums of token embeddings (see the module docstring)."""

    def __init__(self, dim: int = 6, act: bool = True, seed: int = 0, dtype=torch.float64) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.emb = nn.Embedding(VOCAB, dim).to(dtype)
        self.lin = nn.Linear(dim, VOCAB).to(dtype)
        with torch.no_grad():
            self.emb.weight.copy_(torch.randn(VOCAB, dim, generator=g, dtype=dtype) * 0.7)
            self.lin.weight.copy_(torch.randn(VOCAB, dim, generator=g, dtype=dtype))
            self.lin.bias.copy_(torch.randn(VOCAB, generator=g, dtype=dtype) * 0.1)
        self.act = act
        self.calls: list[tuple[int, ...]] = []  # input_ids shapes seen by forward

    @property
    def device(self) -> torch.device:
        return self.emb.weight.device

    def forward(self, input_ids: Tensor, attention_mask=None, past_key_values=None, use_cache=None,
                cache_position=None) -> Output:
        self.calls.append(tuple(input_ids.shape))
        sums = self.emb(input_ids).cumsum(1)
        if past_key_values is not None:
            sums = sums + past_key_values[:, None]
        h = torch.tanh(sums) if self.act else sums
        return Output(logits=self.lin(h), past_key_values=sums[:, -1])

    # Hugging Face generation helpers, with the running sum as the cache
    def prepare_inputs_for_generation(self, input_ids: Tensor, past_key_values=None, **kwargs) -> dict:
        if past_key_values is None:
            return {"input_ids": input_ids}
        return {"input_ids": input_ids[:, -1:], "past_key_values": past_key_values}

    def _update_model_kwargs_for_generation(self, outputs: Output, model_kwargs: dict) -> dict:
        return {**model_kwargs, "past_key_values": outputs.past_key_values}

    def generate(self, input_ids: Tensor, max_new_tokens: int = 25, **kwargs) -> Tensor:
        ids = input_ids
        for _ in range(max_new_tokens):
            nxt = self(ids).logits[:, -1].argmax(-1, keepdim=True)
            ids = torch.cat([ids, nxt], 1)
        return ids


def key_token_lm(key: str = "c", dtype=torch.float64) -> SumLM:
    """A SumLM (no tanh) where only the token ``key`` has a non-zero embedding."""
    lm = SumLM(act=False, dtype=dtype)
    with torch.no_grad():
        keep = lm.emb.weight[ord(key)].clone()
        lm.emb.weight.zero_()
        lm.emb.weight[ord(key)] = keep
    return lm
