"""Captum's internal import paths resolve to attribuo's public classes."""

import importlib

import pytest

import attribuo.attr as A
import attribuo.metrics as M


@pytest.mark.parametrize(
    "path, name, expected",
    [
        ("attribuo.attr._core.saliency", "Saliency", A.Saliency),
        ("attribuo.attr._core.guided_backprop_deconvnet", "Deconvolution", A.Deconvolution),
        ("attribuo.attr._utils.attribution", "LayerAttribution", A.LayerAttribution),
        ("attribuo.attr._utils.visualization", "visualize_text", A.visualization.visualize_text),
        ("attribuo.metrics._core.infidelity", "infidelity", M.infidelity),
    ],
)
def test_captum_paths(path, name, expected):
    assert getattr(importlib.import_module(path), name) is expected


def test_unknown_names_and_paths_still_fail():
    with pytest.raises(ImportError):
        exec("from attribuo.attr._core.saliency import NotAThing")
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("attribuo.attr._core.not_a_module")


@pytest.mark.parametrize(
    "path, name, module",
    [
        ("attribuo.attr.lrp_rules", "EpsilonRule", "attribuo.attr.relevance.rules"),
        ("attribuo.attr.lrp_composites", "MergeBatchNorm", "attribuo.attr.relevance"),
        ("attribuo.attr.layer_reference", "LayerInputBaselineXGradient", "attribuo.attr.layer"),
        ("attribuo.attr.gradient_shap", "InputBaselineXGradient", "attribuo.attr.gradient"),
        ("attribuo.attr.lime", "default_perturb_func", "attribuo.attr.perturbation.lime"),
        ("attribuo.attr.stat", "GeneralAccumFn", "attribuo.attr.utils.stat"),
        ("attribuo._utils.models", "SkLearnLasso", "attribuo.attr.perturbation.linear_models"),
        ("attribuo.attr._utils.lrp_rules", "GammaRule", "attribuo.attr.relevance.rules"),
    ],
)
def test_earlier_flat_paths_resolve_to_the_family_packages(path, name, module):
    assert getattr(importlib.import_module(path), name) is getattr(importlib.import_module(module), name)
