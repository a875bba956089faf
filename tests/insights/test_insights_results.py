"""What one visualize/attribute call gives back: models side by side, targets, method and
arguments on every result, exports with raw values, progress, cancellation and cost."""

from __future__ import annotations

import threading

import pytest
import torch

from attribuo.attr import IntegratedGradients, Saliency
from attribuo.insights import AttributionVisualizer, Batch
from attribuo.insights.example import DigitsCNN, digits_split, load_model
from attribuo.insights.features import GeneralFeature, ImageFeature
from attribuo.insights.methods import RequestError
from attribuo.insights.progress import Cancelled, Progress

X_TEST, Y_TEST = digits_split()[2:]


def other_model() -> DigitsCNN:
    torch.manual_seed(3)
    return DigitsCNN().eval()


def digits_visualizer(models, **kwargs) -> AttributionVisualizer:
    data = [Batch(X_TEST[i : i + 8], Y_TEST[i : i + 8]) for i in range(0, 64, 8)]
    return AttributionVisualizer(models, [str(d) for d in range(10)],
                                 ImageFeature("Digit", baseline_transforms=[torch.zeros_like], input_transforms=[]),
                                 data, score_func=lambda o: torch.softmax(o, 1), **kwargs)


def heat(result: dict) -> torch.Tensor:
    return torch.tensor(result["features"][0]["modified"]["values"])


def test_models_side_by_side_equal_each_model_alone():
    a, b = load_model(), other_model()
    both = digits_visualizer([a, b]).visualize({"method": "Saliency", "num_examples": 3})
    alone = digits_visualizer([b]).visualize({"method": "Saliency", "num_examples": 3})
    assert [e["id"] for e in both] == [0, 1, 2]
    for pair, single in zip(both, alone):
        first, second = pair["results"]
        assert (first["model"], second["model"]) == (0, 1)
        assert first["model_name"] == "DigitsCNN #1" and second["model_name"] == "DigitsCNN #2"
        assert torch.equal(heat(second), heat(single["results"][0]))
        assert second["predicted"] == single["results"][0]["predicted"]
        assert pair["features"] == first["features"] and pair["model"] == 0  # older fields mirror results[0]
    chosen = digits_visualizer([a, b]).visualize({"models": [1], "method": "Saliency", "num_examples": 1})
    assert [r["model"] for r in chosen[0]["results"]] == [1]


def test_model_names_are_unique_and_can_be_given():
    vis = digits_visualizer([load_model(), other_model(), torch.nn.Flatten()])
    assert vis.get_insights_config()["models"] == ["DigitsCNN #1", "DigitsCNN #2", "Flatten"]
    named = digits_visualizer([load_model(), other_model()], model_names=["trained", "random"])
    assert named.get_insights_config()["models"] == ["trained", "random"]
    with pytest.raises(ValueError, match="model_names"):
        digits_visualizer([load_model(), other_model()], model_names=["same", "same"])
    with pytest.raises(TypeError, match="model_names"):
        digits_visualizer([load_model()], model_names=["a", "b"])


def test_label_target_attributes_the_true_class():
    model = load_model()
    vis = digits_visualizer([model])
    out = vis.visualize({"method": "Saliency", "target": "label", "num_examples": 4})
    for example in out:
        result = example["results"][0]
        assert result["target"] == {**example["actual"], "kind": "label"}
    # on an example whose prediction is not its label, the label target differs from the prediction
    x = X_TEST[:64]
    wrong = (model(x).argmax(1) != Y_TEST[:64]).nonzero().flatten()
    if len(wrong):
        k = int(wrong[0])
        single = AttributionVisualizer(model, [str(d) for d in range(10)], ImageFeature("Digit", [], []),
                                       [Batch(x[k : k + 1], Y_TEST[k : k + 1])])
        by_label = single.visualize({"method": "Saliency", "target": "label", "num_examples": 1})[0]
        expected = Saliency(model).attribute(x[k : k + 1], target=int(Y_TEST[k]))
        assert by_label["target"]["index"] == int(Y_TEST[k]) != by_label["predicted"][0]["index"]
        assert torch.allclose(heat(by_label), (expected.sum(1) / expected.sum(1).abs().max()).reshape(-1))
    again = vis.attribute({"method": "Saliency", "examples": [{"id": 0, "target": "label"},
                                                              {"id": 1, "target": 7},
                                                              {"id": 2, "target": None}]})
    assert [r["target"]["kind"] for r in again] == ["label", "class", "predicted"]
    assert again[1]["target"]["index"] == 7


