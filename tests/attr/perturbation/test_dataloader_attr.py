"""DataLoaderAttribution: known answers on linear models and hand-computed metrics."""

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from attribuo._engine.errors import ArgumentTypeError, ArgumentValueError
from attribuo.attr import DataLoaderAttribution, FeatureAblation, InputRole, Saliency

DT = torch.float64


def _data(n=10, d=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=gen, dtype=DT)
    w = torch.randn(d, generator=gen, dtype=DT)
    y = torch.randn(n, generator=gen, dtype=DT)
    return x, w, y


class Counting:
    """A loader wrapper that counts full traversals."""

    def __init__(self, loader):
        self.loader, self.passes = loader, 0

    def __iter__(self):
        self.passes += 1
        return iter(self.loader)


class Rows(Dataset):
    """Yields bare tensors, so batches are tensors rather than lists."""

    def __init__(self, x):
        self.x = x

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i]


def test_sum_metric_of_linear_model_is_column_sum_times_weight():
    x, w, _ = _data()
    loader = DataLoader(TensorDataset(x), batch_size=3)
    dla = DataLoaderAttribution(FeatureAblation(lambda t: t @ w))
    (attr,) = dla.attribute(loader, to_metric=lambda out: out.sum())
    torch.testing.assert_close(attr, (x.sum(0) * w).unsqueeze(0))


def test_baseline_and_grouped_features():
    x, w, _ = _data()
    base = torch.tensor([[1.0, -2.0, 0.5, 3.0]], dtype=DT)
    mask = torch.tensor([[0, 0, 1, 2]])
    loader = DataLoader(TensorDataset(x), batch_size=4)
    dla = DataLoaderAttribution(FeatureAblation(lambda t: t @ w))
    (attr,) = dla.attribute(loader, baselines=base, feature_mask=mask, to_metric=lambda o: o.sum())
    per_elem = ((x - base) * w).sum(0)
    group = torch.stack([per_elem[:2].sum(), per_elem[2], per_elem[3]])
    torch.testing.assert_close(attr, group[mask[0]].unsqueeze(0))
    flat = dla.attribute(
        loader, baselines=base, feature_mask=mask, to_metric=lambda o: o.sum(), return_input_shape=False
    )
    torch.testing.assert_close(flat, group.unsqueeze(0))


def _mse_reduce(accum, output, inputs):
    sq = ((output - inputs[-1]) ** 2).sum()
    count = torch.tensor(float(output.shape[0]), dtype=DT)
    return (sq, count) if accum is None else (accum[0] + sq, accum[1] + count)


