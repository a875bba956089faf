"""Visualization: every method/sign rendered to PNG (Agg) and checked pixel by pixel."""

from __future__ import annotations

import io
import subprocess
import sys
from html.parser import HTMLParser

import matplotlib
import numpy as np
import pytest
import torch

matplotlib.use("Agg")
import matplotlib.image as mpimg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from attribuo._engine.errors import ArgumentTypeError, ArgumentValueError  # noqa: E402
from attribuo.attr import visualization as viz  # noqa: E402
from attribuo.attr.visualization import text as viz_text  # noqa: E402

N = 10  # cells per side; each cell is PX x PX pixels in the PNG
PX = 10
METHODS = ["heat_map", "blended_heat_map", "original_image", "masked_image", "alpha_scaling"]
SIGNS = ["all", "positive", "negative", "absolute_value"]

# columns 0-4 negative, 5-9 positive, magnitude growing to the edges and down the rows
ATTR2D = (np.arange(N)[None, :] - 4.5) * (1 + np.arange(N)[:, None] / 10)
ATTR = np.repeat(ATTR2D[:, :, None] / 3, 3, axis=2)
rng = np.random.default_rng(0)
IMAGE = rng.uniform(0.2, 1.0, size=(N, N, 3))  # floats in 0..1


def png_pixels(fig):
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    buf.seek(0)
    return mpimg.imread(buf)[..., :3]


def render(attr=ATTR, image=IMAGE, **kwargs):
    """Draw into axes that fill a 100x100 px figure; return the cell-centre colours."""
    fig = Figure(figsize=(2, 2), dpi=N * PX / 2)
    ax = fig.add_axes((0, 0, 1, 1))
    out = viz.visualize_image_attr(attr, image, plt_fig_axis=(fig, ax), use_pyplot=False, **kwargs)
    assert out == (fig, ax)
    pixels = png_pixels(fig)
    assert pixels.shape[:2] == (N * PX, N * PX)
    centres = np.arange(N) * PX + PX // 2
    return pixels[np.ix_(centres, centres)]


def dominant(c, channel, margin=0.02):
    others = np.delete(c, channel, axis=-1).max(axis=-1)
    return (c[..., channel] - others) > margin


def reddish(c):
    return dominant(c, 0)


def greenish(c):
    return dominant(c, 1)


def bluish(c):
    return dominant(c, 2)


def white(c):
    return (c > 0.95).all(axis=-1)


def empty_colour(cmap):
    return np.array(matplotlib.colormaps[cmap](0.0)[:3])


def reference_norm(attr2d, sign, outlier_perc=2):
    """Slow reference of the normalisation: scale so the top outlier_perc % saturate."""
    v = {"positive": np.maximum(attr2d, 0), "negative": -np.minimum(attr2d, 0),
         "absolute_value": np.abs(attr2d), "all": attr2d}[sign]
    mags = sorted(np.abs(v).ravel())
    total, running = sum(mags), 0.0
    for m in mags:
        running += m
        if running >= total * (100 - outlier_perc) / 100:
            return np.clip(v / m, -1, 1)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("sign", SIGNS)
