"""Training-data influence, with Captum's ``captum.influence`` API.

TracIn (``TracInCP``, ``TracInCPFast``, ``TracInCPFastRandProj``) scores how
much each training example moved the loss of a test example over the saved
checkpoints; ``SimilarityInfluence`` ranks training examples by activation
similarity.
"""

from .base import DataInfluence, KMostInfluentialResults
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
]
