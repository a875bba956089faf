"""Image visualization against Captum 0.9.0: the same pixels for every method and sign."""

from __future__ import annotations

import io

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")
import matplotlib.image as mpimg  # noqa: E402
from captum.attr import visualization as captum_viz  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from attribuo.attr import visualization as viz  # noqa: E402

rng = np.random.default_rng(1)
ATTR = rng.normal(size=(12, 12, 3))
IMAGE = rng.uniform(size=(12, 12, 3))


def pixels(module, **kwargs):
    fig = Figure(figsize=(3, 3), dpi=40)
    ax = fig.add_subplot()
    module.visualize_image_attr(ATTR, IMAGE, plt_fig_axis=(fig, ax), use_pyplot=False, **kwargs)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    buf.seek(0)
    return mpimg.imread(buf)


@pytest.mark.parametrize("sign", ["all", "positive", "negative", "absolute_value"])
@pytest.mark.parametrize("method", ["heat_map", "blended_heat_map", "original_image",
                                    "masked_image", "alpha_scaling"])
def test_same_pixels_as_captum(method, sign):
    kwargs = dict(method=method, sign=sign, outlier_perc=5, show_colorbar=True, title="t")
    if sign == "all" and method in ("masked_image", "alpha_scaling"):
        for module in (viz, captum_viz):  # both refuse (ours: ArgumentValueError)
            with pytest.raises(AssertionError):
                pixels(module, **kwargs)
        return
    np.testing.assert_array_equal(pixels(viz, **kwargs), pixels(captum_viz, **kwargs))


@pytest.mark.parametrize("sign", ["all", "positive", "negative", "absolute_value"])
def test_normalisation_equals_captum(sign):
    for perc in (2, 30):
        np.testing.assert_allclose(viz._normalize_attr(ATTR.sum(2), sign, perc),
                                   captum_viz._normalize_attr(ATTR.sum(2), sign, perc))


def test_no_outliers_scales_by_the_maximum():
    # with outlier_perc=0 rounding can make Captum index an empty array; we use the maximum
    attr = ATTR.sum(2)
    np.testing.assert_allclose(viz._normalize_attr(attr, "absolute_value", 0),
                               np.abs(attr) / np.abs(attr).max())
