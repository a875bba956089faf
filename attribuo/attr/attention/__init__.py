"""Explanations read from attention: rollout, flow and gradient-weighted attention relevance.

:mod:`.maps` collects a model's attention maps without editing it,
:mod:`.rollout` holds AttentionRollout and AttentionFlow (Abnar and Zuidema,
2020), :mod:`.gradient_weighted` AttentionRelevance (Chefer et al., 2021).
"""

from .gradient_weighted import AttentionRelevance
from .rollout import AttentionFlow, AttentionRollout

__all__ = ["AttentionFlow", "AttentionRelevance", "AttentionRollout"]
