"""LLMAttribution, LLMGradientAttribution and the interpretable inputs, against hand-computed values."""

import matplotlib
import pytest
import torch
from models.llm import SOS, SumLM, WordTokenizer, key_token_lm
from torch.testing import assert_close

from attribuo._engine.errors import ArgumentTypeError, ArgumentValueError
from attribuo.attr import (
    FeatureAblation,
    ImageMaskInput,
    IntegratedGradients,
    KernelShap,
    LayerGradientXActivation,
    LayerIntegratedGradients,
    Lime,
    LLMAttribution,
    LLMAttributionResult,
    LLMGradientAttribution,
    ShapleyValues,
    ShapleyValueSampling,
    TextTemplateInput,
    TextTokenInput,
)

matplotlib.use("Agg")
TOK = WordTokenizer()


def key_effect(lm, target: str, prob: bool = False):
    """Per target token: score with the key token in the prompt minus score without it."""
    key_row = lm.emb.weight.abs().sum(1).argmax()
    with_key = lm.lin(lm.emb.weight[key_row]).detach()
    without = lm.lin.bias.detach()
    ids = torch.tensor(TOK.encode(target, add_special_tokens=False))
    a, b = with_key.log_softmax(-1)[ids], without.log_softmax(-1)[ids]
    return (a.exp() - b.exp()) if prob else (a - b)


# ------------------------------------------------------------------ known answers
@pytest.mark.parametrize("method", [FeatureAblation, ShapleyValues, ShapleyValueSampling])
@pytest.mark.parametrize("attr_target", ["log_prob", "prob"])
def test_only_the_key_token_gets_attribution(method, attr_target):
    lm = key_token_lm("c")
    res = LLMAttribution(method(lm), TOK, attr_target=attr_target).attribute(
        TextTokenInput("a b c d", TOK, skip_tokens=[SOS]), target="m n o"
    )
    effect = key_effect(lm, "m n o", prob=attr_target == "prob")
    expected = torch.zeros(3, 4, dtype=torch.float64)
    expected[:, 2] = effect
    assert res.input_tokens == ["a", "b", "c", "d"] and res.output_tokens == ["m", "n", "o"]
    assert_close(res.token_attr, expected)
    # the sequence score is the total log probability (or the probability of the whole response)
    seq = effect.sum() if attr_target == "log_prob" else None
    if seq is None:
        lm_with = lm.lin(lm.emb.weight[ord("c")]).log_softmax(-1)
        lm_without = lm.lin.bias.log_softmax(-1)
        ids = torch.tensor([ord("m"), ord("n"), ord("o")])
        seq = (lm_with[ids].sum().exp() - lm_without[ids].sum().exp()).detach()
    assert_close(res.seq_attr, torch.tensor([0, 0, seq.item(), 0], dtype=torch.float64))


def test_kernel_shap_recovers_the_key_token_exactly():
    lm = key_token_lm("c")
    torch.manual_seed(0)
    res = LLMAttribution(KernelShap(lm), TOK).attribute(
        TextTokenInput("a c d", TOK, skip_tokens=["<sos>"]), target="m n", n_samples=40
    )
    assert res.token_attr is None
    assert_close(res.seq_attr, torch.tensor([0.0, key_effect(lm, "m n").sum().item(), 0.0]),
                 atol=1e-4, rtol=0, check_dtype=False)


def test_lime_gives_sequence_attributions_only():
    torch.manual_seed(0)
    res = LLMAttribution(Lime(SumLM()), TOK).attribute(TextTokenInput("a b", TOK), "m", n_samples=20)
    assert res.token_attr is None and res.seq_attr.shape == (3,)
    with pytest.raises(ValueError, match="token_attr is None"):
        res.plot_token_attr()


@pytest.mark.parametrize("baselines, expected_slot", [(["a", "x"], 1), (["x", "c"], None)])
def test_template_baselines(baselines, expected_slot):
    # replacing a slot by the key token itself changes nothing
    lm = key_token_lm("c")
    inp = TextTemplateInput("{} b {} e", ["a", "c"], baselines=baselines)
    assert inp.to_model_input(torch.tensor([[0.0, 0.0]])) == f"{baselines[0]} b {baselines[1]} e"
    res = LLMAttribution(FeatureAblation(lm), TOK).attribute(inp, target="m n")
    expected = torch.zeros(2, 2, dtype=torch.float64)
    if expected_slot is not None:
        expected[:, expected_slot] = key_effect(lm, "m n")
    assert_close(res.token_attr, expected)
    assert_close(res.seq_attr, expected.sum(0))


