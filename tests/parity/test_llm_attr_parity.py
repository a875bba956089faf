"""LLMAttribution and LLMGradientAttribution against Captum 0.9.0 on the same tiny LM and tokenizer.

Captum accumulates perturbation attributions in float32, so those agree to
a few 1e-6; the gradient variant agrees to 1e-7 (float64 model).
"""

import captum.attr as captum_attr
import pytest
import torch
from captum.attr._core.llm_attr import LLMAttribution as CaptumLLMAttribution
from captum.attr._core.llm_attr import LLMGradientAttribution as CaptumLLMGradientAttribution
from captum.attr._utils import interpretable_input as captum_inputs
from models.llm import SOS, SumLM, WordTokenizer
from torch.testing import assert_close

import attribuo.attr as attribuo_attr

TOK = WordTokenizer()


def _inputs(kind):
    """The same prompt for both libraries."""
    if kind == "template":
        args = ("{} b {} {} e {}", ["a", "c", "d", "f"])
        return attribuo_attr.TextTemplateInput(*args), captum_inputs.TextTemplateInput(*args)
    if kind == "template-baselines-mask":
        args = ("{} b {} {} e {}", ["a", "c", "d", "f"])
        kw = {"baselines": ["x", "y", "z", "w"], "mask": [0, 1, 1, 2]}
        return attribuo_attr.TextTemplateInput(*args, **kw), captum_inputs.TextTemplateInput(*args, **kw)
    skip = [SOS] if kind == "tokens-skip" else None
    return (
        attribuo_attr.TextTokenInput("a b c d", TOK, baselines=ord("z"), skip_tokens=skip),
        captum_inputs.TextTokenInput("a b c d", TOK, baselines=ord("z"), skip_tokens=skip),
    )


def _same(ours, theirs, atol):
    assert ours.input_tokens == theirs.input_tokens
    assert ours.output_tokens == theirs.output_tokens
    assert_close(ours.seq_attr, theirs.seq_attr, atol=atol, rtol=0, check_dtype=False)
    if theirs.token_attr is None:
        assert ours.token_attr is None
    else:
        assert_close(ours.token_attr, theirs.token_attr, atol=atol, rtol=0, check_dtype=False)


@pytest.mark.parametrize("method", ["FeatureAblation", "ShapleyValues"])
@pytest.mark.parametrize("kind", ["template", "template-baselines-mask", "tokens", "tokens-skip"])
@pytest.mark.parametrize("mode", [(True, True), (False, True), (True, False)])
def test_perturbation_parity(method, kind, mode):
    forward_in_tokens, use_cached_outputs = mode
    lm = SumLM()
    ours_inp, their_inp = _inputs(kind)
    kw = {"forward_in_tokens": forward_in_tokens, "use_cached_outputs": use_cached_outputs}
    ours = attribuo_attr.LLMAttribution(getattr(attribuo_attr, method)(lm), TOK).attribute(
        ours_inp, "m n o", **kw
    )
    theirs = CaptumLLMAttribution(getattr(captum_attr, method)(lm), TOK).attribute(
        their_inp, "m n o", **kw
    )
    _same(ours, theirs, 5e-6)


@pytest.mark.parametrize("attr_target", ["log_prob", "prob"])
def test_feature_ablation_parity_generated_target(attr_target):
    lm = SumLM(seed=2)
    ours_inp, their_inp = _inputs("tokens")
    gen = {"max_new_tokens": 3}
    ours = attribuo_attr.LLMAttribution(attribuo_attr.FeatureAblation(lm), TOK, attr_target).attribute(
        ours_inp, gen_args=gen
    )
    theirs = CaptumLLMAttribution(captum_attr.FeatureAblation(lm), TOK, attr_target).attribute(
        their_inp, gen_args=gen
    )
    _same(ours, theirs, 1e-6)


@pytest.mark.parametrize("method, kw", [("ShapleyValueSampling", {"n_samples": 3}), ("Lime", {"n_samples": 20})])
def test_seeded_sampling_parity(method, kw):
    lm = SumLM(seed=1)
    ours_inp, their_inp = _inputs("template")
    torch.manual_seed(11)
    ours = attribuo_attr.LLMAttribution(getattr(attribuo_attr, method)(lm), TOK).attribute(
        ours_inp, "m n", **kw
    )
    torch.manual_seed(11)
    theirs = CaptumLLMAttribution(getattr(captum_attr, method)(lm), TOK).attribute(their_inp, "m n", **kw)
    _same(ours, theirs, 1e-4 if method == "Lime" else 1e-6)  # Lime: sklearn fit tolerance


@pytest.mark.parametrize("method", ["LayerIntegratedGradients", "LayerGradientXActivation"])
@pytest.mark.parametrize("kind", ["tokens", "tokens-skip"])
def test_gradient_parity(method, kind):
    lm = SumLM()
    ours_inp, their_inp = _inputs(kind)
    ours = attribuo_attr.LLMGradientAttribution(getattr(attribuo_attr, method)(lm, lm.emb), TOK).attribute(
        ours_inp, "m n o"
    )
    theirs = CaptumLLMGradientAttribution(getattr(captum_attr, method)(lm, lm.emb), TOK).attribute(
        their_inp, "m n o"
    )
    _same(ours, theirs, 1e-7)
