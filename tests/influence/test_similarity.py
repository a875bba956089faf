"""SimilarityInfluence and its metrics against direct computations."""

from __future__ import annotations

import pytest
import torch
from models.influence import DT
from torch import nn
from torch.testing import assert_close
from torch.utils.data import TensorDataset

from attribuo._engine.errors import ArgumentValueError
from attribuo.influence import SimilarityInfluence, cosine_similarity, euclidean_distance


@pytest.fixture
def setup():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3)).to(DT)
    src = torch.randn(13, 5, dtype=DT)
    return model, TensorDataset(src, torch.zeros(13)), torch.randn(3, 5, dtype=DT)


def test_metrics_closed_forms():
    a, b = torch.randn(3, 2, 2, dtype=DT), torch.randn(5, 4, dtype=DT)
    fa = a.reshape(3, -1)
    expected = torch.tensor([[float(torch.nn.functional.cosine_similarity(u, v, 0)) for v in b] for u in fa], dtype=DT)
    assert_close(cosine_similarity(a, b), expected)
    assert_close(euclidean_distance(a, b), torch.tensor([[float((u - v).norm()) for v in b] for u in fa], dtype=DT))
    b[1] = 0
    assert (cosine_similarity(a, b, replace_nan=7)[:, 1] == 7).all()


@pytest.mark.parametrize("batch_size", [1, 4, 13])
def test_top_k_of_cosine_and_distance(setup, tmp_path, batch_size):
    model, src, x = setup
    acts_src, acts_x = model[0](src.tensors[0]).detach(), model[0](x).detach()
    sim = SimilarityInfluence(model, ["0", "2"], src, str(tmp_path), batch_size=batch_size)
    res = sim.influence(x, top_k=4)
    idx, val = res["0"]
    full = cosine_similarity(acts_x, acts_src)
    assert_close(val, full.sort(1, descending=True).values[:, :4])
    assert_close(full.gather(1, idx), val)
    assert res["2"][0].shape == (3, 4)
    dist = SimilarityInfluence(model, "0", src, str(tmp_path / "d"), similarity_metric=euclidean_distance,
                               similarity_direction="min", batch_size=batch_size)
    idx, val = dist.influence(x, top_k=2)["0"]
    assert_close(val, torch.cdist(acts_x, acts_src).sort(1).values[:, :2])


def test_cached_activations_are_reused(setup, tmp_path):
    model, src, x = setup
    sim = SimilarityInfluence(model, "2", src, str(tmp_path), model_id="m", batch_size=5)
    old_src = model(src.tensors[0]).detach()
    sim.influence(x, top_k=3)
    with torch.no_grad():
        model[2].weight.mul_(-1)
    new_src, new_x = model(src.tensors[0]).detach(), model(x).detach()
    cached = sim.influence(x, top_k=3)["2"][1]
    assert_close(cached, cosine_similarity(new_x, old_src).sort(1, descending=True).values[:, :3])
    fresh = sim.influence(x, top_k=3, load_src_from_disk=False)["2"][1]
    assert_close(fresh, cosine_similarity(new_x, new_src).sort(1, descending=True).values[:, :3])


def test_zero_activations_reported(setup, tmp_path):
    model, src, x = setup
    with torch.no_grad():
        model[0].weight.zero_()
        model[0].bias.fill_(-1.0)  # ReLU output is all zero
    sim = SimilarityInfluence(model, "1", src, str(tmp_path), batch_size=4)
    with pytest.warns(RuntimeWarning, match="zero"):
        res = sim.influence(x, top_k=2)
    assert (res["1"][1] == -2).all()
    assert res["zero_acts-1"].shape == (3 * 13, 2)


def test_bad_arguments(setup, tmp_path):
    model, src, x = setup
    with pytest.raises(ArgumentValueError, match="similarity_direction"):
        SimilarityInfluence(model, "0", src, str(tmp_path), similarity_direction="up")
    with pytest.raises(ArgumentValueError, match="layers"):
        SimilarityInfluence(model, "nope", src, str(tmp_path))
    sim = SimilarityInfluence(model, "0", src, str(tmp_path), similarity_metric=lambda a, b: a.sum())
    with pytest.raises(ArgumentValueError, match="similarity_metric"):
        sim.influence(x)
    with pytest.raises(ArgumentValueError, match="top_k"):
        SimilarityInfluence(model, "0", src, str(tmp_path)).influence(x, top_k=0)
