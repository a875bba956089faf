import pytest
import torch

from attribuo._engine.baselines import full_baselines
from attribuo._engine.batching import chunk_ranges, chunk_size
from attribuo._engine.inputs import (
    as_tuple,
    batch_size,
    expand_additional_args,
    format_additional_args,
    restore_form,
)


def test_form_round_trip():
    x = torch.zeros(2, 3)
    assert as_tuple(x) == (x,)
    assert restore_form(False, (x,)) is x
    assert restore_form(True, (x,)) == (x,)


def test_batch_mismatch_names_inputs():
    with pytest.raises(ValueError, match="`inputs`.*same batch size"):
        batch_size((torch.zeros(2, 3), torch.zeros(3, 3)))


def test_non_tensor_input_names_position():
    with pytest.raises(TypeError, match=r"`inputs\[1\]`"):
        as_tuple((torch.zeros(1), [1.0]))


def test_additional_args_expand_only_batched_tensors():
    batched, other = torch.arange(2.0).reshape(2, 1), torch.ones(5)
    args = format_additional_args((batched, other, "text", 3))
    out = expand_additional_args(args, batch=2, times=3)
    assert out[0].flatten().tolist() == [0, 1, 0, 1, 0, 1]
    assert out[1] is other and out[2] == "text" and out[3] == 3
    inter = expand_additional_args(args, batch=2, times=3, interleave=True)
    assert inter[0].flatten().tolist() == [0, 0, 0, 1, 1, 1]
    assert format_additional_args(None) == ()
    assert format_additional_args(batched) == (batched,)


def test_baseline_forms():
    x = torch.rand(3, 2, 4, dtype=torch.float64)
    zeros, number, one_example, full = full_baselines(
        (x, x, x, x), (None, 0.5, torch.ones(2, 4), torch.full((3, 2, 4), 2.0))
    )
    assert torch.equal(zeros, torch.zeros_like(x))
    assert torch.equal(number, torch.full_like(x, 0.5)) and number.dtype == torch.float64
    assert torch.equal(one_example, torch.ones_like(x))
    assert torch.equal(full, torch.full_like(x, 2.0)) and full.dtype == torch.float64
    with pytest.raises(ValueError, match="`baselines`"):
        full_baselines((x,), torch.ones(5, 5))
    with pytest.raises(ValueError, match="2 entries"):
        full_baselines((x,), (0.0, 0.0))


def test_chunking():
    assert list(chunk_ranges(7, 3)) == [(0, 3), (3, 6), (6, 7)]
    assert chunk_size(10, 1, items=4) == 4
    assert chunk_size(10, 1 << 40) == 1  # huge copies: one item at a time
    assert chunk_size(10, 8) == 10  # tiny copies: everything at once
    with pytest.raises(ValueError, match="`internal_batch_size`"):
        chunk_size(10, 1, items=0)
