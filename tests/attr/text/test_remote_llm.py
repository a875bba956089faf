"""RemoteLLMAttribution and VLLMProvider against a small OpenAI-compatible server on 127.0.0.1.

The server scores prompts with a GPT2 built from a config, as vLLM does with
``prompt_logprobs``: the text is tokenized (no special tokens) and each
position reports the log probability of its token given the ones before.
"""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch
from models.hf import gpt2, minilm_tokenizer
from torch.testing import assert_close

pytest.importorskip("openai")
pytest.importorskip("transformers")

from attribuo.attr import (  # noqa: E402
    FeatureAblation,
    Lime,
    RemoteLLMAttribution,
    RemoteLLMProvider,
    TextTemplateInput,
    VLLMProvider,
)

TOK = minilm_tokenizer()
MODEL = gpt2(n_positions=128)
TEMPLATE = ("the {} of the {} is a {} city near the ", ["capital", "old country", "large"])
TARGET = "sea and the hills"


def prompt_logprobs(text: str) -> list:
    ids = torch.tensor(TOK.encode(text, add_special_tokens=False))
    with torch.no_grad():
        logits = MODEL(input_ids=ids[None]).logits[0]
    lp = logits[:-1].log_softmax(-1).gather(1, ids[1:, None])[:, 0]
    entries = [None]
    for token, value in zip(ids[1:].tolist(), lp.tolist()):
        entries.append({str(token): {"logprob": value, "rank": 1, "decoded_token": TOK.decode([token])}})
    return entries


def greedy(text: str, n: int) -> str:
    ids = torch.tensor(TOK.encode(text, add_special_tokens=False))[None]
    with torch.no_grad():
        out = MODEL.generate(ids, max_new_tokens=n, do_sample=False)
    return TOK.decode(out[0, ids.shape[1] :])


class _Handler(BaseHTTPRequestHandler):
    requests: list = []

    def log_message(self, *args):  # keep the test output clean
        pass

    def _reply(self, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path.endswith("/models"):
            self._reply({"object": "list", "data": [{"id": "tiny-gpt2", "object": "model", "created": 0,
                                                     "owned_by": "test"}]})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append(body)
        prompt = body["prompt"]
        choice = {"index": 0, "finish_reason": "length", "logprobs": None}
        if body.get("extra_body", {}).get("prompt_logprobs") == 0 or body.get("prompt_logprobs") == 0:
            choice.update(text="", prompt_logprobs=prompt_logprobs(prompt))
        else:
            choice.update(text=greedy(prompt, body.get("max_tokens", 16)))
        self._reply({"id": "cmpl-1", "object": "text_completion", "created": 0, "model": body["model"],
                     "choices": [choice]})


@pytest.fixture(scope="module")
def server_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def expected_scores(text: str, target: str) -> torch.Tensor:
    n = len(TOK.encode(target, add_special_tokens=False))
    return torch.tensor([next(iter(e.values()))["logprob"] for e in prompt_logprobs(text + target)[-n:]])


def test_provider_reads_the_served_model_and_its_logprobs(server_url):
    provider = VLLMProvider(server_url)
    assert provider.model_name == "tiny-gpt2"
    got = provider.get_logprobs("the capital is near the ", TARGET, TOK)
    assert_close(torch.tensor(got), expected_scores("the capital is near the ", TARGET), atol=1e-6, rtol=0)
    assert provider.generate("the capital is", max_new_tokens=3) == greedy("the capital is", 3)
    assert _Handler.requests[-1]["max_tokens"] == 3  # max_new_tokens became the API's max_tokens


@pytest.mark.parametrize("concurrency", [1, 4])
def test_remote_feature_ablation_equals_ablation_by_hand(server_url, concurrency):
    fa = FeatureAblation(RemoteLLMAttribution.placeholder_model)
    remote = RemoteLLMAttribution(fa, TOK, VLLMProvider(server_url, model_name="tiny-gpt2"),
                                  max_concurrency=concurrency)
    inp = TextTemplateInput(*TEMPLATE)
    res = remote.attribute(inp, TARGET)
    target_str = TOK.decode(TOK.encode(TARGET, add_special_tokens=False))
    base = expected_scores(inp.to_model_input(), target_str)
    expected = []
    for i in range(inp.n_itp_features):
        present = torch.ones(1, inp.n_itp_features)
        present[0, i] = 0
        expected.append(base - expected_scores(inp.to_model_input(present), target_str))
    expected = torch.stack(expected, 1)
    assert_close(res.token_attr, expected, atol=1e-5, rtol=0)
    assert_close(res.seq_attr, expected.sum(0), atol=1e-5, rtol=0)
    assert_close(res.output_probs, base.exp(), atol=1e-6, rtol=1e-5)


def test_remote_generated_target_and_sequence_only_methods(server_url):
    remote = RemoteLLMAttribution(Lime(RemoteLLMAttribution.placeholder_model), TOK,
                                  VLLMProvider(server_url, model_name="tiny-gpt2"))
    res = remote.attribute(TextTemplateInput(*TEMPLATE), gen_args={"max_new_tokens": 2}, n_samples=20)
    assert res.token_attr is None and res.seq_attr.shape == (3,)
    assert len(res.output_tokens) == len(TOK.encode(greedy(TextTemplateInput(*TEMPLATE).to_model_input(), 2),
                                                    add_special_tokens=False))


class _Short(RemoteLLMProvider):
    api_url = "local"

    def generate(self, prompt, **gen_args):
        return "x"

    def get_logprobs(self, input_prompt, target_str, tokenizer=None):
        return [-1.0]  # always one value, whatever the target


def test_provider_errors_are_clear(server_url):
    with pytest.raises(ValueError, match="API URL is required"):
        VLLMProvider("  ")
    with pytest.raises(ValueError, match="Tokenizer is required"):
        VLLMProvider(server_url, model_name="m").get_logprobs("a", "b", None)
    with pytest.raises(ValueError, match="Target string cannot be empty"):
        VLLMProvider(server_url, model_name="m").get_logprobs("a", "", TOK)
    remote = RemoteLLMAttribution(FeatureAblation(RemoteLLMAttribution.placeholder_model), TOK, _Short())
    with pytest.raises(ValueError, match="does not match"):
        remote.attribute(TextTemplateInput(*TEMPLATE), TARGET)
    with pytest.raises(TypeError, match="provider"):
        RemoteLLMAttribution(FeatureAblation(RemoteLLMAttribution.placeholder_model), TOK, object())
