"""LLM attribution on real transformers models (GPT2, Llama from configs) with MiniLM's tokenizer.

Every score is checked against plain, unpadded forwards of prompt + target,
so padding, positions, the shared-prefix cache and batching are all
covered by one reference.
"""

import pytest
import torch
from models.hf import gpt2, llama, minilm_tokenizer, plain_log_probs
from torch.testing import assert_close

from attribuo._engine.errors import ArgumentValueError
from attribuo.attr import (
    FeatureAblation,
    LayerGradientXActivation,
    LayerIntegratedGradients,
    LLMAttribution,
    LLMGradientAttribution,
    ShapleyValues,
    TextTemplateInput,
    TextTokenInput,
)
from attribuo.attr.text.scoring import TargetScorer, split_by_prefix

pytest.importorskip("transformers")
TOK = minilm_tokenizer()
MODELS = {"gpt2": gpt2, "llama": llama}
TEMPLATE = ("the {} of the {} is a {} city in {} near the", ["capital", "old country", "large", "europe"])
PROMPT = "the capital of the old country is a large city in europe near the"
TARGET = "sea and the hills"


def ids_of(text, special=True):
    return torch.tensor(TOK.encode(text, add_special_tokens=special))


def by_hand_ablation(model, prompts, target_ids):
    """FeatureAblation's answer from plain forwards: score(original) - score(ablated i), per token."""
    base = plain_log_probs(model, prompts[0], target_ids)
    return torch.stack([base - plain_log_probs(model, p, target_ids) for p in prompts[1:]], dim=1)


@pytest.fixture(scope="module", params=list(MODELS))
def model(request):
    return MODELS[request.param]()


# ------------------------------------------------------------------ the scorer itself
@pytest.mark.parametrize("budget", ["", "40"])  # the default, and a budget that splits every batch
@pytest.mark.parametrize("reuse_prefix", [True, False])
def test_scores_of_ragged_batches_equal_plain_forwards(model, reuse_prefix, budget, monkeypatch):
    monkeypatch.setenv("ATTRIBUO_LLM_BATCH_TOKENS", budget)
    target = ids_of(TARGET, special=False)
    reference = ids_of(PROMPT)
    torch.manual_seed(1)
    prompts = [reference]
    for cut in (3, 9, 12, 15):  # prompts sharing 3..15 tokens with the reference, then differing
        tail = torch.randint(1000, 5000, (int(torch.randint(2, 9, ())),))
        prompts.append(torch.cat([reference[:cut], tail]))
    scorer = TargetScorer(model, pad_id=0, reuse_prefix=reuse_prefix)
    got = scorer.score([{"input_ids": p[None]} for p in prompts], target, reference=reference)
    expected = torch.stack([plain_log_probs(model, p, target) for p in prompts])
    assert_close(got, expected, atol=1e-5, rtol=0)


def test_prefix_split_never_costs_more_than_one_batch():
    prefix, lengths = [0, 10, 20, 30, 39], [40] * 5
    plan = split_by_prefix(prefix, lengths, 10)
    assert sorted(i for rows, _ in plan for i in rows) == list(range(5))
    cost = sum(len(rows) * (max(lengths[i] for i in rows) - p + 10) + 64 for rows, p in plan)
    assert cost <= 5 * 50 + 64
    assert all(p == min(prefix[i] for i in rows) for rows, p in plan)


def test_long_prompts_up_to_the_position_limit():
    model = gpt2(n_positions=32)
    target = ids_of("sea", special=False)
    prompt = torch.randint(1000, 5000, (31,))  # 31 + 1 = exactly the 32 positions
    scorer = TargetScorer(model)
    got = scorer.score([{"input_ids": prompt[None]}, {"input_ids": prompt[None, 5:]}], target)
    assert_close(got[0], plain_log_probs(model, prompt, target), atol=1e-5, rtol=0)
    assert_close(got[1], plain_log_probs(model, prompt[5:], target), atol=1e-5, rtol=0)
    with pytest.raises(ArgumentValueError, match="32 positions"):
        scorer.score([{"input_ids": torch.cat([prompt, prompt[:1]])[None]}], target)


# ------------------------------------------------------------------ FeatureAblation by hand
@pytest.mark.parametrize("use_cached_outputs", [True, False])
@pytest.mark.parametrize("forward_in_tokens", [True, False])
def test_template_feature_ablation_equals_ablation_by_hand(model, use_cached_outputs, forward_in_tokens):
    inp = TextTemplateInput(*TEMPLATE)
    res = LLMAttribution(FeatureAblation(model), TOK).attribute(
        inp, TARGET, use_cached_outputs=use_cached_outputs, forward_in_tokens=forward_in_tokens
    )
    target = ids_of(TARGET, special=False)
    prompts = [ids_of(inp.to_model_input())]
    for i in range(inp.n_itp_features):
        present = torch.ones(1, inp.n_itp_features)
        present[0, i] = 0
        prompts.append(ids_of(inp.to_model_input(present)))
    expected = by_hand_ablation(model, prompts, target)
    assert_close(res.token_attr, expected, atol=1e-5, rtol=0)
    assert_close(res.seq_attr, expected.sum(0), atol=2e-5, rtol=0)
    assert_close(res.output_probs, plain_log_probs(model, prompts[0], target).exp(), atol=1e-6, rtol=1e-5)


