"""Parity with Captum 0.9.0: LRP (every rule), LayerLRP, LayerGradCam, GuidedGradCam."""

from __future__ import annotations

import pytest
import torch
from captum.attr import LRP as CaptumLRP
from captum.attr import GuidedGradCam as CaptumGuidedGradCam
from captum.attr import LayerGradCam as CaptumLayerGradCam
from captum.attr import LayerLRP as CaptumLayerLRP
from captum.attr._utils import lrp_rules as captum_rules
from captum.attr._utils.custom_modules import Addition_Module
from models.lrp_cam import ResCNN, mlp
from torch import nn

from attribuo.attr import LRP, GuidedGradCam, LayerGradCam, LayerLRP
from attribuo.attr import lrp_rules as ours

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

ATOL = 1e-10


def _models():
    torch.manual_seed(3)
    return {
        "mlp": (mlp(), torch.randn(5, 6, dtype=torch.float64)),
        "rescnn": (ResCNN(adder=Addition_Module()), torch.randn(3, 2, 6, 6, dtype=torch.float64)),
    }


MODELS = _models()

# rule name -> (which layers, factory for captum, factory for attribuo)
RULES = {
    "default": ((), None, None),
    "epsilon": ((nn.Linear, nn.Conv2d), lambda: captum_rules.EpsilonRule(0.1), lambda: ours.EpsilonRule(0.1)),
    "gamma": ((nn.Linear, nn.Conv2d), lambda: captum_rules.GammaRule(0.4), lambda: ours.GammaRule(0.4)),
    "gamma_nobias": (
        (nn.Linear, nn.Conv2d),
        lambda: captum_rules.GammaRule(set_bias_to_zero=True),
        lambda: ours.GammaRule(set_bias_to_zero=True),
    ),
    "alpha1beta0": ((nn.Linear, nn.Conv2d), captum_rules.Alpha1_Beta0_Rule, ours.Alpha1_Beta0_Rule),
    "alpha1beta0_nobias": (
        (nn.Linear, nn.Conv2d),
        lambda: captum_rules.Alpha1_Beta0_Rule(True),
        lambda: ours.Alpha1_Beta0_Rule(True),
    ),
    "identity_bn": ((nn.BatchNorm2d,), captum_rules.IdentityRule, ours.IdentityRule),
}


def _set_rules(model: nn.Module, types: tuple, factory) -> None:
    for m in model.modules():
        if types and isinstance(m, types):
            m.rule = factory()


def _clear_rules(model: nn.Module) -> None:
    for m in model.modules():
        if hasattr(m, "rule"):
            del m.rule


@pytest.mark.parametrize("rule", list(RULES))
@pytest.mark.parametrize("name", list(MODELS))
def test_lrp_matches_captum_under_every_rule(name, rule):
    model, x = MODELS[name]
    types, captum_factory, our_factory = RULES[rule]
    target = [0, 2, 1, 0, 2][: x.shape[0]]
    _set_rules(model, types, captum_factory)  # captum deletes rules after each call
    expected, expected_delta = CaptumLRP(model).attribute(x, target=target, return_convergence_delta=True)
    _clear_rules(model)
    _set_rules(model, types, our_factory)
    try:
        got, delta = LRP(model).attribute(x, target=target, return_convergence_delta=True)
    finally:
        _clear_rules(model)
    torch.testing.assert_close(got, expected.detach(), atol=ATOL, rtol=0)
    torch.testing.assert_close(delta, expected_delta.detach(), atol=ATOL, rtol=0)


LAYERS = {
    "mlp": ["0", "3", "5"],
    "rescnn": ["conv1", "bn1", "conv3", "adder", "avg", "fc"],
}


@pytest.mark.parametrize("to_input", [False, True])
@pytest.mark.parametrize("name", list(MODELS))
def test_layer_lrp_matches_captum(name, to_input):
    model, x = MODELS[name]
    for layer_name in LAYERS[name]:
        if to_input and layer_name == "adder":
            continue  # captum returns an unusable list for two-input layers
        layer = model.get_submodule(layer_name)
        expected, expected_delta = CaptumLayerLRP(model, layer).attribute(
            x, target=1, attribute_to_layer_input=to_input, return_convergence_delta=True
        )
        got, delta = LayerLRP(model, layer).attribute(
            x, target=1, attribute_to_layer_input=to_input, return_convergence_delta=True
        )
        torch.testing.assert_close(got, expected.detach(), atol=ATOL, rtol=0)
        torch.testing.assert_close(delta, expected_delta.detach(), atol=ATOL, rtol=0)


