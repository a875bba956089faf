"""Neuron attribution: a primary algorithm explaining one neuron of a layer.

Each class runs its primary method on the neuron's activation picked by
``neuron_selector`` (:mod:`.selectors`) instead of the model output picked
by ``target``.
"""

from .conductance import NeuronConductance
from .deeplift import NeuronDeepLift, NeuronDeepLiftShap
from .gradient import (
    NeuronDeconvolution,
    NeuronGradient,
    NeuronGradientShap,
    NeuronGuidedBackprop,
    NeuronIntegratedGradients,
)
from .perturbation import NeuronFeatureAblation

__all__ = [
    "NeuronConductance",
    "NeuronDeconvolution",
    "NeuronDeepLift",
    "NeuronDeepLiftShap",
    "NeuronFeatureAblation",
    "NeuronGradient",
    "NeuronGradientShap",
    "NeuronGuidedBackprop",
    "NeuronIntegratedGradients",
]