def test_token_feature_ablation_equals_ablation_by_hand_and_is_batch_invariant(model):
    inp = TextTokenInput(PROMPT, TOK, skip_tokens=["[CLS]", "[SEP]"])
    llm = LLMAttribution(FeatureAblation(model), TOK)
    res = llm.attribute(inp, TARGET)
    target = ids_of(TARGET, special=False)
    n = inp.n_itp_features
    prompts = [inp.to_model_input()[0]] + [
        inp.to_model_input(torch.ones(1, n).index_fill(1, torch.tensor([i]), 0))[0] for i in range(n)
    ]
    expected = by_hand_ablation(model, prompts, target)
    assert res.token_attr.shape == (target.numel(), n)
    assert_close(res.token_attr, expected, atol=1e-5, rtol=0)
    one_at_a_time = llm.attribute(inp, TARGET, perturbations_per_eval=1)
    assert_close(one_at_a_time.token_attr, res.token_attr, atol=1e-5, rtol=0)


def test_shapley_values_are_efficient(model):
    """Exact Shapley values sum to score(all present) - score(all absent)."""
    inp = TextTemplateInput(*TEMPLATE)
    res = LLMAttribution(ShapleyValues(model), TOK).attribute(inp, TARGET)
    target = ids_of(TARGET, special=False)
    full = plain_log_probs(model, ids_of(inp.to_model_input()), target)
    empty = plain_log_probs(model, ids_of(inp.to_model_input(torch.zeros(1, inp.n_itp_features))), target)
    assert_close(res.token_attr.sum(1), full - empty, atol=1e-5, rtol=0)


def test_contrastive_foil_is_the_difference_of_two_attributions(model):
    inp = TextTemplateInput(*TEMPLATE)
    llm = LLMAttribution(FeatureAblation(model), TOK)
    foil = "hill and the seas"
    contrast = llm.attribute(inp, TARGET, foil=foil)
    a, b = llm.attribute(inp, TARGET), llm.attribute(inp, foil)
    assert_close(contrast.token_attr, a.token_attr - b.token_attr, atol=1e-5, rtol=0)
    shorter = llm.attribute(inp, TARGET, foil="hills")  # lengths differ: the whole response only
    assert shorter.token_attr is None
    assert_close(shorter.seq_attr, a.seq_attr - llm.attribute(inp, "hills").seq_attr, atol=1e-5, rtol=0)


def test_step_scores_and_generated_target(model):
    inp = TextTokenInput(PROMPT, TOK)
    res = LLMAttribution(FeatureAblation(model), TOK).attribute(
        inp, gen_args={"max_new_tokens": 3, "do_sample": False}
    )
    assert res.token_attr.shape == (3, inp.n_itp_features)
    generated = model.generate(inp.to_model_input(), max_new_tokens=3, do_sample=False)[0, -3:]
    expected = plain_log_probs(model, inp.to_model_input()[0], generated)
    assert_close(res.step_scores["log_prob"], expected, atol=1e-5, rtol=0)
    assert bool((res.step_scores["entropy"] > 0).all())
    # greedy decoding picked each token: it is the most probable one
    assert bool((res.step_scores["prob"] > 0).all())


# ------------------------------------------------------------------ gradients
@pytest.mark.parametrize("method", [LayerIntegratedGradients, LayerGradientXActivation])
def test_gradient_attribution_in_one_call_equals_token_by_token(model, method):
    inp = TextTokenInput(PROMPT, TOK)
    llm = LLMGradientAttribution(method(model, model.get_input_embeddings()), TOK)
    kwargs = {"n_steps": 8} if method is LayerIntegratedGradients else {}
    batched = llm.attribute(inp, TARGET, **kwargs)
    model.is_causal_lm = False  # forces the token-by-token loop (every model supports it)
    try:
        looped = llm.attribute(inp, TARGET, **kwargs)
    finally:
        del model.is_causal_lm
    assert batched.token_attr.shape == (len(ids_of(TARGET, special=False)), inp.n_itp_features)
    assert_close(batched.token_attr, looped.token_attr, atol=1e-5, rtol=1e-4)


def test_integrated_gradients_complete_per_token(model):
    """IG completeness per response token: the row sums equal log p(input) - log p(baseline ids)."""
    inp = TextTokenInput(PROMPT, TOK, baselines=0)
    llm = LLMGradientAttribution(LayerIntegratedGradients(model, model.get_input_embeddings()), TOK)
    res = llm.attribute(inp, TARGET, n_steps=300)
    target = ids_of(TARGET, special=False)
    ids = inp.to_model_input()[0]
    full = plain_log_probs(model, ids, target)
    # the baseline replaces the prompt's embeddings, not the response's
    emb = model.get_input_embeddings()
    with torch.no_grad():
        embeds = emb(torch.cat([ids, target[:-1]]))[None].clone()
        embeds[0, : ids.numel()] = emb(torch.zeros_like(ids))
        logits = model(inputs_embeds=embeds).logits[0, ids.numel() - 1 :]
    base = logits.log_softmax(-1).gather(1, target[:, None])[:, 0]
    assert_close(res.token_attr.sum(1), full - base, atol=5e-3, rtol=0)


def test_two_threads_explain_with_one_model(model):
    from concurrent.futures import ThreadPoolExecutor

    llm = LLMAttribution(FeatureAblation(model), TOK)
    prompts = [TextTemplateInput(*TEMPLATE), TextTokenInput(PROMPT, TOK)]
    serial = [llm.attribute(p, TARGET).token_attr for p in prompts]
    with ThreadPoolExecutor(2) as pool:
        parallel = list(pool.map(lambda p: llm.attribute(p, TARGET).token_attr, prompts * 2))
    for got, expected in zip(parallel, serial * 2):
        assert_close(got, expected, atol=1e-6, rtol=0)
