"""TracInCP against closed forms on linear models, plus properties and bad input."""

from __future__ import annotations

import os

import pytest
import torch
from models.influence import DT, MLP, classification_data, save_checkpoints
from torch import nn
from torch.testing import assert_close
from torch.utils.data import DataLoader, TensorDataset

import attribuo.influence.gradients as gradients_module
from attribuo._engine.errors import ArgumentTypeError, ArgumentValueError
from attribuo.influence import KMostInfluentialResults, TracInCP

LRS = (1.0, 0.5, 0.25)


@pytest.fixture
def linear_setup(tmp_path):
    torch.manual_seed(0)
    model = nn.Linear(3, 2).to(DT)
    save_checkpoints(model, tmp_path, LRS)
    gen = torch.Generator().manual_seed(3)
    x, y = torch.randn(9, 3, generator=gen, dtype=DT), torch.randn(9, 2, generator=gen, dtype=DT)
    xt, yt = torch.randn(4, 3, generator=gen, dtype=DT), torch.randn(4, 2, generator=gen, dtype=DT)
    states = [torch.load(os.path.join(tmp_path, f"checkpoint-{i}.pt")) for i in range(3)]
    return model, tmp_path, TensorDataset(x, y), (xt, yt), states


def mse_closed_form(states, xa, ya, xb, yb):
    """sum_c lr_c <dL_a/dtheta, dL_b/dtheta> for L = |Wx + b - y|^2: 4 (r_a.r_b)(x_a.x_b + 1)."""
    total = 0
    for s in states:
        ra = xa @ s["weight"].T + s["bias"] - ya
        rb = xb @ s["weight"].T + s["bias"] - yb
        total = total + s["learning_rate"] * 4 * (ra @ rb.T) * (xa @ xb.T + 1)
    return total


def test_influence_matches_closed_form(linear_setup):
    model, folder, train, (xt, yt), states = linear_setup
    tracin = TracInCP(model, train, folder, loss_fn=nn.MSELoss(reduction="none"), batch_size=4)
    x, y = train.tensors
    assert_close(tracin.influence((xt, yt)), mse_closed_form(states, xt, yt, x, y))
    assert_close(tracin.self_influence(), mse_closed_form(states, x, y, x, y).diagonal())
    assert_close(tracin.self_influence((xt, yt)), mse_closed_form(states, xt, yt, xt, yt).diagonal())


def test_no_loss_differentiates_summed_output(linear_setup):
    # grad of sum_j (Wx + b)_j is (ones x^T, ones): dot product 2 (x.x' + 1).
    model, folder, train, (xt, yt), states = linear_setup
    tracin = TracInCP(model, train, folder, batch_size=5)
    expected = sum(s["learning_rate"] for s in states) * 2 * (xt @ train.tensors[0].T + 1)
    assert_close(tracin.influence((xt, yt)), expected)


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_sample_wise_mode_gives_same_scores(linear_setup, reduction):
    model, folder, train, test, _ = linear_setup
    per_example = TracInCP(model, train, folder, loss_fn=nn.MSELoss(reduction="none"), batch_size=4)
    batched = TracInCP(
        model, train, folder, loss_fn=nn.MSELoss(reduction=reduction), batch_size=4,
        sample_wise_grads_per_batch=True,
    )
    if reduction == "mean":
        # Captum's mean convention rescales by the batch size, not by the
        # number of output elements: MSE mean over 2 outputs halves the loss.
        assert_close(batched.influence(test), per_example.influence(test) / 4)
    else:
        assert_close(batched.influence(test), per_example.influence(test))


def test_top_k_proponents_and_opponents(linear_setup):
    model, folder, train, test, _ = linear_setup
    tracin = TracInCP(model, train, folder, loss_fn=nn.MSELoss(reduction="none"), batch_size=2)
    scores = tracin.influence(test)
    pro = tracin.influence(test, k=3)
    opp = tracin.influence(test, k=3, proponents=False)
    assert isinstance(pro, KMostInfluentialResults)
    assert_close(pro.influence_scores, scores.sort(dim=1, descending=True).values[:, :3])
    assert_close(opp.influence_scores, scores.sort(dim=1).values[:, :3])
    assert_close(scores.gather(1, pro.indices), pro.influence_scores)
    assert_close(scores.gather(1, opp.indices), opp.influence_scores)
    assert tracin.influence(test, k=100).indices.shape == (4, 9)


def test_batching_and_input_forms_do_not_change_scores(tmp_path):
    model = MLP().to(DT)
    save_checkpoints(model, tmp_path)
    train, test = classification_data()
    loss = nn.CrossEntropyLoss(reduction="none")
    ref = TracInCP(model, train, tmp_path, loss_fn=loss, batch_size=1).influence(test)
    other = TracInCP(model, DataLoader(train, batch_size=5), tmp_path, loss_fn=loss, batch_size=None)
    assert_close(other.influence(test), ref)
    test_loader = DataLoader(TensorDataset(*test), batch_size=3)
    assert_close(other.influence(test_loader), ref)
    assert_close(other.influence(test, aggregate=True), ref.sum(0, keepdim=True))


def test_layers_restrict_gradients(tmp_path):
    model = MLP().to(DT)
    save_checkpoints(model, tmp_path)
    train, test = classification_data()
    loss = nn.CrossEntropyLoss(reduction="none")
    full = TracInCP(model, train, tmp_path, loss_fn=loss, batch_size=4)
    parts = [TracInCP(model, train, tmp_path, layers=[n], loss_fn=loss, batch_size=4) for n in ("fc1", "fc2")]
    assert_close(parts[0].influence(test) + parts[1].influence(test), full.influence(test))
    q = parts[1].compute_intermediate_quantities(test)
    assert q.shape == (4, 3 * (4 * 3 + 3))


