"""Training-data influence, with Captum's ``captum.influence`` API.

TracIn (``TracInCP``, ``TracInCPFast``, ``TracInCPFastRandProj``) scores how
much each training example moved the loss of a test example over the saved
checkpoints; ``SimilarityInfluence`` ranks training examples by activation
similarity; ``NaiveInfluenceFunction`` and ``ArnoldiInfluenceFunction``
compute influence functions through a low-rank inverse Hessian.
"""

from .arnoldi import ArnoldiInfluenceFunction
from .base import DataInfluence, KMostInfluentialResults
from .influence_function import (
    InfluenceFunctionBase,
    IntermediateQuantitiesInfluenceFunction,
    NaiveInfluenceFunction,
)
from .similarity import SimilarityInfluence, cosine_similarity, euclidean_distance
from .tracincp import TracInCP, TracInCPBase
from .tracincp_fast import (
    ExactNearestNeighbors,
    NearestNeighbors,
    TracInCPFast,
    TracInCPFastRandProj,
)

__all__ = [
    "DataInfluence",
    "SimilarityInfluence",
    "TracInCPBase",
    "TracInCP",
    "TracInCPFast",
    "TracInCPFastRandProj",
    "KMostInfluentialResults",
    "NearestNeighbors",
    "ExactNearestNeighbors",
    "cosine_similarity",
    "euclidean_distance",
    "InfluenceFunctionBase",
    "IntermediateQuantitiesInfluenceFunction",
    "NaiveInfluenceFunction",
    "ArnoldiInfluenceFunction",
]
