"""Layer attribution: a primary algorithm bound to a layer's output or input.

Each class here holds argument handling only; the algorithm is the primary
method's, applied to the model as a function of the layer's values
(:func:`attribuo._engine.sites.site_function`) or with the gradient taken
at the layer (:func:`attribuo._engine.sites.site_gradients`).
"""

from .activation import LayerActivation, LayerGradientXActivation
from .attribution_patching import ActivationPatching, AttributionPatching
from .deeplift import LayerDeepLift, LayerDeepLiftShap
from .gradient_shap import LayerGradientShap, LayerInputBaselineXGradient
from .lrp import LayerLRP
from .path_integrals import InternalInfluence, LayerConductance, LayerIntegratedGradients
from .perturbation import LayerFeatureAblation, LayerFeaturePermutation

__all__ = [
    "ActivationPatching",
    "AttributionPatching",
    "InternalInfluence",
    "LayerActivation",
    "LayerConductance",
    "LayerDeepLift",
    "LayerDeepLiftShap",
    "LayerFeatureAblation",
    "LayerFeaturePermutation",
    "LayerGradientShap",
    "LayerGradientXActivation",
    "LayerInputBaselineXGradient",
    "LayerIntegratedGradients",
    "LayerLRP",
]
