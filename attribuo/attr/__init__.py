"""Attribution methods: primary, layer and neuron, with Captum's names and arguments."""

from . import visualization  # numpy only; matplotlib loads when drawing
from .base import (
    Attribution,
    GradientAttribution,
    LayerAttribution,
    NeuronAttribution,
    PerturbationAttribution,
)
from .cam import (
    EigenCam,
    GradCamPlusPlus,
    HiResCam,
    LayerCam,
    LayerGradCam,
    ScoreCam,
    XGradCam,
)
from .deeplift import DeepLift, DeepLiftShap
from .embeddings import (
    InterpretableEmbeddingBase,
    TokenReferenceBase,
    configure_interpretable_embedding_layer,
    remove_interpretable_embedding_layer,
)
from .feature_ablation import FeatureAblation
from .feature_permutation import FeaturePermutation
from .gradient import InputXGradient, Saliency
from .gradient_shap import GradientShap
from .guided import Deconvolution, GuidedBackprop
from .guided_gradcam import GuidedGradCam
from .integrated_gradients import IntegratedGradients
from .kernel_shap import KernelShap
from .layer import LayerActivation, LayerGradientXActivation
from .layer_path import InternalInfluence, LayerConductance, LayerIntegratedGradients
from .layer_perturb import LayerFeatureAblation, LayerFeaturePermutation
from .layer_reference import LayerDeepLift, LayerDeepLiftShap, LayerGradientShap
from .lime import Lime, LimeBase
from .lrp import LRP, LayerLRP
from .neuron import (
    NeuronConductance,
    NeuronDeconvolution,
    NeuronDeepLift,
    NeuronDeepLiftShap,
    NeuronFeatureAblation,
    NeuronGradient,
    NeuronGradientShap,
    NeuronGuidedBackprop,
    NeuronIntegratedGradients,
)
from .noise_tunnel import NoiseTunnel
from .occlusion import Occlusion
from .shapley import ShapleyValues, ShapleyValueSampling

__all__ = [
    "FeatureAblation",
    "FeaturePermutation",
    "Occlusion",
    "ShapleyValueSampling",
    "ShapleyValues",
    "LimeBase",
    "Lime",
    "KernelShap",
    "visualization",
    "LayerActivation",
    "LayerGradientXActivation",
    "InternalInfluence",
    "LayerConductance",
    "LayerIntegratedGradients",
    "NeuronGradient",
    "NeuronIntegratedGradients",
    "NeuronConductance",
    "NeuronGuidedBackprop",
    "NeuronDeconvolution",
    "LayerDeepLift",
    "LayerDeepLiftShap",
    "LayerGradientShap",
    "LayerFeatureAblation",
    "LayerFeaturePermutation",
    "NeuronGradientShap",
    "NeuronDeepLift",
    "NeuronDeepLiftShap",
    "NeuronFeatureAblation",
    "Attribution",
    "GradientAttribution",
    "PerturbationAttribution",
    "LayerAttribution",
    "NeuronAttribution",
    "Saliency",
    "InputXGradient",
    "GuidedBackprop",
    "Deconvolution",
    "DeepLift",
    "DeepLiftShap",
    "IntegratedGradients",
    "GradientShap",
    "NoiseTunnel",
    "LRP",
    "LayerLRP",
    "LayerGradCam",
    "GuidedGradCam",
    "GradCamPlusPlus",
    "XGradCam",
    "HiResCam",
    "LayerCam",
    "ScoreCam",
    "EigenCam",
    "InterpretableEmbeddingBase",
    "TokenReferenceBase",
    "configure_interpretable_embedding_layer",
    "remove_interpretable_embedding_layer",
]
