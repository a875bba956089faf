"""Reading the explained score off a transformer's output.

Hugging Face models return a ``ModelOutput`` (a dict with ``logits``), and
causal language models give one row of logits per position. The
transformer-native methods accept such outputs as they are:

* a ``ModelOutput`` or dict gives its ``logits`` (else its first value);
* ``(batch, positions, classes)`` logits with an int or per-example
  ``target`` are read at the last position (the next-token prediction); a
  tuple ``target`` indexes them as everywhere else in attribuo;
* ``target=None`` on logits with more than one class explains each example's
  top class (at the last position for 3-D logits).
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import Tensor

from .errors import ArgumentTypeError
from .forward import scalar_per_example
from .targets import Target, parse_target


def logits_of(output: Any) -> Tensor:
    """The tensor of scores in ``output`` (see the module docstring)."""
    if isinstance(output, Tensor):
        return output
    if isinstance(output, dict):
        if "logits" in output:
            return output["logits"]
        values = [v for v in output.values() if isinstance(v, Tensor)]
        if values:
            return values[0]
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
        return output[0]
    raise ArgumentTypeError(
        f"the model must return a tensor or a ModelOutput with `logits`, got {type(output).__name__}"
    )


def explained_scores(output: Any, target: Any, batch: int) -> tuple[Tensor, Tensor | None]:
    """``(scores, chosen)``: one score per example and, for ``target=None``, the classes chosen."""
    logits = logits_of(output)
    parsed = target if isinstance(target, Target) else parse_target(target)
    full_index = (parsed.shared is not None and len(parsed.shared) == 2) or (
        parsed.per_example is not None and parsed.per_example.dim() == 2 and parsed.per_example.shape[1] == 2
    )
    if logits.dim() == 3 and full_index:  # (position, class) per example or shared
        return scalar_per_example(parsed.select(logits), batch), None
    if logits.dim() == 3:
        logits = logits[:, -1]
    if parsed.is_none:
        if logits.dim() <= 1 or logits[0].numel() == 1:
            return scalar_per_example(logits, batch), None
        chosen = logits.detach().reshape(logits.shape[0], -1).argmax(-1)
        flat = logits.reshape(logits.shape[0], -1)
        return flat.gather(1, chosen[:, None])[:, 0], chosen
    return scalar_per_example(parsed.select(logits), batch), None




def _accepts(model: Any, name: str) -> bool:
    forward = getattr(model, "forward", None)
    try:
        return name in inspect.signature(forward).parameters
    except (TypeError, ValueError):
        return False


def call_model(forward_func: Any, inputs: tuple[Tensor, ...], args: Any) -> Any:
    """``forward_func`` on ``inputs``, passing Hugging Face models their inputs by name.

    A model whose ``forward`` takes ``inputs_embeds`` gets a 3-D floating
    input under that name, one that takes ``pixel_values`` a 4-D floating
    input under that name; token ids and everything else go positionally.
    ``args`` (additional_forward_args) is a tuple of further positional
    arguments or a dict of keyword arguments (e.g. ``{"attention_mask": m}``).
    """
    positional, keywords = ((), dict(args)) if isinstance(args, dict) else (tuple(args or ()), {})
    first = inputs[0] if len(inputs) == 1 else None
    if first is not None and first.is_floating_point():
        name = "inputs_embeds" if first.dim() == 3 else "pixel_values" if first.dim() == 4 else None
        if name is not None and _accepts(forward_func, name) and not positional:
            return forward_func(**{name: first}, **keywords)
    return forward_func(*inputs, *positional, **keywords)
