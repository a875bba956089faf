"""Influence functions: closed forms on linear regression, Arnoldi against the exact Hessian.

For ``f(x) = w . x`` and the per-example loss ``(w . x - y)^2`` the gradient
of example ``i`` is ``2 r_i x_i`` (``r`` the residual) and the Hessian of the
summed training loss is ``2 X^T X`` (Captum's convention: a sum, not a mean).
The influence of training example ``j`` on test example ``t`` is then
``g_t^T (H + reg I)^-1 g_j``, with a plus sign.
"""

import os
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from attribuo._engine.errors import ArgumentTypeError, ArgumentValueError
from attribuo.influence import ArnoldiInfluenceFunction, NaiveInfluenceFunction
from attribuo.influence.arnoldi import arnoldi_iteration

sys.path.insert(0, str(Path(__file__).parents[1]))
from models.influence import MLP, classification_data  # noqa: E402

DT = torch.float64
MSE = nn.MSELoss(reduction="none")


def _regression(n=9, d=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=gen, dtype=DT)
    y = torch.randn(n, 1, generator=gen, dtype=DT)
    xt = torch.randn(3, d, generator=gen, dtype=DT)
    yt = torch.randn(3, 1, generator=gen, dtype=DT)
    return x, y, xt, yt


@pytest.fixture
def linear(tmp_path):
    torch.manual_seed(0)
    model = nn.Linear(4, 1, bias=False).to(DT)
    path = os.path.join(tmp_path, "ckpt.pt")
    torch.save(model.state_dict(), path)
    return model, path


def _grads(model, x, y):
    with torch.no_grad():
        r = model(x) - y
    return 2 * r * x


def _reference(model, x, y, xt, yt, reg):
    H = 2 * x.T @ x + reg * torch.eye(x.shape[1], dtype=DT)
    return _grads(model, xt, yt) @ torch.linalg.solve(H, _grads(model, x, y).T)


@pytest.mark.parametrize("reg", [1e-6, 0.5])
@pytest.mark.parametrize("batch_size", [1, 4, 9])
def test_naive_closed_form(linear, reg, batch_size):
    model, path = linear
    x, y, xt, yt = _regression()
    inf = NaiveInfluenceFunction(
        model, TensorDataset(x, y), path, loss_fn=MSE, batch_size=batch_size, hessian_reg=reg
    )
    expected = _reference(model, x, y, xt, yt, reg)
    torch.testing.assert_close(inf.influence((xt, yt)), expected)
    self_expected = torch.diagonal(_reference(model, x, y, x, y, reg))
    torch.testing.assert_close(inf.self_influence(), self_expected)
    torch.testing.assert_close(inf.self_influence((x[:4], y[:4])), self_expected[:4])
    # embeddings: their dot products are the scores; aggregate sums them
    emb_t = inf.compute_intermediate_quantities((xt, yt), test=True)
    emb = inf.compute_intermediate_quantities(DataLoader(TensorDataset(x, y), batch_size=2))
    torch.testing.assert_close(emb_t @ emb.T, expected)
    agg = inf.compute_intermediate_quantities(DataLoader(TensorDataset(x, y), batch_size=2), aggregate=True)
    torch.testing.assert_close(agg, emb.sum(0, keepdim=True))


def test_low_rank_keeps_the_top_eigenpairs(linear):
    model, path = linear
    x, y, xt, yt = _regression()
    inf = NaiveInfluenceFunction(model, TensorDataset(x, y), path, loss_fn=MSE, projection_dim=2)
    ls, vs = torch.linalg.eigh(2 * x.T @ x + 1e-6 * torch.eye(4, dtype=DT))
    inv = vs[:, -2:] @ torch.diag(1 / ls[-2:]) @ vs[:, -2:].T
    expected = _grads(model, xt, yt) @ inv @ _grads(model, x, y).T
    torch.testing.assert_close(inf.influence((xt, yt)), expected)
    assert inf.R.shape == (4, 2)
    # the sign convention: every column of R sums to a positive number
    assert bool((inf.R.sum(0) > 0).all())


