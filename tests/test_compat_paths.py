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
