"""TCAV, CAV and Concept: known answers, properties, save/load and bad arguments."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch
from models.concept import MeanDifference, TwoLayer, along, concept
from torch.testing import assert_close
from torch.utils.data import DataLoader, TensorDataset

from attribuo.attr import LayerIntegratedGradients
from attribuo.concept import CAV, TCAV, Concept, DefaultClassifier
from attribuo.concept import classifier as classifier_module
from attribuo.concept.data import CustomIterableDataset, dataset_to_dataloader

E0 = torch.tensor([1.0, 0.0, 0.0, 0.0])


def seeded() -> None:
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture
def pos_neg():
    # concept examples along +e0 and along -e0 (lin1 is the identity in these tests)
    return concept(0, "pos", along(E0, 24, 1.0, 1)), concept(1, "neg", along(E0, 24, -1.0, 2))


@pytest.mark.parametrize("no_sklearn", [False, True])
@pytest.mark.parametrize("target, first", [(0, 1.0), (1, 0.0)])
def test_known_direction_default_classifier(tmp_path, monkeypatch, pos_neg, no_sklearn, target, first):
    # output 0 = relu(h)_0, so on inputs with x_0 > 0 the gradient at lin1 is +e0:
    # the concept along +e0 always raises output 0 and the one along -e0 never does.
    if no_sklearn:
        monkeypatch.setattr(classifier_module, "_sklearn_module", lambda: None)
    seeded()
    model = TwoLayer(identity=True)
    tcav = TCAV(model, ["lin1"], save_path=str(tmp_path))
    inputs = along(E0, 10, 1.0, 3)
    scores = tcav.interpret(inputs, [list(pos_neg)], target=target)
    out = scores["0-1"]["lin1"]
    assert_close(out["sign_count"], torch.tensor([first, 1 - first], dtype=torch.float64))
    mag = out["magnitude"]
    assert (mag[0] > 0) == (target == 0) and (mag[1] > 0) == (target == 1)
    assert_close(mag[0], -mag[1])  # binary CAV rows are [-w, w]
    assert tcav.cavs["0-1"]["lin1"].stats["accs"] > 0.99


def test_magnitude_closed_form_and_dtype(tmp_path, pos_neg):
    # with head linear in lin1's output (no relu between for the gradient, inputs x_0 > 0),
    # grad = e0 for target 0, so magnitude_k = (mean_k - mean_all)[0] exactly.
    model = TwoLayer(identity=True)
    clf = MeanDifference()
    tcav = TCAV(model, "lin1", classifier=clf, save_path=str(tmp_path), test_split_ratio=0.5)
    scores = tcav.interpret(along(E0, 6, 1.0, 4), [list(pos_neg)], target=0)
    a, b = (torch.cat(list(c.data_iter)) for c in pos_neg)
    both = torch.cat([a, b])
    expected = torch.stack([a[:, 0].mean() - both[:, 0].mean(), b[:, 0].mean() - both[:, 0].mean()])
    assert scores["0-1"]["lin1"]["magnitude"].dtype == torch.float64
    assert_close(scores["0-1"]["lin1"]["magnitude"], expected)
    assert clf.calls == 1 and tcav.cavs["0-1"]["lin1"].stats["kwargs"] == ["test_split_ratio"]


def test_sign_count_is_fraction_of_aligned_gradients(tmp_path):
    # output = sum(h**2) has gradient 2h at lin1; with the CAV row e0 for concept 0 the
    # TCAV dot is 2 h_0 = 2 x_0, positive exactly where x_0 > 0.
    class Square(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin1 = torch.nn.Identity()

        def forward(self, x):
            return (self.lin1(x) ** 2).sum(1)

    class Fixed(MeanDifference):
        def train_and_eval(self, dataloader, **kwargs):
            self.c, self.w = [0, 1], torch.stack([E0, -E0]).double()

    c0, c1 = Concept(0, "a", [torch.zeros(2, 4)]), Concept(1, "b", [torch.zeros(2, 4)])
    x = torch.randn(40, 4, dtype=torch.float64)
    scores = TCAV(Square(), ["lin1"], classifier=Fixed(), save_path=str(tmp_path)).interpret(
        x, [[c0, c1]]
    )["0-1"]["lin1"]
    frac = (x[:, 0] > 0).double().mean()
    assert_close(scores["sign_count"], torch.stack([frac, 1 - frac]))
    assert_close(scores["magnitude"], torch.stack([2 * x[:, 0].mean(), -2 * x[:, 0].mean()]))


def test_layer_integrated_gradients_as_sensitivity(tmp_path, pos_neg):
    # IG at lin1 with a linear head: attribution = (h - h_baseline) * e0 per feature,
    # with h_baseline = lin1(0) = 0, so the dot with row w is h_0 * w_0.
    model = TwoLayer(identity=True)
    clf = MeanDifference()
    lig = LayerIntegratedGradients(model, None)
    tcav = TCAV(model, ["lin1"], classifier=clf, layer_attr_method=lig, save_path=str(tmp_path))
    x = along(E0, 5, 1.0, 5)
    out = tcav.interpret(x, [list(pos_neg)], target=0, n_steps=20)["0-1"]["lin1"]
    w = tcav.cavs["0-1"]["lin1"].stats["weights"]
    assert_close(out["magnitude"], (x[:, :1] * w[:, 0]).mean(0))


def test_sets_order_and_multiple_layers(tmp_path):
    seeded()
    model = TwoLayer()
    g = torch.Generator().manual_seed(0)
    cs = [concept(i, f"c{i}", torch.randn(16, 4, generator=g, dtype=torch.float64) + i) for i in range(3)]
    tcav = TCAV(model, ["lin1", "relu"], classifier=MeanDifference(), save_path=str(tmp_path))
    x = torch.randn(7, 4, dtype=torch.float64, generator=g)
    sets = [[cs[0], cs[1]], [cs[1], cs[0]], [cs[0], cs[1], cs[2]]]
    scores = tcav.interpret(x, sets, target=1)
    for layer in ["lin1", "relu"]:
        for kind in ["sign_count", "magnitude"]:
            assert_close(scores["1-0"][layer][kind], scores["0-1"][layer][kind].flip(0))
            assert scores["0-1-2"][layer][kind].shape == (3,)
    # scores per set equal a TCAV run on that set alone (batched matmul is a pure speed-up)
    alone = TCAV(model, ["relu"], "other", classifier=MeanDifference(), save_path=str(tmp_path))
    assert_close(alone.interpret(x, [sets[2]], target=1)["0-1-2"]["relu"]["magnitude"],
                 scores["0-1-2"]["relu"]["magnitude"])


def test_processes_runs_sequentially_with_same_result(tmp_path, pos_neg):
    x = along(E0, 5, 1.0, 5)
    model = TwoLayer(identity=True)
    a = TCAV(model, ["lin1"], "a", classifier=MeanDifference(), save_path=str(tmp_path))
    b = TCAV(model, ["lin1"], "b", classifier=MeanDifference(), save_path=str(tmp_path))
    sa = a.interpret(x, [list(pos_neg)], target=0)
    sb = b.interpret(x, [list(pos_neg)], target=0, processes=3)
    assert_close(sa["0-1"]["lin1"]["magnitude"], sb["0-1"]["lin1"]["magnitude"])


def test_cav_save_load_round_trip(tmp_path):
    concepts = [Concept(3, "striped", None), Concept(5, "random", None)]
    w = torch.randn(2, 6)
    stats = {"weights": w, "classes": [3, 5], "accs": torch.tensor(0.75)}
    CAV(concepts, "features.3", stats, str(tmp_path), "net").save()
    path = tmp_path / "net" / "3-5-features.3.pkl"
    assert path.exists() and CAV.assemble_save_path(str(tmp_path), "net", concepts, "features.3") == str(path)
    loaded = CAV.load(str(tmp_path), "net", concepts, "features.3")
    assert [c.id for c in loaded.concepts] == [3, 5] and [c.name for c in loaded.concepts] == ["striped", "random"]
    assert loaded.layer == "features.3" and loaded.stats["classes"] == [3, 5]
    assert_close(loaded.stats["weights"], w)
    assert_close(loaded.stats["accs"], torch.tensor(0.75))
    assert CAV.load(str(tmp_path), "net", concepts[::-1], "features.3") is None


def test_saved_cavs_are_reused_and_force_train_retrains(tmp_path, pos_neg):
    model = TwoLayer(identity=True)
    x = along(E0, 5, 1.0, 5)
    first = MeanDifference()
    s1 = TCAV(model, ["lin1"], classifier=first, save_path=str(tmp_path / "deep" / "dir")).interpret(
        x, [list(pos_neg)], target=0
    )
    assert (tmp_path / "deep" / "dir" / "default_model_id" / "0-1-lin1.pkl").exists()
    second = MeanDifference()
    tcav = TCAV(model, ["lin1"], classifier=second, save_path=str(tmp_path / "deep" / "dir"))
    s2 = tcav.interpret(x, [list(pos_neg)], target=0)
    assert first.calls == 1 and second.calls == 0  # loaded from disk
    assert_close(s1["0-1"]["lin1"]["magnitude"], s2["0-1"]["lin1"]["magnitude"])
    tcav.compute_cavs([list(pos_neg)], force_train=True)
    assert second.calls == 1


def test_writes_only_under_save_path(tmp_path, monkeypatch, pos_neg):
    work, store = tmp_path / "cwd", tmp_path / "store"
    work.mkdir()
    monkeypatch.chdir(work)
    TCAV(TwoLayer(identity=True), ["lin1"], classifier=MeanDifference(), save_path=str(store)).interpret(
        along(E0, 3, 1.0, 5), [list(pos_neg)], target=0
    )
    assert os.listdir(work) == [] and sorted(os.listdir(store / "default_model_id")) == ["0-1-lin1.pkl"]


def test_tuple_inputs_args_and_dataloader_concepts(tmp_path):
    # model of two inputs with an extra forward argument; concepts from DataLoaders of
    # TensorDatasets (which yield lists)
    class Two(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = TwoLayer(identity=True)

        def forward(self, a, b, scale):
            return self.inner(a + b, scale)

    def loader(data):
        return DataLoader(TensorDataset(data, torch.zeros_like(data)), batch_size=5)

    pos = Concept(0, "pos", loader(along(E0, 20, 1.0, 1)))
    neg = Concept(1, "neg", loader(along(E0, 20, -1.0, 2)))
    model = Two()
    clf = MeanDifference()
    # concepts need the extra arg too: wrap so that data_iter batches are the 2 inputs only
    wrapped = _ScaleOne(model)
    tcav = TCAV(wrapped, ["model.inner.lin1"], classifier=clf, save_path=str(tmp_path))
    x = along(E0, 4, 1.0, 3)
    out = tcav.interpret((x, torch.zeros_like(x)), [[pos, neg]], target=0,
                         additional_forward_args=torch.full((4, 1), 2.0, dtype=torch.float64))
    w = tcav.cavs["0-1"]["model.inner.lin1"].stats["weights"]
    assert_close(out["0-1"]["model.inner.lin1"]["magnitude"], 2 * w[:, 0])


class _ScaleOne(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, a, b, scale=1.0):
        return self.model(a, b, scale)


def test_attribute_to_layer_input(tmp_path, pos_neg):
    # the input of `relu` is lin1's output, so scores equal those at lin1's output
    model = TwoLayer(identity=True)
    x = along(E0, 6, 1.0, 3)
    at_out = TCAV(model, ["lin1"], "o", classifier=MeanDifference(), save_path=str(tmp_path))
    at_in = TCAV(model, ["relu"], "i", classifier=MeanDifference(), attribute_to_layer_input=True,
                 save_path=str(tmp_path))
    a = at_out.interpret(x, [list(pos_neg)], target=0)["0-1"]["lin1"]
    b = at_in.interpret(x, [list(pos_neg)], target=0)["0-1"]["relu"]
    assert_close(a["magnitude"], b["magnitude"])
    assert_close(a["sign_count"], b["sign_count"])


def test_model_state_restored(tmp_path, pos_neg):
    model = TwoLayer(identity=True).train()
    TCAV(model, ["lin1"], classifier=MeanDifference(), save_path=str(tmp_path)).interpret(
        along(E0, 3, 1.0, 3), [list(pos_neg)], target=0
    )
    assert model.training
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks


def test_default_classifier_accuracy_and_weights():
    random.seed(1)
    np.random.seed(1)
    x = torch.cat([along(E0, 30, 1.0, 1), along(E0, 30, -1.0, 2), along(torch.tensor([0.0, 1, 0, 0]), 30, 1.0, 3)])
    y = torch.tensor([4] * 30 + [7] * 30 + [9] * 30)
    clf = DefaultClassifier()
    stats = clf.train_and_eval([(x.float(), y)], test_split_ratio=0.3)
    assert stats["accs"] == 1.0
    assert list(clf.classes()) == [4, 7, 9] and clf.weights().shape == (3, 4)
    # each row points to its class: row for 4 has the largest e0 weight, row for 7 the smallest
    assert clf.weights()[:, 0].argmax() == 0 and clf.weights()[:, 0].argmin() == 1


def test_data_iterator_helper(tmp_path):
    for i in range(5):
        torch.save(torch.full((3,), float(i)), tmp_path / f"{i}.pt")
    batches = list(dataset_to_dataloader(CustomIterableDataset(torch.load, str(tmp_path) + "/"), batch_size=2))
    assert [b.shape[0] for b in batches] == [2, 2, 1]
    assert sorted(torch.cat(batches)[:, 0].tolist()) == [0.0, 1.0, 2.0, 3.0, 4.0]


# --------------------------------------------------------------- bad arguments
@pytest.mark.parametrize(
    "kwargs, exc, name",
    [
        ({"layers": ["nope"]}, ValueError, "`layers`"),
        ({"layers": []}, TypeError, "`layers`"),
        ({"layers": [3]}, TypeError, "`layers`"),
        ({"model_id": ""}, ValueError, "`model_id`"),
        ({"classifier": object()}, TypeError, "`classifier`"),
        ({"layer_attr_method": 3}, TypeError, "`layer_attr_method`"),
    ],
)
def test_bad_constructor_arguments(tmp_path, kwargs, exc, name):
    args = {"layers": ["lin1"], "save_path": str(tmp_path), **kwargs}
    with pytest.raises(exc, match=name):
        TCAV(TwoLayer(), **args)


def test_bad_model(tmp_path):
    with pytest.raises(TypeError, match="`model`"):
        TCAV(lambda x: x, ["lin1"], save_path=str(tmp_path))


def test_bad_interpret_arguments(tmp_path, pos_neg):
    tcav = TCAV(TwoLayer(), ["lin1"], classifier=MeanDifference(), save_path=str(tmp_path))
    x = torch.randn(2, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match="`attribute_to_layer_input`"):
        tcav.interpret(x, [list(pos_neg)], attribute_to_layer_input=True)
    with pytest.raises(TypeError, match="`experimental_sets`"):
        tcav.interpret(x, list(pos_neg))
    with pytest.raises(TypeError, match="`experimental_sets`"):
        tcav.interpret(x, [[pos_neg[0], "x"]])
    with pytest.raises(ValueError, match="`experimental_sets`"):
        tcav.interpret(x, [[pos_neg[0], pos_neg[0]]])
    with pytest.raises(ValueError, match="`experimental_sets`"):
        tcav.interpret(x, [[pos_neg[0], Concept(1, "impostor", pos_neg[1].data_iter)]] + [list(pos_neg)])
    with pytest.raises(TypeError, match="`processes`"):
        tcav.interpret(x, [list(pos_neg)], processes="2")
    with pytest.raises(ValueError, match="`data_iter`"):
        tcav.interpret(x, [[Concept(8, "empty", None), Concept(9, "e", None)]])
    with pytest.raises(TypeError, match="`id`"):
        Concept("0", "a", None)


def test_default_classifier_needs_two_concepts(tmp_path):
    one = Concept(0, "only", [torch.randn(6, 4, dtype=torch.float64)])
    tcav = TCAV(TwoLayer(), ["lin1"], save_path=str(tmp_path))
    with pytest.raises(ValueError, match="at least two concepts"):
        tcav.interpret(torch.randn(2, 4, dtype=torch.float64), [[one]])
    with pytest.raises(ValueError, match="`test_split_ratio`"):
        DefaultClassifier().train_and_eval([(torch.zeros(4, 2), torch.tensor([0, 0, 1, 1]))], test_split_ratio=1.5)
