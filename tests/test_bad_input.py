"""Each documented misuse raises ValueError/TypeError naming the argument."""

import pytest
import torch
from models import MLP, TwoInputModel, seeded

import attribuo.attr as A

GRADIENT_METHODS = ["Saliency", "InputXGradient", "GuidedBackprop", "Deconvolution"]


@pytest.fixture(scope="module")
def mlp():
    return seeded(MLP())


@pytest.mark.parametrize("name", GRADIENT_METHODS)
def test_batch_sizes_differ_across_tuple(name):
    method = getattr(A, name)(seeded(TwoInputModel()))
    with pytest.raises(ValueError, match="`inputs`.*batch size"):
        method.attribute((torch.randn(3, 4), torch.randn(2, 3)), target=0)


@pytest.mark.parametrize("name", GRADIENT_METHODS)
@pytest.mark.parametrize(
    "target, exc, message",
    [
        (3, ValueError, "`target` index 3 is out of range"),
        ((0, 1), ValueError, "`target`.*2 indices"),
        ([0, 1], ValueError, "`target` has 2 entries"),
        (None, ValueError, "`target` must select one value per example"),
        (0.5, TypeError, "`target`"),
    ],
)
def test_bad_targets(mlp, name, target, exc, message):
    with pytest.raises(exc, match=message):
        getattr(A, name)(mlp).attribute(torch.randn(4, 6), target=target)


@pytest.mark.parametrize("name", GRADIENT_METHODS)
def test_integer_inputs_to_gradient_method(name):
    model = torch.nn.Embedding(10, 3)
    with pytest.raises(TypeError, match=r"`inputs\[0\]` has dtype torch.int64"):
        getattr(A, name)(model).attribute(torch.tensor([[1, 2]]), target=0)


def test_non_tensor_inputs_and_non_callable_model():
    with pytest.raises(TypeError, match="`inputs`"):
        A.Saliency(seeded(MLP())).attribute([[1.0] * 6], target=0)
    with pytest.raises(TypeError, match="`forward_func`"):
        A.Saliency("not a model")