@pytest.mark.parametrize("per_pass", [1, 2, 3, 10])
def test_dataset_mse_against_direct_ablation(per_pass):
    """Labels are role 2 (seen by reduce only); the reference ablates the whole matrix."""
    x, w, y = _data(n=9, d=5)
    model = nn.Sequential(nn.Linear(5, 3), nn.Tanh(), nn.Linear(3, 1), nn.Flatten(0)).double()
    loader = Counting(DataLoader(TensorDataset(x, y), batch_size=4))
    dla = DataLoaderAttribution(FeatureAblation(model))
    (attr,) = dla.attribute(
        loader,
        input_roles=(InputRole.need_attr, InputRole.no_forward),
        reduce=_mse_reduce,
        to_metric=lambda acc: acc[0] / acc[1],
        perturbations_per_pass=per_pass,
    )
    with torch.no_grad():
        full = ((model(x) - y) ** 2).mean()
        expected = []
        for j in range(5):
            xa = x.clone()
            xa[:, j] = 0
            expected.append(full - ((model(xa) - y) ** 2).mean())
    torch.testing.assert_close(attr, torch.stack(expected).unsqueeze(0))
    assert loader.passes == 1 + 1 + -(-5 // per_pass)  # shapes, original, perturbed


def test_default_reduce_concatenates_outputs():
    """Without reduce/to_metric the metric is every output: one row per example and output."""
    x, _, _ = _data(n=5, d=3)
    weight = torch.randn(3, 2, dtype=DT, generator=torch.Generator().manual_seed(3))
    loader = DataLoader(TensorDataset(x), batch_size=2)
    (attr,) = DataLoaderAttribution(FeatureAblation(lambda t: t @ weight)).attribute(loader)
    # output (5, 2) flattened row-major: example i, output k -> x[i, j] * W[j, k]
    expected = (x.unsqueeze(2) * weight.unsqueeze(0)).permute(0, 2, 1).reshape(10, 3)
    torch.testing.assert_close(attr, expected)


def test_forward_only_element_and_tuple_inputs():
    """Role 1 goes to the model unperturbed; a feature id shared by two elements is one feature."""
    x, w, _ = _data(n=6, d=3)
    z = torch.arange(6, dtype=DT)
    scale = torch.tensor(2.0, dtype=DT)

    def forward(a, b, c):
        return (a @ w) * scale + b.sum(1) + c

    b = torch.ones(6, 2, dtype=DT) * 3
    loader = DataLoader(TensorDataset(x, b, z), batch_size=4)
    dla = DataLoaderAttribution(FeatureAblation(forward))
    masks = (torch.tensor([[0, 1, 2]]), torch.tensor([[2, 3]]))
    attr_x, attr_b = dla.attribute(
        loader, input_roles=(0, 0, 1), feature_mask=masks, to_metric=lambda o: o.sum()
    )
    col = x.sum(0) * w * 2
    feat = torch.stack([col[0], col[1], col[2] + 18.0, torch.tensor(18.0, dtype=DT)])
    torch.testing.assert_close(attr_x, feat[masks[0][0]].unsqueeze(0))
    torch.testing.assert_close(attr_b, feat[masks[1][0]].unsqueeze(0))


def test_tensor_batches_give_a_tensor_and_use_every_example():
    x, w, _ = _data(n=7, d=3)
    loader = DataLoader(Rows(x), batch_size=3)
    attr = DataLoaderAttribution(FeatureAblation(lambda t: t @ w)).attribute(
        loader, to_metric=lambda o: o.sum()
    )
    assert isinstance(attr, torch.Tensor)
    torch.testing.assert_close(attr, (x.sum(0) * w).unsqueeze(0))


def test_integer_token_inputs_stay_integers():
    emb = nn.Embedding(6, 1).double()
    tokens = torch.tensor([[1, 2, 3], [4, 5, 1], [2, 2, 5]])
    loader = DataLoader(TensorDataset(tokens), batch_size=2)
    dla = DataLoaderAttribution(FeatureAblation(lambda t: emb(t).sum((1, 2))))
    (attr,) = dla.attribute(loader, to_metric=lambda o: o.sum())
    with torch.no_grad():
        table = emb.weight[:, 0]
        expected = (table[tokens] - table[0]).sum(0)
    torch.testing.assert_close(attr, expected.unsqueeze(0))


def test_missing_ids_get_zero_and_are_not_evaluated():
    x, w, _ = _data(n=4, d=3)
    loader = Counting(DataLoader(TensorDataset(x), batch_size=4))
    dla = DataLoaderAttribution(FeatureAblation(lambda t: t @ w))
    flat = dla.attribute(
        loader, feature_mask=torch.tensor([[0, 4, 4]]), to_metric=lambda o: o.sum(),
        return_input_shape=False,
    )
    col = x.sum(0) * w
    expected = torch.zeros(1, 5, dtype=DT)
    expected[0, 0], expected[0, 4] = col[0], col[1] + col[2]
    torch.testing.assert_close(flat, expected)
    assert loader.passes == 1 + 1 + 2


def test_user_method_is_left_alone():
    x, w, _ = _data(n=4, d=3)
    model = lambda t: t @ w  # noqa: E731
    fa = FeatureAblation(model)
    DataLoaderAttribution(fa).attribute(DataLoader(TensorDataset(x)), to_metric=lambda o: o.sum())
    assert fa.forward_func is model


def test_bad_arguments():
    x, w, _ = _data(n=4, d=3)
    loader = DataLoader(TensorDataset(x, x), batch_size=2)
    dla = DataLoaderAttribution(FeatureAblation(lambda a, b: (a + b) @ w))
    with pytest.raises(ArgumentTypeError, match="attr_method"):
        DataLoaderAttribution(Saliency(lambda t: t))
    with pytest.raises(ArgumentValueError, match="input_roles"):
        dla.attribute(loader, input_roles=(0,))
    with pytest.raises(ArgumentValueError, match="input_roles"):
        dla.attribute(loader, input_roles=(1, 1))
    with pytest.raises(ArgumentValueError, match="feature_mask"):
        dla.attribute(loader, feature_mask=(torch.zeros(2, 3, dtype=torch.long),) * 2)
    with pytest.raises(ArgumentValueError, match="baselines"):
        dla.attribute(loader, baselines=(torch.zeros(2, 3),) * 2)
    with pytest.raises(ArgumentValueError, match="baselines"):
        dla.attribute(loader, baselines=0.0)
    with pytest.raises(ArgumentValueError, match="perturbations_per_pass"):
        dla.attribute(loader, perturbations_per_pass=0)
    with pytest.raises(ArgumentTypeError, match="metric"):
        dla.attribute(loader, to_metric=lambda o: float(o.sum()))
    with pytest.raises(ArgumentValueError, match="no batch"):
        dla.attribute(DataLoader(TensorDataset(x[:0])))
    # unlike Captum, the future works (Attribution.attribute_future) and carries errors
    with pytest.raises(ArgumentValueError, match="perturbations_per_pass"):
        dla.attribute_future(loader, perturbations_per_pass=0).wait()


def test_captum_import_path():
    from attribuo.attr._core.dataloader_attr import DataLoaderAttribution as D
    from attribuo.attr._core.dataloader_attr import InputRole as R

    assert D is DataLoaderAttribution and R is InputRole


def test_no_leftover_state():
    x, _, y = _data(n=6, d=4)
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 1)).double().train()
    model[0].weight.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x_copy = x.clone()
    loader = DataLoader(TensorDataset(x, y), batch_size=4)
    DataLoaderAttribution(FeatureAblation(model)).attribute(
        loader, input_roles=(0, 2), to_metric=lambda o: o.sum(), perturbations_per_pass=2
    )
    assert model.training and not model[0].weight.requires_grad and model[2].weight.requires_grad
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert torch.equal(x, x_copy)
