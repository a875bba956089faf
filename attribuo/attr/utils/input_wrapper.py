"""Expose a model's inputs as layers, so layer methods can attribute to them."""

from __future__ import annotations

import inspect

from torch import Tensor, nn


class InputIdentity(nn.Module):
    """Identity module standing for one named model input.

    Example:
        >>> import torch
        >>> InputIdentity("x")(torch.ones(2)).tolist()
        [1.0, 1.0]
    """

    def __init__(self, input_name: str) -> None:
        super().__init__()
        self.input_name = input_name  # kept for debugging / repr

    def forward(self, x: Tensor) -> Tensor:
        return x

    def extra_repr(self) -> str:
        return f"input_name={self.input_name!r}"


class ModelInputWrapper(nn.Module):
    """Wrap a model so that each of its inputs first passes an identity layer.

    The wrapped model is called exactly like the original; ``input_maps[name]``
    is the identity layer of the forward argument ``name``, usable as the
    ``layer`` of any layer attribution method (e.g. to mix embedding-layer and
    raw-input attributions in one call).

    Example:
        >>> import torch
        >>> from attribuo.attr import LayerIntegratedGradients
        >>> class Net(torch.nn.Module):
        ...     def forward(self, x, y):
        ...         return (x * y).sum(1, keepdim=True)
        >>> wrapped = ModelInputWrapper(Net())
        >>> sorted(wrapped.input_maps)
        ['x', 'y']
        >>> lig = LayerIntegratedGradients(wrapped, wrapped.input_maps["x"])
        >>> lig.attribute((torch.ones(1, 2), torch.full((1, 2), 3.0)), target=0).round().tolist()
        [[3.0, 3.0]]
    """

    def __init__(self, module_to_wrap: nn.Module) -> None:
        super().__init__()
        self.module = module_to_wrap
        # Positional parameter names of forward, without ``self``.
        self.arg_name_list: list[str] = inspect.getfullargspec(module_to_wrap.forward).args[1:]
        self.input_maps = nn.ModuleDict({name: InputIdentity(name) for name in self.arg_name_list})

    def forward(self, *args: object, **kwargs: object) -> object:
        # Extra positionals (beyond the named ones, e.g. *args) pass through untouched.
        names = self.arg_name_list
        routed = [self.input_maps[names[i]](a) if i < len(names) else a for i, a in enumerate(args)]
        routed_kwargs = {
            key: self.input_maps[key](val) if key in self.input_maps else val
            for key, val in kwargs.items()
        }
        return self.module(*routed, **routed_kwargs)
