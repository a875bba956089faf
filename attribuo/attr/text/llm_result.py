"""LLMAttributionResult: what LLMAttribution and LLMGradientAttribution return, with plots."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..._engine.errors import ArgumentValueError
from .interpretable_input import InterpretableInput


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
    ) -> None:
        self.input_tokens = input_tokens
        self.output_tokens = output_tokens
        self.seq_attr = seq_attr
        self.token_attr = token_attr
        self.output_probs = output_probs
        self.inp = inp

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