def test_template_mask_groups_slots_and_dict_values():
    lm = key_token_lm("c")
    inp = TextTemplateInput(
        "{x} b {y} {z}", {"x": "a", "y": "c", "z": "d"}, mask={"x": 5, "y": 7, "z": 7}
    )
    assert inp.n_itp_features == 2 and inp.to_model_input(torch.tensor([[1, 0]])) == "a b  "
    res = LLMAttribution(ShapleyValues(lm), TOK).attribute(inp, target="m")
    effect = key_effect(lm, "m").item()
    assert_close(res.seq_attr, torch.tensor([0.0, effect, effect], dtype=torch.float64))
    assert res.token_attr.shape == (1, 3)


# ------------------------------------------------------------------ shapes and options
def test_shapes_skip_tokens_and_batch_invariance():
    lm = SumLM()
    inp_all = TextTokenInput("a b c d", TOK)
    inp_skip = TextTokenInput("a b c d", TOK, skip_tokens=["<sos>"])
    assert inp_skip.n_itp_features == 4 and inp_all.n_itp_features == 5
    assert_close(inp_skip.to_model_input(torch.tensor([[1, 0, 1, 0]])), torch.tensor([[0, 97, 0, 99, 0]]))
    llm = LLMAttribution(FeatureAblation(lm), TOK)
    lm.calls.clear()
    full = llm.attribute(inp_all, "m n o")
    batched_calls = len(lm.calls)
    lm.calls.clear()
    one = llm.attribute(inp_all, "m n o", perturbations_per_eval=1)
    assert batched_calls < len(lm.calls)  # perturbed prompts share model calls
    assert_close(full.token_attr, one.token_attr)
    skipped = llm.attribute(inp_skip, "m n o")
    assert full.seq_attr.shape == (5,) and full.token_attr.shape == (3, 5)
    assert skipped.input_tokens == ["a", "b", "c", "d"]
    # ablating a token is the same whether or not <sos> is interpretable
    assert_close(skipped.token_attr, full.token_attr[:, 1:])
    assert_close(full.seq_attr, full.token_attr.sum(0))  # log probs add up over tokens


@pytest.mark.parametrize("forward_in_tokens", [True, False])
@pytest.mark.parametrize("use_cached_outputs", [True, False])
def test_scoring_modes_agree_on_a_causal_model(forward_in_tokens, use_cached_outputs):
    lm = SumLM()
    inp = TextTemplateInput("{} b {} {} e {}", ["a", "c", "d", "f"])
    reference = LLMAttribution(FeatureAblation(lm), TOK).attribute(
        inp, "m n o", perturbations_per_eval=1, use_cached_outputs=False
    )
    res = LLMAttribution(FeatureAblation(lm), TOK).attribute(
        inp, "m n o", use_cached_outputs=use_cached_outputs, forward_in_tokens=forward_in_tokens
    )
    assert_close(res.token_attr, reference.token_attr)
    assert res.seq_attr.dtype == torch.float64


def test_num_trials_averages_runs():
    lm = SumLM()
    inp = TextTokenInput("a b c", TOK)
    llm = LLMAttribution(ShapleyValueSampling(lm), TOK)
    torch.manual_seed(3)
    both = llm.attribute(inp, "m n", num_trials=2, n_samples=2)
    torch.manual_seed(3)
    first = llm.attribute(inp, "m n", n_samples=2)
    second = llm.attribute(inp, "m n", n_samples=2)
    assert_close(both.token_attr, (first.token_attr + second.token_attr) / 2)


