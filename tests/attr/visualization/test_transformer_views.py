"""Token and patch heat maps for the transformer-native methods."""

from __future__ import annotations

import numpy as np
import pytest

from attribuo.attr.visualization import patch_map, token_heatmap_html, visualize_patch_attr


def test_token_heatmap_colours_each_token_by_its_score_and_escapes_it():
    page = token_heatmap_html(["[CLS]", "cat", "<script>"], [0.0, 2.0, -1.0])
    assert page.count("<span title=") == 3
    assert "&lt;script&gt;" in page and "<script>" not in page
    assert 'title="2"' in page and 'title="-1"' in page
    with pytest.raises(ValueError, match="3 tokens but 2 scores"):
        token_heatmap_html(["a", "b", "c"], [1.0, 2.0])


def test_patch_map_fills_each_patch_with_its_score():
    heat = patch_map(np.arange(6.0), (4, 6), grid=(2, 3))
    assert heat.shape == (4, 6)
    np.testing.assert_array_equal(heat[0], [0, 0, 1, 1, 2, 2])
    np.testing.assert_array_equal(heat[3], [3, 3, 4, 4, 5, 5])
    with pytest.raises(ValueError, match="square grid"):
        patch_map(np.arange(5.0), (10, 10))
    with pytest.raises(ValueError, match="divide"):
        patch_map(np.arange(4.0), (5, 5))


def test_patch_scores_draw_over_the_image():
    pytest.importorskip("matplotlib")
    fig, ax = visualize_patch_attr(np.random.rand(16), np.random.rand(32, 32, 3), use_pyplot=False)
    assert ax.images and ax.images[-1].get_array().shape[:2] == (32, 32)
