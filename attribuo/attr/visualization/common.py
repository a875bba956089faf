"""What the pictures share: sign and method choices, normalisation, figures."""

from __future__ import annotations

from enum import Enum
from typing import Any

import numpy as np

from ..._engine.errors import ArgumentTypeError, ArgumentValueError


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
