"""Neuron objectives: one unit of a layer as the quantity to explain.

A neuron method is a primary method applied to a different scalar: instead
of the model output picked by ``target``, the activation of one neuron of a
layer, picked by ``neuron_selector``. :func:`neuron_function` turns
``(model, layer, selector)`` into a forward function returning that value
per example, so gradient, path, DeepLift and perturbation methods apply to
it unchanged. :func:`conductance_function` is the objective whose input
gradient is neuron conductance's integrand.

``neuron_selector`` takes Captum's forms:

- an int, or a tuple of ints, one per layer dim after the batch dim;
- a tuple holding slices: the neurons in the slices are summed;
- a callable receiving the layer's value (a tensor, or a tuple when the
  layer has several) and returning one value per example.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

from ..._engine.errors import ArgumentTypeError, ArgumentValueError
from ..._engine.sites import check_module, site_values

NeuronSelector = int | tuple | Callable[..., Tensor]


def check_selector(selector: Any) -> None:
    """Reject selectors of the wrong type before any forward runs."""
    if callable(selector):
        return
    if isinstance(selector, bool) or not isinstance(selector, (int, tuple)):
        raise ArgumentTypeError(
            "`neuron_selector` must be an int, a tuple of ints and slices, or a callable; "
            f"got {type(selector).__name__}"
        )
    if isinstance(selector, tuple):
        for entry in selector:
            if isinstance(entry, bool) or not isinstance(entry, (int, slice)):
                raise ArgumentTypeError(
                    "`neuron_selector` tuple entries must be ints or slices, got "
                    f"{type(entry).__name__}"
                )


def select_neuron(
    values: tuple[Tensor, ...], selector: NeuronSelector, scalar_total: bool = False
) -> Tensor:
    """The selected neuron of a layer's ``values``: one value per example, shape ``[batch]``.

    Slices select several neurons, which are summed per example. With
    ``scalar_total`` a callable may return one value for the whole batch (e.g.
    ``torch.sum``); it is spread evenly over the examples, which keeps the
    gradient of the batch total (all gradient methods use) unchanged.
    """
    batch = values[0].shape[0]
    if callable(selector):
        picked = selector(values if len(values) > 1 else values[0])
        if scalar_total and isinstance(picked, Tensor) and picked.numel() == 1 and batch > 1:
            return picked.reshape(()).expand(batch) / batch
        if not isinstance(picked, Tensor) or picked.numel() != batch:
            shape = tuple(picked.shape) if isinstance(picked, Tensor) else type(picked).__name__
            raise ArgumentValueError(
                f"`neuron_selector` callable must return one value per example "
                f"({batch}), got {shape}"
            )
        return picked.reshape(batch)
    if len(values) != 1:
        raise ArgumentValueError(
            f"the layer gives {len(values)} tensors, so an index cannot pick a neuron; "
            "pass a callable `neuron_selector` that picks from the tuple"
        )
    index = (selector,) if isinstance(selector, int) else selector
    layer_shape = tuple(values[0].shape[1:])
    if len(index) > len(layer_shape):
        raise ArgumentValueError(
            f"`neuron_selector` {selector} has {len(index)} indices but the layer's "
            f"neurons have shape {layer_shape}"
        )
    for dim, i in enumerate(index):
        if isinstance(i, int) and not -layer_shape[dim] <= i < layer_shape[dim]:
            raise ArgumentValueError(
                f"`neuron_selector` index {i} is out of range for layer dim {dim + 1} of "
                f"size {layer_shape[dim]}"
            )
    picked = values[0][(slice(None), *index)]
    if any(isinstance(i, slice) for i in index):
        return picked.reshape(batch, -1).sum(1)
    if picked.dim() > 1 and picked[0].numel() == 1:
        # fewer indices than dims, but the rest have size 1 (e.g. a 1x1 pooled map)
        return picked.reshape(batch)
    if picked.dim() != 1:
        raise ArgumentValueError(
            f"`neuron_selector` {selector} picks {tuple(picked.shape[1:])} neurons per example "
            f"from a layer of shape {layer_shape}; give one index per layer dim, or slices "
            "to sum a group"
        )
    return picked


def neuron_function(
    forward_func: Callable,
    layer: nn.Module,
    selector: NeuronSelector,
    use_input: bool = False,
    scalar_total: bool = False,
    stop_early: bool = False,
) -> Callable[..., Tensor]:
    """``f(*inputs, *args) -> [batch]``: the selected neuron of ``layer``'s output (or input).

    The whole forward runs (not only up to the layer), so a layer that runs
    more than once is reported rather than attributed at one of its calls.
    With ``stop_early`` only the first call runs the whole forward (that
    check); later calls stop at the layer, for methods that call it many
    times and read nothing after it (ablation).
    ``scalar_total``: see :func:`select_neuron` (for gradient-based methods).
    """
    check_selector(selector)
    check_module(layer)
    seen_whole = [False]

    def neuron(*args: Any) -> Tensor:
        stop = stop_early and seen_whole[0]
        (record,) = site_values(forward_func, [layer], args, (), use_input, keep_graph=True, stop=stop)
        seen_whole[0] = True
        return select_neuron(record.values, selector, scalar_total)

    return neuron
