"""Pictures of attributions: image heat maps, time series, highlighted text, token maps.

Captum's ``captum.attr.visualization`` functions with the same names and
arguments. Matplotlib is an optional dependency (``pip install
attribuo[viz]``) imported only when a plot is drawn, so importing this module
costs nothing. Differences from Captum, all fixes:

* attributions and images may be numpy arrays or torch tensors;
* an all-zero map (e.g. ``sign="positive"`` on purely negative attributions)
  draws an empty map instead of failing;
* grayscale images (``H x W`` or ``H x W x 1``) work with every method and
  are drawn in gray; images in 0..255 are drawn as such (not clipped white);
* time-series plots never touch pyplot's global current figure;
* ``visualize_text`` escapes every token and label (Captum writes them into
  the HTML raw, so a token like ``<script>`` runs), writes valid HTML with a
  colour legend, and can save it to a file.
"""

# the private helpers too: Captum code imports them from the visualization module
from .common import (  # noqa: F401
    ImageVisualizationMethod,
    TimeseriesVisualizationMethod,
    VisualizeSign,
    _cumulative_sum_threshold,
    _normalize_attr,
    _normalize_scale,
    _prepare_image,
)
from .image import (
    patch_map,
    visualize_image_attr,
    visualize_image_attr_multiple,
    visualize_patch_attr,
)
from .masks import (
    draw_mask_border,
    draw_mask_legend,
    visualize_mask_overlay,
    visualize_segment_heatmap,
)
from .text import (
    VisualizationDataRecord,
    format_classname,
    format_special_tokens,
    format_tooltip,
    format_word_importances,
    token_attr_html,
    token_heatmap_html,
    visualize_text,
)
from .timeseries import visualize_timeseries_attr
from .tokens import visualize_seq_attr, visualize_token_attr

__all__ = [
    "ImageVisualizationMethod",
    "TimeseriesVisualizationMethod",
    "VisualizeSign",
    "VisualizationDataRecord",
    "format_classname",
    "format_special_tokens",
    "format_tooltip",
    "format_word_importances",
    "visualize_image_attr",
    "visualize_image_attr_multiple",
    "visualize_seq_attr",
    "visualize_text",
    "visualize_timeseries_attr",
    "visualize_token_attr",
    "token_attr_html",
    "token_heatmap_html",
    "patch_map",
    "visualize_patch_attr",
    "draw_mask_border",
    "draw_mask_legend",
    "visualize_mask_overlay",
    "visualize_segment_heatmap",
]