def test_layer_lrp_list_of_layers_matches_captum():
    model, x = MODELS["rescnn"]
    layers = [model.conv1, model.conv2, model.fc]
    expected, expected_delta = CaptumLayerLRP(model, layers).attribute(x, target=0, return_convergence_delta=True)
    got, delta = LayerLRP(model, layers).attribute(x, target=0, return_convergence_delta=True)
    for g, e, d, ed in zip(got, expected, delta, expected_delta):
        torch.testing.assert_close(g, e.detach(), atol=ATOL, rtol=0)
        torch.testing.assert_close(d, ed.detach(), atol=ATOL, rtol=0)


GRADCAM_CASES = [
    ("rescnn", "conv1", {}),
    ("rescnn", "bn3", {"relu_attributions": True}),
    ("rescnn", "relu3", {"attr_dim_summation": False}),
    ("rescnn", "conv2", {"attribute_to_layer_input": True}),
    ("rescnn", "adder", {"attribute_to_layer_input": True}),
    ("mlp", "3", {}),
    ("mlp", "4", {"relu_attributions": True, "attr_dim_summation": False}),
]


@pytest.mark.parametrize("name,layer_name,kwargs", GRADCAM_CASES)
def test_layer_grad_cam_matches_captum(name, layer_name, kwargs):
    model, x = MODELS[name]
    layer = model.get_submodule(layer_name)
    target = torch.tensor([2, 0, 1, 1, 0][: x.shape[0]])
    expected = CaptumLayerGradCam(model, layer).attribute(x, target=target, **kwargs)
    got = LayerGradCam(model, layer).attribute(x, target=target, **kwargs)
    if isinstance(expected, tuple):
        assert isinstance(got, tuple) and len(got) == len(expected)
        for g, e in zip(got, expected):
            torch.testing.assert_close(g, e.detach(), atol=ATOL, rtol=0)
    else:
        torch.testing.assert_close(got, expected.detach(), atol=ATOL, rtol=0)


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
@pytest.mark.parametrize("layer_name", ["conv1", "relu3", "pool"])
def test_guided_grad_cam_matches_captum(layer_name, mode):
    model, x = MODELS["rescnn"]
    layer = model.get_submodule(layer_name)
    expected = CaptumGuidedGradCam(model, layer).attribute(x, target=1, interpolate_mode=mode)
    got = GuidedGradCam(model, layer).attribute(x, target=1, interpolate_mode=mode)
    torch.testing.assert_close(got, expected.detach(), atol=ATOL, rtol=0)


def test_guided_grad_cam_on_mlp_warns_and_returns_empty_like_captum():
    model, x = MODELS["mlp"]
    expected = CaptumGuidedGradCam(model, model[3]).attribute(x, target=1)
    with pytest.warns(UserWarning):
        got = GuidedGradCam(model, model[3]).attribute(x, target=1)
    assert got.numel() == 0 and expected.numel() == 0


class _Conv1dNet(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(5)
        self.conv = nn.Conv1d(2, 3, 3)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool1d(2)
        self.fc = nn.Linear(9, 2)
        self.double()

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.relu(self.conv(x))), 1))


class _Conv3dNet(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(6)
        self.conv = nn.Conv3d(1, 2, 2)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool3d(2)
        self.fc = nn.Linear(2, 2)
        self.double()

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.relu(self.conv(x))), 1))


@pytest.mark.parametrize(
    "net,shape", [(_Conv1dNet, (3, 2, 8)), (_Conv3dNet, (2, 1, 3, 3, 3))], ids=["conv1d", "conv3d"]
)
def test_lrp_conv1d_conv3d_match_captum_with_explicit_rules(net, shape):
    # captum has no default rule for Conv1d/Conv3d; with the rule set explicitly it works
    model = net()
    x = torch.randn(*shape, dtype=torch.float64)
    model.conv.rule = captum_rules.GammaRule()
    expected = CaptumLRP(model).attribute(x, target=1)
    model.conv.rule = ours.GammaRule()
    got = LRP(model).attribute(x, target=1)
    del model.conv.rule
    torch.testing.assert_close(got, expected.detach(), atol=ATOL, rtol=0)
    torch.testing.assert_close(LRP(model).attribute(x, target=1), LRP(model).attribute(x, target=1))


def test_functional_residual_sum_is_handled_where_captum_double_counts():
    # with captum's Addition_Module both libraries agree; with a plain `+` captum
    # passes the full relevance to both summands, attribuo still splits it
    model_module, x = MODELS["rescnn"]
    model_plus = ResCNN()
    model_plus.load_state_dict(model_module.state_dict())
    with_module = CaptumLRP(model_module).attribute(x, target=0).detach()
    torch.testing.assert_close(LRP(model_plus).attribute(x, target=0), with_module, atol=ATOL, rtol=0)
    captum_plus = CaptumLRP(model_plus).attribute(x, target=0).detach()
    assert (captum_plus - with_module).abs().max() > 1e-3
