"""Attribution methods: primary, layer and neuron, with Captum's names and arguments."""

from . import visualization  # numpy only; matplotlib loads when drawing
from .base import (
    Attribution,
    GradientAttribution,
    InternalAttribution,
    LayerAttribution,
    NeuronAttribution,
    PerturbationAttribution,
)
from .baselines_product import ProductBaselines
from .cam import (
    EigenCam,
    GradCamPlusPlus,
    HiResCam,
    LayerCam,
    LayerGradCam,
    ScoreCam,
    XGradCam,
)
from .dataloader_attr import DataLoaderAttribution, InputRole
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
from .input_layer_wrapper import InputIdentity, ModelInputWrapper
from .integrated_gradients import IntegratedGradients
from .interpretable_input import (
    ImageMaskInput,
    InterpretableInput,
    TextTemplateInput,
    TextTokenInput,
)
from .kernel_shap import KernelShap
from .layer import LayerActivation, LayerGradientXActivation
from .layer_path import InternalInfluence, LayerConductance, LayerIntegratedGradients
from .layer_perturb import LayerFeatureAblation, LayerFeaturePermutation
from .layer_reference import LayerDeepLift, LayerDeepLiftShap, LayerGradientShap
from .lime import Lime, LimeBase
from .llm_attr import LLMAttribution, LLMAttributionResult, LLMGradientAttribution
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
from .stat import MSE, CommonStats, Count, Max, Mean, Min, StatValue, StdDev, Sum, Var
from .summarizer import ClassSummarizer, Summarizer, SummarizerSingleTensor

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
    "InternalAttribution",
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
    "ModelInputWrapper",
    "InputIdentity",
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
    "Summarizer",
    "SummarizerSingleTensor",
    "ClassSummarizer",
    "CommonStats",
    "StatValue",
    "Count",
    "Mean",
    "MSE",
    "Var",
    "StdDev",
    "Min",
    "Max",
    "Sum",
    "ProductBaselines",
    "InterpretableInput",
    "TextTemplateInput",
    "TextTokenInput",
    "ImageMaskInput",
    "LLMAttribution",
    "LLMGradientAttribution",
    "LLMAttributionResult",
    "DataLoaderAttribution",
    "InputRole",
]
