"""One registry of every public attribution method on a small CNN, for the cross-method tests.

``REGISTRY[name]`` is ``(constructor(model), kwargs of a good call, kwargs
that make the call raise)``; :func:`model` builds the CNN they run on.
"""

import torch

import attribuo.attr as A

from . import SmallCNN, seeded


def model():
    """The CNN every registry method runs on, in training mode with one frozen weight."""
    model = seeded(SmallCNN())
    model.train()  # a non-default mode that must survive
    model.conv2.weight.requires_grad_(False)
    return model


BASE = torch.zeros(2, 1, 8, 8)
QUADRANTS = torch.arange(4).reshape(1, 1, 2, 2).repeat_interleave(4, 2).repeat_interleave(4, 3)
NEURON = (1, 2, 2)


def _primary(cls, **kwargs):
    return (lambda m: cls(m), kwargs, {"target": 99})


def _layer(cls, **kwargs):
    return (lambda m: cls(m, m.conv2), kwargs, {"target": 99})


def _neuron(cls, **kwargs):
    return (lambda m: cls(m, m.conv2), {"neuron_selector": NEURON, **kwargs},
            {"neuron_selector": (99, 0, 0)})


class Attending(torch.nn.Module):
    """The registry CNN after a self-attention over the rows of its input, for the attention methods."""

    def __init__(self, cnn):
        super().__init__()
        self.cnn = cnn
        torch.manual_seed(1)
        with torch.inference_mode(False):  # built inside inference mode by some tests
            self.attention = torch.nn.MultiheadAttention(8, 2, batch_first=True)

    def forward(self, x):
        rows = x[:, 0]  # 8 tokens of 8 features
        mixed, _ = self.attention(rows, rows, rows)
        return self.cnn(x + mixed[:, None])


def _attention(cls, **kwargs):
    return (lambda m: cls(Attending(m)), kwargs, {"position": 99})


# name -> (constructor(model), kwargs of a good call, kwargs that make the call raise)
REGISTRY = {
    "Saliency": _primary(A.Saliency, target=1),
    "InputXGradient": _primary(A.InputXGradient, target=1),
    "GuidedBackprop": _primary(A.GuidedBackprop, target=1),
    "Deconvolution": _primary(A.Deconvolution, target=1),
    "IntegratedGradients": _primary(A.IntegratedGradients, target=1, n_steps=5),
    "IDGI": _primary(A.IDGI, target=1, n_steps=5),
    "GuidedIntegratedGradients": _primary(A.GuidedIntegratedGradients, target=1, n_steps=5),
    "BlurIntegratedGradients": _primary(A.BlurIntegratedGradients, target=1, n_steps=5, max_sigma=2.0),
    "NonUniformIntegratedGradients": _primary(A.NonUniformIntegratedGradients, target=1, n_steps=5),
    "GradientShap": _primary(A.GradientShap, target=1, baselines=BASE),
    "DeepLift": _primary(A.DeepLift, target=1),
    "DeepLiftShap": _primary(A.DeepLiftShap, target=1, baselines=BASE),
    "NoiseTunnel": (lambda m: A.NoiseTunnel(A.Saliency(m)), {"target": 1, "nt_samples": 3},
                    {"target": 99}),
    "FeatureAblation": _primary(A.FeatureAblation, target=1),
    "FeaturePermutation": _primary(A.FeaturePermutation, target=1),
    "Occlusion": _primary(A.Occlusion, target=1, sliding_window_shapes=(1, 2, 2)),
    "ShapleyValueSampling": _primary(A.ShapleyValueSampling, target=1, n_samples=2,
                                     feature_mask=QUADRANTS),
    "ShapleyValues": _primary(A.ShapleyValues, target=1, feature_mask=QUADRANTS),
    "PartitionShap": _primary(A.PartitionShap, target=1, feature_mask=QUADRANTS),
    "RISE": _primary(A.RISE, target=0, n_masks=8, seed=0),
    "XRAI": _primary(A.XRAI, target=0, n_steps=4),
    "SobolAttribution": _primary(A.SobolAttribution, target=1, grid_size=2, nb_design=8, seed=0),
    "Lime": _primary(A.Lime, target=1, n_samples=10, feature_mask=QUADRANTS),
    "KernelShap": _primary(A.KernelShap, target=1, n_samples=10, feature_mask=QUADRANTS),
    "LRP": _primary(A.LRP, target=1),
    "AttnLRP": (lambda m: A.AttnLRP(Attending(m)), {"target": 1}, {"target": 99}),
    "LayerAttnLRP": (lambda m: A.LayerAttnLRP(Attending(m), m.conv2), {"target": 1}, {"target": 99}),
    "AttentionRollout": _attention(A.AttentionRollout),
    "AttentionFlow": _attention(A.AttentionFlow),
    "AttentionRelevance": _attention(A.AttentionRelevance, target=1),
    "GuidedGradCam": (lambda m: A.GuidedGradCam(m, m.conv2), {"target": 1}, {"target": 99}),
    "LayerActivation": (lambda m: A.LayerActivation(m, m.conv2), {},
                        {"additional_forward_args": ("unexpected",)}),
    "LayerGradientXActivation": _layer(A.LayerGradientXActivation, target=1),
    "InternalInfluence": _layer(A.InternalInfluence, target=1, n_steps=5),
    "LayerConductance": _layer(A.LayerConductance, target=1, n_steps=5),
    "LayerIntegratedGradients": _layer(A.LayerIntegratedGradients, target=1, n_steps=5),
    "LayerGradientShap": _layer(A.LayerGradientShap, target=1, baselines=BASE),
    "LayerDeepLift": _layer(A.LayerDeepLift, target=1),
    "LayerDeepLiftShap": _layer(A.LayerDeepLiftShap, target=1, baselines=BASE),
    "LayerFeatureAblation": _layer(A.LayerFeatureAblation, target=1),
    # scalar corrupted inputs fit every batch size the hardening tests use
    "AttributionPatching": _layer(A.AttributionPatching, corrupted_inputs=0.0, target=1),
    "ActivationPatching": _layer(A.ActivationPatching, corrupted_inputs=0.0, target=1),
    "LayerFeaturePermutation": _layer(A.LayerFeaturePermutation, target=1),
    "LayerGradCam": _layer(A.LayerGradCam, target=1),
    "LayerLRP": _layer(A.LayerLRP, target=1),
    "GradCamPlusPlus": _layer(A.GradCamPlusPlus, target=1),
    "ScoreCam": _layer(A.ScoreCam, target=1),
    "XGradCam": _layer(A.XGradCam, target=1),
    "HiResCam": _layer(A.HiResCam, target=1),
    "LayerCam": _layer(A.LayerCam, target=1),
    "EigenCam": (lambda m: A.EigenCam(m, m.conv2), {}, {"additional_forward_args": ("unexpected",)}),
    "NeuronGradient": _neuron(A.NeuronGradient),
    "NeuronIntegratedGradients": _neuron(A.NeuronIntegratedGradients, n_steps=5),
    "NeuronConductance": _neuron(A.NeuronConductance, target=1, n_steps=5),
    "NeuronGradientShap": _neuron(A.NeuronGradientShap, baselines=BASE),
    "NeuronDeepLift": _neuron(A.NeuronDeepLift),
    "NeuronDeepLiftShap": _neuron(A.NeuronDeepLiftShap, baselines=BASE),
    "NeuronGuidedBackprop": _neuron(A.NeuronGuidedBackprop),
    "NeuronDeconvolution": _neuron(A.NeuronDeconvolution),
    "NeuronFeatureAblation": _neuron(A.NeuronFeatureAblation),
}
