import pytest
import torch

from attribuo._engine.errors import ArgumentTypeError, ArgumentValueError
from attribuo._engine.targets import parse_target

OUT2 = torch.arange(12.0).reshape(4, 3)
OUT3 = torch.arange(24.0).reshape(2, 3, 4)


@pytest.mark.parametrize(
    "target, expected",
    [
        (None, OUT2),
        (1, OUT2[:, 1]),
        (-1, OUT2[:, 2]),
        (torch.tensor(2), OUT2[:, 2]),
        (torch.tensor([2]), OUT2[:, 2]),
        (torch.tensor([0, 1, 2, 0]), torch.tensor([0.0, 4.0, 8.0, 9.0])),
        ([0, 1, 2, 0], torch.tensor([0.0, 4.0, 8.0, 9.0])),
        ((1,), OUT2[:, 1]),
    ],
)
def test_two_dim_output_forms(target, expected):
    assert torch.equal(parse_target(target, 4).select(OUT2).reshape(expected.shape), expected)


def test_tuple_and_list_of_tuples_on_3d_output():
    assert torch.equal(parse_target((2, 3), 2).select(OUT3), OUT3[:, 2, 3])
    picked = parse_target([(0, 1), (2, 3)], 2).select(OUT3)
    assert torch.equal(picked, torch.stack([OUT3[0, 0, 1], OUT3[1, 2, 3]]))
    # a partial tuple keeps the remaining dims, as Captum does
    assert parse_target((1,), 2).select(OUT3).shape == (2, 4)


def test_repeat_and_interleave_follow_expansion_order():
    t = parse_target([0, 2], 2)
    assert t.repeat(3).per_example.flatten().tolist() == [0, 2, 0, 2, 0, 2]
    assert t.repeat(3, interleave=True).per_example.flatten().tolist() == [0, 0, 0, 2, 2, 2]
    shared = parse_target(1, 2)
    assert shared.repeat(5) is shared


@pytest.mark.parametrize(
    "target, message",
    [
        (3, "out of range"),
        ((1, 1), "indices"),
        ([0, 1, 5, 0], "out of range"),
    ],
)
def test_out_of_range_and_too_many_indices(target, message):
    with pytest.raises(ValueError, match=message) as info:
        parse_target(target, 4).select(OUT2)
    assert "`target`" in str(info.value)


def test_list_of_wrong_length_names_target():
    with pytest.raises(ValueError, match="`target` has 3 entries"):
        parse_target([0, 1, 2], 4)


@pytest.mark.parametrize("bad", [1.5, "a", [0.5, 1.0], torch.tensor([0.5])])
def test_wrong_types_raise_type_error(bad):
    with pytest.raises(TypeError, match="`target`"):
        parse_target(bad, None)


def test_errors_are_also_assertion_errors_for_captum_callers():
    assert issubclass(ArgumentValueError, AssertionError)
    assert issubclass(ArgumentTypeError, AssertionError)