def test_label_target_without_labels_falls_back_to_the_prediction():
    vis = AttributionVisualizer(load_model(), [str(d) for d in range(10)], ImageFeature("Digit", [], []),
                                [Batch(X_TEST[:2], None)])
    out = vis.visualize({"method": "Saliency", "target": "label", "num_examples": 1})[0]
    assert out["actual"] is None and out["target"]["kind"] == "predicted"
    assert out["target"]["index"] == out["predicted"][0]["index"]


def test_every_result_names_its_method_and_the_arguments_used():
    vis = digits_visualizer([load_model()])
    ig = vis.visualize({"method": "IntegratedGradients", "arguments": {"n_steps": 7},
                        "num_examples": 1})[0]["results"][0]
    assert ig["method"] == "IntegratedGradients" and ig["method_label"] == "Integrated Gradients"
    assert ig["arguments"] == {"n_steps": 7, "method": "gausslegendre"}
    occ = vis.attribute({"method": "Occlusion", "examples": [{"id": 0}]})[0]["results"][0]
    # the automatic window is resolved: the card says which window made it
    assert occ["arguments"]["sliding_window_shapes"] == [[1, 2, 2]]
    assert occ["arguments"]["strides"] is None and occ["method_label"] == "Occlusion"
    assert ig["mass"] > 0 and occ["mass"] > 0 and ig["seconds"] >= 0


def test_export_holds_the_raw_attribution_of_the_last_result():
    model = load_model()
    vis = digits_visualizer([model, other_model()])
    out = vis.visualize({"method": "IntegratedGradients", "arguments": {"n_steps": 16},
                         "num_examples": 2})
    record = vis.export(out[1]["id"], 0)
    x = X_TEST[1:2]
    target = out[1]["results"][0]["target"]["index"]
    expected = IntegratedGradients(model).attribute(x, baselines=torch.zeros_like(x), target=target,
                                                    n_steps=16, method="gausslegendre")
    got = torch.tensor(record["features"][0]["attribution"], dtype=torch.float64)
    assert got.shape == (1, 8, 8) and record["features"][0]["shape"] == [1, 8, 8]
    assert torch.allclose(got, expected[0].double(), atol=1e-6)
    assert record["method"] == "IntegratedGradients" and record["arguments"]["n_steps"] == 16
    assert record["model_name"] == "DigitsCNN #1" and record["actual"]["index"] == int(Y_TEST[1])
    assert torch.equal(torch.tensor(record["features"][0]["input"], dtype=torch.float64), x[0].double())
    vis.attribute({"method": "Saliency", "models": [1], "examples": [{"id": out[1]["id"]}]})
    assert vis.export(out[1]["id"], 1)["method"] == "Saliency"
    assert vis.export(out[1]["id"], 0)["method"] == "IntegratedGradients"  # model 0's kept
    with pytest.raises(RequestError, match="no attribution of example 999"):
        vis.export(999, 0)


def test_progress_counts_each_example_and_model():
    vis = digits_visualizer([load_model(), other_model()])
    progress = Progress()
    vis.visualize({"method": "Saliency", "num_examples": 3}, progress=progress)
    assert (progress.done, progress.total) == (6, 6)


