"""Concept-based interpretability: TCAV, CAVs and concepts, with Captum's API."""

from .cav import CAV
from .classifier import Classifier, DefaultClassifier
from .concept import Concept, ConceptInterpreter
from .tcav import TCAV

__all__ = ["CAV", "Concept", "ConceptInterpreter", "TCAV", "Classifier", "DefaultClassifier"]
