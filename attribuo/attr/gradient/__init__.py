"""Gradient methods: plain, modified-backward, path-integrated and sampled gradients.

Saliency, InputXGradient, GuidedBackprop, Deconvolution, IntegratedGradients,
GradientShap, NoiseTunnel (any method averaged over noisy inputs), DeepLift
and DeepLiftShap (with their Rescale rules in :mod:`.deeplift_rules`).
"""

from .deeplift import DeepLift, DeepLiftShap
from .gradient_shap import GradientShap, InputBaselineXGradient
from .guided_backprop import Deconvolution, GuidedBackprop
from .input_x_gradient import InputXGradient
from .integrated_gradients import IntegratedGradients
from .noise_tunnel import NoiseTunnel
from .saliency import Saliency

__all__ = [
    "Deconvolution",
    "DeepLift",
    "DeepLiftShap",
    "GradientShap",
    "GuidedBackprop",
    "InputBaselineXGradient",
    "InputXGradient",
    "IntegratedGradients",
    "NoiseTunnel",
    "Saliency",
]
