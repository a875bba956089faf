"""Token attributions of language models: a heat map per output token, bars per input token.

What :class:`~attribuo.attr.LLMAttributionResult`'s ``plot_token_attr`` and
``plot_seq_attr`` draw. Matplotlib is imported when a plot is drawn.
"""

from __future__ import annotations

from collections.abc import Sequence
from textwrap import shorten
from typing import Any

import numpy as np

from ..._engine.errors import ArgumentValueError


def _labels(tokens: Sequence[str]) -> list[str]:
    return [shorten(repr(t)[1:-1], width=50, placeholder="...") for t in tokens]


def _values(values: Any, name: str, dims: int) -> np.ndarray:
    data = values.detach().cpu().float().numpy() if hasattr(values, "detach") else np.asarray(values, float)
    if data.ndim != dims:
        raise ArgumentValueError(f"`{name}` must be {dims}-D, got shape {data.shape}")
    return data


def _red_white_green() -> Any:
    import matplotlib.colors as mcolors

    return mcolors.LinearSegmentedColormap.from_list("RdWhGn", ["red", "white", "green"])


def _top_labels(ax: Any, labels: list[str]) -> None:
    import matplotlib.pyplot as plt

    ax.set_xticks(range(len(labels)), labels=labels)
    ax.tick_params(top=True, bottom=False, labeltop=True, labelbottom=False)
    plt.setp(ax.get_xticklabels(), rotation=-30, ha="right", rotation_mode="anchor")


def visualize_token_attr(
    token_attr: Any, input_tokens: Sequence[str], output_tokens: Sequence[str], show: bool = False
) -> tuple[Any, Any] | None:
    """Heat map of ``token_attr`` (``[output tokens, input tokens]``), each cell labelled.

    Returns ``(figure, axes)``, or shows the figure and returns None when ``show``.

    Example:
        >>> import torch
        >>> fig, ax = visualize_token_attr(torch.tensor([[0.5, -0.2]]), ["a", "b"], ["x"])
        >>> [t.get_text() for t in ax.get_xticklabels()]
        ['a', 'b']
    """
    import matplotlib.pyplot as plt

    data = _values(token_attr, "token_attr", 2)
    if data.shape != (len(output_tokens), len(input_tokens)):
        raise ArgumentValueError(
            f"`token_attr` has shape {data.shape} for {len(output_tokens)} output and "
            f"{len(input_tokens)} input tokens"
        )
    bound = float(abs(data).max()) if data.size else 0.0
    fig, ax = plt.subplots()
    ax.grid(False)
    fig.set_size_inches(max(data.shape[1] * 1.3, 6.4), max(data.shape[0] / 2.5, 4.8))
    im = ax.imshow(data, vmax=bound, vmin=-bound, cmap=_red_white_green(), aspect="auto")
    fig.set_facecolor("white")
    bar = fig.colorbar(im, ax=ax)
    bar.ax.set_ylabel("Token Attribution", rotation=-90, va="bottom")
    _top_labels(ax, _labels(input_tokens))
    ax.set_yticks(range(data.shape[0]), labels=[repr(t)[1:-1] for t in output_tokens])
    for i in range(data.shape[0]):
        for j in range(data.shape[1]):
            # dark cells get white text
            color = "black" if 0.2 < im.norm(data[i, j]) < 0.8 else "white"
            ax.text(j, i, f"{data[i, j]:.4f}", ha="center", va="center", color=color)
    if show:
        plt.show()
        return None
    return fig, ax


def visualize_seq_attr(
    seq_attr: Any, input_tokens: Sequence[str], show: bool = False
) -> tuple[Any, Any] | None:
    """Bar chart of ``seq_attr`` (one value per input token): positive blue, negative red.

    Returns ``(figure, axes)``, or shows the figure and returns None when ``show``.

    Example:
        >>> fig, ax = visualize_seq_attr([0.5, -0.2], ["a", "b"])
        >>> len(ax.patches)  # a positive and a negative bar per token
        4
    """
    import matplotlib.pyplot as plt

    data = _values(seq_attr, "seq_attr", 1)
    if data.shape[0] != len(input_tokens):
        raise ArgumentValueError(f"`seq_attr` has {data.shape[0]} values for {len(input_tokens)} input tokens")
    fig, ax = plt.subplots()
    fig.set_size_inches(max(data.shape[0] / 2, 6.4), max(data.shape[0] / 4, 4.8))
    _top_labels(ax, _labels(input_tokens))
    fig.set_facecolor("white")
    positions = range(data.shape[0])
    ax.bar(positions, data.clip(min=0), align="center", color="#4772b3")
    ax.bar(positions, data.clip(max=0), align="center", color="#d0365b")
    ax.set_ylabel("Sequence Attribution", rotation=90, va="bottom")
    if show:
        plt.show()
        return None
    return fig, ax
