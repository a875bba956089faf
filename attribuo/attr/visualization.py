"""Pictures of attributions: image heat maps, time series and highlighted text.

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

from __future__ import annotations

import html
import os
import warnings
from collections.abc import Iterable, Sequence
from enum import Enum
from typing import Any

import numpy as np

from .._engine.errors import ArgumentTypeError, ArgumentValueError

try:  # displayed in notebooks when IPython is there, as Captum does
    from IPython.display import HTML, display

    HAS_IPYTHON = True
except ImportError:  # pragma: no cover - depends on the environment
    HAS_IPYTHON = False


class ImageVisualizationMethod(Enum):
    heat_map = 1
    blended_heat_map = 2
    original_image = 3
    masked_image = 4
    alpha_scaling = 5


class TimeseriesVisualizationMethod(Enum):
    overlay_individual = 1
    overlay_combined = 2
    colored_graph = 3


class VisualizeSign(Enum):
    positive = 1
    absolute_value = 2
    negative = 3
    all = 4


def _choice(value: Any, enum: type[Enum], name: str) -> Enum:
    if isinstance(value, str) and value in enum.__members__:
        return enum[value]
    raise ArgumentValueError(
        f"`{name}` must be one of {list(enum.__members__)}, got {value!r}"
    )


def _as_array(value: Any, name: str, dims: tuple[int, ...]) -> np.ndarray:
    """A numpy copy of an array or tensor with one of the allowed numbers of dims."""
    if hasattr(value, "detach"):  # torch tensor, without importing torch here
        value = value.detach().cpu().numpy()
    if not isinstance(value, np.ndarray):
        raise ArgumentTypeError(f"`{name}` must be a numpy array or a tensor, got {type(value).__name__}")
    if value.ndim not in dims:
        raise ArgumentValueError(
            f"`{name}` must have {' or '.join(map(str, dims))} dims, got shape {value.shape}"
        )
    return value


def _prepare_image(values: np.ndarray) -> np.ndarray:
    """Integer pixel values clipped to 0..255."""
    return np.clip(values.astype(int), 0, 255)


def _cumulative_sum_threshold(values: np.ndarray, percentile: float) -> float:
    """Smallest value whose cumulative sum (ascending) reaches ``percentile`` % of the total."""
    if not 0 <= percentile <= 100:
        raise ArgumentValueError("`outlier_perc` must be between 0 and 100")
    ordered = np.sort(values.flatten())
    sums = np.cumsum(ordered)
    reached = np.nonzero(sums >= sums[-1] * 0.01 * percentile)[0]
    # rounding can leave 100 % just out of reach (Captum then fails): use the maximum
    return float(ordered[reached[0]] if len(reached) else ordered[-1])


def _normalize_scale(attr: np.ndarray, scale_factor: float) -> np.ndarray:
    if scale_factor == 0:  # nothing of this sign to show: an empty map
        return np.zeros_like(attr, dtype=float)
    return np.clip(attr / scale_factor, -1, 1)


def _normalize_attr(attr: np.ndarray, sign: str, outlier_perc: float = 2) -> np.ndarray:
    """Keep the values of ``sign`` and scale them to [-1, 1] (0..1 for one sign).

    The scale is the value below which ``100 - outlier_perc`` % of the total
    absolute attribution lies, so a few extreme values do not wash out the
    rest; larger values are clipped. ``negative`` maps to 0..1 as well.
    """
    kind = _choice(sign, VisualizeSign, "sign")
    if kind is VisualizeSign.positive:
        attr = np.maximum(attr, 0)
    elif kind is VisualizeSign.negative:
        attr = np.minimum(attr, 0)
    elif kind is VisualizeSign.absolute_value:
        attr = np.abs(attr)
    threshold = _cumulative_sum_threshold(np.abs(attr), 100.0 - outlier_perc)
    if kind is VisualizeSign.negative:
        threshold = -threshold
    return _normalize_scale(attr, threshold)


def _cmap_and_range(sign: str) -> tuple[Any, float, float]:
    kind = _choice(sign, VisualizeSign, "sign")
    if kind is VisualizeSign.all:
        from matplotlib.colors import LinearSegmentedColormap

        return LinearSegmentedColormap.from_list("RdWhGn", ["red", "white", "green"]), -1, 1
    return {"positive": "Greens", "negative": "Reds", "absolute_value": "Blues"}[sign], 0, 1


def _create_default_plot(
    plt_fig_axis: tuple | None, use_pyplot: bool, fig_size: tuple, **kwargs: Any
) -> tuple:
    if plt_fig_axis is not None:
        return plt_fig_axis
    if use_pyplot:
        import matplotlib.pyplot as plt

        return plt.subplots(figsize=fig_size, **kwargs)
    from matplotlib.figure import Figure

    fig = Figure(figsize=fig_size)
    return fig, fig.subplots(**kwargs)


def _show() -> None:
    import matplotlib.pyplot as plt

    plt.show()


def _image_inputs(original_image: Any) -> np.ndarray | None:
    """The image as integer RGB (or gray, H x W x 1) in 0..255."""
    if original_image is None:
        return None
    image = _as_array(original_image, "original_image", (2, 3))
    if image.ndim == 2:
        image = image[:, :, None]
    if np.max(image) <= 1.0:
        image = image * 255
    return _prepare_image(image)


def _rgb(image: np.ndarray) -> np.ndarray:
    return np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image


def visualize_image_attr(
    attr: Any,
    original_image: Any = None,
    method: str = "heat_map",
    sign: str = "absolute_value",
    plt_fig_axis: tuple | None = None,
    outlier_perc: float = 2,
    cmap: Any = None,
    alpha_overlay: float = 0.5,
    show_colorbar: bool = False,
    title: str | None = None,
    fig_size: tuple[int, int] = (6, 6),
    use_pyplot: bool = True,
) -> tuple:
    """Draw an image attribution; returns ``(figure, axis)``.

    ``attr`` is ``H x W`` or ``H x W x C`` (channels are summed) and
    ``original_image`` ``H x W`` or ``H x W x C`` (values in 0..1 are scaled
    to 0..255). ``method`` is ``heat_map``, ``blended_heat_map`` (heat map
    over the gray image with ``alpha_overlay``), ``original_image``,
    ``masked_image`` (image times the normalised attribution) or
    ``alpha_scaling`` (attribution as the image's alpha); ``sign`` is
    ``all`` (red-white-green), ``positive`` (greens), ``negative`` (reds) or
    ``absolute_value`` (blues). Values are scaled so that the top
    ``outlier_perc`` % of total attribution saturates. Pass ``plt_fig_axis``
    to draw into an existing axis; ``use_pyplot=False`` builds a standalone
    ``Figure`` (no GUI, nothing shown).

    Example:
        >>> import numpy as np
        >>> from attribuo.attr.visualization import visualize_image_attr
        >>> attr = np.random.randn(8, 8, 3)
        >>> fig, ax = visualize_image_attr(attr, sign="all", use_pyplot=False)
        >>> fig.savefig("/tmp/attr.png")
    """
    kind = _choice(method, ImageVisualizationMethod, "method")
    _choice(sign, VisualizeSign, "sign")
    attr = _as_array(attr, "attr", (2, 3)).astype(float)
    if attr.ndim == 3:
        attr = attr.sum(axis=2)
    image = _image_inputs(original_image)
    if image is None and kind is not ImageVisualizationMethod.heat_map:
        raise ArgumentValueError(f"`original_image` is required for method {method!r}")
    if image is not None and image.shape[:2] != attr.shape:
        raise ArgumentValueError(
            f"`original_image` of shape {image.shape[:2]} and `attr` of shape {attr.shape} "
            "must have the same height and width"
        )
    if sign == "all" and kind in (
        ImageVisualizationMethod.masked_image,
        ImageVisualizationMethod.alpha_scaling,
    ):
        raise ArgumentValueError(
            f"method {method!r} cannot show both signs; use sign='positive', 'negative' "
            "or 'absolute_value'"
        )

    fig, axis = _create_default_plot(plt_fig_axis, use_pyplot, fig_size)
    if isinstance(axis, (list, np.ndarray)):
        axis = np.ravel(axis)[0]
    axis.xaxis.set_ticks_position("none")
    axis.yaxis.set_ticks_position("none")
    axis.set_xticklabels([])
    axis.set_yticklabels([])
    axis.grid(visible=False)

    norm_attr = _normalize_attr(attr, sign, outlier_perc)
    default_cmap, vmin, vmax = _cmap_and_range(sign)
    cmap = default_cmap if cmap is None else cmap
    heat_map = None
    if kind is ImageVisualizationMethod.heat_map:
        heat_map = axis.imshow(norm_attr, cmap=cmap, vmin=vmin, vmax=vmax)
    elif kind is ImageVisualizationMethod.blended_heat_map:
        axis.imshow(np.mean(image, axis=2), cmap="gray")
        heat_map = axis.imshow(norm_attr, cmap=cmap, vmin=vmin, vmax=vmax, alpha=alpha_overlay)
    elif kind is ImageVisualizationMethod.original_image:
        if image.shape[2] == 1:
            axis.imshow(image[:, :, 0], cmap="gray", vmin=0, vmax=255)
        else:
            axis.imshow(image)
    elif kind is ImageVisualizationMethod.masked_image:
        axis.imshow(_prepare_image(_rgb(image) * norm_attr[:, :, None]))
    else:  # alpha_scaling
        alpha = _prepare_image(norm_attr[:, :, None] * 255)
        axis.imshow(np.concatenate([_rgb(image), alpha], axis=2))

    if show_colorbar:
        from mpl_toolkits.axes_grid1 import make_axes_locatable

        bar_axis = make_axes_locatable(axis).append_axes("bottom", size="5%", pad=0.1)
        if heat_map is not None:
            fig.colorbar(heat_map, orientation="horizontal", cax=bar_axis)
        else:  # keeps axes aligned when several plots are shown side by side
            bar_axis.axis("off")
    if title:
        axis.set_title(title)
    if use_pyplot:
        _show()
    return fig, axis


def visualize_image_attr_multiple(
    attr: Any,
    original_image: Any,
    methods: list[str],
    signs: list[str],
    titles: list[str] | None = None,
    fig_size: tuple[int, int] = (8, 6),
    use_pyplot: bool = True,
    **kwargs: Any,
) -> tuple:
    """Several :func:`visualize_image_attr` views side by side; returns ``(figure, axes)``.

    ``methods[i]`` is drawn with ``signs[i]`` and ``titles[i]``; other
    keyword arguments go to every view. ``axes`` is one axis for one method,
    else a list.

    Example:
        >>> import numpy as np
        >>> from attribuo.attr.visualization import visualize_image_attr_multiple
        >>> attr, image = np.random.randn(8, 8, 3), np.random.rand(8, 8, 3)
        >>> fig, axes = visualize_image_attr_multiple(
        ...     attr, image, ["original_image", "heat_map"], ["all", "positive"], use_pyplot=False)
        >>> len(axes)
        2
    """
    if len(methods) != len(signs):
        raise ArgumentValueError("`methods` and `signs` must have the same length")
    if titles is not None and len(titles) != len(methods):
        raise ArgumentValueError("`titles` must have one entry per method")
    if len(methods) == 0:
        raise ArgumentValueError("`methods` is empty")
    if use_pyplot:
        import matplotlib.pyplot as plt

        fig = plt.figure(figsize=fig_size)
    else:
        from matplotlib.figure import Figure

        fig = Figure(figsize=fig_size)
    grid = fig.subplots(1, len(methods), squeeze=True)
    axes = [grid] if len(methods) == 1 else list(np.ravel(grid))
    for i, (method, sign) in enumerate(zip(methods, signs)):
        visualize_image_attr(
            attr, original_image=original_image, method=method, sign=sign,
            plt_fig_axis=(fig, axes[i]), use_pyplot=False,
            title=titles[i] if titles else None, **kwargs,
        )
    fig.tight_layout()
    if use_pyplot:
        _show()
    return fig, axes[0] if len(methods) == 1 else axes


def _spans(axis: Any, values: np.ndarray, x_values: np.ndarray, cmap: Any, norm: Any,
           alpha: float) -> None:
    """One coloured vertical band per time step, as a single collection."""
    from matplotlib.collections import PolyCollection

    half = (x_values[1] - x_values[0]) / 2.0 if len(x_values) > 1 else 0.5
    verts = [[(x - half, 0), (x + half, 0), (x + half, 1), (x - half, 1)] for x in x_values]
    axis.add_collection(
        PolyCollection(verts, facecolors=cmap(norm(values)), edgecolors="none", alpha=alpha,
                       transform=axis.get_xaxis_transform()),
        autolim=False,
    )


def visualize_timeseries_attr(
    attr: Any,
    data: Any,
    x_values: Any = None,
    method: str = "overlay_individual",
    sign: str = "absolute_value",
    channel_labels: list[str] | None = None,
    channels_last: bool = True,
    plt_fig_axis: tuple | None = None,
    outlier_perc: float = 2,
    cmap: Any = None,
    alpha_overlay: float = 0.7,
    show_colorbar: bool = False,
    title: str | None = None,
    fig_size: tuple[int, int] = (6, 6),
    use_pyplot: bool = True,
    **pyplot_kwargs: Any,
) -> tuple:
    """Draw a multichannel time-series attribution; returns ``(figure, axes)``.

    ``attr`` and ``data`` are ``N x C`` (``C x N`` with
    ``channels_last=False``). ``overlay_individual`` draws each channel in
    its own row over bands coloured by that channel's attribution;
    ``overlay_combined`` draws all channels in one plot over bands of the
    summed attribution; ``colored_graph`` colours each channel's line by its
    attribution. ``pyplot_kwargs`` go to the line plots.

    Example:
        >>> import numpy as np
        >>> from attribuo.attr.visualization import visualize_timeseries_attr
        >>> t = np.linspace(0, 6, 50)
        >>> data = np.stack([np.sin(t), np.cos(t)], axis=1)
        >>> fig, axes = visualize_timeseries_attr(data * 0.5, data, use_pyplot=False)
        >>> len(axes)
        2
    """
    import matplotlib
    from matplotlib.colors import Normalize

    kind = _choice(method, TimeseriesVisualizationMethod, "method")
    _choice(sign, VisualizeSign, "sign")
    attr = _as_array(attr, "attr", (2,)).astype(float)
    data = _as_array(data, "data", (2,))
    if attr.shape != data.shape:
        raise ArgumentValueError(f"`attr` {attr.shape} and `data` {data.shape} must have the same shape")
    if channels_last:
        attr, data = attr.T, data.T
    n_channels, length = attr.shape
    if n_channels > length:
        warnings.warn(
            f"{n_channels} channels but only {length} time steps; check `channels_last`",
            stacklevel=2,
        )
    if x_values is None:
        x_values = np.arange(length)
    x_values = _as_array(x_values, "x_values", (1,))
    if x_values.shape[0] != length:
        raise ArgumentValueError(f"`x_values` has {x_values.shape[0]} entries for {length} time steps")
    if channel_labels is not None and len(channel_labels) != n_channels:
        raise ArgumentValueError(f"`channel_labels` must have {n_channels} entries")
    combined = kind is TimeseriesVisualizationMethod.overlay_combined
    if combined:
        attr = attr.sum(axis=0)

    fig, axes = _create_default_plot(
        plt_fig_axis, use_pyplot, fig_size, nrows=1 if combined else n_channels, sharex=True
    )
    axis_list = np.ravel(np.asarray(axes, dtype=object))
    norm_attr = _normalize_attr(attr, sign, outlier_perc)
    default_cmap, vmin, vmax = _cmap_and_range(sign)
    cmap = default_cmap if cmap is None else cmap
    cmap = matplotlib.colormaps[cmap] if isinstance(cmap, str) else cmap
    norm = Normalize(vmin, vmax)

    if combined:
        axis = axis_list[0]
        axis.set_prop_cycle(color=matplotlib.colormaps["Dark2"].colors)
        for c in range(n_channels):
            label = channel_labels[c] if channel_labels else None
            axis.plot(x_values, data[c], label=label, **pyplot_kwargs)
        _spans(axis, norm_attr, x_values, cmap, norm, alpha_overlay)
        if channel_labels:
            axis.legend(loc="best")
    else:
        from matplotlib.collections import LineCollection

        for c in range(n_channels):
            axis = axis_list[c]
            if kind is TimeseriesVisualizationMethod.overlay_individual:
                axis.plot(x_values, data[c], **pyplot_kwargs)
                _spans(axis, norm_attr[c], x_values, cmap, norm, alpha_overlay)
            else:
                points = np.stack([x_values, data[c]], axis=1).reshape(-1, 1, 2)
                lines = LineCollection(np.concatenate([points[:-1], points[1:]], axis=1),
                                       cmap=cmap, norm=norm, **pyplot_kwargs)
                lines.set_array(norm_attr[c, :-1] if length > 1 else norm_attr[c])
                axis.add_collection(lines)
                lo, hi = float(np.min(data[c])), float(np.max(data[c]))
                pad = 0.1 * (hi - lo) if hi > lo else 1.0
                axis.set_ylim(lo - pad, hi + pad)
            if channel_labels is not None:
                axis.set_ylabel(channel_labels[c])
        fig.subplots_adjust(hspace=0)
    for axis in axis_list:
        axis.set_xlim(x_values[0], x_values[-1])

    if show_colorbar:
        from matplotlib.cm import ScalarMappable
        from mpl_toolkits.axes_grid1 import make_axes_locatable

        bar_axis = make_axes_locatable(axis_list[-1]).append_axes("bottom", size="5%", pad=0.4)
        bar_alpha = 1.0 if kind is TimeseriesVisualizationMethod.colored_graph else alpha_overlay
        fig.colorbar(ScalarMappable(norm, cmap), orientation="horizontal", cax=bar_axis,
                     alpha=bar_alpha)
    if title:
        axis_list[0].set_title(title)
    if use_pyplot:
        _show()
    return fig, axes


# ----------------------------------------------------------------------------- text


class VisualizationDataRecord:
    """Everything :func:`visualize_text` shows for one example.

    Example:
        >>> from attribuo.attr.visualization import VisualizationDataRecord
        >>> record = VisualizationDataRecord([0.5, -0.2], 0.9, "pos", "pos", "pos", 0.3,
        ...                                  ["good", "film"], 0.01)
        >>> record.raw_input_ids
        ['good', 'film']
    """

    __slots__ = [
        "word_attributions",
        "pred_prob",
        "pred_class",
        "true_class",
        "attr_class",
        "attr_score",
        "raw_input_ids",
        "convergence_score",
    ]

    def __init__(
        self,
        word_attributions: Any,
        pred_prob: float,
        pred_class: Any,
        true_class: Any,
        attr_class: Any,
        attr_score: float,
        raw_input_ids: Sequence[str],
        convergence_score: float,
    ) -> None:
        self.word_attributions = word_attributions
        self.pred_prob = pred_prob
        self.pred_class = pred_class
        self.true_class = true_class
        self.attr_class = attr_class
        self.attr_score = attr_score
        self.raw_input_ids = raw_input_ids
        self.convergence_score = convergence_score


def _get_color(attr: float) -> str:
    """HSL background: green for positive, red for negative, white at 0 (clipped to [-1, 1])."""
    attr = max(-1.0, min(1.0, float(attr)))
    if attr > 0:
        return f"hsl(120, 75%, {100 - int(50 * attr)}%)"
    return f"hsl(0, 75%, {100 - int(-40 * attr)}%)"


def _escape(value: Any) -> str:
    return html.escape(str(value), quote=True)


def format_classname(classname: Any) -> str:
    """One table cell with an (escaped) class name in bold."""
    return f'<td><span style="padding-right:2em"><b>{_escape(classname)}</b></span></td>'


def format_special_tokens(token: str) -> str:
    """Captum's rewrite of ``<tok>`` to ``#tok``, kept for compatibility.

    Not needed by :func:`format_word_importances`, which escapes tokens and
    so shows ``<tok>`` as written.
    """
    if token.startswith("<") and token.endswith(">"):
        return "#" + token.strip("<>")
    return token


def format_tooltip(item: str, text: str) -> str:
    """``item`` (HTML) with an escaped tooltip ``text``."""
    return f'<div class="tooltip">{item}<span class="tooltiptext">{_escape(text)}</span></div>'


def format_word_importances(words: Sequence[str], importances: Any) -> str:
    """A table cell of the words, each on a background coloured by its importance.

    Words are HTML-escaped; the exact value shows as a tooltip. Importances
    should lie in [-1, 1] (larger magnitudes are clipped).

    Example:
        >>> from attribuo.attr.visualization import format_word_importances
        >>> "&lt;b&gt;" in format_word_importances(["<b>"], [0.5])
        True
    """
    if importances is None or len(importances) == 0:
        return "<td></td>"
    if hasattr(importances, "detach"):
        importances = importances.detach().cpu().numpy()
    if isinstance(importances, np.ndarray) and importances.ndim != 1:
        raise ArgumentValueError(f"`importances` must be 1-D, got shape {importances.shape}")
    if len(words) > len(importances):
        raise ArgumentValueError(
            f"{len(words)} words but only {len(importances)} importances"
        )
    tags = ["<td>"]
    for word, importance in zip(words, importances):
        value = float(importance)
        tags.append(
            f'<mark title="{value:.4f}" style="background-color: {_get_color(value)}; '
            f'opacity:1.0; line-height:1.75"><font color="black"> {_escape(word)} </font></mark>'
        )
    tags.append("</td>")
    return "".join(tags)


def _legend() -> str:
    stops = ", ".join(_get_color(v) for v in (-1, -0.5, 0, 0.5, 1))
    return (
        '<div style="border-top: 1px solid; margin-top: 5px; padding-top: 5px; '
        'display: inline-block"><b>Legend: </b>'
        '<span>-1 (negative)</span> <span style="display: inline-block; width: 160px; '
        f'height: 12px; border: 1px solid; vertical-align: middle; '
        f'background: linear-gradient(to right, {stops})"></span> '
        "<span>+1 (positive)</span> &nbsp; "
        + "".join(
            f'<span style="display: inline-block; width: 10px; height: 10px; border: 1px solid; '
            f'background-color: {_get_color(v)}"></span> {label} '
            for v, label in zip((-1, 0, 1), ("Negative", "Neutral", "Positive"))
        )
        + "</div>"
    )


def visualize_text(
    datarecords: Iterable[VisualizationDataRecord],
    legend: bool = True,
    save_path: str | os.PathLike | None = None,
) -> Any:
    """An HTML table of examples with their words coloured by attribution.

    Every token and label is HTML-escaped. With IPython available the table
    is displayed and returned as ``IPython.display.HTML`` (as in Captum; its
    ``.data`` holds the markup); otherwise the HTML string is returned.
    ``save_path`` also writes a complete HTML page to that file.

    Example:
        >>> from attribuo.attr.visualization import VisualizationDataRecord, visualize_text
        >>> record = VisualizationDataRecord([0.8, -0.6], 0.9, 1, 1, 1, 0.2,
        ...                                  ["<script>alert(1)</script>", "&"], 0.0)
        >>> page = visualize_text([record], save_path="/tmp/text_attr.html")
        >>> "<script>" in str(getattr(page, "data", page))
        False
    """
    rows = [
        "<tr><th>True Label</th><th>Predicted Label</th><th>Attribution Label</th>"
        "<th>Attribution Score</th><th>Word Importance</th></tr>"
    ]
    for record in datarecords:
        rows.append(
            "<tr>"
            + format_classname(record.true_class)
            + format_classname(f"{record.pred_class} ({float(record.pred_prob):.2f})")
            + format_classname(record.attr_class)
            + format_classname(f"{float(record.attr_score):.2f}")
            + format_word_importances(record.raw_input_ids, record.word_attributions)
            + "</tr>"
        )
    markup = (_legend() if legend else "") + '<table style="width: 100%">' + "".join(rows) + "</table>"
    if save_path is not None:
        with open(save_path, "w", encoding="utf-8") as f:
            f.write(
                '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
                "<title>Text attributions</title></head><body>\n"
                f"{markup}\n</body></html>\n"
            )
    if HAS_IPYTHON:
        shown = HTML(markup)
        display(shown)
        return shown
    return markup
