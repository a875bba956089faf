"""Attribution methods: primary, layer and neuron, with Captum's names and arguments."""

from .base import (
    Attribution,
    GradientAttribution,
    LayerAttribution,
    NeuronAttribution,
    PerturbationAttribution,
)
from .gradient import InputXGradient, Saliency
from .guided import Deconvolution, GuidedBackprop

__all__ = [
    "Attribution",
    "GradientAttribution",
    "PerturbationAttribution",
    "LayerAttribution",
    "NeuronAttribution",
    "Saliency",
    "InputXGradient",
    "GuidedBackprop",
    "Deconvolution",
]
