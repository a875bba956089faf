"""ModelInputWrapper: transparent, and its identity layers stand for the inputs."""

import inspect

import numpy as np
import pytest
import torch

import attribuo.attr as A
import attribuo.attr as A_
from attribuo.attr import LayerIntegratedGradients, ModelInputWrapper


class _TwoInputs(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 1)

    def forward(self, x, y):
        return self.lin(x * y)


def test_model_input_wrapper_is_transparent_and_exposes_inputs_as_layers():
    torch.manual_seed(0)
    model = _TwoInputs().double()
    wrapped = ModelInputWrapper(model)
    x, y = torch.rand(2, 3, dtype=torch.float64), torch.rand(2, 3, dtype=torch.float64)
    torch.testing.assert_close(wrapped(x, y), model(x, y))
    torch.testing.assert_close(wrapped(x, y=y), model(x, y))
    assert set(wrapped.input_maps) == {"x", "y"}
    # attributing to the identity layer of `x` is attributing to `x` itself
    lig = LayerIntegratedGradients(wrapped, wrapped.input_maps["x"])
    attr = lig.attribute((x, y), target=0, n_steps=20)
    completeness = wrapped(x, y)[:, 0] - (wrapped(torch.zeros_like(x), y)[:, 0])
    torch.testing.assert_close(attr.sum(1), completeness, atol=1e-6, rtol=0)
    # linear in x: IG = x * w * y exactly
    torch.testing.assert_close(attr, x * y * model.lin.weight.detach()[0], atol=1e-10, rtol=0)


class _FourInputs(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 2)

    def forward(self, x1, x2, x3, x4):
        return self.lin(torch.relu(x1 + 2 * x2 - x3) * x4)


def _seed(k):
    torch.manual_seed(k)
    np.random.seed(k)  # GradientShap draws its alphas from numpy, as Captum does


class _OneInput(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 2)

    def forward(self, x):
        return self.lin(torch.relu(x - 0.3))


@pytest.mark.parametrize("layer_cls,primary_cls,multi", [
    (A_.LayerIntegratedGradients, A_.IntegratedGradients, True),
    (A_.LayerIntegratedGradients, A_.IntegratedGradients, False),
    (A_.LayerGradientXActivation, A_.InputXGradient, True),
    (A_.LayerGradientXActivation, A_.InputXGradient, False),
    (A_.LayerFeatureAblation, A_.FeatureAblation, False),
    (A_.LayerDeepLift, A_.DeepLift, False),
    (A_.LayerDeepLiftShap, A_.DeepLiftShap, False),
    (A_.LayerGradientShap, A_.GradientShap, False),
])
def test_layer_method_on_wrapped_inputs_equals_primary_method(layer_cls, primary_cls, multi):
    # as Captum's test_input_layer_wrapper: identity layers of a ModelInputWrapper stand
    # for the inputs, so a layer method on them gives the primary method's attributions
    torch.manual_seed(0)
    names = ["x1", "x2", "x3", "x4"] if multi else ["x"]
    model = ModelInputWrapper((_FourInputs() if multi else _OneInput()).double())
    layers = [model.input_maps[n] for n in names]
    xs = tuple(torch.rand(5, 3, dtype=torch.float64) for _ in names)
    args = [xs]
    if "baselines" in inspect.getfullargspec(primary_cls.attribute.__wrapped__).args:
        args.append(tuple(torch.zeros(5, 3, dtype=torch.float64) for _ in names))
    lm = layer_cls(model, layers if multi else layers[0])
    results = []
    for kwargs in ({}, {"attribute_to_layer_input": True}):
        _seed(1)
        got = lm.attribute(*args, target=0, **kwargs)
        results.append(tuple(got) if isinstance(got, (tuple, list)) else (got,))
    _seed(1)
    expected = primary_cls(model).attribute(*args, target=0)
    expected = expected if isinstance(expected, tuple) else (expected,)
    for got in results:
        torch.testing.assert_close(got, expected)


def test_internal_attribution_and_wrapper_exported():
    assert issubclass(A.LayerAttribution, A.InternalAttribution)
    from attribuo.attr._utils.input_layer_wrapper import ModelInputWrapper

    assert ModelInputWrapper is A.ModelInputWrapper