def test_intermediate_quantities_are_lr_scaled_gradients(linear_setup):
    model, folder, train, (xt, yt), states = linear_setup
    tracin = TracInCP(model, train, folder, loss_fn=nn.MSELoss(reduction="none"))
    q = tracin.compute_intermediate_quantities((xt, yt))
    blocks = []
    for s in states:
        r = 2 * (xt @ s["weight"].T + s["bias"] - yt)
        blocks.append(s["learning_rate"] * torch.cat([(r[:, :, None] * xt[:, None, :]).flatten(1), r], 1))
    assert_close(q, torch.cat(blocks, 1))


def test_loop_fallback_for_untraceable_models(tmp_path, monkeypatch):
    class ItemModel(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(5, 3).to(DT)

        def forward(self, x):
            scale = 1.0 if x.abs().sum().item() >= 0 else 2.0  # .item() defeats vmap
            return self.fc(x) * scale

    model = ItemModel()
    save_checkpoints(model, tmp_path)
    train, test = classification_data()
    loss = nn.CrossEntropyLoss(reduction="none")
    got = TracInCP(model, train, tmp_path, loss_fn=loss, batch_size=4).influence(test)
    plain = nn.Sequential()
    plain.fc = model.fc
    ref = TracInCP(plain, train, tmp_path, loss_fn=loss, batch_size=4)
    monkeypatch.setattr(gradients_module, "_looped", lambda *a: pytest.fail("vmap path expected"))
    assert_close(got, ref.influence(test))


def test_model_state_and_inputs_untouched(tmp_path):
    model = MLP().to(DT)
    save_checkpoints(model, tmp_path)
    model.train()
    model.fc1.weight.requires_grad_(False)
    train, test = classification_data()
    before = [t.clone() for t in test]
    TracInCP(model, train, tmp_path, loss_fn=nn.CrossEntropyLoss(reduction="none")).influence(test, k=2)
    assert model.training and not model.fc1.weight.requires_grad and model.fc2.weight.requires_grad
    assert all(torch.equal(a, b) for a, b in zip(before, test))
    assert not model.fc2._forward_hooks and not model._forward_hooks


def test_checkpoint_folder_in_natural_order(tmp_path):
    model = nn.Linear(2, 1)
    for i in (10, 2, 1):
        torch.save(model.state_dict(), os.path.join(tmp_path, f"c-{i}.pt"))
    train = TensorDataset(torch.randn(3, 2), torch.randn(3, 1))
    names = [os.path.basename(c) for c in TracInCP(model, train, str(tmp_path)).checkpoints]
    assert names == ["c-1.pt", "c-2.pt", "c-10.pt"]


@pytest.mark.parametrize(
    "kwargs, error, word",
    [
        (dict(loss_fn=nn.MSELoss(reduction="sum")), ArgumentValueError, "loss_fn"),
        (dict(loss_fn=nn.MSELoss(reduction="none"), sample_wise_grads_per_batch=True), ArgumentValueError, "loss_fn"),
        (dict(test_loss_fn=nn.MSELoss()), ArgumentValueError, "test_loss_fn"),
        (dict(layers=["nope"]), ArgumentValueError, "layers"),
        (dict(layers="weight"), ArgumentValueError, "layers"),
        (dict(batch_size=0), ArgumentValueError, "batch_size"),
        (dict(train_dataset=[1, 2]), ArgumentTypeError, "train_dataset"),
        (dict(checkpoints=[]), ArgumentValueError, "checkpoints"),
    ],
)
def test_bad_constructor_arguments(linear_setup, kwargs, error, word):
    model, folder, train, _, _ = linear_setup
    args = dict(model=model, train_dataset=train, checkpoints=str(folder))
    args.update(kwargs)
    with pytest.raises(error, match=word):
        TracInCP(**args)


def test_bad_influence_arguments(linear_setup):
    model, folder, train, test, _ = linear_setup
    tracin = TracInCP(model, train, folder, loss_fn=nn.MSELoss(reduction="none"))
    with pytest.raises(ArgumentValueError, match="inputs"):
        tracin.influence(None)
    with pytest.raises(ArgumentValueError, match="`k`"):
        tracin.influence(test, k=0)
    with pytest.raises(ArgumentTypeError, match="inputs"):
        tracin.influence(test[0])
    with pytest.raises(ArgumentValueError, match="inputs"):
        tracin.influence((test[0],))


def test_progress_bars_read_as_captums(linear_setup, capsys):
    model, folder, train, test, _ = linear_setup
    tracin = TracInCP(model, train, str(folder), loss_fn=nn.MSELoss(reduction="none"), batch_size=4)
    tracin.influence(test, show_progress=True)
    tracin.influence(test, k=2, proponents=False, show_progress=True)
    tracin.self_influence(show_progress=True, outer_loop_by_checkpoints=True)
    err = capsys.readouterr().err
    assert err.count("Using TracInCP to compute influence for training batches: 100%") == 1
    assert err.count("getting opponents. Processing training batches: 100%") == 1
    assert err.count("compute self influence. Processing checkpoint: 100%") == 1
    assert err.count("compute self influence. Processing batch: 100%") == len(LRS)  # one per checkpoint
