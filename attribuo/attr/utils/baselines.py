"""ProductBaselines: draw baselines from the Cartesian product of per-feature choices."""

from __future__ import annotations

import random
from typing import Any


class ProductBaselines:
    """A callable returning one random combination of per-feature baseline values.

    ``baseline_values`` is a list of candidate lists (one per feature; a call
    returns a list), or a dict ``{feature_name: candidates}`` (a call returns
    a dict). A tuple key groups features whose baselines go together; its
    candidates are tuples with one value per name. Draws use Python's
    ``random`` module, as Captum does, so ``random.seed`` fixes them.

    Example:
        >>> from attribuo.attr import ProductBaselines
        >>> pb = ProductBaselines({"age": [0, 30], ("h", "w"): [(1, 2), (3, 4)]})
        >>> sorted(pb().keys())
        ['age', 'h', 'w']
    """

    def __init__(self, baseline_values: list[list[Any]] | dict[str | tuple[str, ...], list[Any]]) -> None:
        if isinstance(baseline_values, dict):
            self.dict_keys: list[Any] = list(baseline_values)
            self.baseline_values: list[list[Any]] = [baseline_values[k] for k in self.dict_keys]
        else:
            self.dict_keys = []
            self.baseline_values = list(baseline_values)

    def sample(self) -> list[Any] | dict[str, Any]:
        """One draw: a candidate chosen uniformly for every feature (group)."""
        picks = [random.choice(candidates) for candidates in self.baseline_values]
        if not self.dict_keys:
            return picks
        out: dict[str, Any] = {}
        for key, value in zip(self.dict_keys, picks):
            names, values = (key, value) if isinstance(key, tuple) else ((key,), (value,))
            out.update(zip(names, values))
        return out

    def __call__(self) -> list[Any] | dict[str, Any]:
        return self.sample()
