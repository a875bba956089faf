"""Saliency, InputXGradient, GuidedBackprop and Deconvolution against Captum 0.9.0."""

import warnings

import captum.attr as captum_attr
import pytest
import torch
from models import MLP, SequenceOutputModel, SmallCNN, TwoInputModel, seeded

import attribuo.attr as attribuo_attr

METHODS = [
    ("Saliency", {}),
    ("Saliency", {"abs": False}),
    ("InputXGradient", {}),
    ("GuidedBackprop", {}),
    ("Deconvolution", {}),
]


def _cases():
    torch.manual_seed(1)
    mlp = seeded(MLP())
    cnn = seeded(SmallCNN())
    two = seeded(TwoInputModel())
    seq = seeded(SequenceOutputModel())
    x_mlp = torch.randn(4, 6)
    x_cnn = torch.randn(4, 1, 8, 8)
    x_two = (torch.randn(4, 4), torch.randn(4, 3))
    x_seq = torch.randn(4, 5)
    two_dim_targets = [0, torch.tensor(2), torch.tensor([1]), torch.tensor([0, 1, 2, 1]), [2, 0, 1, 1]]
    for t in two_dim_targets:
        yield "mlp", mlp, x_mlp, t, None
        yield "cnn", cnn, x_cnn, t, None
        yield "two_inputs", two, x_two, t, 0.5
    for t in [(1, 2), [(0, 1), (3, 2), (2, 0), (1, 1)]]:
        yield "seq_output", seq, x_seq, t, None


CASES = list(_cases())


@pytest.mark.parametrize("method, kwargs", METHODS, ids=lambda v: str(v))
@pytest.mark.parametrize("case", range(len(CASES)))
def test_matches_captum(method, kwargs, case):
    name, model, inputs, target, extra = CASES[case]
    ours = getattr(attribuo_attr, method)(model).attribute(
        inputs, target=target, additional_forward_args=extra, **kwargs
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = getattr(captum_attr, method)(model).attribute(
            inputs, target=target, additional_forward_args=extra, **kwargs
        )
    assert type(ours) is type(theirs)
    for a, b in zip(ours if isinstance(ours, tuple) else (ours,), theirs if isinstance(theirs, tuple) else (theirs,)):
        torch.testing.assert_close(a, b.detach(), atol=1e-6, rtol=0)