def test_cancel_stops_within_one_forward_and_leaves_no_hook():
    model = load_model()
    vis = digits_visualizer([model])
    vis.visualize({"method": "Saliency", "num_examples": 2})
    progress = Progress()
    forwards = []

    def count(module, args):
        forwards.append(1)
        if len(forwards) == 3:
            progress.cancel()  # as if the client left during the third forward

    handle = model.register_forward_pre_hook(count)
    try:
        with pytest.raises(Cancelled):
            vis.attribute({"method": "IntegratedGradients", "arguments": {"n_steps": 300},
                           "examples": [{"id": 0}, {"id": 1}]}, progress=progress)
    finally:
        handle.remove()
    assert len(forwards) <= 4  # not 600 forwards of work
    assert not model._forward_pre_hooks and not model._forward_hooks
    ok = vis.attribute({"method": "Saliency", "examples": [{"id": 0}]})  # the model still works
    assert ok[0]["results"][0]["method"] == "Saliency"


def test_cancelled_occlusion_stops_within_one_forward():
    vis = digits_visualizer([load_model()])
    vis.visualize({"method": "Saliency", "num_examples": 1})

    class CancelAtThird(Progress):
        checks = 0

        def check(self):
            self.checks += 1
            if self.checks == 3:
                self.cancel()
            super().check()

    progress = CancelAtThird()
    # no hook on the model: the incremental occlusion path runs, and still stops
    with pytest.raises(Cancelled):
        vis.attribute({"method": "Occlusion", "examples": [{"id": 0}], "arguments": {
            "sliding_window_shapes": "1,1,1", "perturbations_per_eval": 1}}, progress=progress)
    assert progress.checks == 3  # of 1 + 64 forwards


def test_cancel_in_one_thread_does_not_stop_another_on_the_same_model():
    model = load_model()
    vis = digits_visualizer([model])
    vis.visualize({"method": "Saliency", "num_examples": 2})
    cancelled = Progress()
    cancelled.cancel()
    results, errors = [], []

    def other():
        try:
            results.append(vis.attribute({"method": "IntegratedGradients", "arguments": {"n_steps": 50},
                                          "examples": [{"id": 1}]}))
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    thread = threading.Thread(target=other)
    thread.start()
    with pytest.raises(Cancelled):
        vis.attribute({"method": "IntegratedGradients", "arguments": {"n_steps": 50},
                       "examples": [{"id": 0}]}, progress=cancelled)
    thread.join(60)
    assert not errors and len(results) == 1


def test_cost_estimates_follow_the_method_and_its_arguments():
    vis = digits_visualizer([load_model(), other_model()])
    fetch = lambda **s: vis.estimate_cost("fetch", s)  # noqa: E731
    assert fetch(method="Saliency", num_examples=1, models=[0]) == 1
    assert fetch(method="Saliency", num_examples=4) == 8
    assert fetch(method="IntegratedGradients", arguments={"n_steps": 40}, num_examples=2, model=0) == 80
    assert fetch(method="NoiseTunnel[IntegratedGradients]",
                 arguments={"nt_samples": 5, "n_steps": 10}, num_examples=1, model=0) == 50
    assert fetch(method="Occlusion", num_examples=1, model=0) >= 10_000  # shapes unknown yet
    vis.visualize({"method": "Saliency", "num_examples": 1})
    # 8x8 digits, window 1x2x2 stride 1: 7*7 positions, plus the unperturbed forward
    assert fetch(method="Occlusion", num_examples=1, model=0) == 50
    assert vis.estimate_cost("attribute", {"method": "FeatureAblation", "examples": [{"id": 0}],
                                           "model": 0}) == 65
    # the newer methods are heavy by their own counts, never taken for one gradient
    assert fetch(method="RISE", arguments={"n_masks": 500}, num_examples=1, model=0) == 500
    assert fetch(method="XRAI", arguments={"n_steps": 10}, num_examples=1, model=0) == 20
    assert fetch(method="SobolAttribution", num_examples=1, model=0) == 32 * 18
    with pytest.raises(RequestError, match="n_steps"):
        fetch(method="IntegratedGradients", arguments={"n_steps": 1})
    with pytest.raises(RequestError, match="kind"):
        vis.estimate_cost("explain", {})


