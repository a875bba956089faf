"""Complexity of an explanation: how few features carry it (Quantus' complexity metrics).

A concise explanation puts its mass on a few features. Three measures, all
computed from the attributions alone (no forward of the model), vectorised
over the batch:

- :func:`sparseness`: the Gini index of the absolute attributions
  (Chalasani et al. 2020); higher is sparser.
- :func:`complexity`: the entropy of each feature's share of the total
  attribution (Bhatt et al. 2020); lower is simpler.
- :func:`effective_complexity`: how many attributions exceed a threshold
  (Nguyen & Martinez 2020); lower is simpler.

As in Quantus, attributions are normalised by their largest absolute value
(``normalise=True``) and then made absolute (``abs=True``) first. Quantus
divides the whole batch by one maximum; here every example is divided by its
own, so an example's score does not depend on the others in the batch (the
two agree when the examples share their maximum, or for one example).
:func:`discrete_entropy` (the entropy of a histogram of the attributions) is
the complexity the efficient MPRT uses.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from .._engine.errors import ArgumentTypeError, ArgumentValueError
from ._common import (
    _no_model,
    prepared_attributions,
)


def sparseness(
    forward_func: Callable,
    inputs: Tensor,
    attributions: Any,
    target: Any = None,
    *,
    additional_forward_args: Any = None,
    abs: bool = True,
    normalise: bool = True,
    explain_kwargs: dict | None = None,
) -> Tensor:
    """Gini index of the attributions (Chalasani et al., 2020): higher is sparser.

    For each example the ``F`` attributions (absolute and normalised by
    default, plus ``1e-7`` as Quantus adds, so an all-zero map is defined)
    are sorted ascending and scored ``sum_i (2i - F - 1) a_i / (F sum_i a_i)``:
    0 when every feature has the same share, near 1 when one feature has it
    all. No forward of the model (unless ``attributions`` is a method to
    compute them).

    Example:
        >>> import torch
        >>> from attribuo.metrics.complexity import sparseness
        >>> a = torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 1.0]])
        >>> sparseness(None, torch.zeros(2, 4), a).round(decimals=4)
        tensor([0.0000, 0.7500], dtype=torch.float64)
    """
    _, a = prepared_attributions("sparseness", _no_model(forward_func), inputs, attributions, target,
                                 additional_forward_args, explain_kwargs, normalise, abs)
    n = a.shape[1]
    a = (a + 1e-7).sort(dim=1).values
    weights = 2 * torch.arange(1, n + 1, dtype=a.dtype, device=a.device) - n - 1
    return (weights * a).sum(dim=1) / (n * a.sum(dim=1))


def complexity(
    forward_func: Callable,
    inputs: Tensor,
    attributions: Any,
    target: Any = None,
    *,
    additional_forward_args: Any = None,
    abs: bool = True,
    normalise: bool = True,
    explain_kwargs: dict | None = None,
) -> Tensor:
    """Entropy of the features' fractional contributions (Bhatt et al., 2020): lower is simpler.

    Each attribution's share ``p_i = a_i / sum_j |a_j|`` gives the score
    ``-sum_i p_i log(p_i + 1e-12)`` (natural log; the ``1e-12`` as in
    Quantus): 0 when one feature carries everything, ``log F`` when all
    share equally. With ``abs=False`` and negative attributions the log is
    undefined (NaN), as in Quantus; an all-zero map gives NaN. No forward.

    Example:
        >>> import torch
        >>> from attribuo.metrics.complexity import complexity
        >>> a = torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0]])
        >>> complexity(None, torch.zeros(2, 4), a).round(decimals=4)
        tensor([1.3863, 0.6931], dtype=torch.float64)
    """
    _, a = prepared_attributions("complexity", _no_model(forward_func), inputs, attributions, target,
                                 additional_forward_args, explain_kwargs, normalise, abs)
    p = a / a.abs().sum(dim=1, keepdim=True)
    return -(p * torch.log(p + 1e-12)).sum(dim=1)


def effective_complexity(
    forward_func: Callable,
    inputs: Tensor,
    attributions: Any,
    target: Any = None,
    *,
    additional_forward_args: Any = None,
    eps: float = 1e-5,
    abs: bool = True,
    normalise: bool = True,
    explain_kwargs: dict | None = None,
) -> Tensor:
    """Number of attributions above ``eps`` (Nguyen & Martinez, 2020): lower is simpler.

    Counted on the absolute attributions divided by each example's largest
    one (the defaults), so ``eps`` is a fraction of the top attribution.
    Quantus divides by the batch's maximum instead (a score that depends on
    the other examples); the counts agree when the examples share their
    maximum. No forward. Returns the counts as float64.

    Example:
        >>> import torch
        >>> from attribuo.metrics.complexity import effective_complexity
        >>> a = torch.tensor([[0.5, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
        >>> effective_complexity(None, torch.zeros(2, 4), a, eps=0.1)
        tensor([2., 1.], dtype=torch.float64)
    """
    if isinstance(eps, bool) or not isinstance(eps, (int, float)):
        raise ArgumentTypeError(f"effective_complexity: `eps` must be a number, got {eps!r}")
    _, a = prepared_attributions("effective_complexity", _no_model(forward_func), inputs, attributions,
                                 target, additional_forward_args, explain_kwargs, normalise, abs)
    return (a > eps).sum(dim=1).to(torch.float64)


def discrete_entropy(flat: Tensor, n_bins: int = 100) -> Tensor:
    """``(N,)`` entropy of a histogram of each row of ``flat`` (``n_bins`` equal bins, natural log).

    The bins span each row's own range, as ``numpy.histogram(row, n_bins)``
    (the last bin includes the maximum; a constant row fills one bin: 0).

    Example:
        >>> import torch
        >>> discrete_entropy(torch.tensor([[0.0, 1.0, 2.0, 3.0], [1.0, 1.0, 1.0, 1.0]]), n_bins=4)
        tensor([1.3863, 0.0000], dtype=torch.float64)
    """
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
        raise ArgumentValueError(f"`n_bins` must be a positive int, got {n_bins!r}")
    flat = flat.detach()
    if not flat.is_floating_point():
        flat = flat.to(torch.float64)
    lo = flat.amin(dim=1, keepdim=True)
    hi = flat.amax(dim=1, keepdim=True)
    same = lo == hi
    lo, hi = torch.where(same, lo - 0.5, lo), torch.where(same, hi + 0.5, hi)  # numpy's widening
    # the edges as numpy's linspace computes them, in the values' dtype
    step = (hi - lo) / n_bins
    edges = torch.arange(n_bins + 1, dtype=flat.dtype, device=flat.device) * step + lo
    edges[:, -1:] = hi
    index = torch.searchsorted(edges.contiguous(), flat.contiguous(), right=True) - 1
    index = index.clamp(0, n_bins - 1)  # the maximum belongs to the last bin
    counts = torch.zeros(flat.shape[0], n_bins, dtype=torch.float64, device=flat.device)
    counts.scatter_add_(1, index, torch.ones_like(index, dtype=torch.float64))
    p = counts / counts.sum(dim=1, keepdim=True)
    return torch.special.entr(p).sum(dim=1) + 0.0  # + 0.0: no negative zero


