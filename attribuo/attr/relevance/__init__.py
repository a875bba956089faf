"""Layer-wise relevance propagation: LRP, its rules, composites and canonizers.

:mod:`.propagation` is the machinery (one forward, one backward whose
"gradient" is the relevance), :mod:`.rules` the per-layer rules,
:mod:`.composites` rules by layer type, :mod:`.canonizers` model rewrites.
"""

from .attnlrp import AttnLRP, LayerAttnLRP
from .canonizers import MergeBatchNorm
from .composites import AttnLRPComposite, Composite, EpsilonGammaBox, EpsilonPlus, EpsilonPlusFlat
from .lrp import LRP
from .rules import (
    DEFAULT_RULES,
    Alpha1_Beta0_Rule,
    EpsilonRule,
    FlatRule,
    GammaRule,
    IdentityRule,
    PropagationRule,
    WSquareRule,
    ZBoxRule,
)

__all__ = [
    "AttnLRP",
    "AttnLRPComposite",
    "LayerAttnLRP",
    "DEFAULT_RULES",
    "LRP",
    "Alpha1_Beta0_Rule",
    "Composite",
    "EpsilonGammaBox",
    "EpsilonPlus",
    "EpsilonPlusFlat",
    "EpsilonRule",
    "FlatRule",
    "GammaRule",
    "IdentityRule",
    "MergeBatchNorm",
    "PropagationRule",
    "WSquareRule",
    "ZBoxRule",
]
