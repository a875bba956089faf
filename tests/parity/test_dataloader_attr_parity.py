"""DataLoaderAttribution against Captum 0.9.0.

Captum reads batches that are lists (the default collate of a TensorDataset);
batches that are tuples or bare tensors are not handled correctly there, so
parity is checked on list batches only (tests/attr covers the others).
"""

import warnings

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

captum_attr = pytest.importorskip("captum.attr")

import attribuo.attr as ours  # noqa: E402

warnings.filterwarnings("ignore")
DT = torch.float64


def _setup():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 2)).double()
    x = torch.randn(11, 6, dtype=DT)
    extra = torch.randn(11, 2, dtype=DT)
    y = torch.randint(0, 2, (11,))
    return model, x, extra, y


def _acc_reduce(accum, output, inputs):
    correct = (output.argmax(1) == inputs[-1]).sum()
    margin = (output[:, 1] - output[:, 0]).sum()
    new = torch.stack([correct.to(DT), margin, torch.tensor(float(len(output)), dtype=DT)])
    return new if accum is None else accum + new


def _two_input_model(model):
    return lambda a, b: model(torch.cat([a[:, :4], b], 1))


CASES = {
    "default_reduce": lambda m, x, e, y: (
        m, TensorDataset(x), {}),
    "sum_metric_ppp3": lambda m, x, e, y: (
        m, TensorDataset(x), dict(to_metric=lambda o: o.sum(0), perturbations_per_pass=3)),
    "labels_reduce_mask_baseline": lambda m, x, e, y: (
        m, TensorDataset(x, y),
        dict(input_roles=(0, 2), reduce=_acc_reduce, to_metric=lambda a: a[1:2] / a[2],
             feature_mask=torch.tensor([[0, 0, 1, 2, 2, 3]]),
             baselines=torch.full((1, 6), 0.3, dtype=DT), perturbations_per_pass=2)),
    "two_inputs_shared_ids": lambda m, x, e, y: (
        _two_input_model(m), TensorDataset(x, e, y),
        dict(input_roles=(0, 0, 2), to_metric=lambda o: o.mean(0),
             feature_mask=(torch.tensor([[0, 1, 1, 2, 3, 3]]), torch.tensor([[3, 4]])),
             baselines=(0.5, torch.tensor([[1.0, -1.0]], dtype=DT)))),
    "forward_only_element": lambda m, x, e, y: (
        _two_input_model(m), TensorDataset(x, e),
        dict(input_roles=(0, 1), to_metric=lambda o: o.sum(), perturbations_per_pass=4)),
}


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("return_input_shape", [True, False])
def test_dataloader_attribution_parity(name, return_input_shape):
    model, x, extra, y = _setup()
    forward, dataset, kwargs = CASES[name](model, x, extra, y)
    loader = DataLoader(dataset, batch_size=4)
    ref = captum_attr.DataLoaderAttribution(captum_attr.FeatureAblation(forward)).attribute(
        loader, return_input_shape=return_input_shape, **kwargs
    )
    got = ours.DataLoaderAttribution(ours.FeatureAblation(forward)).attribute(
        loader, return_input_shape=return_input_shape, **kwargs
    )
    ref = ref if isinstance(ref, tuple) else (ref,)
    got = got if isinstance(got, tuple) else (got,)
    assert len(got) == len(ref)
    for g, r in zip(got, ref):
        assert g.shape == r.shape
        torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-10)