def test_generated_target_and_inspect_forward():
    lm = SumLM()
    inp = TextTokenInput("a b", TOK)
    seen = []
    res = LLMAttribution(FeatureAblation(lm), TOK).attribute(
        inp, gen_args={"max_new_tokens": 2},
        _inspect_forward=lambda prompt, response, probs: seen.append((prompt, response, probs)),
    )
    greedy = lm.generate(inp.inp_tensor, max_new_tokens=2)[0, 3:]
    assert res.output_tokens == TOK.convert_ids_to_tokens(greedy.tolist())
    # the original prompt, then one prompt per ablated token, each with 1 + 2 probabilities
    assert [p for p, _, _ in seen] == ["<sos> a b", "<sos> a b", "<sos> <sos> b", "<sos> a <sos>"]
    assert all(len(probs) == 3 and abs(probs[0] - probs[1] * probs[2]) < 1e-12 for _, _, probs in seen)


# ------------------------------------------------------------------ gradient variant
@pytest.mark.parametrize("skip", [None, [SOS]])
def test_gradient_x_embedding_by_hand(skip):
    lm = SumLM()
    inp = TextTokenInput("a b c", TOK, skip_tokens=skip)
    res = LLMGradientAttribution(LayerGradientXActivation(lm, lm.emb), TOK).attribute(inp, "m n")
    prompt = inp.inp_tensor[0]
    rows = []
    with torch.no_grad():
        for k, t in enumerate([ord("m"), ord("n")]):
            ids = torch.cat([prompt, torch.tensor([ord("m")])[:k]])
            e = lm.emb.weight[ids]
            h = e.sum(0)
            p = lm.lin(torch.tanh(h)).softmax(-1)
            grad_h = (lm.lin.weight.T @ (torch.nn.functional.one_hot(torch.tensor(t), 128) - p)) * (
                1 - torch.tanh(h) ** 2
            )
            rows.append((e @ grad_h)[: len(prompt)])  # every position feeds the last sum
    expected = torch.stack(rows)
    if skip:
        expected = expected[:, 1:]
    assert_close(res.token_attr, expected)
    assert_close(res.seq_attr, expected.sum(0))
    assert res.input_tokens == inp.values and res.output_tokens == ["m", "n"]


def test_layer_integrated_gradients_completeness():
    lm = SumLM()
    inp = TextTokenInput("a b c", TOK, baselines=ord("z"))
    res = LLMGradientAttribution(LayerIntegratedGradients(lm, lm.emb), TOK).attribute(inp, "m n")
    with torch.no_grad():
        def logp(prompt, k):
            ids = torch.cat([prompt, torch.tensor([ord("m")])[:k]])[None]
            return lm(ids).logits[0, -1].log_softmax(-1)[[ord("m"), ord("n")][k]]

        base = torch.full_like(inp.inp_tensor[0], ord("z"))
        gaps = torch.stack([logp(inp.inp_tensor[0], k) - logp(base, k) for k in range(2)])
    assert_close(res.token_attr.sum(1), gaps, atol=1e-5, rtol=0)


# ------------------------------------------------------------------ inputs, results, errors
def test_image_mask_input():
    import PIL.Image

    image = PIL.Image.new("RGB", (4, 2), (10, 20, 30))
    mask = torch.tensor([[3, 3, 8, 8], [3, 3, 8, 8]])
    inp = ImageMaskInput(image, mask=mask, baseline=(0, 0, 0))
    assert inp.n_itp_features == 2 and inp.values == ["image_feature_3", "image_feature_8"]
    out = inp.to_model_input(torch.tensor([[1, 0]]))
    assert out.getpixel((0, 0)) == (10, 20, 30) and out.getpixel((3, 1)) == (0, 0, 0)
    pixel = inp.format_pixel_attr(torch.tensor([[2.0, -1.0]]))
    assert_close(pixel, torch.tensor([[[2.0, 2.0, -1.0, -1.0], [2.0, 2.0, -1.0, -1.0]]]))

    # a "processor" that says 'c' when the left half is visible: the left segment gets the effect
    def processor(img):
        return TOK.encode("a c" if img.getpixel((0, 0)) != (0, 0, 0) else "a x", return_tensors="pt")

    lm = key_token_lm("c")
    inp = ImageMaskInput(image, mask=mask, baseline=(0, 0, 0), processor_fn=processor)
    res = LLMAttribution(FeatureAblation(lm), TOK).attribute(inp, target="m")
    assert_close(res.seq_attr, torch.tensor([key_effect(lm, "m").item(), 0.0], dtype=torch.float64))


