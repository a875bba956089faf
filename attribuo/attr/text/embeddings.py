"""Interpretable embedding layers: compute embeddings outside the model.

Attribution methods such as IntegratedGradients need float inputs, but text
models take integer token indices. These helpers swap a model's embedding
layer for a pass-through layer, so the embeddings can be computed first
(``indices_to_embeddings``) and then fed to the model as the inputs to
attribute. ``LayerIntegratedGradients`` on the embedding layer is usually the
simpler route; these exist for Captum compatibility.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn

from attribuo._engine.errors import ArgumentTypeError, ArgumentValueError

__all__ = [
    "InterpretableEmbeddingBase",
    "TokenReferenceBase",
    "configure_interpretable_embedding_layer",
    "remove_interpretable_embedding_layer",
]


class InterpretableEmbeddingBase(nn.Module):
    """Stand-in for an embedding layer whose forward returns its first argument.

    The wrapped layer stays available as ``.embedding``; call
    ``indices_to_embeddings`` to turn indices into vectors.

    Example:
        >>> emb = nn.Embedding(10, 3)
        >>> wrapped = InterpretableEmbeddingBase(emb, "embedding")
        >>> vecs = wrapped.indices_to_embeddings(torch.tensor([[1, 2]]))
        >>> wrapped(vecs) is vecs
        True
    """

    def __init__(self, embedding: nn.Module, full_name: str) -> None:
        super().__init__()
        self.num_embeddings = getattr(embedding, "num_embeddings", None)
        self.embedding_dim = getattr(embedding, "embedding_dim", None)
        self.embedding = embedding
        self.full_name = full_name

    def forward(self, *inputs: Any, **kwargs: Any) -> Any:
        if not inputs and not kwargs:
            raise ArgumentValueError(
                "`InterpretableEmbeddingBase` needs the precomputed embedding tensor "
                "as its first positional or keyword argument."
            )
        # the embedding vectors were computed beforehand: pass them through unchanged
        return inputs[0] if inputs else next(iter(kwargs.values()))

    def indices_to_embeddings(self, *input: Any, **kwargs: Any) -> torch.Tensor:
        """Run the original embedding layer (e.g. token indices -> vectors)."""
        return self.embedding(*input, **kwargs)


class TokenReferenceBase:
    """Builds baseline sequences made of one reference token (e.g. PAD).

    Example:
        >>> TokenReferenceBase(reference_token_idx=0).generate_reference(3, torch.device("cpu"))
        tensor([0, 0, 0])
    """

    def __init__(self, reference_token_idx: int = 0) -> None:
        self.reference_token_idx = reference_token_idx

    def generate_reference(self, sequence_length: int, device: torch.device) -> torch.Tensor:
        """A 1-D tensor of ``sequence_length`` copies of the reference index."""
        return torch.full((sequence_length,), self.reference_token_idx, device=device)


def _get_deep_layer_name(model: nn.Module, dotted: str) -> Any:
    obj: Any = model
    for part in dotted.split("."):
        if not hasattr(obj, part):
            raise ArgumentValueError(f"`embedding_layer_name`: the model has no attribute {dotted!r}.")
        obj = getattr(obj, part)
    return obj


def _set_deep_layer_value(model: nn.Module, dotted: str, value: nn.Module) -> None:
    *parents, last = dotted.split(".")
    owner: Any = model
    for part in parents:
        owner = getattr(owner, part)
    setattr(owner, last, value)


def configure_interpretable_embedding_layer(
    model: nn.Module, embedding_layer_name: str = "embedding"
) -> InterpretableEmbeddingBase:
    """Replace ``model.<embedding_layer_name>`` by a pass-through layer and return it.

    Undo with :func:`remove_interpretable_embedding_layer` when done.

    Example:
        >>> import warnings
        >>> import torch
        >>> from attribuo.attr import IntegratedGradients
        >>> class Net(torch.nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.embedding = torch.nn.Embedding(10, 4)
        ...         self.fc = torch.nn.Linear(4, 2)
        ...     def forward(self, ids):
        ...         return self.fc(self.embedding(ids).mean(1))
        >>> net, token_ids = Net(), torch.tensor([[1, 2, 3]])
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")
        ...     emb = configure_interpretable_embedding_layer(net, "embedding")
        >>> x = emb.indices_to_embeddings(token_ids)
        >>> IntegratedGradients(net).attribute(x, target=0).shape
        torch.Size([1, 3, 4])
        >>> remove_interpretable_embedding_layer(net, emb)
        >>> type(net.embedding).__name__
        'Embedding'
    """
    if not isinstance(model, nn.Module):
        raise ArgumentTypeError("`model` must be a torch.nn.Module.")
    layer = _get_deep_layer_name(model, embedding_layer_name)
    if type(layer) is InterpretableEmbeddingBase:
        raise ArgumentValueError(
            f"`embedding_layer_name`: an interpretable embedding is already configured "
            f"for {embedding_layer_name!r}."
        )
    warnings.warn(
        f"The embedding layer {embedding_layer_name!r} is replaced by a pass-through "
        "layer that takes embedding vectors; restore it with "
        "`remove_interpretable_embedding_layer` after interpretation.",
        stacklevel=2,
    )
    wrapper = InterpretableEmbeddingBase(layer, embedding_layer_name)
    _set_deep_layer_value(model, embedding_layer_name, wrapper)
    return wrapper


def remove_interpretable_embedding_layer(
    model: nn.Module, interpretable_emb: InterpretableEmbeddingBase
) -> None:
    """Put the original embedding layer back in place of ``interpretable_emb``.

    See :func:`configure_interpretable_embedding_layer` for an example.
    """
    if not isinstance(interpretable_emb, InterpretableEmbeddingBase):
        raise ArgumentTypeError("`interpretable_emb` must be an InterpretableEmbeddingBase.")
    _set_deep_layer_value(model, interpretable_emb.full_name, interpretable_emb.embedding)
