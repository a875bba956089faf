"""Perturbation methods: perturb features, run the model, attribute the change.

Every method here generates masks (which features a perturbed copy changes)
and hands them to the engine's one vectorised loop (:mod:`attribuo._engine.perturb`):
FeatureAblation, FeaturePermutation, Occlusion, ShapleyValueSampling,
ShapleyValues, Lime / LimeBase and KernelShap (with the surrogate models of
:mod:`.linear_models`), PartitionShap (Owen values over a feature
hierarchy), RISE (random masks), SobolAttribution (total Sobol indices of grid masks), and
DataLoaderAttribution for whole data loaders.
"""

from .dataloader_attr import DataLoaderAttribution, InputRole
from .feature_ablation import FeatureAblation
from .feature_permutation import FeaturePermutation
from .kernel_shap import KernelShap
from .lime import Lime, LimeBase
from .occlusion import Occlusion
from .partition_shap import PartitionShap
from .rise import RISE
from .shapley import ShapleyValues, ShapleyValueSampling
from .sobol import SobolAttribution

__all__ = [
    "DataLoaderAttribution",
    "FeatureAblation",
    "FeaturePermutation",
    "InputRole",
    "KernelShap",
    "Lime",
    "LimeBase",
    "Occlusion",
    "PartitionShap",
    "RISE",
    "ShapleyValueSampling",
    "SobolAttribution",
    "ShapleyValues",
]
