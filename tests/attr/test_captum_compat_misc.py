"""Regressions found by running Captum's own tests (targets, LRP, FeaturePermutation)."""

import torch
from torch import nn

import attribuo.attr as A


def test_kernel_shap_seeded_batch_equals_examples_one_by_one():
    # the coalitions of one example must not depend on the rest of the batch
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2)).double()
    x = torch.rand(3, 4, dtype=torch.float64)
    ks = A.KernelShap(model)
    torch.manual_seed(5)
    batched = ks.attribute(x, target=1, n_samples=30)
    torch.manual_seed(5)
    single = torch.cat([ks.attribute(x[i:i + 1], target=1, n_samples=30) for i in range(3)])
    torch.testing.assert_close(batched, single)


class _Add(nn.Module):
    def forward(self, a, b):
        return a + b


class _Skip(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(2, 2, bias=False)
        self.linear.weight.data.fill_(5.0)
        self.add = _Add()

    def forward(self, x):
        return self.add(self.linear(x), x)


def test_lrp_rule_module_with_two_inputs_on_a_skip_connection():
    # out_1 = 5*2 + 5*3 + 3 = 28; the add splits 25 : 3, the linear gives 5 * x_j of its 25
    model = _Skip()
    model.add.rule = A.lrp_rules.EpsilonRule()
    rel, delta = A.LRP(model).attribute(torch.tensor([[2.0, 3.0]]), target=1,
                                       return_convergence_delta=True)
    torch.testing.assert_close(rel, torch.tensor([[10.0, 18.0]]))
    assert abs(float(delta)) < 1e-5
    assert model.add.rule is not None and not model.linear._forward_hooks


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


def test_internal_attribution_and_wrapper_exported():
    assert issubclass(A.LayerAttribution, A.InternalAttribution)
    from attribuo.attr._utils.input_layer_wrapper import ModelInputWrapper

    assert ModelInputWrapper is A.ModelInputWrapper
