"""Which tensors of a forward depend on given source tensors, read off the autograd graph.

Rules that treat a product differently when both factors carry the input
(AttnLRP's uniform rule, DeepLift's product rule) need to tell the input's
descendants from parameters and constant tables, which also require grad.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor


class Dependence:
    """Whether a tensor depends on the ``sources``, read off the autograd graph (memoised per node).

    Example:
        >>> import torch
        >>> x, w = torch.ones(2, requires_grad=True), torch.nn.Parameter(torch.ones(2))
        >>> depends = Dependence([x])
        >>> depends(x * 2), depends(w * 2), depends(w * x)
        (True, False, True)
    """

    def __init__(self, sources: Sequence[Tensor] = ()) -> None:
        self.sources: set[int] = {id(t) for t in sources}
        self._keep: list[Tensor] = list(sources)
        self._memo: dict[Any, bool] = {}

    def add(self, source: Tensor) -> None:
        self.sources.add(id(source))
        self._keep.append(source)

    def __call__(self, t: Any) -> bool:
        if not isinstance(t, Tensor) or not t.requires_grad:
            return False
        if t.grad_fn is None:
            return id(t) in self.sources
        return self._reaches(t.grad_fn)

    def _reaches(self, root: Any) -> bool:
        memo = self._memo
        stack = [(root, False)]
        while stack:
            node, expanded = stack.pop()
            if node in memo:
                continue
            variable = getattr(node, "variable", None)
            if variable is not None:  # AccumulateGrad: a leaf
                memo[node] = id(variable) in self.sources
                continue
            children = [c for c, _ in node.next_functions if c is not None]
            if expanded:
                memo[node] = any(memo[c] for c in children)
                continue
            stack.append((node, True))
            stack.extend((c, False) for c in children if c not in memo)
        return memo[root]