def test_every_method_and_sign_renders_with_the_right_colours(method, sign):
    if sign == "all" and method in ("masked_image", "alpha_scaling"):
        with pytest.raises(ArgumentValueError, match="both signs"):
            render(method=method, sign=sign)
        return
    c = render(method=method, sign=sign)
    neg, pos = np.s_[:, :5], np.s_[:, 5:]
    strong_neg, strong_pos = np.s_[:, :3], np.s_[:, 7:]  # |attribution| >= 2.5
    if method in ("heat_map", "blended_heat_map"):
        # no pixel anywhere has the colour of the sign that is not shown
        if sign == "positive":
            assert not reddish(c).any() and greenish(c[strong_pos]).all()
        if sign == "negative":
            assert not greenish(c).any() and reddish(c[strong_neg]).all()
        if sign == "absolute_value":
            assert not reddish(c).any() and not greenish(c).any()
            assert bluish(c[strong_neg]).all() and bluish(c[strong_pos]).all()
        if sign == "all":
            assert reddish(c[strong_neg]).all() and greenish(c[strong_pos]).all()
            assert (c[neg][..., 0] > c[neg][..., 1]).all() and (c[pos][..., 1] > c[pos][..., 0]).all()
        if method == "heat_map" and sign in ("positive", "negative"):
            other, cmap = (neg, "Greens") if sign == "positive" else (pos, "Reds")
            np.testing.assert_allclose(c[other].reshape(-1, 3),  # other sign: the empty colour
                                       np.tile(empty_colour(cmap), (N * 5, 1)), atol=2 / 255)
    expected_rgb = np.floor(IMAGE * 255) / 255
    if method == "original_image":
        np.testing.assert_allclose(c, expected_rgb, atol=1.5 / 255)
    if method in ("masked_image", "alpha_scaling"):
        norm = reference_norm(ATTR2D, sign)
        if method == "masked_image":
            expected = np.floor(np.floor(IMAGE * 255) * norm[:, :, None]) / 255
        else:  # alpha blend over the white figure background
            alpha = np.floor(norm * 255)[:, :, None] / 255
            expected = expected_rgb * alpha + (1 - alpha)
        np.testing.assert_allclose(c, expected, atol=2.5 / 255)
        if sign == "positive":  # no positive attribution there: black / transparent
            assert (c[neg] < 0.01).all() if method == "masked_image" else white(c[neg]).all()


def test_normalisation_matches_slow_reference_and_survives_empty_maps():
    for sign in SIGNS:
        norm = viz._normalize_attr(ATTR2D, sign, 2)
        expected = reference_norm(ATTR2D, sign)
        np.testing.assert_allclose(np.abs(norm), np.abs(expected))
    # a positive-only view of purely negative attributions is empty, not an error
    c = render(attr=-np.abs(ATTR), method="heat_map", sign="positive")
    np.testing.assert_allclose(c.reshape(-1, 3), np.tile(empty_colour("Greens"), (N * N, 1)),
                               atol=2 / 255)


def test_colorbar_title_tensor_and_grayscale_inputs():
    fig = Figure()
    ax = fig.add_subplot()
    viz.visualize_image_attr(torch.tensor(ATTR), torch.tensor(IMAGE[:, :, :1]),
                             method="blended_heat_map", sign="all", show_colorbar=True,
                             title="IG", plt_fig_axis=(fig, ax), use_pyplot=False)
    assert len(fig.axes) == 2 and ax.get_title() == "IG"
    # a grayscale image shows in gray, not in a colour map
    c = render(image=IMAGE[:, :, 0], method="original_image", sign="all")
    np.testing.assert_allclose(c[..., 0], c[..., 2], atol=1.5 / 255)
    np.testing.assert_allclose(c[..., 0], np.floor(IMAGE[:, :, 0] * 255) / 255, atol=1.5 / 255)


def test_images_in_0_255_are_not_clipped_white():
    c = render(image=IMAGE * 255, method="original_image", sign="all")
    np.testing.assert_allclose(c, np.floor(IMAGE * 255) / 255, atol=1.5 / 255)


def test_multiple_views_and_no_pyplot_figures():
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    fig, axes = viz.visualize_image_attr_multiple(
        ATTR, IMAGE, METHODS, ["all", "positive", "all", "positive", "absolute_value"],
        titles=METHODS, use_pyplot=False, show_colorbar=True)
    assert [a.get_title() for a in axes] == METHODS
    assert plt.get_fignums() == before
    assert png_pixels(fig).std() > 0.05
    fig, axis = viz.visualize_image_attr_multiple(ATTR, None, ["heat_map"], ["all"],
                                                  use_pyplot=False)
    assert axis in fig.axes


