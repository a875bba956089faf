"""LRP composites: rules by layer type and position.

A composite assigns a rule to every module from a map of layer types, with
a separate map for the first layer, in one line::

    LRP(model, composite=EpsilonPlusFlat()).attribute(x, target=3)

or, for code that reads ``module.rule`` (Captum-style)::

    with EpsilonGammaBox(low=-3.0, high=3.0).attached(model):
        ...

A module's own ``rule`` attribute always wins over the composite. Maps are
searched with ``isinstance`` in order, so more specific types go first.

Canonizers (:mod:`.canonizers`) are passed next to a composite.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

from torch import Tensor, nn
from torch.nn.modules.conv import _ConvNd
from torch.nn.modules.pooling import _AdaptiveAvgPoolNd, _AvgPoolNd

from .rules import (
    Alpha1_Beta0_Rule,
    EpsilonRule,
    FlatRule,
    GammaRule,
    PropagationRule,
    ZBoxRule,
)

RuleMap = Sequence[tuple[type | tuple[type, ...], Callable[[], PropagationRule]]]
LINEAR_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


class Composite:
    """Rules by layer type (``layer_map``) with a special ``first_map`` for the first layer.

    The first layer is the first module, in ``model.modules()`` order, that
    matches a type of ``first_map``. Each map is a list of
    ``(type or tuple of types, rule factory)``; the first match wins.

    Example:
        >>> import torch
        >>> from attribuo.attr import LRP
        >>> from attribuo.attr.relevance import Composite
        >>> from attribuo.attr.relevance.rules import EpsilonRule, GammaRule
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
        >>> composite = Composite([(torch.nn.Linear, lambda: EpsilonRule(0.1))],
        ...                       first_map=[(torch.nn.Linear, GammaRule)])
        >>> LRP(model, composite=composite).attribute(torch.rand(2, 3), target=0).shape
        torch.Size([2, 3])
    """

    def __init__(self, layer_map: RuleMap = (), first_map: RuleMap = ()) -> None:
        self.layer_map = list(layer_map)
        self.first_map = list(first_map)

    @staticmethod
    def _match(module: nn.Module, rule_map: RuleMap) -> Callable[[], PropagationRule] | None:
        for types, factory in rule_map:
            if isinstance(module, types):
                return factory
        return None

    def rules(self, model: nn.Module) -> dict[nn.Module, PropagationRule]:
        """A fresh rule for every module the composite covers."""
        chosen: dict[nn.Module, PropagationRule] = {}
        first_done = not self.first_map
        for module in model.modules():
            factory = None
            if not first_done:
                factory = self._match(module, self.first_map)
                first_done = factory is not None
            factory = factory or self._match(module, self.layer_map)
            if factory is not None:
                chosen[module] = factory()
        return chosen

    @contextlib.contextmanager
    def attached(self, model: nn.Module) -> Iterator[nn.Module]:
        """Set ``module.rule`` for the block (modules with a rule keep theirs), then undo."""
        added = []
        try:
            for module, rule in self.rules(model).items():
                if getattr(module, "rule", None) is None:
                    had = hasattr(module, "rule")
                    module.rule = rule
                    added.append((module, had))
            yield model
        finally:
            for module, had in added:
                if had:
                    module.rule = None
                else:
                    del module.rule


def _pooling() -> RuleMap:
    return [((_AvgPoolNd, _AdaptiveAvgPoolNd), EpsilonRule)]


class EpsilonPlus(Composite):
    """z+ (Alpha1_Beta0 without bias) on convolutions, epsilon on dense layers.

    Example:
        >>> from attribuo.attr.relevance import EpsilonPlus
        >>> len(EpsilonPlus().layer_map)
        3
    """

    def __init__(self, epsilon: float = 1e-6) -> None:
        super().__init__(
            [
                *_pooling(),
                (_ConvNd, lambda: Alpha1_Beta0_Rule(set_bias_to_zero=True)),
                (nn.Linear, lambda: EpsilonRule(epsilon)),
            ]
        )


class EpsilonPlusFlat(Composite):
    """As :class:`EpsilonPlus`, with the flat rule on the first Linear/Conv layer (zennit's).

    Example:
        >>> import torch
        >>> from attribuo.attr import LRP
        >>> from attribuo.attr.relevance import EpsilonPlusFlat
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
        >>> LRP(model, composite=EpsilonPlusFlat()).attribute(torch.rand(2, 3), target=0).shape
        torch.Size([2, 3])
    """

    def __init__(self, epsilon: float = 1e-6) -> None:
        super().__init__(EpsilonPlus(epsilon).layer_map, first_map=[(LINEAR_LAYERS, FlatRule)])


class EpsilonGammaBox(Composite):
    """Gamma on convolutions, epsilon on dense layers, z^B on the first layer (zennit's).

    ``low`` and ``high`` bound the input values (e.g. the normalised pixel range).

    Example:
        >>> import torch
        >>> from attribuo.attr.relevance import EpsilonGammaBox
        >>> EpsilonGammaBox(low=-1.0, high=1.0).rules(torch.nn.Sequential(torch.nn.Linear(2, 2)))
        {Linear(in_features=2, out_features=2, bias=True): ZBoxRule(low=-1.0, high=1.0)}
    """

    def __init__(
        self, low: float | Tensor, high: float | Tensor, epsilon: float = 1e-6, gamma: float = 0.25
    ) -> None:
        super().__init__(
            [
                *_pooling(),
                (_ConvNd, lambda: GammaRule(gamma)),
                (nn.Linear, lambda: EpsilonRule(epsilon)),
            ],
            first_map=[(LINEAR_LAYERS, lambda: ZBoxRule(low, high))],
        )


class AttnLRPComposite(Composite):
    """The transformer composite: given to ``LRP``, it explains with AttnLRP's rules.

    Linear layers get the rules of ``layer_map`` (default: none, i.e. LRP-0)
    in gradient form; attention, normalisation, activations and products get
    AttnLRP's rules (:mod:`.transformer_rules`). ``attention_rule`` is
    ``"attnlrp"`` or ``"constant"`` (see :class:`~attribuo.attr.AttnLRP`).
    Only rules that modify parameters (epsilon, gamma) can be used.

    Example:
        >>> import torch
        >>> from attribuo.attr import LRP
        >>> from attribuo.attr.relevance import AttnLRPComposite, EpsilonRule
        >>> layer = torch.nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
        >>> model = torch.nn.Sequential(layer, torch.nn.Flatten(), torch.nn.Linear(40, 3)).eval()
        >>> composite = AttnLRPComposite([(torch.nn.Linear, lambda: EpsilonRule(1e-6))])
        >>> LRP(model, composite=composite).attribute(torch.randn(2, 5, 8), target=0).shape
        torch.Size([2, 5, 8])
    """

    gradient_form = True

    def __init__(self, layer_map: RuleMap = (), first_map: RuleMap = (), attention_rule: str = "attnlrp") -> None:
        super().__init__(layer_map, first_map)
        from .attnlrp import check_attention_rule

        self.attention_rule = check_attention_rule(attention_rule)
