"""The Insights HTTP API, over real HTTP against uvicorn: every endpoint, good and bad input."""

from __future__ import annotations

import http.client
import json
from urllib.parse import urlsplit

import httpx
import pytest
import torch

from attribuo.insights.example import build_visualizer, digits_split, load_model
from attribuo.insights.methods import METHODS

X_TEST = digits_split()[2]
Y_TEST = digits_split()[3]
MODEL = load_model()


def post(url: str, path: str, body) -> httpx.Response:
    return httpx.post(url + path, json=body, timeout=60)


def heat(example: dict) -> torch.Tensor:
    values = example["features"][0]["modified"]["values"]
    return torch.tensor(values, dtype=torch.float64).reshape(8, 8)


def saliency_reference(x: torch.Tensor, target: int) -> torch.Tensor:
    """|d logit_target / d x| scaled by its maximum: plain autograd, no attribuo."""
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(MODEL(x.unsqueeze(0))[0, target], x)
    g = grad.abs().sum(0).to(torch.float64)
    return g / g.max()


# ----- the page and its static files ---------------------------------------------------


def test_index_and_static_files(example_url):
    page = httpx.get(example_url + "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "attribuo" in page.text and 'src="static/app.js"' in page.text
    for name, kind in [("app.js", "text/javascript"), ("style.css", "text/css"),
                       ("index.html", "text/html")]:
        r = httpx.get(f"{example_url}/static/{name}")
        assert r.status_code == 200 and r.headers["content-type"].startswith(kind), name
    # the page must load nothing from the network
    assert "http://" not in page.text and "https://" not in page.text
    assert "https://" not in httpx.get(example_url + "/static/app.js").text


@pytest.mark.parametrize("path", [
    "/../",
    "/../attribuo/insights/server.py",
    "/static/../server.py",
    "/static/../../../../etc/passwd",
    "/static/..%2fserver.py",
    "/static/%2e%2e/server.py",
    "/static//etc/passwd",
    "/static/missing.js",
    "/server.py",
])
def test_paths_outside_static_are_404(example_url, path):
    # http.client sends the path byte for byte (httpx would normalise the dots away)
    where = urlsplit(example_url)
    conn = http.client.HTTPConnection(where.hostname, where.port, timeout=10)
    conn.request("GET", path)
    response = conn.getresponse()
    body = response.read()
    conn.close()
    assert response.status == 404
    assert json.loads(body) == {"error": "not found"}


# ----- /api/config -------------------------------------------------------------------------


def test_config_describes_classes_and_methods(example_url):
    config = httpx.get(example_url + "/api/config").json()
    assert config["classes"] == [str(d) for d in range(10)]
    assert config["models"] == ["DigitsCNN"]
    assert config["features"] == [{"name": "Digit", "type": "image"}]
    methods = {m["id"]: m for m in config["methods"]}
    # every method that suits a CNN is served (transformer methods need attention layers)
    assert set(methods) == {s.id for s in METHODS if s.applies is None}
    assert all(m["models"] == [0] for m in methods.values())
    steps = {a["name"]: a for a in methods["IntegratedGradients"]["arguments"]}["n_steps"]
    assert (steps["type"], steps["default"], steps["min"], steps["max"]) == ("int", 25, 2, 300)
    # every argument carries a default that its own check accepts
    for spec in METHODS:
        for p in spec.params:
            assert p.parse(p.default) is not None or p.kind == "shape"


# ----- /api/fetch ---------------------------------------------------------------------------


def test_fetch_matches_plain_autograd(serve):
    _, url = serve(build_visualizer())  # fresh: the first examples of the held-out split
    r = post(url, "/api/fetch", {"method": "Saliency", "num_examples": 4})
    assert r.status_code == 200
    examples = r.json()["examples"]
    assert len(examples) == 4
    for k, ex in enumerate(examples):
        x = X_TEST[k]
        assert ex["actual"] == {"index": int(Y_TEST[k]), "label": str(int(Y_TEST[k]))}
        pixels = torch.tensor(ex["features"][0]["base"]["pixels"]).reshape(8, 8)
        assert torch.equal(pixels, (x[0] * 255).round().to(torch.int64))
        probs = torch.softmax(MODEL(x.unsqueeze(0)), 1)[0].detach()
        top = probs.topk(4)
        assert [p["index"] for p in ex["predicted"]] == top.indices.tolist()
        torch.testing.assert_close(torch.tensor([p["score"] for p in ex["predicted"]]),
                                   top.values, atol=1e-6, rtol=0)
        assert ex["target"]["index"] == int(top.indices[0])
        torch.testing.assert_close(heat(ex), saliency_reference(x, ex["target"]["index"]),
                                   atol=1e-6, rtol=1e-5)
        assert ex["features"][0]["contribution"] == 1.0  # one feature, positive net sum


def test_integrated_gradients_complete_with_feature_baseline(serve):
    _, url = serve(build_visualizer())
    body = {"method": "IntegratedGradients", "num_examples": 2,
            "arguments": {"n_steps": 200, "method": "gausslegendre"}}
    examples = post(url, "/api/fetch", body).json()["examples"]
    for k, ex in enumerate(examples):
        scale = ex["features"][0]["modified"]["scale"]
        total = float(heat(ex).sum()) * scale
        t = ex["target"]["index"]
        with torch.no_grad():  # completeness against the zero baseline of the feature
            expected = float(MODEL(X_TEST[k : k + 1])[0, t] - MODEL(torch.zeros(1, 1, 8, 8))[0, t])
        assert total == pytest.approx(expected, rel=0.02)


def test_class_and_prediction_filters(example_url):
    examples = post(example_url, "/api/fetch",
                    {"method": "Saliency", "classes": ["3", "8"], "num_examples": 6}).json()["examples"]
    assert len(examples) == 6
    assert {ex["predicted"][0]["label"] for ex in examples} <= {"3", "8"}
    wrong = post(example_url, "/api/fetch",
                 {"method": "Saliency", "prediction": "incorrect", "num_examples": 3}).json()["examples"]
    assert wrong and all(ex["predicted"][0]["index"] != ex["actual"]["index"] for ex in wrong)
    right = post(example_url, "/api/fetch",
                 {"method": "Saliency", "prediction": "correct", "num_examples": 3}).json()["examples"]
    assert len(right) == 3
    assert all(ex["predicted"][0]["index"] == ex["actual"]["index"] for ex in right)


def test_fetch_advances_through_the_data(example_url):
    first = post(example_url, "/api/fetch", {"method": "Saliency", "num_examples": 2}).json()
    second = post(example_url, "/api/fetch", {"method": "Saliency", "num_examples": 2}).json()
    ids = [e["id"] for e in first["examples"] + second["examples"]]
    assert len(set(ids)) == 4
    pixels = [tuple(e["features"][0]["base"]["pixels"]) for e in first["examples"] + second["examples"]]
    assert len(set(pixels)) == 4


@pytest.mark.parametrize("spec", [s for s in METHODS if s.available() and s.applies is None],
                         ids=lambda s: s.id)
def test_every_available_method_runs_with_its_defaults(example_url, spec):
    r = post(example_url, "/api/fetch", {"method": spec.id, "num_examples": 1})
    assert r.status_code == 200, r.text
    (ex,) = r.json()["examples"]
    assert ex["method"] == spec.id
    values = heat(ex)
    assert torch.isfinite(values).all() and values.abs().max() <= 1.0
    assert values.abs().max() == 1.0  # a trained digit model attributes something


# ----- /api/attribute ------------------------------------------------------------------------


def test_attribute_again_with_another_target_and_method(serve):
    _, url = serve(build_visualizer())
    (ex,) = post(url, "/api/fetch", {"method": "Saliency", "num_examples": 1}).json()["examples"]
    other = 7 if ex["target"]["index"] != 7 else 2
    r = post(url, "/api/attribute", {"method": "Saliency",
                                     "examples": [{"id": ex["id"], "target": other}]})
    assert r.status_code == 200
    (again,) = r.json()["examples"]
    assert again["id"] == ex["id"] and again["target"]["index"] == other
    torch.testing.assert_close(heat(again), saliency_reference(X_TEST[0], other),
                               atol=1e-6, rtol=1e-5)
    assert not torch.allclose(heat(again), heat(ex))
    ig = post(url, "/api/attribute", {"method": "IntegratedGradients",
                                      "examples": [{"id": ex["id"], "target": None}]}).json()
    assert ig["examples"][0]["method"] == "IntegratedGradients"
    assert ig["examples"][0]["target"] == ex["target"]


# ----- bad input: a 4xx JSON error, never a trace ---------------------------------------------

BAD_FETCH = [
    ({"method": "Magic"}, "unknown method"),
    ({"method": 3}, "`method` must be a string"),
    ({"method": "IntegratedGradients", "arguments": {"n_steps": 1}}, "`n_steps` must be >= 2"),
    ({"method": "IntegratedGradients", "arguments": {"n_steps": 100000}}, "`n_steps` must be <="),
    ({"method": "IntegratedGradients", "arguments": {"n_steps": "ten"}}, "`n_steps` must be a number"),
    ({"method": "IntegratedGradients", "arguments": {"n_steps": 2.5}}, "whole number"),
    ({"method": "IntegratedGradients", "arguments": {"method": "simpson"}}, "`method` must be one of"),
    ({"method": "IntegratedGradients", "arguments": {"steps": 5}}, "no argument 'steps'"),
    ({"method": "Saliency", "arguments": {"abs": "yes"}}, "`abs` must be true or false"),
    ({"method": "Saliency", "arguments": [1, 2]}, "`arguments` must be a JSON object"),
    ({"method": "Saliency", "classes": ["11"]}, "unknown class '11'"),
    ({"method": "Saliency", "classes": "3"}, "`classes` must be a list"),
    ({"method": "Saliency", "num_examples": 0}, "`num_examples`"),
    ({"method": "Saliency", "num_examples": 1000}, "`num_examples`"),
    ({"method": "Saliency", "num_examples": True}, "`num_examples`"),
    ({"method": "Saliency", "prediction": "maybe"}, "`prediction` must be one of"),
    ({"method": "Saliency", "model": 5}, "`model` must be an index"),
    ({"method": "Saliency", "colour": "red"}, "unknown field 'colour'"),
]


@pytest.mark.parametrize("body,message", BAD_FETCH, ids=[m for _, m in BAD_FETCH])
def test_bad_fetch_is_400_with_a_message(example_url, body, message):
    r = post(example_url, "/api/fetch", body)
    assert r.status_code == 400
    assert message in r.json()["error"]


def test_bad_occlusion_window_is_400(example_url):
    for window, message in [("1,9,9", "larger than the input"), ("2,2", "must have 3 entries"),
                            ("a,b", "positive integers"), ("1,2,2;1,2,2", "2 group(s)")]:
        r = post(example_url, "/api/fetch", {"method": "Occlusion", "num_examples": 1,
                                             "arguments": {"sliding_window_shapes": window}})
        assert r.status_code == 400 and message in r.json()["error"], window


@pytest.mark.parametrize("raw", [b"{not json", b'{"method": "Saliency"', b"\xff\xfe", b"[1, 2]", b'"x"'])
def test_malformed_json_is_400(example_url, raw):
    for path in ("/api/fetch", "/api/attribute"):
        r = httpx.post(example_url + path, content=raw,
                       headers={"Content-Type": "application/json"})
        assert r.status_code == 400
        assert "error" in r.json()


BAD_ATTRIBUTE = [
    ({"method": "Saliency", "examples": [{"id": 10**9, "target": None}]}, "unknown example id"),
    ({"method": "Saliency", "examples": [{"id": 0, "target": 10}]}, "`target` must be a class index"),
    ({"method": "Saliency", "examples": [{"id": "0"}]}, "`id` must be an integer"),
    ({"method": "Saliency", "examples": [{"id": 0, "colour": 1}]}, "each of `examples`"),
    ({"method": "Saliency", "examples": []}, "`examples` must be a list"),
    ({"method": "Saliency"}, "`examples` must be a list"),
    ({"method": "Nope", "examples": [{"id": 0}]}, "unknown method"),
]


@pytest.mark.parametrize("body,message", BAD_ATTRIBUTE, ids=[m for _, m in BAD_ATTRIBUTE])
def test_bad_attribute_is_400_with_a_message(example_url, body, message):
    post(example_url, "/api/fetch", {"method": "Saliency", "num_examples": 1})  # id 0 exists
    r = post(example_url, "/api/attribute", body)
    assert r.status_code == 400
    assert message in r.json()["error"]


def test_wrong_http_methods_and_large_bodies(example_url):
    assert httpx.get(example_url + "/api/fetch").status_code == 405
    assert httpx.post(example_url + "/api/config", json={}).status_code == 405
    assert httpx.get(example_url + "/api/fetch").json() == {"error": "method not allowed"}
    big = httpx.post(example_url + "/api/fetch", content=b" " * (2 << 20))
    assert big.status_code == 413 and "too large" in big.json()["error"]


# ----- the server itself -----------------------------------------------------------------------


def test_binds_loopback_unless_asked(serve):
    server, _ = serve(build_visualizer())
    assert server._socket.getsockname()[0] == "127.0.0.1"
    everywhere, url = serve(build_visualizer(), bind_all=True)
    assert everywhere._socket.getsockname()[0] == "0.0.0.0"
    assert httpx.get(url + "/api/config").status_code == 200


def test_servers_do_not_share_state(serve):
    _, a = serve(build_visualizer())
    _, b = serve(build_visualizer())
    assert a != b
    post(a, "/api/fetch", {"method": "Saliency", "num_examples": 3})
    first_b = post(b, "/api/fetch", {"method": "Saliency", "num_examples": 1}).json()["examples"][0]
    assert first_b["id"] == 0  # b's data did not advance when a fetched
    expected = (X_TEST[0, 0] * 255).round().to(torch.int64).reshape(-1).tolist()
    assert first_b["features"][0]["base"]["pixels"] == expected


def test_port_in_use_is_a_clear_error(serve):
    server, _ = serve(build_visualizer())
    with pytest.raises(ValueError, match="`port`"):
        build_visualizer().serve(port=server.port)


def test_serve_and_render():
    vis = build_visualizer()
    try:
        port = vis.serve()
        assert vis.serve() == port  # already running: same server
        frame = vis.render()
        assert frame.url == f"http://127.0.0.1:{port}/"
        assert f'src="{frame.url}"' in frame._repr_html_()
        assert httpx.get(frame.url).status_code == 200
    finally:
        vis.stop()