def test_clear_errors():
    with pytest.raises(ArgumentValueError, match="`method`"):
        viz.visualize_image_attr(ATTR, IMAGE, method="heatmap", use_pyplot=False)
    with pytest.raises(ArgumentValueError, match="`sign`"):
        viz.visualize_image_attr(ATTR, IMAGE, sign="pos", use_pyplot=False)
    with pytest.raises(ArgumentValueError, match="original_image"):
        viz.visualize_image_attr(ATTR, None, method="masked_image", sign="positive",
                                 use_pyplot=False)
    with pytest.raises(ArgumentValueError, match="height and width"):
        viz.visualize_image_attr(ATTR, IMAGE[:5], method="original_image", use_pyplot=False)
    with pytest.raises(ArgumentValueError, match="`attr`"):
        viz.visualize_image_attr(ATTR[None], IMAGE, use_pyplot=False)
    with pytest.raises(ArgumentTypeError, match="`attr`"):
        viz.visualize_image_attr([[1.0]], use_pyplot=False)
    with pytest.raises(ArgumentValueError, match="same length"):
        viz.visualize_image_attr_multiple(ATTR, IMAGE, ["heat_map"], [], use_pyplot=False)


# ----------------------------------------------------------------------------- time series

T = 40
SERIES = np.stack([np.sin(np.linspace(0, 6, T)), np.cos(np.linspace(0, 6, T))], axis=1)
TS_ATTR = np.stack([np.linspace(-1, 1, T), np.linspace(1, -1, T)], axis=1)


@pytest.mark.parametrize("method", ["overlay_individual", "overlay_combined", "colored_graph"])
@pytest.mark.parametrize("sign", SIGNS)
def test_timeseries_methods_and_signs(method, sign):
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    # data lines hidden (linewidth 0) in the overlays so only the bands colour the pixels
    line_kwargs = {} if method == "colored_graph" else {"linewidth": 0}
    fig, axes = viz.visualize_timeseries_attr(
        TS_ATTR, SERIES, method=method, sign=sign, channel_labels=["sin", "cos"],
        show_colorbar=True, title="t", use_pyplot=False, fig_size=(4, 4), **line_kwargs)
    assert plt.get_fignums() == before  # pyplot's global state is left alone
    axes = np.ravel(np.asarray(axes, dtype=object))
    assert len(axes) == (1 if method == "overlay_combined" else 2)
    pixels = png_pixels(fig)
    if method != "colored_graph":
        if sign == "positive":
            assert not reddish(pixels).any()
        if sign == "negative":
            assert not greenish(pixels).any()
    # the colour values drawn are the normalised attributions
    from matplotlib.collections import LineCollection, PolyCollection

    if method == "colored_graph":
        lines = [c for c in axes[0].collections if isinstance(c, LineCollection)][0]
        expected = viz._normalize_attr(TS_ATTR.T, sign)[0, :-1]
        np.testing.assert_allclose(lines.get_array(), expected)
    else:
        spans = [c for c in axes[0].collections if isinstance(c, PolyCollection)][0]
        assert len(spans.get_paths()) == T
        cmap_name = {"positive": "Greens", "negative": "Reds", "absolute_value": "Blues"}
        if sign in cmap_name:
            attr = TS_ATTR.T.sum(0) if method == "overlay_combined" else TS_ATTR.T[0]
            norm = viz._normalize_attr(attr, sign)
            expected = matplotlib.colormaps[cmap_name[sign]](norm)[:, :3]
            np.testing.assert_allclose(spans.get_facecolors()[:, :3], expected, atol=1e-6)
    assert axes[0].get_xlim() == (0, T - 1)