def test_result_validation_and_plots():
    res = LLMAttributionResult(input_tokens=["a", "b"], output_tokens=["x"], seq_attr=[1.0, -2.0],
                               token_attr=[[1.0, -2.0]])
    assert res.seq_attr_dict == {"a": 1.0, "b": -2.0}
    fig, ax = res.plot_seq_attr()
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b"]
    fig, ax = res.plot_token_attr()
    assert len(ax.texts) == 2
    with pytest.raises(ArgumentValueError, match="token_attr"):
        LLMAttributionResult(input_tokens=["a"], output_tokens=["x"], seq_attr=[1.0], token_attr=[[1.0, 2.0]])
    with pytest.raises(ArgumentValueError, match="seq_attr"):
        LLMAttributionResult(input_tokens=["a"], output_tokens=[], seq_attr=[1.0, 2.0])


def test_bad_arguments():
    lm = SumLM()
    with pytest.raises(ArgumentTypeError, match="attr_method"):
        LLMAttribution(IntegratedGradients(lm), TOK)
    with pytest.raises(ArgumentTypeError, match="attr_method"):
        LLMGradientAttribution(FeatureAblation(lm), TOK)
    with pytest.raises(ArgumentValueError, match="attr_target"):
        LLMAttribution(FeatureAblation(lm), TOK, attr_target="logit")
    llm = LLMAttribution(FeatureAblation(lm), TOK)
    inp = TextTokenInput("a b", TOK)
    with pytest.raises(ArgumentValueError, match="num_trials"):
        llm.attribute(inp, "m", num_trials=0)
    with pytest.raises(ArgumentValueError, match="gen_args"):
        llm.attribute(inp, "m", gen_args={"max_new_tokens": 2})
    with pytest.raises(ArgumentTypeError, match="target"):
        llm.attribute(inp, 5)
    with pytest.raises(ArgumentTypeError, match="inp"):
        LLMGradientAttribution(LayerIntegratedGradients(lm, lm.emb), TOK).attribute(
            TextTemplateInput("{}", ["a"]), "m"
        )
    with pytest.raises(ArgumentTypeError, match="values"):
        TextTemplateInput("{}", "a")
    with pytest.raises(ArgumentTypeError, match="baselines"):
        TextTemplateInput("{x}", {"x": "a"}, baselines=["b"])
    with pytest.raises(ArgumentValueError, match="perturbed_tensor"):
        TextTemplateInput("{}", ["a"]).to_model_input(torch.ones(2, 1))


def _snapshot(lm):
    return (lm.training, [p.requires_grad for p in lm.parameters()],
            [len(m._forward_hooks) + len(m._forward_pre_hooks) for m in lm.modules()])


@pytest.mark.parametrize("make", [
    lambda lm: LLMAttribution(FeatureAblation(lm), TOK),
    lambda lm: LLMGradientAttribution(LayerIntegratedGradients(lm, lm.emb), TOK),
])
def test_no_leftover_state(make):
    lm = SumLM()
    lm.train()
    lm.lin.weight.requires_grad_(False)
    before = _snapshot(lm)
    inp = TextTokenInput("a b", TOK)
    make(lm).attribute(inp, "m n")
    assert _snapshot(lm) == before
    with pytest.raises(IndexError):
        make(lm).attribute(inp, torch.tensor([500]))  # a token id outside the vocabulary
    assert _snapshot(lm) == before
    assert_close(inp.inp_tensor, torch.tensor([[SOS, 97, 98]]))


class _CausalSumLM(SumLM):
    is_causal_lm = True  # scored by teacher forcing; no output layer to read hidden states through


@pytest.mark.parametrize("method", [LayerIntegratedGradients, LayerGradientXActivation])
def test_gradient_rows_of_a_causal_model_without_output_layer_equal_the_loop(method):
    lm = _CausalSumLM(seed=3)
    inp = TextTokenInput("a b c d", TOK, skip_tokens=[SOS])
    kwargs = {"n_steps": 10} if method is LayerIntegratedGradients else {}
    batched = LLMGradientAttribution(method(lm, lm.emb), TOK).attribute(inp, "m n o", **kwargs)
    plain = SumLM(seed=3)
    looped = LLMGradientAttribution(method(plain, plain.emb), TOK).attribute(inp, "m n o", **kwargs)
    assert_close(batched.token_attr, looped.token_attr)