def test_tolerance_drops_null_directions(linear):
    """A repeated feature makes H singular; the kept part is its pseudo-inverse."""
    model, path = linear
    x, y, xt, yt = _regression()
    x[:, 3], xt[:, 3] = x[:, 2], xt[:, 2]
    inf = NaiveInfluenceFunction(
        model, TensorDataset(x, y), path, loss_fn=MSE, hessian_reg=0.0, hessian_inverse_tol=1e-8
    )
    assert inf.R.shape == (4, 3)
    expected = _grads(model, xt, yt) @ torch.linalg.pinv(2 * x.T @ x, hermitian=True) @ _grads(model, x, y).T
    torch.testing.assert_close(inf.influence((xt, yt)), expected)


def test_mean_reduction_and_hessian_dataset(linear):
    """A "mean" loss (sample-wise mode) gives the same scores; H comes from hessian_dataset."""
    model, path = linear
    x, y, xt, yt = _regression()
    hx, hy = x[:5] * 2, y[:5]
    inf = NaiveInfluenceFunction(
        model, TensorDataset(x, y), path, loss_fn=nn.MSELoss(reduction="mean"), batch_size=4,
        hessian_dataset=TensorDataset(hx, hy), sample_wise_grads_per_batch=True,
    )
    H = 2 * hx.T @ hx + 1e-6 * torch.eye(4, dtype=DT)
    expected = _grads(model, xt, yt) @ torch.linalg.solve(H, _grads(model, x, y).T)
    torch.testing.assert_close(inf.influence((xt, yt)), expected)


def test_layers_and_test_loss_fn(tmp_path):
    """Only fc2's parameters: a linear model of fc1's (fixed) features plus a bias."""
    torch.manual_seed(1)
    model = nn.Sequential()
    model.add_module("fc1", nn.Linear(3, 4))
    model.add_module("act", nn.Tanh())
    model.add_module("fc2", nn.Linear(4, 1))
    model = model.to(DT)
    path = os.path.join(tmp_path, "ckpt.pt")
    torch.save(model.state_dict(), path)
    x, y, xt, yt = _regression(d=3)
    out_loss = lambda out, label: out.sum(1)  # noqa: E731  (gradient of the prediction itself)
    inf = NaiveInfluenceFunction(
        model, TensorDataset(x, y), path, layers=["fc2"], loss_fn=MSE, test_loss_fn=out_loss,
        batch_size=5,
    )
    with torch.no_grad():
        feats = torch.cat([torch.tanh(model.fc1(x)), torch.ones(len(x), 1, dtype=DT)], 1)
        feats_t = torch.cat([torch.tanh(model.fc1(xt)), torch.ones(len(xt), 1, dtype=DT)], 1)
        g = 2 * (model(x) - y) * feats
    H = 2 * feats.T @ feats + 1e-6 * torch.eye(5, dtype=DT)
    torch.testing.assert_close(inf.influence((xt, yt)), feats_t @ torch.linalg.solve(H, g.T))


@pytest.mark.parametrize("proponents", [True, False])
def test_k_most_influential(linear, proponents):
    model, path = linear
    x, y, xt, yt = _regression()
    inf = NaiveInfluenceFunction(model, TensorDataset(x, y), path, loss_fn=MSE, batch_size=4)
    scores = _reference(model, x, y, xt, yt, 1e-6)
    top = inf.influence((xt, yt), k=3, proponents=proponents)
    values, indices = torch.topk(scores, 3, dim=1, largest=proponents)
    assert torch.equal(top.indices, indices)
    torch.testing.assert_close(top.influence_scores, values)