@pytest.mark.parametrize("body,message", [
    ({"models": []}, "non-empty list"),
    ({"models": [0, 0]}, "twice"),
    ({"models": [2]}, "`models` must be an index from 0 to 1"),
    ({"model": 0, "models": [0]}, "not both"),
    ({"target": "truth"}, "`target` must be a class index"),
    ({"target": 10}, "`target` must be a class index from 0 to 9"),
])
def test_bad_models_and_targets_are_refused_before_any_work(body, message):
    vis = digits_visualizer([load_model(), other_model()])
    with pytest.raises(RequestError, match=message):
        vis.visualize({"method": "Saliency", **body})


def test_general_feature_results_have_one_bar_per_column():
    model = torch.nn.Sequential(torch.nn.Linear(3, 2))
    vis = AttributionVisualizer(model, ["no", "yes"], GeneralFeature("x", ["a", "b", "c"]),
                                [Batch(torch.rand(4, 3), torch.tensor([0, 1, 0, 1]))])
    out = vis.visualize({"method": "InputXGradient", "num_examples": 2, "target": "label"})
    assert all(len(e["results"][0]["features"][0]["modified"]) == 3 for e in out)


def test_transformer_methods_are_offered_only_for_transformers():
    layer = torch.nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.0, batch_first=True)

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = torch.nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
            self.head = torch.nn.Linear(8, 2)

        def forward(self, x):
            return self.head(self.encoder(x).mean(1))

    torch.manual_seed(0)
    tiny = Tiny().eval()
    from attribuo.insights.features import TextFeature

    text = TextFeature("Tokens", [], [], lambda x: [f"t{i}" for i in range(x.shape[1])])
    vis = AttributionVisualizer([tiny, torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(40, 2))],
                                ["no", "yes"], text, [Batch(torch.randn(2, 5, 8), torch.tensor([0, 1]))])
    methods = {m["id"]: m for m in vis.get_insights_config()["methods"]}
    assert methods["AttnLRP"]["models"] == [0] and methods["Saliency"]["models"] == [0, 1]
    assert {"AttentionRollout", "AttentionRelevance"} <= set(methods)
    out = vis.visualize({"method": "AttnLRP", "models": [0], "num_examples": 1})[0]["results"][0]
    assert len(out["features"][0]["modified"]) == 5 and out["method_label"].startswith("AttnLRP")
    with pytest.raises(RequestError, match="needs a transformer"):
        vis.visualize({"method": "AttentionRollout", "num_examples": 1})
    digits_only = digits_visualizer([load_model()]).get_insights_config()["methods"]
    assert "AttnLRP" not in {m["id"] for m in digits_only}


def test_text_inputs_are_ablated_and_occluded_one_token_at_a_time():
    from attribuo.attr import FeatureAblation
    from attribuo.insights.features import TextFeature

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(40, 2)).eval()
    x = torch.randn(1, 5, 8)
    text = TextFeature("Tokens", [], [], lambda t: [f"t{i}" for i in range(t.shape[1])])
    vis = AttributionVisualizer(model, ["no", "yes"], text, [Batch(x, torch.tensor([1]))])
    out = vis.visualize({"method": "FeatureAblation", "num_examples": 1, "target": 1})[0]["results"][0]
    assert out["arguments"]["feature_mask"] == [{"shape": [5, 8], "groups": 5}]
    mask = torch.arange(5).reshape(1, 5, 1).expand(1, 5, 8)
    expected = FeatureAblation(model).attribute(x, target=1, feature_mask=mask)
    per_token = torch.tensor(vis.export(0, 0)["features"][0]["attribution"])
    assert torch.allclose(per_token, expected[0], atol=1e-6)
    assert vis.estimate_cost("attribute", {"method": "FeatureAblation", "examples": [{"id": 0}]}) == 6
    occ = vis.attribute({"method": "Occlusion", "examples": [{"id": 0, "target": 1}]})[0]["results"][0]
    assert occ["arguments"]["sliding_window_shapes"] == [[1, 8]]
    assert vis.estimate_cost("attribute", {"method": "Occlusion", "examples": [{"id": 0}]}) == 6
    # a token's occlusion equals its ablation: the same five forwards
    assert torch.allclose(torch.tensor(vis.export(0, 0)["features"][0]["attribution"]), expected[0], atol=1e-6)
