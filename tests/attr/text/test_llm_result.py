"""LLMAttributionResult beyond Captum: words and spans, HTML, files; and its image plots."""

import matplotlib
import numpy as np
import pytest
import torch
from models.llm import SOS, SumLM, WordTokenizer
from torch.testing import assert_close

from attribuo._engine.errors import ArgumentValueError
from attribuo.attr import (
    FeatureAblation,
    ImageMaskInput,
    LLMAttribution,
    LLMAttributionResult,
    TextTokenInput,
)
from attribuo.attr.text.tokens import word_groups, word_label
from attribuo.attr.visualization import draw_mask_border
from attribuo.attr.visualization.masks import erode

matplotlib.use("Agg")


def _result():
    return LLMAttributionResult(
        input_tokens=["[CLS]", "play", "##ing", "golf", "<b>"],
        output_tokens=["x", "y", "z"],
        seq_attr=torch.tensor([0.0, 1.0, 2.0, 3.0, -4.0]),
        token_attr=torch.arange(15.0).reshape(3, 5) - 7,
        output_probs=torch.tensor([0.5, 0.25, 0.1]),
        step_scores={"log_prob": torch.tensor([0.5, 0.25, 0.1]).log(), "prob": torch.tensor([0.5, 0.25, 0.1])},
        output_pieces=["Ġsea", "s", "Ġcalm"],
    )


@pytest.mark.parametrize(
    "pieces, groups",
    [
        (["Ġplay", "ing", "Ġgolf"], [[0, 1], [2]]),  # byte-level BPE
        (["▁play", "ing", "▁golf", "</s>"], [[0, 1], [2], [3]]),  # SentencePiece
        (["[CLS]", "play", "##ing", "golf", "[SEP]"], [[0], [1, 2], [3], [4]]),  # WordPiece
        (["a", "b"], [[0], [1]]),  # no markers: one word each
    ],
)
def test_word_groups_follow_the_tokenizers_markers(pieces, groups):
    assert word_groups(pieces) == groups


def test_aggregating_into_words_sums_rows_and_columns():
    res = _result()
    words = res.aggregate()
    assert words.input_tokens == ["[CLS]", "playing", "golf", "<b>"]
    assert words.output_tokens == ["seas", "calm"]
    tok = res.token_attr
    expected = torch.stack([tok[:, 0], tok[:, 1] + tok[:, 2], tok[:, 3], tok[:, 4]], 1)
    expected = torch.stack([expected[0] + expected[1], expected[2]])
    assert_close(words.token_attr, expected)
    assert_close(words.seq_attr, torch.tensor([0.0, 3.0, 3.0, -4.0]))
    # a word's probability is the product of its tokens'
    assert_close(words.output_probs, torch.tensor([0.125, 0.1]))


def test_spans_and_other_combinations():
    res = _result()
    spans = res.aggregate(inputs=[[0, 1, 2], [3, 4]], outputs=None, how="absmax")
    assert spans.input_tokens == ["[CLS] play ##ing", "golf <b>"]
    assert_close(spans.seq_attr, torch.tensor([2.0, -4.0]))
    assert spans.token_attr.shape == (3, 2)
    assert_close(res.aggregate(inputs=[[0, 1], [2, 3, 4]], outputs=None, how="mean").seq_attr,
                 torch.tensor([0.5, 1.0 / 3]))
    with pytest.raises(ArgumentValueError, match="cover"):
        res.aggregate(inputs=[[0, 2], [1, 3, 4]])
    with pytest.raises(ArgumentValueError, match="how"):
        res.aggregate(how="max")


def test_word_labels_drop_markers():
    assert word_label(["Ġplay", "ing"]) == "play" + "ing"
    assert word_label(["play", "##ing"]) == "playing"


def test_html_is_escaped_and_saved(tmp_path):
    res = _result()
    page = res.to_html(title="<title>")
    assert "&lt;b&gt;" in page and "<b>" not in page.replace("<b>Response", "").replace("<b>Attr", "").replace(
        "<b>Per", "").replace("<b>Legend", "")
    assert "&lt;title&gt;" in page
    path = res.save_html(tmp_path / "res.html", title="<title>")
    assert path.read_text(encoding="utf-8") == page
    assert res._repr_html_() == res.to_html()


def test_save_and_load_round_trip(tmp_path):
    res = _result()
    json_path, tensor_path = res.save(tmp_path / "res.json")
    assert tensor_path.suffix == ".safetensors" and tensor_path.exists()
    back = LLMAttributionResult.load(json_path)
    assert back.input_tokens == res.input_tokens and back.output_tokens == res.output_tokens
    assert back.output_pieces == res.output_pieces
    for name in ("seq_attr", "token_attr", "output_probs"):
        assert_close(getattr(back, name), getattr(res, name))
    assert_close(back.step_scores["log_prob"], res.step_scores["log_prob"])
    (tmp_path / "bad.json").write_text('{"format": "other"}')
    with pytest.raises(ArgumentValueError, match="not a saved"):
        LLMAttributionResult.load(tmp_path / "bad.json")


def test_llm_attribution_results_carry_pieces_and_step_scores():
    tok = WordTokenizer()
    res = LLMAttribution(FeatureAblation(SumLM()), tok).attribute(
        TextTokenInput("a b c", tok, skip_tokens=[SOS]), "m n"
    )
    assert res.output_pieces == ["m", "n"]
    assert set(res.step_scores) == {"prob", "log_prob", "entropy"}
    assert_close(res.step_scores["prob"], res.output_probs)
    entropy = res.step_scores["entropy"]
    assert bool((entropy > 0).all()) and bool((entropy < np.log(128) + 1e-9).all())


# ------------------------------------------------------------------ image plots
def _image_input():
    import PIL.Image

    image = PIL.Image.fromarray(np.arange(6 * 8 * 3, dtype=np.uint8).reshape(6, 8, 3))
    mask = torch.zeros(6, 8, dtype=torch.long)
    mask[:, 4:] = 5
    return ImageMaskInput(image, mask=mask)


def test_image_heatmap_of_segments():
    inp = _image_input()
    res = LLMAttributionResult(input_tokens=inp.values, output_tokens=["x", "y"], seq_attr=[1.0, -2.0],
                               token_attr=[[1.0, 0.0], [0.0, -2.0]], inp=inp)
    fig, ax = res.plot_image_heatmap()
    heat = ax.images[1].get_array()
    assert heat.shape == (6, 8) and float(heat[0, 0]) == 1.0 and float(heat[0, 7]) == -2.0
    assert [t.get_text() for t in ax.texts] == ["0", "5"]
    fig, ax = res.plot_image_heatmap(target_token_pos=(0, 1), border_width=0, show_legends=False)
    assert float(ax.images[1].get_array()[0, 7]) == 0.0 and not ax.texts
    with pytest.raises(ValueError, match="ImageMaskInput"):
        LLMAttributionResult(input_tokens=["a"], output_tokens=["x"], seq_attr=[1.0]).plot_image_heatmap()


def test_mask_overlay_and_borders():
    inp = _image_input()
    fig, ax = inp.plot_mask_overlay(border_width=1)
    assert len(ax.images) == 1 + 2 * 2  # the image, then a tint and an outline per segment
    assert [t.get_text() for t in ax.texts] == ["0", "5"]
    mask = np.zeros((5, 5), bool)
    mask[1:4, 1:4] = True
    assert erode(mask).sum() == 1  # only the centre keeps all four neighbours
    fig, ax = matplotlib.pyplot.subplots()
    draw_mask_border(ax, mask, 1, "red")
    border = ax.images[0].get_array()[..., 3]
    assert int((border > 0).sum()) == 8
