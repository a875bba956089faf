"""KernelShap: seeded coalitions do not depend on the rest of the batch."""

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
