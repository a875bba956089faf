"""Feature visualizations (the JSON the page draws) and the method registry's checks."""

from __future__ import annotations

import pytest
import torch

from attribuo._engine.errors import ArgumentTypeError, ArgumentValueError
from attribuo.insights import Batch, GeneralFeature, ImageFeature, TextFeature
from attribuo.insights.features import EmptyFeature, format_transforms
from attribuo.insights.methods import Param, RequestError, find_method, parse_shape


def test_image_heat_map_sums_channels_and_scales_by_max():
    attr = torch.tensor([[[[1.0, -2.0], [0.5, 0.0]], [[1.0, -2.0], [-0.5, 0.0]]]], dtype=torch.float64)
    data = torch.tensor([[0.0, 1.0], [0.5, 0.25]]).expand(1, 3, 2, 2)  # RGB in [0, 1]
    out = ImageFeature("Photo", None, None).visualize(attr, data, 0.25)
    assert out.type == "image" and out.name == "Photo" and out.contribution == 0.25
    assert out.modified["values"] == [0.5, -1.0, 0.0, 0.0]  # channel sums / max |sum| (4)
    assert out.modified["scale"] == 4.0
    assert out.base["channels"] == 3 and len(out.base["pixels"]) == 12
    assert out.base["pixels"][:3] == [0, 0, 0] and out.base["pixels"][3:6] == [255, 255, 255]


def test_image_pixels_outside_unit_range_are_min_max_scaled():
    data = torch.tensor([[[-1.0, 1.0], [0.0, 3.0]]])  # 1x2x2 grey
    out = ImageFeature("x", None, None, visualization_transform=lambda t: t * 2).visualize(
        torch.zeros(1, 2, 2), data, 0.0)
    assert out.base["pixels"] == [0, 128, 64, 255]  # (2x + 2) / 8 of the transformed data
    assert out.modified["values"] == [0.0] * 4  # zero attribution stays zero, no division


def test_image_shape_errors_name_the_problem():
    feature = ImageFeature("x", None, None)
    with pytest.raises(ArgumentValueError, match="1 \\(grey\\) or 3 \\(RGB\\) channels"):
        feature.visualize(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4), 0.0)
    with pytest.raises(ArgumentValueError, match="spatial shape"):
        feature.visualize(torch.zeros(1, 1, 3, 3), torch.zeros(1, 1, 4, 4), 0.0)


def test_text_tokens_coloured_by_summed_embedding_attribution():
    feature = TextFeature("Review", None, None, lambda ids: "a great film")
    attr = torch.tensor([[[1.0, 1.0], [-4.0, 0.0], [1.0, 0.0]]])  # 1 x tokens x embedding
    out = feature.visualize(attr, torch.tensor([[1, 2, 3]]), -0.5)
    assert out.base == ["a", "great", "film"]
    assert out.modified == [50.0, -100.0, 25.0]


def test_general_feature_bars_scaled_by_l2_norm():
    out = GeneralFeature("Vitals", ["a", "b", "c"]).visualize(
        torch.tensor([[2.0, -1.0, 2.0]]), torch.tensor([[1.0, 2.5, 3.0]]), 1.0)
    assert out.base == ["a: 1.00", "b: 2.50", "c: 3.00"]
    assert out.modified == pytest.approx([200 / 3, -100 / 3, 200 / 3])
    with pytest.raises(ArgumentValueError, match="3 categories"):
        GeneralFeature("Vitals", ["a", "b", "c"]).visualize(torch.zeros(1, 2), torch.zeros(1, 2), 0.0)


def test_empty_feature_and_transform_forms():
    assert EmptyFeature().visualize(None, None, 0.3).contribution == 0.3
    assert format_transforms(None, "t") == [] and format_transforms(abs, "t") == [abs]
    with pytest.raises(ArgumentTypeError, match="`input_transforms`"):
        ImageFeature("x", None, input_transforms=[abs, 3])
    with pytest.raises(ArgumentTypeError, match="`categories`"):
        GeneralFeature("x", "abc")


def test_batch_keeps_its_fields():
    b = Batch((torch.zeros(2, 3),), torch.tensor([0, 1]), additional_args=5)
    assert b.inputs[0].shape == (2, 3) and b.labels.tolist() == [0, 1] and b.additional_args == 5


@pytest.mark.parametrize("value,expected", [
    ("1,3,3", ((1, 3, 3),)), ("1 3 3", ((1, 3, 3),)), (" 2, 2 ; 4 ", ((2, 2), (4,))), ("", None),
])
def test_shape_parsing(value, expected):
    assert parse_shape(value, "x") == expected


@pytest.mark.parametrize("value", ["1,-3", "0,1", "1.5", "a", ";", 7, "1," * 200])
def test_shape_parsing_rejects(value):
    with pytest.raises(RequestError):
        parse_shape(value, "x")


def test_param_checks():
    p = Param("stdevs", "float", 0.1, minimum=0.0, maximum=1.0)
    assert p.parse(1) == 1.0 and isinstance(p.parse(1), float)
    for bad in (float("nan"), float("inf"), -0.1, 1.5, True, None, "0.5"):
        with pytest.raises(RequestError, match="`stdevs`"):
            p.parse(bad)
    assert find_method("Integrated Gradients").id == "IntegratedGradients"  # Captum's label too