def test_timeseries_channels_first_and_errors():
    fig, axes = viz.visualize_timeseries_attr(TS_ATTR.T, SERIES.T, channels_last=False,
                                              x_values=np.linspace(0, 1, T), use_pyplot=False)
    assert axes[1].get_xlim() == (0, 1)
    with pytest.raises(ArgumentValueError, match="x_values"):
        viz.visualize_timeseries_attr(TS_ATTR, SERIES, x_values=np.arange(3), use_pyplot=False)
    with pytest.raises(ArgumentValueError, match="`method`"):
        viz.visualize_timeseries_attr(TS_ATTR, SERIES, method="overlay", use_pyplot=False)
    with pytest.raises(ArgumentValueError, match="same shape"):
        viz.visualize_timeseries_attr(TS_ATTR, SERIES[:5], use_pyplot=False)


# ----------------------------------------------------------------------------- text

EVIL = ["<script>alert(1)</script>", "\"&'", "fine"]


class TextAndTags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.text, self.tags = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)

    def handle_data(self, data):
        self.text.append(data)


def parse(markup):
    parser = TextAndTags()
    parser.feed(markup)
    return parser


def records():
    return [viz.VisualizationDataRecord(torch.tensor([0.8, -0.5, 0.0], dtype=torch.float64), 0.87, "<b>pos</b>",
                                        "\"&'", "<i>x</i>", 1.234, EVIL, 0.0)]


def test_visualize_text_escapes_tokens_and_labels(monkeypatch):
    monkeypatch.setattr(viz_text, "HAS_IPYTHON", False)
    markup = viz.visualize_text(records())
    assert isinstance(markup, str)
    assert "<script>" not in markup and "<b>pos" not in markup and "<i>" not in markup
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in markup
    assert "&quot;&amp;&#x27;" in markup
    parsed = parse(markup)
    assert "script" not in parsed.tags and "i" not in parsed.tags
    shown = "".join(parsed.text)
    for token in EVIL + ["<b>pos</b> (0.87)", "<i>x</i>", "1.23"]:
        assert token in shown  # displayed as text, exactly as given


def test_visualize_text_colours_legend_and_file(tmp_path, monkeypatch):
    monkeypatch.setattr(viz_text, "HAS_IPYTHON", False)
    path = tmp_path / "text.html"
    markup = viz.visualize_text(records(), save_path=path)
    cells = markup.split("<mark")[1:]
    assert "hsl(120, 75%, 60%)" in cells[0] and "hsl(0, 75%, 80%)" in cells[1]
    assert "hsl(0, 75%, 100%)" in cells[2]
    assert "Legend" in markup and "linear-gradient" in markup and "Positive" in markup
    page = path.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and markup in page
    assert "Legend" not in viz.visualize_text(records(), legend=False)


@pytest.mark.parametrize("inside_ipython", [True, False])
def test_visualize_text_displays_through_ipython_when_available(monkeypatch, inside_ipython):
    shown = []

    class FakeHTML:
        def __init__(self, data):
            self.data = data

    monkeypatch.setattr(viz_text, "HAS_IPYTHON", True)
    monkeypatch.setattr(viz_text, "HTML", FakeHTML, raising=False)
    monkeypatch.setattr(viz_text, "display", shown.append, raising=False)
    monkeypatch.setattr(viz_text, "get_ipython", lambda: object() if inside_ipython else None,
                        raising=False)
    result = viz.visualize_text(records())
    # a plain script gets the object back without its repr printed
    assert shown == ([result] if inside_ipython else []) and "&lt;script&gt;" in result.data


def test_format_word_importances_checks_lengths():
    assert viz.format_word_importances(["a"], []) == "<td></td>"
    with pytest.raises(ArgumentValueError, match="importances"):
        viz.format_word_importances(["a", "b"], [0.1])
    with pytest.raises(ArgumentValueError, match="1-D"):
        viz.format_word_importances(["a"], np.zeros((1, 1)))


def test_importing_attr_and_metrics_does_not_import_matplotlib():
    code = ("import sys, attribuo.attr, attribuo.metrics, attribuo.attr.visualization; "
            "assert 'matplotlib' not in sys.modules, 'matplotlib imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
