"""LLMAttributionResult: what LLMAttribution and LLMGradientAttribution return.

Besides Captum's fields and plots it carries per-step scores of the
response, aggregates sub-word tokens into words or spans, renders itself as
an HTML page, and saves to / loads from a JSON file plus a safetensors file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..._engine.errors import ArgumentTypeError, ArgumentValueError
from .interpretable_input import ImageMaskInput, InterpretableInput
from .tokens import word_groups, word_label

_FORMAT = "attribuo.LLMAttributionResult/1"


def _as_tensor(value: Any, name: str, dims: int) -> Tensor:
    tensor = value if isinstance(value, Tensor) else torch.tensor(value)
    if tensor.dim() != dims:
        raise ArgumentValueError(f"`{name}` must be a {dims}-D tensor, got shape {tuple(tensor.shape)}")
    return tensor


class LLMAttributionResult:
    """Attributions of a generated response to the features of a prompt.

    Attributes:
        seq_attr: ``[n_input_features]``, attribution to the whole response.
        token_attr: ``[n_output_tokens, n_input_features]``, attribution to
            each response token (None for Lime and KernelShap).
        input_tokens / output_tokens: labels of the features and tokens.
        output_probs: optional ``[n_output_tokens]`` probabilities.
        inp: the interpretable input, when known.
        step_scores: per response token under the unperturbed prompt, e.g.
            ``{"prob": ..., "log_prob": ..., "entropy": ...}`` (``[n_output_tokens]`` each).
        output_pieces: the tokenizer's raw pieces of the response (word
            markers such as 'Ġ' kept), used to group tokens into words.

    Example:
        >>> res = LLMAttributionResult(input_tokens=["a", "b"], output_tokens=["x"],
        ...                            seq_attr=[0.5, -0.1], token_attr=[[0.5, -0.1]])
        >>> res.seq_attr_dict
        {'a': 0.5, 'b': -0.10000000149011612}
    """

    def __init__(
        self,
        *,
        input_tokens: list[str],
        output_tokens: list[str],
        seq_attr: Any,
        token_attr: Any = None,
        output_probs: Any = None,
        inp: InterpretableInput | None = None,
        step_scores: dict[str, Any] | None = None,
        output_pieces: list[str] | None = None,
    ) -> None:
        self.input_tokens = input_tokens
        self.output_tokens = output_tokens
        self.seq_attr = seq_attr
        self.token_attr = token_attr
        self.output_probs = output_probs
        self.inp = inp
        self.step_scores = {
            name: _as_tensor(value, f"step_scores[{name!r}]", 1) for name, value in (step_scores or {}).items()
        }
        for name, value in self.step_scores.items():
            if value.shape[0] != len(output_tokens):
                raise ArgumentValueError(
                    f"`step_scores[{name!r}]` has {value.shape[0]} values for {len(output_tokens)} output tokens"
                )
        if output_pieces is not None and len(output_pieces) != len(output_tokens):
            raise ArgumentValueError(
                f"`output_pieces` has {len(output_pieces)} pieces for {len(output_tokens)} output tokens"
            )
        self.output_pieces = output_pieces

    def __repr__(self) -> str:
        return (
            f"LLMAttributionResult(input_tokens={self.input_tokens!r}, "
            f"output_tokens={self.output_tokens!r}, seq_attr={self.seq_attr!r}, "
            f"token_attr={self.token_attr!r})"
        )

    @property
    def seq_attr(self) -> Tensor:
        return self._seq_attr

    @seq_attr.setter
    def seq_attr(self, value: Any) -> None:
        tensor = _as_tensor(value, "seq_attr", 1)
        if tensor.shape[0] != len(self.input_tokens):
            raise ArgumentValueError(
                f"`seq_attr` has {tensor.shape[0]} values for {len(self.input_tokens)} input tokens"
            )
        self._seq_attr = tensor

    @property
    def token_attr(self) -> Tensor | None:
        return self._token_attr

    @token_attr.setter
    def token_attr(self, value: Any) -> None:
        tensor = None if value is None else _as_tensor(value, "token_attr", 2)
        expected = (len(self.output_tokens), len(self.input_tokens))
        if tensor is not None and tuple(tensor.shape) != expected:
            raise ArgumentValueError(f"`token_attr` must have shape {expected}, got {tuple(tensor.shape)}")
        self._token_attr = tensor

    @property
    def output_probs(self) -> Tensor | None:
        return self._output_probs

    @output_probs.setter
    def output_probs(self, value: Any) -> None:
        tensor = None if value is None else _as_tensor(value, "output_probs", 1)
        if tensor is not None and tensor.shape[0] != len(self.output_tokens):
            raise ArgumentValueError(
                f"`output_probs` has {tensor.shape[0]} values for {len(self.output_tokens)} output tokens"
            )
        self._output_probs = tensor

    @property
    def seq_attr_dict(self) -> dict[str, float]:
        """``{input token: sequence attribution}``."""
        return dict(zip(self.input_tokens, self.seq_attr.cpu().tolist()))

    def plot_token_attr(self, show: bool = False) -> tuple[Any, Any] | None:
        """Heat map of ``token_attr`` (output tokens x input tokens); ``(fig, ax)`` unless ``show``.

        Drawn by :func:`attribuo.attr.visualization.visualize_token_attr`.
        """
        if self.token_attr is None:
            raise ValueError(
                "token_attr is None (this method gives sequence attributions only); "
                "use plot_seq_attr instead"
            )
        from ..visualization import visualize_token_attr

        return visualize_token_attr(self.token_attr, self.input_tokens, self.output_tokens, show)

    def plot_seq_attr(self, show: bool = False) -> tuple[Any, Any] | None:
        """Bar chart of ``seq_attr`` (positive blue, negative red); ``(fig, ax)`` unless ``show``.

        Drawn by :func:`attribuo.attr.visualization.visualize_seq_attr`.
        """
        from ..visualization import visualize_seq_attr

        return visualize_seq_attr(self.seq_attr, self.input_tokens, show)

    def plot_image_heatmap(
        self,
        show: bool = False,
        target_token_pos: int | tuple[int, int] | None = None,
        border_width: int = 2,
        show_legends: bool = True,
    ) -> tuple[Any, Any] | None:
        """The input image under a heat map of its segments' attributions (ImageMaskInput only).

        ``target_token_pos`` picks the attribution: None for the whole
        response, an index for one response token, ``(m, n)`` for the sum
        over tokens ``m`` to ``n - 1``. Segments are outlined
        (``border_width`` pixels, 0 for none) and labelled with their ids.
        Drawn by :func:`attribuo.attr.visualization.visualize_segment_heatmap`.
        """
        inp = self.inp
        if not isinstance(inp, ImageMaskInput):
            raise ValueError("plot_image_heatmap is only available for results of an ImageMaskInput")
        if target_token_pos is None:
            attr = self.seq_attr
        elif self.token_attr is None:
            raise ValueError(
                "token_attr is None (no per-token attribution was computed); "
                "use target_token_pos=None for the whole response"
            )
        elif isinstance(target_token_pos, int):
            attr = self.token_attr[target_token_pos]
        elif isinstance(target_token_pos, tuple) and len(target_token_pos) == 2:
            attr = self.token_attr[target_token_pos[0] : target_token_pos[1]].sum(0)
        else:
            raise ArgumentTypeError(
                f"`target_token_pos` must be None, an int or a (start, stop) tuple, got {target_token_pos!r}"
            )
        import numpy as np

        from ..visualization import visualize_segment_heatmap

        pixel_attr = inp.format_pixel_attr(attr.unsqueeze(0))[0].detach().cpu().double().numpy()
        return visualize_segment_heatmap(
            np.array(inp.image), pixel_attr, attr.detach().cpu().double().numpy(), *inp._masks_for_plot(),
            show, border_width, show_legends,
        )

    # ------------------------------------------------------------------ words and spans
    def aggregate(
        self,
        inputs: str | list[list[int]] | None = "words",
        outputs: str | list[list[int]] | None = "words",
        how: str = "sum",
    ) -> LLMAttributionResult:
        """Attributions of groups of tokens: sub-word tokens to words, or to any spans.

        ``inputs`` / ``outputs`` are ``"words"`` (grouped by the tokenizer's
        word markers, see :func:`~attribuo.attr.text.tokens.word_groups`), a
        list of index lists (each a span; together they must cover every
        token once, in order), or None to keep the tokens. ``how`` combines
        the values of a group: ``"sum"`` (default; for a log-probability
        target, the rows of an output word then add up to the attribution of
        the word's log probability), ``"mean"`` or ``"absmax"`` (the value of
        largest magnitude). Labels of groups are the joined token texts.

        Example:
            >>> res = LLMAttributionResult(input_tokens=["Ġplay", "ing", "Ġgolf"], output_tokens=["x"],
            ...                            seq_attr=[1.0, 2.0, 3.0], token_attr=[[1.0, 2.0, 3.0]])
            >>> words = res.aggregate()
            >>> words.input_tokens, words.seq_attr.tolist()
            (['playing', 'golf'], [3.0, 3.0])
        """
        if how not in ("sum", "mean", "absmax"):
            raise ArgumentValueError(f"`how` must be 'sum', 'mean' or 'absmax', got {how!r}")
        in_groups = _groups(inputs, self.input_tokens, "inputs")
        out_pieces = self.output_pieces or self.output_tokens
        out_groups = _groups(outputs, out_pieces, "outputs")

        def combine(values: Tensor, groups: list[list[int]], dim: int) -> Tensor:
            parts = []
            for g in groups:
                chunk = values.index_select(dim, torch.tensor(g, device=values.device))
                if how == "sum":
                    parts.append(chunk.sum(dim))
                elif how == "mean":
                    parts.append(chunk.mean(dim))
                else:
                    idx = chunk.abs().argmax(dim, keepdim=True)
                    parts.append(chunk.gather(dim, idx).squeeze(dim))
            return torch.stack(parts, dim)

        token_attr = None
        if self.token_attr is not None:
            token_attr = combine(combine(self.token_attr, in_groups, 1), out_groups, 0)
        seq_attr = combine(self.seq_attr, in_groups, 0)
        step_scores = {}
        if "log_prob" in self.step_scores:  # a word's log probability is the sum of its tokens'
            log_prob = torch.stack([self.step_scores["log_prob"][g].sum() for g in out_groups])
            step_scores = {"log_prob": log_prob, "prob": log_prob.exp()}
        return LLMAttributionResult(
            input_tokens=[_label(self.input_tokens, g, inputs) for g in in_groups],
            output_tokens=[
                word_label([out_pieces[i] for i in g]) if outputs == "words" else _label(self.output_tokens, g, outputs)
                for g in out_groups
            ],
            seq_attr=seq_attr,
            token_attr=token_attr,
            output_probs=step_scores.get("prob"),
            step_scores=step_scores,
        )

    # ------------------------------------------------------------------ HTML
    def to_html(self, title: str = "LLM attribution") -> str:
        """A self-contained HTML page of the result (tokens escaped; no IPython needed).

        Example:
            >>> res = LLMAttributionResult(input_tokens=["<b>"], output_tokens=["x"], seq_attr=[1.0])
            >>> "&lt;b&gt;" in res.to_html()
            True
        """
        from ..visualization import token_attr_html

        return token_attr_html(
            self.seq_attr, self.input_tokens, self.output_tokens, self.token_attr, self.output_probs, title
        )

    def save_html(self, path: str | os.PathLike, title: str = "LLM attribution") -> Path:
        """Write :meth:`to_html` to ``path``; returns the path."""
        path = Path(path)
        path.write_text(self.to_html(title), encoding="utf-8")
        return path

    def _repr_html_(self) -> str:  # notebooks render this
        return self.to_html()

    # ------------------------------------------------------------------ files
    def save(self, path: str | os.PathLike) -> tuple[Path, Path]:
        """Save to ``path`` (JSON: tokens and names) and ``path`` with suffix ``.safetensors`` (tensors).

        The interpretable input is not saved. Returns both paths.

        Example:
            >>> import tempfile, os
            >>> res = LLMAttributionResult(input_tokens=["a"], output_tokens=["x"], seq_attr=[0.5])
            >>> folder = tempfile.mkdtemp()
            >>> _ = res.save(os.path.join(folder, "res.json"))
            >>> LLMAttributionResult.load(os.path.join(folder, "res.json")).seq_attr.tolist()
            [0.5]
        """
        from safetensors.torch import save_file

        path = Path(path)
        tensors = {"seq_attr": self.seq_attr}
        if self.token_attr is not None:
            tensors["token_attr"] = self.token_attr
        if self.output_probs is not None:
            tensors["output_probs"] = self.output_probs
        for name, value in self.step_scores.items():
            tensors[f"step_scores.{name}"] = value
        tensor_path = path.with_suffix(".safetensors")
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tensor_path))
        meta = {
            "format": _FORMAT,
            "input_tokens": list(self.input_tokens),
            "output_tokens": list(self.output_tokens),
            "output_pieces": self.output_pieces,
            "tensors": tensor_path.name,
        }
        path.write_text(json.dumps(meta, ensure_ascii=False, indent=1), encoding="utf-8")
        return path, tensor_path

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> LLMAttributionResult:
        """Read a result written by :meth:`save`."""
        from safetensors.torch import load_file

        path = Path(path)
        meta = json.loads(path.read_text(encoding="utf-8"))
        if meta.get("format") != _FORMAT:
            raise ArgumentValueError(f"{path} is not a saved LLMAttributionResult (format {meta.get('format')!r})")
        tensors = load_file(str(path.parent / meta["tensors"]), device=str(device))
        return cls(
            input_tokens=meta["input_tokens"],
            output_tokens=meta["output_tokens"],
            seq_attr=tensors["seq_attr"],
            token_attr=tensors.get("token_attr"),
            output_probs=tensors.get("output_probs"),
            step_scores={k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith("step_scores.")},
            output_pieces=meta.get("output_pieces"),
        )


def _groups(spec: str | list[list[int]] | None, tokens: list[str], name: str) -> list[list[int]]:
    if spec is None:
        return [[i] for i in range(len(tokens))]
    if spec == "words":
        return word_groups(list(tokens))
    if isinstance(spec, str) or not isinstance(spec, (list, tuple)):
        raise ArgumentTypeError(f"`{name}` must be 'words', a list of index lists or None, got {spec!r}")
    flat = [i for g in spec for i in g]
    if flat != list(range(len(tokens))):
        raise ArgumentValueError(
            f"the spans of `{name}` must cover tokens 0..{len(tokens) - 1} once each, in order; got {spec!r}"
        )
    return [list(g) for g in spec]


def _label(tokens: list[str], group: list[int], spec: Any) -> str:
    pieces = [tokens[i] for i in group]
    return word_label(pieces) if spec == "words" else " ".join(pieces)
