"""Time-series plots of attributions: visualize_timeseries_attr."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from ..._engine.errors import ArgumentValueError
from .common import (
    TimeseriesVisualizationMethod,
    VisualizeSign,
    _as_array,
    _choice,
    _cmap_and_range,
    _create_default_plot,
    _normalize_attr,
    _show,
)


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
