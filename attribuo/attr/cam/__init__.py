"""Class activation maps: a layer's channels weighted into one map.

:class:`~.activation_map.ClassActivationMap` is the shared body; each
variant only says how it weights the channels (gradient-weighted:
LayerGradCam, GradCamPlusPlus, XGradCam, HiResCam, LayerCam; gradient-free:
ScoreCam, EigenCam). GuidedGradCam multiplies GradCAM by guided backprop.
"""

from .activation_map import ClassActivationMap, token_grid
from .eigen_cam import EigenCam
from .gradient_weighted import GradCamPlusPlus, HiResCam, LayerCam, LayerGradCam, XGradCam
from .guided_grad_cam import GuidedGradCam
from .score_cam import ScoreCam

__all__ = [
    "ClassActivationMap",
    "EigenCam",
    "GradCamPlusPlus",
    "GuidedGradCam",
    "HiResCam",
    "LayerCam",
    "LayerGradCam",
    "ScoreCam",
    "XGradCam",
    "token_grid",
]
