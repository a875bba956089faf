"""Image heat maps of attributions: visualize_image_attr and visualize_image_attr_multiple."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..._engine.errors import ArgumentValueError
from .common import (
    ImageVisualizationMethod,
    VisualizeSign,
    _as_array,
    _choice,
    _cmap_and_range,
    _create_default_plot,
    _normalize_attr,
    _prepare_image,
    _show,
)


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


def patch_map(scores: Any, image_size: tuple[int, int], grid: tuple[int, int] | None = None) -> np.ndarray:
    """One score per image patch, as an ``H x W`` map (each patch's score fills its square).

    ``scores`` holds the patches in row-major order (as vision transformers
    number them); ``grid`` is ``(rows, columns)`` of patches, by default the
    square root of their count.

    Example:
        >>> import numpy as np
        >>> patch_map(np.arange(4.0), (4, 4))[:, 0]
        array([0., 0., 2., 2.])
    """
    values = _as_array(scores, "scores", (1,)).astype(np.float64)
    if grid is None:
        side = int(round(len(values) ** 0.5))
        if side * side != len(values):
            raise ArgumentValueError(f"{len(values)} patch scores are not a square grid; pass `grid`")
        grid = (side, side)
    rows, cols = grid
    height, width = image_size
    if rows * cols != len(values) or height % rows or width % cols:
        raise ArgumentValueError(
            f"`grid` {grid} must hold all {len(values)} scores and divide `image_size` {image_size}"
        )
    tiles = values.reshape(rows, cols)
    return np.kron(tiles, np.ones((height // rows, width // cols)))


def visualize_patch_attr(
    scores: Any,
    original_image: Any,
    grid: tuple[int, int] | None = None,
    method: str = "blended_heat_map",
    sign: str = "positive",
    **kwargs: Any,
) -> tuple:
    """Draw one score per patch (AttentionRollout, AttentionRelevance on a ViT) over the image.

    ``original_image`` is ``H x W`` or ``H x W x C``; further keyword
    arguments go to :func:`visualize_image_attr`. Returns ``(figure, axis)``.

    Example:
        >>> import numpy as np
        >>> fig, ax = visualize_patch_attr(np.random.rand(16), np.random.rand(32, 32, 3), use_pyplot=False)
    """
    image = _as_array(original_image, "original_image", (2, 3))
    heat = patch_map(scores, image.shape[:2], grid)[:, :, None]
    return visualize_image_attr(heat, image, method=method, sign=sign, **kwargs)
