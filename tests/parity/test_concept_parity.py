"""TCAV and CAV against Captum 0.9.0.

With the default classifier both libraries shuffle with Python's ``random``
and fit scikit-learn's ``SGDClassifier`` (numpy's global RNG) on the same
activations in the same order, so seeding both alike gives the same CAVs
bit for bit and the same scores. With a deterministic classifier shared by
both, scores also agree for layer integrated gradients as the sensitivity.
CAV files written by either library load in the other.
"""

import random

import numpy as np
import pytest
import torch
from models.concept import MeanDifference, TwoLayer, along
from torch.testing import assert_close

import attribuo.attr as A
import attribuo.concept as ours

captum_concept = pytest.importorskip("captum.concept")
captum_attr = pytest.importorskip("captum.attr")
pytest.importorskip("sklearn")

pytestmark = pytest.mark.filterwarnings("ignore")


def _concept_data(dtype):
    g = torch.Generator().manual_seed(3)
    dirs = torch.eye(4, dtype=dtype)
    # three concepts, 3 batches each (sizes 8, 8, 4), around different directions
    return [
        [along(dirs[k], 20, 1.0, 10 + k, dtype)[i : i + 8] + 0.3 * torch.randn(1, 4, generator=g, dtype=dtype)
         for i in range(0, 20, 8)]
        for k in range(3)
    ]


def _sets(lib, data):
    cs = [lib.Concept(k, f"c{k}", batches) for k, batches in enumerate(data)]
    return [[cs[0], cs[1]], [cs[2], cs[0]], [cs[0], cs[1], cs[2]]]


def _run(lib, model, path, inputs, target, seed, **kw):
    random.seed(seed)
    np.random.seed(seed)
    tcav = lib.TCAV(model, ["lin1", "relu"], save_path=str(path), **kw)
    scores = tcav.interpret(inputs, _sets(lib, _concept_data(torch.float32)), target=target)
    return tcav, scores


@pytest.mark.parametrize("target", [0, 1])
@pytest.mark.parametrize("to_input", [False, True])
def test_default_classifier_matches_captum(tmp_path, target, to_input):
    torch.manual_seed(0)
    model = TwoLayer(dtype=torch.float32)
    x = torch.randn(9, 4)
    mine, s_ours = _run(ours, model, tmp_path / "a", x, target, 5, attribute_to_layer_input=to_input)
    theirs, s_captum = _run(captum_concept, model, tmp_path / "b", x, target, 5,
                            attribute_to_layer_input=to_input)
    assert set(s_ours) == set(s_captum) == {"0-1", "2-0", "0-1-2"}
    for key in s_captum:
        for layer in ["lin1", "relu"]:
            w_ours = mine.cavs[key][layer].stats["weights"]
            w_captum = theirs.cavs[key][layer].stats["weights"]
            assert_close(w_ours, w_captum, rtol=0, atol=0)
            assert list(mine.cavs[key][layer].stats["classes"]) == list(theirs.cavs[key][layer].stats["classes"])
            for kind in ["sign_count", "magnitude"]:
                assert_close(s_ours[key][layer][kind], s_captum[key][layer][kind], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shared_classifier_with_layer_integrated_gradients(tmp_path, dtype):
    torch.manual_seed(1)
    model = TwoLayer(dtype=dtype)
    x = torch.randn(6, 4, dtype=dtype)
    results = []
    for lib, attr, sub in [(ours, A, "a"), (captum_concept, captum_attr, "b")]:
        tcav = lib.TCAV(model, ["lin1", "relu"], classifier=MeanDifference(),
                        layer_attr_method=attr.LayerIntegratedGradients(model, None),
                        save_path=str(tmp_path / sub))
        results.append(tcav.interpret(x, _sets(lib, _concept_data(dtype)), target=1, n_steps=16))
    s_ours, s_captum = results
    for key in s_captum:
        for layer in ["lin1", "relu"]:
            for kind in ["sign_count", "magnitude"]:
                # Captum computes scores in float32 whatever the inputs' dtype
                assert_close(s_ours[key][layer][kind].float(), s_captum[key][layer][kind],
                             rtol=1e-4, atol=1e-6)


def test_cav_files_load_in_both_directions(tmp_path):
    torch.manual_seed(2)
    model = TwoLayer(dtype=torch.float32)
    x = torch.randn(3, 4)
    random.seed(0)
    np.random.seed(0)
    captum_tcav = captum_concept.TCAV(model, ["lin1"], model_id="m", save_path=str(tmp_path / "c"))
    captum_tcav.interpret(x, _sets(captum_concept, _concept_data(torch.float32))[:1], target=0)
    mine = ours.TCAV(model, ["lin1"], model_id="m", save_path=str(tmp_path / "o"))
    mine.interpret(x, _sets(ours, _concept_data(torch.float32))[:1], target=0)
    concepts = _sets(ours, _concept_data(torch.float32))[0]
    from_captum = ours.CAV.load(str(tmp_path / "c"), "m", concepts, "lin1")
    from_ours = captum_concept.CAV.load(str(tmp_path / "o"), "m", concepts, "lin1")
    assert_close(from_captum.stats["weights"], captum_tcav.cavs["0-1"]["lin1"].stats["weights"])
    assert_close(from_ours.stats["weights"], mine.cavs["0-1"]["lin1"].stats["weights"])
    # a TCAV pointed at Captum's files reuses them without training
    reuse = ours.TCAV(model, ["lin1"], model_id="m", classifier=MeanDifference(), save_path=str(tmp_path / "c"))
    reuse.interpret(x, _sets(ours, _concept_data(torch.float32))[:1], target=0)
    assert reuse.classifier.calls == 0