def test_arnoldi_iteration_krylov_basis():
    """Captum's scheme: the last direction found is dropped, also at an early stop."""
    A = torch.diag(torch.tensor([5.0, 3.0, 2.0, 1.0], dtype=DT))
    # start in span(e1, e2): the second product adds nothing, one direction is kept
    Q, T = arnoldi_iteration(lambda v: A @ v, torch.tensor([1.0, 2.0, 0.0, 0.0], dtype=DT), 10, 1e-10)
    assert Q.shape == (1, 4)
    torch.testing.assert_close(T, torch.tensor([[17.0 / 5.0]], dtype=DT))  # Rayleigh quotient
    # start in span(e1, e2, e3): the basis spans {b, Ab}, and T is A restricted to it
    b = torch.tensor([1.0, 2.0, -1.0, 0.0], dtype=DT)
    Q, T = arnoldi_iteration(lambda v: A @ v, b, 10, 1e-10)
    assert Q.shape == (2, 4)
    torch.testing.assert_close(Q @ Q.T, torch.eye(2, dtype=DT))
    torch.testing.assert_close(T, Q @ A @ Q.T)
    for v in (b, A @ b):
        torch.testing.assert_close(Q.T @ (Q @ v), v)
    # no early stop: steps products, steps - 1 directions
    Q, T = arnoldi_iteration(lambda v: A @ v, torch.ones(4, dtype=DT), 3, 1e-10)
    assert Q.shape == (2, 4) and T.shape == (2, 2)


@pytest.fixture(scope="module")
def mlp_setup(tmp_path_factory):
    torch.manual_seed(0)
    model = MLP().to(DT)
    path = os.path.join(tmp_path_factory.mktemp("arnoldi"), "ckpt.pt")
    torch.save(model.state_dict(), path)
    train, test = classification_data()
    return model, path, train, test


def test_arnoldi_converges_to_naive(mlp_setup):
    """With as many Hessian-vector products as parameters the top eigenpairs are exact."""
    model, path, train, test = mlp_setup
    ce = nn.CrossEntropyLoss(reduction="none")
    kw = dict(loss_fn=ce, batch_size=4, projection_dim=3, hessian_reg=1e-3, hessian_inverse_tol=1e-4)
    naive = NaiveInfluenceFunction(model, train, path, **kw)
    arnoldi = ArnoldiInfluenceFunction(model, train, path, arnoldi_dim=39, arnoldi_tol=1e-10, **kw)
    torch.testing.assert_close(arnoldi.influence(test), naive.influence(test), atol=1e-7, rtol=1e-6)
    torch.testing.assert_close(arnoldi.self_influence(), naive.self_influence(), atol=1e-7, rtol=1e-6)
    # a short iteration only approximates them
    short = ArnoldiInfluenceFunction(model, train, path, arnoldi_dim=8, **kw)
    assert (short.influence(test) - naive.influence(test)).abs().max() > 1e-4


def test_arnoldi_seed_and_global_rng(mlp_setup):
    model, path, train, test = mlp_setup
    ce = nn.CrossEntropyLoss(reduction="none")
    torch.manual_seed(100)
    a = ArnoldiInfluenceFunction(model, train, path, loss_fn=ce, batch_size=11, projection_dim=2,
                                 arnoldi_dim=6, seed=3)
    after_a = torch.rand(3)
    torch.manual_seed(200)  # the draw comes from `seed` alone, and the global RNG is not reseeded
    b = ArnoldiInfluenceFunction(model, train, path, loss_fn=ce, batch_size=11, projection_dim=2,
                                 arnoldi_dim=6, seed=3)
    assert not torch.equal(torch.rand(3), after_a)  # Captum would reseed to `seed` here
    c = ArnoldiInfluenceFunction(model, train, path, loss_fn=ce, batch_size=11, projection_dim=2,
                                 arnoldi_dim=6, seed=4)
    assert torch.equal(a.R, b.R)
    assert not torch.allclose(a.R, c.R)


def test_model_left_as_loaded(mlp_setup):
    model, path, train, test = mlp_setup
    model.fc1.weight.requires_grad_(False)
    try:
        before = {k: v.clone() for k, v in model.state_dict().items()}
        inf = NaiveInfluenceFunction(model, train, path, loss_fn=nn.CrossEntropyLoss(reduction="none"),
                                     layers=["fc2"], batch_size=11)
        inf.influence(test)
        assert not model.fc1.weight.requires_grad
        for k, v in model.state_dict().items():
            assert torch.equal(v, before[k])
    finally:
        model.fc1.weight.requires_grad_(True)


