"""Evaluation metrics for attributions.

Captum's ``infidelity`` and ``sensitivity_max``; deletion and insertion
curves; and Quantus' six families, torch-native and batched (each
``metric(forward_func, inputs, attributions or a method, target, ...)``
returns one score per example): faithfulness, robustness, randomisation,
localisation, complexity and axiomatic metrics, plus token metrics for
text. :func:`evaluate` scores several methods by several metrics at once.
"""

from .axiomatic import completeness, input_invariance, non_sensitivity
from .complexity import complexity, discrete_entropy, effective_complexity, sparseness
from .correlation import (
    faithfulness_correlation,
    faithfulness_estimate,
    monotonicity,
    monotonicity_correlation,
    sensitivity_n,
    sufficiency,
)
from .evaluate import Evaluation, evaluate
from .faithfulness import FaithfulnessCurve, deletion_curve, insertion_curve
from .flipping import irof, pixel_flipping, region_perturbation, selectivity, superpixels
from .infidelity import infidelity, infidelity_perturb_func_decorator
from .localisation import (
    attribution_localisation,
    auc,
    pointing_game,
    relevance_mass_accuracy,
    relevance_rank_accuracy,
    top_k_intersection,
)
from .randomisation import efficient_mprt, mprt, random_logit, smooth_mprt, structural_similarity
from .randomization import (
    RandomizationResult,
    model_parameter_randomization,
    spearman_correlation,
)
from .road import noisy_linear_imputation, road
from .robustness import (
    avg_sensitivity,
    continuity,
    local_lipschitz_estimate,
    max_sensitivity,
    relative_input_stability,
    relative_output_stability,
    relative_representation_stability,
)
from .sensitivity import sensitivity_max
from .text import token_comprehensiveness, token_deletion_aopc, token_sufficiency

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
    # faithfulness
    "pixel_flipping",
    "region_perturbation",
    "selectivity",
    "irof",
    "superpixels",
    "road",
    "noisy_linear_imputation",
    "faithfulness_correlation",
    "faithfulness_estimate",
    "monotonicity",
    "monotonicity_correlation",
    "sensitivity_n",
    "sufficiency",
    # robustness
    "max_sensitivity",
    "avg_sensitivity",
    "local_lipschitz_estimate",
    "continuity",
    "relative_input_stability",
    "relative_output_stability",
    "relative_representation_stability",
    # axiomatic
    "completeness",
    "non_sensitivity",
    "input_invariance",
    # text
    "token_deletion_aopc",
    "token_comprehensiveness",
    "token_sufficiency",
    # localisation
    "pointing_game",
    "top_k_intersection",
    "relevance_mass_accuracy",
    "relevance_rank_accuracy",
    "attribution_localisation",
    "auc",
    # complexity
    "sparseness",
    "complexity",
    "effective_complexity",
    "discrete_entropy",
    # randomisation
    "mprt",
    "smooth_mprt",
    "efficient_mprt",
    "random_logit",
    "structural_similarity",
    # several methods by several metrics
    "evaluate",
    "Evaluation",
]
