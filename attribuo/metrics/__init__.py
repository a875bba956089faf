"""Evaluation metrics for attributions: Captum's infidelity and sensitivity_max, plus
deletion/insertion curves and the model parameter randomisation sanity check."""

from .faithfulness import FaithfulnessCurve, deletion_curve, insertion_curve
from .infidelity import infidelity, infidelity_perturb_func_decorator
from .randomization import (
    RandomizationResult,
    model_parameter_randomization,
    spearman_correlation,
)
from .sensitivity import sensitivity_max

__all__ = [
    "infidelity",
    "infidelity_perturb_func_decorator",
    "sensitivity_max",
    "deletion_curve",
    "insertion_curve",
    "FaithfulnessCurve",
    "model_parameter_randomization",
    "RandomizationResult",
    "spearman_correlation",
]
