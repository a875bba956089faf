"""TracInCPFast / TracInCPFastRandProj: closed form, agreement with TracInCP, properties."""

from __future__ import annotations

import pytest
import torch
from models.influence import DT, MLP, classification_data, save_checkpoints
from torch import nn
from torch.testing import assert_close

from attribuo._engine.errors import ArgumentValueError
from attribuo.influence import TracInCP, TracInCPFast, TracInCPFastRandProj


@pytest.fixture
def setup(tmp_path):
    torch.manual_seed(0)
    model = MLP(bias_last=False).to(DT)
    save_checkpoints(model, tmp_path)
    train, test = classification_data()
    return model, tmp_path, train, test


def test_closed_form_on_softmax_regression(tmp_path):
    # For CE on logits Wx: dL/dW = (softmax(Wx) - onehot(y)) x^T.
    model = nn.Linear(5, 3, bias=False).to(DT)
    save_checkpoints(model, tmp_path, lrs=(0.7,))
    train, (xt, yt) = classification_data()
    fast = TracInCPFast(model, model, train, tmp_path, loss_fn=nn.CrossEntropyLoss(reduction="sum"), batch_size=3)
    w = model.weight.detach()
    x, y = train.tensors
    g = torch.softmax(x @ w.T, 1) - nn.functional.one_hot(y, 3)
    gt = torch.softmax(xt @ w.T, 1) - nn.functional.one_hot(yt, 3)
    assert_close(fast.influence((xt, yt)), 0.7 * (gt @ g.T) * (xt @ x.T))
    assert_close(fast.self_influence(), 0.7 * (g * g).sum(1) * (x * x).sum(1))


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_equals_tracincp_on_last_layer_without_bias(setup, reduction):
    model, folder, train, test = setup
    fast = TracInCPFast(model, "fc2", train, folder, loss_fn=nn.CrossEntropyLoss(reduction=reduction), batch_size=4)
    full = TracInCP(model, train, folder, layers=["fc2"], loss_fn=nn.CrossEntropyLoss(reduction="none"), batch_size=3)
    assert_close(fast.influence(test), full.influence(test))
    assert_close(fast.self_influence(), full.self_influence())
    assert_close(fast.self_influence(test), full.self_influence(test))


def test_layer_need_not_be_last(tmp_path):
    # The gradient is taken at the layer's own output, so a layer followed by
    # more computation is handled (Captum assumes it is the model output).
    model = nn.Sequential(nn.Linear(5, 4, bias=False), nn.Tanh(), nn.Linear(4, 3)).to(DT)
    save_checkpoints(model, tmp_path)
    train, test = classification_data()
    fast = TracInCPFast(model, model[0], train, tmp_path, loss_fn=nn.CrossEntropyLoss(reduction="sum"), batch_size=4)
    full = TracInCP(model, train, tmp_path, layers=["0"], loss_fn=nn.CrossEntropyLoss(reduction="none"), batch_size=4)
    assert_close(fast.influence(test), full.influence(test))


def test_top_k(setup):
    model, folder, train, test = setup
    fast = TracInCPFast(model, "fc2", train, folder, loss_fn=nn.CrossEntropyLoss(reduction="sum"), batch_size=4)
    scores = fast.influence(test)
    for proponents in (True, False):
        res = fast.influence(test, k=4, proponents=proponents)
        assert_close(res.influence_scores, scores.sort(1, descending=proponents).values[:, :4])
        assert_close(scores.gather(1, res.indices), res.influence_scores)


def test_rand_proj_without_projection_is_exact(setup):
    model, folder, train, test = setup
    loss = nn.CrossEntropyLoss(reduction="sum")
    fast = TracInCPFast(model, "fc2", train, folder, loss_fn=loss, batch_size=4)
    proj = TracInCPFastRandProj(model, "fc2", train, folder, loss_fn=loss, batch_size=4, projection_dim=1000)
    assert proj.projection_quantities is None  # 3 * 4 <= 1000
    assert_close(proj.influence(test, k=None), fast.influence(test))
    res, ref = proj.influence(test, k=3, proponents=False), fast.influence(test, k=3, proponents=False)
    assert torch.equal(res.indices, ref.indices)
    assert_close(res.influence_scores, ref.influence_scores)
    with pytest.raises(NotImplementedError):
        proj.self_influence()


def test_rand_proj_is_seeded_and_leaves_global_rng(setup):
    model, folder, train, test = setup
    loss = nn.CrossEntropyLoss(reduction="sum")
    # Captum reseeds the global RNG with `seed`; here the caller's stream goes on.
    torch.manual_seed(123)
    a = TracInCPFastRandProj(model, "fc2", train, folder, loss_fn=loss, batch_size=4, projection_dim=4, seed=5)
    after_a = torch.rand(3)
    torch.manual_seed(456)
    b = TracInCPFastRandProj(model, "fc2", train, folder, loss_fn=loss, batch_size=4, projection_dim=4, seed=5)
    assert not torch.equal(torch.rand(3), after_a)
    assert torch.equal(a.projection_quantities[0], b.projection_quantities[0])
    g_proj, a_proj = a.projection_quantities
    assert g_proj.shape == (3, 2) and a_proj.shape == (4, 2) and g_proj.dtype == DT
    assert torch.equal(a.influence(test, k=None), b.influence(test, k=None))
    # The projected scores are inner products of projected factors.
    scores = a.influence(test, k=None)
    q_test = a.compute_intermediate_quantities(test)
    assert_close(scores, q_test @ a.src_intermediate_quantities.T)
    top = a.influence(test, k=2)
    assert_close(top.influence_scores, scores.sort(1, descending=True).values[:, :2])


def test_rand_proj_approximates_in_expectation(setup):
    # E[P P^T] = I for the Gaussian projections: the mean over seeds of the
    # projected scores approaches the exact scores.
    model, folder, train, test = setup
    loss = nn.CrossEntropyLoss(reduction="sum")
    exact = TracInCPFast(model, "fc2", train, folder, loss_fn=loss, batch_size=11).influence(test)
    mean = torch.stack([
        TracInCPFastRandProj(model, "fc2", train, folder, loss_fn=loss, batch_size=11,
                             projection_dim=4, seed=s).influence(test, k=None)
        for s in range(150)
    ]).mean(0)
    assert (mean - exact).abs().max() < 0.25 * exact.abs().max()


def test_bad_arguments(setup):
    model, folder, train, test = setup
    with pytest.raises(ArgumentValueError, match="loss_fn"):
        TracInCPFast(model, "fc2", train, folder)
    with pytest.raises(ArgumentValueError, match="loss_fn"):
        TracInCPFast(model, "fc2", train, folder, loss_fn=nn.CrossEntropyLoss(reduction="none"))
    with pytest.raises(ArgumentValueError, match="final_fc_layer"):
        TracInCPFast(model, "fc9", train, folder, loss_fn=nn.CrossEntropyLoss())
    unused = nn.Linear(4, 3)
    fast = TracInCPFast(model, unused, train, folder, loss_fn=nn.CrossEntropyLoss())
    with pytest.raises(ArgumentValueError, match="final_fc_layer"):
        fast.influence(test)
    with pytest.raises(ArgumentValueError, match="projection_dim"):
        TracInCPFastRandProj(model, "fc2", train, folder, loss_fn=nn.CrossEntropyLoss(), projection_dim=0)
