"""Segment masks over an image: outlines, labels, the segmentation itself, and a segment heat map.

What :meth:`ImageMaskInput.plot_mask_overlay` and
:meth:`LLMAttributionResult.plot_image_heatmap` draw. Matplotlib is
imported when a plot is drawn.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..._engine.errors import ArgumentValueError
from .tokens import _red_white_green


def erode(mask: np.ndarray, iterations: int = 1) -> np.ndarray:
    """Binary erosion with the 4-neighbourhood: a pixel stays when it and its neighbours are set.

    Example:
        >>> m = np.ones((3, 3), bool)
        >>> erode(m).astype(int).tolist()  # pixels past the edge count as unset
        [[0, 0, 0], [0, 1, 0], [0, 0, 0]]
    """
    out = np.asarray(mask, bool)
    for _ in range(iterations):
        padded = np.pad(out, 1, constant_values=False)
        out = (
            padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
        )
    return out


def draw_mask_border(ax: Any, mask: np.ndarray, border_width: int = 1, border_color: Any = "black") -> None:
    """Draw the inner outline of ``mask`` (``border_width`` pixels wide) on ``ax``."""
    import matplotlib.colors as mcolors

    mask = np.asarray(mask, bool)
    if not mask.any() or border_width <= 0:
        return
    color = np.array(mcolors.to_rgba(border_color) if isinstance(border_color, str) else border_color, float)
    border = mask & ~erode(mask, border_width)
    ax.imshow(border[..., None] * color.reshape(1, 1, -1))


def draw_mask_legend(
    ax: Any, mask: np.ndarray, label: str, fontsize: int = 10, text_color: str = "white",
    bbox_facecolor: str = "black", bbox_alpha: float = 0.6,
) -> None:
    """Write ``label`` at the centroid of ``mask`` on ``ax``."""
    rows, cols = np.nonzero(np.asarray(mask, bool))
    if rows.size == 0:
        return
    ax.text(
        cols.mean(), rows.mean(), label, fontsize=fontsize, color=text_color, ha="center", va="center",
        bbox={"facecolor": bbox_facecolor, "alpha": bbox_alpha, "edgecolor": "none", "pad": 2},
    )


def _finish(fig: Any, ax: Any, show: bool) -> tuple[Any, Any] | None:
    import matplotlib.pyplot as plt

    fig.set_facecolor("white")
    ax.axis("off")
    if show:
        plt.show()
        return None
    return fig, ax


def visualize_mask_overlay(
    image: Any, masks: Sequence[np.ndarray], labels: Sequence[str], show: bool = False,
    border_width: int = 0, show_legends: bool = True, seed: int | None = None,
) -> tuple[Any, Any] | None:
    """The image with each segment tinted in its own colour (outlined, labelled).

    Returns ``(figure, axes)``, or shows the figure and returns None when ``show``.

    Example:
        >>> img = np.zeros((4, 4, 3), np.uint8)
        >>> masks = [np.eye(4, dtype=bool), ~np.eye(4, dtype=bool)]
        >>> fig, ax = visualize_mask_overlay(img, masks, ["0", "1"], seed=0)
        >>> len(ax.images)  # the image and one layer per segment
        3
    """
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(seed)
    fig, ax = plt.subplots()
    ax.imshow(np.asarray(image))
    for mask, label in zip(masks, labels):
        mask = np.asarray(mask, bool)
        color = np.array([*rng.random(3), 0.6])
        ax.imshow(mask[..., None] * color.reshape(1, 1, -1))
        draw_mask_border(ax, mask, border_width, np.array([*color[:3], 0.8]))
        if show_legends:
            draw_mask_legend(ax, mask, str(label))
    return _finish(fig, ax, show)


def visualize_segment_heatmap(
    image: Any, pixel_attr: np.ndarray, segment_attr: Sequence[float], masks: Sequence[np.ndarray] | None = None,
    labels: Sequence[str] | None = None, show: bool = False, border_width: int = 2, show_legends: bool = True,
) -> tuple[Any, Any] | None:
    """A grayscale image under a red-white-green heat map of per-pixel attributions.

    ``masks`` (one boolean array per segment, with ``segment_attr`` and
    ``labels``) add outlines in a darker shade of each segment's colour and
    labels at the segments' centres.

    Example:
        >>> img = np.zeros((2, 2, 3), np.uint8)
        >>> fig, ax = visualize_segment_heatmap(img, np.array([[1.0, 0], [0, -1]]), [1.0, -1.0])
        >>> len(ax.images)
        2
    """
    import matplotlib.pyplot as plt

    pixel_attr = np.asarray(pixel_attr, float)
    picture = np.asarray(image, float)
    if picture.shape[:2] != pixel_attr.shape:
        raise ArgumentValueError(
            f"the pixel attributions have shape {pixel_attr.shape}, the image {picture.shape[:2]}"
        )
    fig, ax = plt.subplots()
    ax.imshow(picture.mean(axis=2) if picture.ndim == 3 else picture, cmap="gray")
    bound = float(np.abs(pixel_attr).max()) if pixel_attr.size else 0.0
    cmap = _red_white_green()
    heat = ax.imshow(pixel_attr, vmax=bound, vmin=-bound, cmap=cmap, alpha=0.8)
    bar = fig.colorbar(heat, ax=ax)
    bar.ax.set_ylabel("Attribution", rotation=-90, va="bottom")
    for i, mask in enumerate(masks or []):
        value = float(segment_attr[i])
        shade = (value / bound + 1) / 2 if bound > 0 else 0.5
        draw_mask_border(ax, mask, border_width, np.array([*(np.array(cmap(shade))[:3] * 0.7), 0.8]))
        if show_legends and labels is not None:
            draw_mask_legend(ax, mask, str(labels[i]))
    return _finish(fig, ax, show)
