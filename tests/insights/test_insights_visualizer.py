"""AttributionVisualizer without HTTP: several features, extra forward args, odd datasets."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from attribuo.insights import (
    AttributionVisualizer,
    Batch,
    GeneralFeature,
    ImageFeature,
    TextFeature,
)
from attribuo.insights.methods import RequestError


class Multimodal(nn.Module):
    """image (1x2x2) + vector (3) + token embeddings (4x2), times a per-example scale."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.head = nn.Linear(4 + 3 + 8, 3).double()

    def forward(self, image, vector, tokens, scale):
        joined = torch.cat([image.flatten(1), vector, tokens.flatten(1)], 1)
        return self.head(joined) * scale


EMBED = torch.randn(10, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def make(n: int = 3):
    g = torch.Generator().manual_seed(2)
    images = torch.rand(n, 1, 2, 2, generator=g, dtype=torch.float64)
    vectors = torch.rand(n, 3, generator=g, dtype=torch.float64)
    ids = torch.randint(0, 10, (n, 4), generator=g)
    scale = torch.arange(1, n + 1, dtype=torch.float64).unsqueeze(1)
    features = [
        ImageFeature("Image", baseline_transforms=None, input_transforms=None),
        GeneralFeature("Vector", ["a", "b", "c"]),
        TextFeature("Tokens", baseline_transforms=None, input_transforms=lambda t: EMBED[t],
                    visualization_transform=lambda t: [f"w{int(i)}" for i in t.reshape(-1)]),
    ]
    model = Multimodal()
    vis = AttributionVisualizer(model, ["x", "y", "z"], features,
                                [Batch((images, vectors, ids), torch.tensor([0, 1, 2][:n]), scale)])
    return vis, model, (images, vectors, ids), scale


def test_several_features_with_additional_args_match_autograd():
    vis, model, (images, vectors, ids), scale = make()
    out = vis.visualize({"method": "InputXGradient", "num_examples": 3})
    assert [o["id"] for o in out] == [0, 1, 2]
    for k, ex in enumerate(out):
        xs = [images[k : k + 1].clone().requires_grad_(), vectors[k : k + 1].clone().requires_grad_(),
              EMBED[ids[k : k + 1]].clone().requires_grad_()]
        logits = model(*xs, scale[k : k + 1])
        t = int(logits.argmax())
        assert ex["target"]["index"] == t
        grads = torch.autograd.grad(logits[0, t], xs)
        totals = torch.stack([(x * g).sum() for x, g in zip(xs, grads)])
        shares = [f["contribution"] for f in ex["features"]]
        torch.testing.assert_close(torch.tensor(shares, dtype=torch.float64), totals / totals.abs().sum())
        image, vector, text = ex["features"]
        img = (xs[0] * grads[0]).detach().reshape(-1)
        torch.testing.assert_close(torch.tensor(image["modified"]["values"], dtype=torch.float64),
                                   img / img.abs().max())
        vec = (xs[1] * grads[1]).detach().reshape(-1)
        torch.testing.assert_close(torch.tensor(vector["modified"], dtype=torch.float64),
                                   100 * vec / vec.norm())
        tok = (xs[2] * grads[2]).detach()[0].sum(1)
        torch.testing.assert_close(torch.tensor(text["modified"], dtype=torch.float64),
                                   100 * tok / tok.abs().max())
        assert text["base"] == [f"w{int(i)}" for i in ids[k]]


def test_one_shot_iterator_is_replayed_when_it_ends():
    data = torch.arange(8, dtype=torch.float64).reshape(4, 2)
    batches = (Batch(data[i : i + 2], torch.tensor([0, 1])) for i in (0, 2))
    vis = AttributionVisualizer(nn.Linear(2, 2).double(), ["a", "b"], GeneralFeature("v", ["p", "q"]),
                                batches)
    first = vis.visualize({"method": "Saliency", "num_examples": 3})
    second = vis.visualize({"method": "Saliency", "num_examples": 3})
    shown = [ex["features"][0]["base"] for ex in first + second]
    assert shown[4] == shown[0] and shown[5] == shown[1]  # wrapped around to the start
    assert len({tuple(s) for s in shown[:4]}) == 4


def test_filter_that_nothing_matches_returns_empty():
    model = nn.Linear(2, 2)
    with torch.no_grad():
        model.weight.zero_()
        model.bias.copy_(torch.tensor([5.0, 0.0]))  # always predicts "a"
    vis = AttributionVisualizer(model, ["a", "b"], GeneralFeature("v", ["p", "q"]),
                                [Batch(torch.rand(4, 2), torch.tensor([0, 1, 0, 1]))])
    assert vis.visualize({"method": "Saliency", "classes": ["b"]}) == []
    # 6 asked, 4 exist: each example is shown at most once per request
    assert len(vis.visualize({"method": "Saliency", "classes": ["a"], "num_examples": 6})) == 4
    wrong = vis.visualize({"method": "Saliency", "prediction": "incorrect", "num_examples": 2})
    assert [ex["actual"]["label"] for ex in wrong] == ["b", "b"]


def test_dataset_and_feature_mismatch_is_explained():
    vis = AttributionVisualizer(nn.Linear(2, 2), ["a", "b"],
                                [GeneralFeature("v", ["p", "q"]), GeneralFeature("w", ["r"])],
                                [Batch(torch.rand(2, 2), torch.tensor([0, 1]))])
    with pytest.raises(ValueError, match="1 input\\(s\\) but 2 feature\\(s\\)"):
        vis.visualize({"method": "Saliency"})
    wrong = AttributionVisualizer(nn.Linear(2, 5), ["a", "b"], GeneralFeature("v", ["p", "q"]),
                                  [Batch(torch.rand(2, 2), torch.tensor([0, 1]))])
    with pytest.raises(ValueError, match="5 scores per example but 2 classes"):
        wrong.visualize({"method": "Saliency"})


def test_constructor_checks():
    with pytest.raises(TypeError, match="`classes`"):
        AttributionVisualizer(nn.Linear(2, 2), "ab", GeneralFeature("v", ["p", "q"]), [])
    with pytest.raises(TypeError, match="`features`"):
        AttributionVisualizer(nn.Linear(2, 2), ["a", "b"], ["not a feature"], [])
    with pytest.raises(RequestError, match="unknown method"):
        AttributionVisualizer(nn.Linear(2, 2), ["a", "b"], GeneralFeature("v", ["p", "q"]),
                              []).visualize({"method": "Magic"})


def test_model_crash_is_a_json_500_not_a_trace(serve):
    import httpx

    class Broken(nn.Module):
        def forward(self, x):
            raise RuntimeError("the model is broken")

    vis = AttributionVisualizer(Broken(), ["a", "b"], GeneralFeature("v", ["p", "q"]),
                                [Batch(torch.rand(2, 2), torch.tensor([0, 1]))])
    _, url = serve(vis)
    r = httpx.post(url + "/api/fetch", json={"method": "Saliency"}, timeout=30)
    assert r.status_code == 500
    assert r.json() == {"error": "internal error: RuntimeError: the model is broken"}
