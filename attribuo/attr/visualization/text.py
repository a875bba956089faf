"""Highlighted text: visualize_text and its HTML helpers."""

from __future__ import annotations

import html
import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from ..._engine.errors import ArgumentValueError
from .tokens import _values

try:  # displayed in notebooks when IPython is there, as Captum does
    from IPython import get_ipython
    from IPython.display import HTML, display

    HAS_IPYTHON = True
except ImportError:  # pragma: no cover - depends on the environment
    HAS_IPYTHON = False


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

    Every token and label is HTML-escaped. With IPython installed the table
    is returned as ``IPython.display.HTML`` (as in Captum; its ``.data``
    holds the markup), and displayed when running inside IPython or a
    notebook (Captum also prints its repr from plain scripts); without
    IPython the HTML string is returned.
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
        if get_ipython() is not None:  # a plain script would print "<...HTML object>"
            display(shown)
        return shown
    return markup


def _scaled(values: np.ndarray) -> np.ndarray:
    bound = float(np.abs(values).max()) if values.size else 0.0
    return values / bound if bound > 0 else values


def token_attr_html(
    seq_attr: Any,
    input_tokens: Sequence[str],
    output_tokens: Sequence[str],
    token_attr: Any = None,
    output_probs: Any = None,
    title: str = "LLM attribution",
) -> str:
    """A self-contained HTML page of an LLM attribution (no IPython, no JavaScript).

    The prompt's tokens coloured by their attribution to the whole response,
    then (with ``token_attr``) a table with a row per response token and a
    cell per prompt token. Colours are scaled to the largest magnitude; the
    exact values show as tooltips. Every token is HTML-escaped.

    Example:
        >>> page = token_attr_html([0.5, -1.0], ["<s>", "a"], ["x"], [[0.5, -1.0]])
        >>> "&lt;s&gt;" in page and "<s>" not in page
        True
    """

    def cell(token: str, value: float, scaled: float) -> str:
        return (
            f'<td title="{value:.6g}" style="background-color: {_get_color(scaled)}; padding: 2px 6px; '
            f'text-align: center">{_escape(token)}</td>'
        )

    seq = _values(seq_attr, "seq_attr", 1)
    parts = [
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">',
        f"<title>{_escape(title)}</title>",
        "<style>body{font-family:sans-serif} table{border-collapse:collapse} "
        "td,th{border:1px solid #ddd} th{padding:2px 6px;text-align:right;font-weight:normal}</style>",
        f"</head><body>\n<h3>{_escape(title)}</h3>",
        "<p><b>Response:</b> " + _escape(" ".join(output_tokens)) + "</p>",
        "<p><b>Attribution of the whole response to each prompt token</b></p><table><tr>",
        "".join(cell(t, v, s) for t, v, s in zip(input_tokens, seq, _scaled(seq))),
        "</tr></table>",
    ]
    if token_attr is not None:
        grid = _values(token_attr, "token_attr", 2)
        scaled = _scaled(grid)
        probs = None if output_probs is None else _values(output_probs, "output_probs", 1)
        parts.append("<p><b>Per response token</b></p><table><tr><th></th>")
        parts.append("".join(f"<th>{_escape(t)}</th>" for t in input_tokens))
        parts.append("<th>p</th></tr>" if probs is not None else "</tr>")
        for i, token in enumerate(output_tokens):
            row = "".join(cell(f"{grid[i, j]:.3g}", grid[i, j], scaled[i, j]) for j in range(grid.shape[1]))
            prob = f"<td>{probs[i]:.3f}</td>" if probs is not None else ""
            parts.append(f"<tr><th>{_escape(token)}</th>{row}{prob}</tr>")
        parts.append("</table>")
    parts.append(_legend() + "\n</body></html>\n")
    return "".join(parts)


def token_heatmap_html(tokens: Sequence[str], scores: Any, title: str = "Token relevance") -> str:
    """A self-contained HTML page of one score per token (AttnLRP, rollout, Chefer), coloured in place.

    Colours are scaled to the largest magnitude (green positive, red
    negative); exact values show as tooltips; tokens are HTML-escaped.

    Example:
        >>> page = token_heatmap_html(["[CLS]", "cat", "<b>"], [0.1, 0.9, -0.2])
        >>> "cat" in page and "&lt;b&gt;" in page
        True
    """
    values = _values(scores, "scores", 1)
    if len(values) != len(tokens):
        raise ArgumentValueError(f"{len(tokens)} tokens but {len(values)} scores")
    spans = "".join(
        f'<span title="{v:.6g}" style="background-color: {_get_color(s)}; padding: 1px 3px; margin: 1px">'
        f"{_escape(t)}</span>"
        for t, v, s in zip(tokens, values, _scaled(values))
    )
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        f"<title>{_escape(title)}</title><style>body{{font-family:sans-serif;line-height:1.8}}</style>"
        f"</head><body>\n<h3>{_escape(title)}</h3><p>{spans}</p>{_legend()}\n</body></html>\n"
    )
