"""Per-example loss gradients with respect to model parameters, vectorised.

``torch.func.vmap`` over ``grad`` of the loss of one example gives every
example's gradient in one call; models that ``vmap`` cannot trace (in-place
buffer updates such as batch norm in training mode, ``.item()`` calls,
data-dependent control flow) fall back to one ``autograd.grad`` per example.
Either way each example's loss is evaluated on its own, so the result does
not depend on whether ``loss_fn`` sums or averages over the batch.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from .._engine.errors import ArgumentValueError
from .base import batch_loss, module_by_name


def active_parameters(model: nn.Module, layers: list[str] | None) -> dict[str, Tensor]:
    """Parameters whose gradients count: all of ``model``'s, or those of ``layers``."""
    if layers is None:
        params = dict(model.named_parameters())
    else:
        params = {}
        for layer in layers:
            module = module_by_name(model, layer, "layers")
            for name, p in module.named_parameters():
                params[f"{layer}.{name}" if layer else name] = p
    if not params:
        raise ArgumentValueError("`layers`: the chosen modules have no parameters")
    return params


def chosen_parameters(model: nn.Module, layers: Any) -> tuple[dict[str, Tensor], list[nn.Module] | None]:
    """Validated ``layers``: the parameters whose gradients count, and the modules named."""
    if layers is not None and (
        not isinstance(layers, list) or not layers or not all(isinstance(s, str) for s in layers)
    ):
        raise ArgumentValueError(f"`layers` must be a non-empty list of module names, got {layers!r}")
    params = active_parameters(model, layers)
    return params, None if layers is None else [model.get_submodule(s) for s in layers]


def _unsqueeze(x: Any) -> Any:
    return x.unsqueeze(0) if isinstance(x, Tensor) else x


def per_example_gradients(
    model: nn.Module,
    params: dict[str, Tensor],
    features: tuple[Any, ...],
    labels: Any,
    loss_fn: Any,
    reduction: str,
) -> Tensor:
    """Flattened gradients, shape ``(batch, n_params)``, of each example's loss.

    ``loss_fn=None`` differentiates the sum of the example's model outputs.
    """
    detached = {name: p.detach() for name, p in params.items()}

    def loss_one(p: dict[str, Tensor], feats: tuple[Any, ...], label: Any) -> Tensor:
        out = functional_call(model, p, tuple(_unsqueeze(f) for f in feats))
        return batch_loss(loss_fn, out, _unsqueeze(label), reduction)

    feat_dims = tuple(0 if isinstance(f, Tensor) else None for f in features)
    label_dim = 0 if isinstance(labels, Tensor) and loss_fn is not None else None
    with torch.enable_grad():
        try:
            grads = vmap(grad(loss_one), in_dims=(None, feat_dims, label_dim), randomness="different")(
                detached, features, labels
            )
        except RuntimeError:
            grads = _looped(loss_one, detached, features, labels, feat_dims, label_dim)
    return torch.cat([g.flatten(1) for g in grads.values()], dim=1)


def _looped(loss_one, params, features, labels, feat_dims, label_dim) -> dict[str, Tensor]:
    leaves = {n: p.clone().requires_grad_(True) for n, p in params.items()}
    n = next(f.shape[0] for f, d in zip(features, feat_dims) if d == 0)
    rows = []
    for i in range(n):
        feats = tuple(f[i] if d == 0 else f for f, d in zip(features, feat_dims))
        label = labels[i] if label_dim == 0 else labels
        loss = loss_one(leaves, feats, label)
        rows.append(torch.autograd.grad(loss, tuple(leaves.values()), allow_unused=True))
    return {
        name: torch.stack([r[j] if r[j] is not None else torch.zeros_like(leaves[name]) for r in rows])
        for j, name in enumerate(leaves)
    }