def test_bad_arguments(linear):
    model, path = linear
    x, y, xt, yt = _regression()
    data = TensorDataset(x, y)
    with pytest.raises(ArgumentValueError, match="projection_dim"):
        NaiveInfluenceFunction(model, data, path, loss_fn=MSE, projection_dim=0)
    with pytest.raises(ArgumentValueError, match="hessian_inverse_tol"):
        NaiveInfluenceFunction(model, data, path, loss_fn=MSE, hessian_inverse_tol=1e12)
    with pytest.raises(ArgumentValueError, match="reduction"):
        NaiveInfluenceFunction(model, data, path, loss_fn=nn.MSELoss(reduction="sum"))
    with pytest.raises(ArgumentValueError, match="arnoldi_dim"):
        ArnoldiInfluenceFunction(model, data, path, loss_fn=MSE, arnoldi_dim=1)
    with pytest.raises(ArgumentValueError, match="layers"):
        NaiveInfluenceFunction(model, data, path, loss_fn=MSE, layers="weight")
    with pytest.raises(ArgumentTypeError, match="model"):
        NaiveInfluenceFunction(lambda t: t, data, path, loss_fn=MSE)
    inf = NaiveInfluenceFunction(model, data, path, loss_fn=MSE)
    with pytest.raises(ArgumentValueError, match="`k`"):
        inf.influence((xt, yt), k=0)
    with pytest.raises(ArgumentTypeError, match="inputs_dataset"):
        inf.compute_intermediate_quantities(xt)


@pytest.mark.parametrize(
    "path, name",
    [
        ("attribuo.influence._core.influence_function", "NaiveInfluenceFunction"),
        ("attribuo.influence._core.influence_function", "InfluenceFunctionBase"),
        ("attribuo.influence._core.arnoldi_influence_function", "ArnoldiInfluenceFunction"),
        ("attribuo.influence._core.tracincp", "TracInCP"),
        ("attribuo.influence._core.tracincp_fast_rand_proj", "TracInCPFastRandProj"),
        ("attribuo.influence._core.similarity_influence", "SimilarityInfluence"),
        ("attribuo.influence._core.influence", "DataInfluence"),
    ],
)
def test_captum_import_paths(path, name):
    import importlib

    import attribuo.influence as public

    assert getattr(importlib.import_module(path), name) is getattr(public, name)


def test_arnoldi_goes_on_past_an_invariant_space(tmp_path):
    # identity features and a squared loss: the Hessian is 2 I, so the Krylov space of any
    # start vector is one direction; Arnoldi restarts from fresh directions and gets the
    # exact influences (each example influences itself most), as the naive method does
    torch.manual_seed(0)
    model = nn.Linear(7, 1, bias=False)
    model.weight.data = torch.rand(1, 7) * 100
    path = tmp_path / "checkpoint.pt"
    torch.save(model.state_dict(), path)
    data = TensorDataset(torch.eye(7), torch.arange(7.0).reshape(7, 1))
    loss = nn.MSELoss(reduction="none")
    arnoldi = ArnoldiInfluenceFunction(model, data, str(path), loss_fn=loss, batch_size=4, arnoldi_tol=1e-8)
    naive = NaiveInfluenceFunction(model, data, str(path), loss_fn=loss, batch_size=4)
    batch = (torch.eye(7), torch.arange(7.0).reshape(7, 1))
    idx, _ = arnoldi.influence(batch, k=7, proponents=True)
    assert idx[:, 0].tolist() == list(range(7))
    exact = naive.influence(batch)
    # (the two differ by their default hessian_reg: 1e-3 against 1e-6 on eigenvalues of 2)
    torch.testing.assert_close(arnoldi.influence(batch), exact, rtol=1e-3, atol=1e-6 * float(exact.abs().max()))
