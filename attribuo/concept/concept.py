"""Concepts (named sets of examples) and the interface of concept-based interpreters."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from torch.nn import Module

from .._engine.errors import ArgumentTypeError


class Concept:
    """A human-level idea ("striped", "happy") given by examples of it.

    ``data_iter`` yields batches of model inputs showing the concept (a
    tensor, or a tuple of tensors for a model with several inputs), for
    instance a ``torch.utils.data.DataLoader``. ``id`` must be unique among
    the concepts used together: it labels the concept's examples when a
    classifier is trained, and names the files CAVs are saved in.

    Example:
        >>> import torch
        >>> from torch.utils.data import DataLoader
        >>> from attribuo.concept import Concept
        >>> stripes = Concept(0, "striped", DataLoader(torch.rand(8, 3), batch_size=4))
        >>> stripes.identifier
        'striped-0'
    """

    def __init__(self, id: int, name: str, data_iter: Iterable[Any] | None) -> None:
        if not isinstance(id, int) or isinstance(id, bool):
            raise ArgumentTypeError(f"`id` must be an int, got {type(id).__name__}")
        if not isinstance(name, str):
            raise ArgumentTypeError(f"`name` must be a str, got {type(name).__name__}")
        self.id = id
        self.name = name
        self.data_iter = data_iter

    @property
    def identifier(self) -> str:
        """``"<name>-<id>"``, the key of the concept's activations."""
        return f"{self.name}-{self.id}"

    def __repr__(self) -> str:
        return f"Concept({self.id!r}, {self.name!r})"


class ConceptInterpreter:
    """Base of concept-based interpreters: holds the model; subclasses define ``interpret``.

    Example:
        >>> import torch
        >>> from attribuo.concept import ConceptInterpreter
        >>> ConceptInterpreter(torch.nn.Linear(2, 1)).model
        Linear(in_features=2, out_features=1, bias=True)
    """

    interpret: Callable[..., Any]

    def __init__(self, model: Module) -> None:
        self.model = model
