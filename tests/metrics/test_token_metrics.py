"""Token deletion metrics (AOPC, ERASER comprehensiveness / sufficiency).

Known answers on a bag-of-embeddings classifier whose token contributions are
known; a slow reference that deletes tokens one example at a time and runs
the model on the *unpadded* shortened sequence (so "remove" with an attention
mask is checked against really removing the tokens); and real transformers
models (BERT classifier, GPT-2 causal LM) built from configs.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from attribuo._engine.errors import ArgumentTypeError, ArgumentValueError
from attribuo.metrics.text import (
    ERASER_BINS,
    token_comprehensiveness,
    token_deletion_aopc,
    token_sufficiency,
)

MASK, PAD, VOCAB = 1, 0, 20


class Bag(nn.Module):
    """Logits = sum of per-token class weights over the real tokens.

    MASK and PAD weigh 0 unless ``loud_special``: then a PAD the mask fails
    to hide, or a MASK put in the wrong place, changes the output.
    """

    def __init__(self, seed: int = 0, classes: int = 3, loud_special: bool = False):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.weight = nn.Parameter(torch.randn(VOCAB, classes, generator=g, dtype=torch.float64))
        if not loud_special:
            with torch.no_grad():
                self.weight[[MASK, PAD]] = 0

    def forward(self, ids, attention_mask=None):
        w = self.weight[ids]
        if attention_mask is not None:
            w = w * attention_mask.unsqueeze(-1).to(w.dtype)
        return w.sum(dim=1)


def batch(seed: int = 0, n: int = 5, length: int = 9):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, VOCAB, (n, length), generator=g)
    lengths = torch.randint(3, length + 1, (n,), generator=g)
    lengths[0] = length
    mask = (torch.arange(length)[None] < lengths[:, None]).long()
    ids = ids.masked_fill(mask == 0, PAD)
    a = torch.randn(n, length, generator=g, dtype=torch.float64)
    return ids, mask, a


# ---------------------------------------------------------------- slow reference


def reference(model, ids, attributions, target, metric, *, mask=None, special=None, deletion="replace",
              mask_token_id=MASK, max_k=10, bins=ERASER_BINS, softmax=True, causal=False):
    """One example at a time; "remove" runs the model on the shortened, unpadded sequence."""

    def score(tokens, t):
        seq = torch.tensor([tokens])
        with torch.no_grad():
            out = model(seq)
        logits = out.logits if hasattr(out, "logits") else out
        if causal:
            logits = logits[:, -1]
        logits = logits[0].double()
        return float(logits.softmax(-1)[t] if softmax else logits[t])

    results = []
    for i in range(ids.shape[0]):
        length = int(mask[i].sum()) if mask is not None else ids.shape[1]
        tokens = ids[i, :length].tolist()
        real = [p for p in range(length) if special is None or not special[i, p]]
        ranked = sorted(real, key=lambda p: (-float(attributions[i, p]), p))
        t = int(target[i])

        def deleted(drop, tokens=tokens):
            if deletion == "replace":
                return [mask_token_id if p in drop else tok for p, tok in enumerate(tokens)]
            return [tok for p, tok in enumerate(tokens) if p not in drop]

        full = score(tokens, t)
        if metric == "aopc":
            drops = [full - score(deleted(set(ranked[:k])), t) for k in range(1, max_k + 1)]
            results.append(sum(drops) / (max_k + 1))
            continue
        drops = []
        for b in bins:
            top = set(ranked[:min(math.ceil(round(b * len(real), 9)), len(real))])
            drop = top if metric == "comp" else set(real) - top
            drops.append(full - score(deleted(drop), t))
        results.append(sum(drops) / len(drops))
    return torch.tensor(results, dtype=torch.float64)


METRICS = {"aopc": token_deletion_aopc, "comp": token_comprehensiveness, "suff": token_sufficiency}


@pytest.mark.parametrize("metric", list(METRICS))
@pytest.mark.parametrize("deletion", ["replace", "remove"])
def test_bag_matches_slow_reference_with_padding(metric, deletion):
    model = Bag(loud_special=True)
    ids, mask, a = batch()
    target = torch.tensor([0, 1, 2, 0, 1])
    special = torch.zeros_like(ids)
    special[:, 0] = 1  # a [CLS]-like first token never goes
    extra = {"max_k": 4} if metric == "aopc" else {}
    ours = METRICS[metric](model, ids, a, target, attention_mask=mask, special_tokens_mask=special,
                           mask_token_id=MASK, deletion=deletion, **extra)
    expected = reference(model, ids, a, target, metric, mask=mask, special=special, deletion=deletion, **extra)
    torch.testing.assert_close(ours, expected)


def test_no_mask_target_none_and_logits():
    model = Bag(seed=1, loud_special=True)
    ids, _, a = batch(seed=1, length=7)
    ids = ids.clamp(min=2)  # no padding
    predicted = model(ids).argmax(1)
    for metric in METRICS:
        ours = METRICS[metric](model, ids, a, mask_token_id=MASK, softmax=False)
        torch.testing.assert_close(ours, reference(model, ids, a, predicted, metric, softmax=False))


def test_aopc_curves_and_short_examples():
    model = Bag()
    ids, mask, a = batch(length=6)
    target = torch.zeros(5, dtype=torch.long)
    scores, curves = token_deletion_aopc(model, ids, a, target, attention_mask=mask, mask_token_id=MASK,
                                         max_k=8, return_curves=True)
    assert curves.shape == (5, 9)
    torch.testing.assert_close(scores, (curves[:, :1] - curves).sum(1) / 9)
    # past an example's length every token is gone: the curve stays at the all-masked score
    n_real = mask.sum(1)
    for i in range(5):
        assert torch.allclose(curves[i, n_real[i]:], curves[i, -1].expand(9 - n_real[i]))


# ---------------------------------------------------------------- known answers


def test_exact_attributions_beat_random_ones():
    model = Bag(seed=2)
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(2, VOCAB, (16, 12), generator=g)
    target = model(ids).argmax(1)
    exact = model.weight.detach()[ids, target[:, None]]  # each token's contribution to the logit
    noise = torch.randn(ids.shape, generator=g, dtype=torch.float64)
    kw = {"mask_token_id": MASK, "target": target}
    assert (token_deletion_aopc(model, ids, exact, **kw) > token_deletion_aopc(model, ids, noise, **kw)).float().mean() > 0.8
    assert token_comprehensiveness(model, ids, exact, **kw).mean() > token_comprehensiveness(model, ids, noise, **kw).mean()
    assert token_sufficiency(model, ids, exact, **kw).mean() < token_sufficiency(model, ids, noise, **kw).mean()
    # on the logit the drop of the top-k deletion is the sum of the k largest contributions
    top = exact.sort(dim=1, descending=True).values
    expected = sum(top[:, :k].sum(1) for k in range(1, 11)) / 11
    torch.testing.assert_close(token_deletion_aopc(model, ids, exact, softmax=False, **kw), expected)


def test_bin_sizes_round_up_exactly():
    # 7% of 100 tokens is 7 tokens (0.07 * 100 is 7.000000000000001 in floating point), 0.5% is 1
    model = Bag(seed=6)
    ids = torch.randint(2, VOCAB, (2, 100), generator=torch.Generator().manual_seed(7))
    exact = model.weight.detach()[ids, 0]
    top = exact.sort(dim=1, descending=True).values
    for share, k in ((0.07, 7), (0.005, 1), (0.2, 20), (0.555, 56)):
        comp = token_comprehensiveness(model, ids, exact, 0, mask_token_id=MASK, softmax=False, bins=(share,))
        torch.testing.assert_close(comp, top[:, :k].sum(1))


def test_model_ignoring_half_the_vocabulary():
    # tokens >= 10 carry nothing: an attribution that ranks them last deletes what matters first
    model = Bag(seed=4)
    with torch.no_grad():
        model.weight[10:] = 0
    g = torch.Generator().manual_seed(5)
    ids = torch.randint(2, VOCAB, (12, 10), generator=g)
    target = model(ids).argmax(1)
    exact = model.weight.detach()[ids, target[:, None]]
    reversed_ = -exact
    comp = token_comprehensiveness(model, ids, exact, target, mask_token_id=MASK, softmax=False)
    worse = token_comprehensiveness(model, ids, reversed_, target, mask_token_id=MASK, softmax=False)
    assert bool((comp >= worse).all()) and comp.mean() > worse.mean() + 0.5


# ---------------------------------------------------------------- batching


@pytest.mark.parametrize("metric", list(METRICS))
def test_chunk_and_batch_invariance(metric):
    model = Bag(loud_special=True)
    ids, mask, a = batch()
    target = torch.tensor([0, 1, 2, 0, 1])
    kw = {"attention_mask": mask, "mask_token_id": MASK, "deletion": "remove"}
    full = METRICS[metric](model, ids, a, target, **kw)
    for m in (1, 4, 13):
        torch.testing.assert_close(METRICS[metric](model, ids, a, target, max_examples_per_batch=m, **kw), full)
    part = METRICS[metric](model, ids[2:], a[2:], target[2:], attention_mask=mask[2:], mask_token_id=MASK,
                           deletion="remove")
    torch.testing.assert_close(part, full[2:])


def test_attributions_from_a_function_get_the_predicted_target():
    model = Bag(seed=1)
    ids, mask, _ = batch(seed=2)
    seen = {}

    def contributions(net, inputs, target, additional_forward_args=None):
        seen["target"], seen["args"] = target, additional_forward_args
        return net.weight.detach()[inputs, target[:, None]]

    ours = token_comprehensiveness(model, ids, contributions, attention_mask=mask, mask_token_id=MASK)
    predicted = model(ids, mask).argmax(1)
    assert torch.equal(seen["target"], predicted) and seen["args"][0] is mask
    exact = model.weight.detach()[ids, predicted[:, None]]
    torch.testing.assert_close(ours, token_comprehensiveness(model, ids, exact, predicted, attention_mask=mask,
                                                             mask_token_id=MASK))


def test_softmax_needs_class_scores():
    ids, _, a = batch()
    with pytest.raises(ArgumentValueError, match="softmax"):
        token_comprehensiveness(lambda t: t.double().sum(1), ids, a, mask_token_id=MASK)
    plain = token_comprehensiveness(lambda t: t.double().sum(1), ids, a, mask_token_id=MASK, softmax=False)
    assert plain.shape == (5,)


def test_embedding_attributions_are_summed_and_inputs_untouched():
    model = Bag()
    ids, mask, a = batch()
    ids0, mask0 = ids.clone(), mask.clone()
    per_dim = a.unsqueeze(-1).expand(-1, -1, 4) / 4
    one = token_comprehensiveness(model, ids, a, 0, attention_mask=mask, mask_token_id=MASK, deletion="remove")
    summed = token_comprehensiveness(model, ids, per_dim, 0, attention_mask=mask, mask_token_id=MASK,
                                     deletion="remove")
    torch.testing.assert_close(one, summed)
    assert torch.equal(ids, ids0) and torch.equal(mask, mask0)


# ---------------------------------------------------------------- transformers models


@pytest.fixture(scope="module")
def hf_models():
    pytest.importorskip("transformers")
    from models import hf

    return hf


def louder(model: nn.Module, std: float = 0.3) -> nn.Module:
    # random transformers start with weights of std 0.02 and give nearly constant outputs:
    # larger weights make every token matter, so that a wrong deletion shows
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


def sentences(n: int = 3, length: int = 10, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 2000, (n, length), generator=g)
    lengths = torch.tensor([length, length - 3, length - 5])[:n]
    mask = (torch.arange(length)[None] < lengths[:, None]).long()
    ids[:, 0] = 101
    ids[torch.arange(n), lengths - 1] = 102  # [SEP]
    ids = ids.masked_fill(mask == 0, 0)
    special = ((ids == 101) | (ids == 102)).long()
    a = torch.randn(n, length, generator=g)
    return ids, mask, special, a


@pytest.mark.parametrize("deletion", ["replace", "remove"])
def test_bert_classifier(hf_models, deletion):
    model = louder(hf_models.bert(layers=1, width=32))
    ids, mask, special, a = sentences()
    for metric in ("comp", "suff"):
        ours = METRICS[metric](model, ids, a, attention_mask=mask, special_tokens_mask=special,
                               mask_token_id=103, deletion=deletion)
        with torch.no_grad():
            predicted = model(input_ids=ids, attention_mask=mask).logits.argmax(1)
        expected = reference(model, ids, a, predicted, metric, mask=mask, special=special, deletion=deletion,
                             mask_token_id=103)
        torch.testing.assert_close(ours, expected, atol=2e-5, rtol=0)
        assert ours.abs().max() > 1e-2


def test_gpt2_next_token(hf_models):
    model = louder(hf_models.gpt2(layers=1, width=32))
    ids, mask, _, a = sentences()
    ids = ids.masked_fill(ids == 102, 1500)  # no [SEP] for a language model
    target = torch.tensor([1010, 1020, 1030])
    # logits: the probabilities of single tokens over a 30522-word vocabulary are tiny
    ours = token_deletion_aopc(model, ids, a, target, attention_mask=mask, mask_token_id=103, deletion="remove",
                               max_k=3, softmax=False)
    expected = reference(model, ids, a, target, "aopc", mask=mask, deletion="remove", max_k=3, causal=True,
                         softmax=False)
    torch.testing.assert_close(ours, expected, atol=2e-5, rtol=0)
    assert ours.abs().min() > 1e-3


# ---------------------------------------------------------------- bad arguments


def test_bad_arguments():
    model = Bag()
    ids, mask, a = batch()
    with pytest.raises(ArgumentTypeError, match="mask_token_id"):
        token_deletion_aopc(model, ids, a, 0)
    with pytest.raises(ArgumentValueError, match="deletion"):
        token_deletion_aopc(model, ids, a, 0, mask_token_id=MASK, deletion="drop")
    with pytest.raises(ArgumentTypeError, match="inputs"):
        token_deletion_aopc(model, ids.double(), a, 0, mask_token_id=MASK)
    with pytest.raises(ArgumentTypeError, match="inputs"):
        token_deletion_aopc(model, ids[0], a, 0, mask_token_id=MASK)
    with pytest.raises(ArgumentValueError, match="attributions"):
        token_deletion_aopc(model, ids, a[:, :3], 0, mask_token_id=MASK)
    with pytest.raises(ArgumentValueError, match="attention_mask"):
        token_deletion_aopc(model, ids, a, 0, mask_token_id=MASK, attention_mask=mask[:, :3])
    with pytest.raises(ArgumentValueError, match="attention_mask"):
        token_deletion_aopc(model, ids, a, 0, mask_token_id=MASK, attention_mask=mask * 2)
    with pytest.raises(ArgumentValueError, match="max_k"):
        token_deletion_aopc(model, ids, a, 0, mask_token_id=MASK, max_k=0)
    with pytest.raises(ArgumentValueError, match="bins"):
        token_comprehensiveness(model, ids, a, 0, mask_token_id=MASK, bins=(0.0, 0.5))
    with pytest.raises(ArgumentTypeError, match="softmax"):
        token_sufficiency(model, ids, a, 0, mask_token_id=MASK, softmax=1)
    with pytest.raises(ArgumentTypeError, match="pad_token_id"):
        token_sufficiency(model, ids, a, 0, deletion="remove", pad_token_id=None)
    with pytest.raises(ArgumentValueError, match="max_examples_per_batch"):
        token_sufficiency(model, ids, a, 0, mask_token_id=MASK, max_examples_per_batch=0)
