"""attribuo.influence against Captum 0.9.0 on small models with saved checkpoints."""

from __future__ import annotations

import warnings

import pytest
import torch
from captum import influence as captum_influence
from captum.influence._core.similarity_influence import euclidean_distance as captum_euclidean
from captum.influence._utils.nearest_neighbors import NearestNeighbors as CaptumNN
from models.influence import DT, MLP, classification_data, plain_load, save_checkpoints
from torch import nn
from torch.testing import assert_close
from torch.utils.data import DataLoader

from attribuo import influence as attribuo_influence


class ExactCaptumNN(CaptumNN):
    """Exact search for Captum (its default needs the optional ``annoy`` package)."""

    def setup(self, data):
        self.data = data

    def get_nearest_neighbors(self, query, k):
        values, indices = torch.topk(query @ self.data.T, k, dim=1)
        return indices, values


@pytest.fixture
def setup(tmp_path):
    torch.manual_seed(0)
    model = MLP().to(DT)
    paths = save_checkpoints(model, tmp_path)
    train, test = classification_data()
    return model, paths, train, test


def both(name, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return (getattr(attribuo_influence, name)(*args, **kwargs), getattr(captum_influence, name)(*args, **kwargs))


def assert_topk_equal(a, c):
    assert torch.equal(a.indices, c.indices)
    assert_close(a.influence_scores, c.influence_scores)


@pytest.mark.parametrize(
    "loss, sample_wise, layers",
    [
        (nn.CrossEntropyLoss(reduction="none"), False, None),
        (nn.CrossEntropyLoss(reduction="none"), False, ["fc2"]),
        (nn.CrossEntropyLoss(reduction="sum"), True, None),
        (nn.CrossEntropyLoss(reduction="mean"), True, ["fc1"]),
        (None, False, None),
    ],
)
def test_tracincp(setup, loss, sample_wise, layers):
    model, paths, train, test = setup
    a, c = both("TracInCP", model, train, paths, checkpoints_load_func=plain_load, layers=layers,
                loss_fn=loss, batch_size=4, sample_wise_grads_per_batch=sample_wise)
    assert_close(a.influence(test), c.influence(test))
    assert_close(a.influence(test, aggregate=True), c.influence(test, aggregate=True))
    for proponents in (True, False):
        assert_topk_equal(a.influence(test, k=3, proponents=proponents), c.influence(test, k=3, proponents=proponents))
    assert_close(a.self_influence(), c.self_influence())
    assert_close(a.self_influence(test), c.self_influence(test))
    assert_close(a.compute_intermediate_quantities(test), c.compute_intermediate_quantities(test))


def test_tracincp_dataloader_and_test_loss(setup):
    model, paths, train, test = setup
    loader = DataLoader(train, batch_size=3)
    a, c = both("TracInCP", model, loader, paths, checkpoints_load_func=plain_load,
                loss_fn=nn.CrossEntropyLoss(reduction="none"), batch_size=None,
                test_loss_fn=nn.NLLLoss(reduction="none"))
    test_loader = DataLoader(torch.utils.data.TensorDataset(*test), batch_size=2)
    assert_close(a.influence(test_loader), c.influence(test_loader))


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_tracincp_fast(setup, reduction):
    model, paths, train, test = setup
    a, c = both("TracInCPFast", model, "fc2", train, paths, checkpoints_load_func=plain_load,
                loss_fn=nn.CrossEntropyLoss(reduction=reduction), batch_size=4)
    assert_close(a.influence(test), c.influence(test))
    for proponents in (True, False):
        assert_topk_equal(a.influence(test, k=4, proponents=proponents), c.influence(test, k=4, proponents=proponents))
    assert_close(a.self_influence(), c.self_influence())
    assert_close(a.self_influence(test), c.self_influence(test))


@pytest.mark.parametrize("projection_dim", [None, 4, 9])
def test_tracincp_fast_rand_proj(setup, projection_dim):
    model, paths, train, test = setup
    kwargs = dict(checkpoints_load_func=plain_load, loss_fn=nn.CrossEntropyLoss(reduction="sum"),
                  batch_size=4, projection_dim=projection_dim, seed=7)
    a = attribuo_influence.TracInCPFastRandProj(model, model.fc2, train, paths, **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        c = captum_influence.TracInCPFastRandProj(model, model.fc2, train, paths,
                                                  nearest_neighbors=ExactCaptumNN(), **kwargs)
    if projection_dim is not None:
        for mine, theirs in zip(a.projection_quantities, c.projection_quantities):
            assert_close(mine, theirs)
    assert_close(a.influence(test, k=None), c.influence(test, k=None))
    for proponents in (True, False):
        assert_topk_equal(a.influence(test, k=3, proponents=proponents), c.influence(test, k=3, proponents=proponents))
    assert_close(a.compute_intermediate_quantities(test), c.compute_intermediate_quantities(test))


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_similarity_influence(tmp_path, metric):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3)).to(DT)
    src = torch.utils.data.TensorDataset(torch.randn(12, 5, dtype=DT), torch.zeros(12))
    x = torch.randn(3, 5, dtype=DT)
    if metric == "cosine":
        kw_a = kw_c = {}
    else:
        kw_a = dict(similarity_metric=attribuo_influence.euclidean_distance, similarity_direction="min")
        kw_c = dict(similarity_metric=captum_euclidean, similarity_direction="min")
    a = attribuo_influence.SimilarityInfluence(model, ["0", "2"], src, str(tmp_path / "a"), batch_size=4, **kw_a)
    c = captum_influence.SimilarityInfluence(model, ["0", "2"], src, str(tmp_path / "c"), batch_size=4, **kw_c)
    ra, rc = a.influence(x, top_k=3), c.influence(x, top_k=3)
    assert ra.keys() == rc.keys()
    for layer in ("0", "2"):
        assert torch.equal(ra[layer][0], rc[layer][0])
        assert_close(ra[layer][1], rc[layer][1])
