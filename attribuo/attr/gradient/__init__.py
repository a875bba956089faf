"""Gradient methods: plain, modified-backward, path-integrated and sampled gradients.

Saliency, InputXGradient, GuidedBackprop, Deconvolution, IntegratedGradients,
GradientShap, NoiseTunnel (any method averaged over noisy inputs), DeepLift
and DeepLiftShap (with their Rescale rules in :mod:`.deeplift_rules`); the
path variants IDGI, GuidedIntegratedGradients, BlurIntegratedGradients and
NonUniformIntegratedGradients; XRAI (regions ranked by their
Integrated Gradients density).
"""

from .blur_ig import BlurIntegratedGradients
from .deeplift import DeepLift, DeepLiftShap
from .gradient_shap import GradientShap, InputBaselineXGradient
from .guided_backprop import Deconvolution, GuidedBackprop
from .guided_ig import GuidedIntegratedGradients
from .idgi import IDGI
from .input_x_gradient import InputXGradient
from .integrated_gradients import IntegratedGradients
from .noise_tunnel import NoiseTunnel
from .path_sampling import NonUniformIntegratedGradients
from .saliency import Saliency
from .xrai import XRAI

__all__ = [
    "BlurIntegratedGradients",
    "Deconvolution",
    "DeepLift",
    "DeepLiftShap",
    "GradientShap",
    "GuidedBackprop",
    "GuidedIntegratedGradients",
    "IDGI",
    "InputBaselineXGradient",
    "InputXGradient",
    "IntegratedGradients",
    "NoiseTunnel",
    "NonUniformIntegratedGradients",
    "Saliency",
    "XRAI",
]
