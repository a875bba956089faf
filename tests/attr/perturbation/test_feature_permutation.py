"""FeaturePermutation: side inputs are shuffled along their own length."""

import pytest
import torch
from torch import nn

import attribuo.attr as A


class _Sparse(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 1)

    def forward(self, x, ids):
        return (self.lin(x) + (ids[0] if ids.numel() else 0)).sum()


def test_feature_permutation_shuffles_a_side_input_along_its_own_length():
    torch.manual_seed(0)
    model = _Sparse()
    x = torch.tensor([[1.0, -2.0, 3.0], [2.0, -1.0, 3.0]])
    ids = torch.tensor([1, 7, 2, 4, 5, 3, 6])
    fp = A.FeaturePermutation(model)
    total = torch.zeros(1)
    for _ in range(200):
        a_x, a_ids = fp.attribute((x, ids))
        total += a_ids
        assert a_x.shape == (1, 3) and a_ids.shape == (1,)
    # the output sums ids[0] over 2 examples: f(ids) - f(permuted) = 2 (1 - ids[perm[0]]),
    # perm[0] is ~uniform over 7 positions (mean id 4): expectation ~ 2 (1 - 4) = -6
    mean = float(total) / 200
    assert -7.0 < mean < -5.0
    empty = fp.attribute((x, torch.tensor([])))
    assert empty[1].shape == (1,)


def test_features_in_inputs_with_too_few_rows_are_skipped_as_in_captum():
    def total(a, b):
        return a.sum(1)

    a, b = torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0, 4.0], [5.0, 6.0]])
    method = A.FeaturePermutation(total)
    with pytest.warns(UserWarning, match="fewer than 2 examples"):
        attr = method.attribute((a, b), feature_mask=(torch.tensor([0, 0]), torch.tensor([[0, 1]])))
    assert torch.equal(attr[0], torch.zeros(1, 2)) and attr[1][:, 0].eq(0).all()
    method._min_examples_per_batch_grouped = 1  # Captum's knob: now a batch of 1 must be permuted
    with pytest.raises(ValueError, match="batch_size = 1"):
        method.attribute(a)
