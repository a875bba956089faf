"""Faithfulness of transformer attributions on a task whose evidence is known.

Task: sequences of ``LENGTH`` token ids start with [CLS] (id 0), hold the
two marker tokens A and B once each at random positions, and random filler
elsewhere; the label is 1 iff A comes before B. So A and B are the only
evidence, and the order of the two is what the model must read.

A small ``nn.TransformerEncoder`` classifier (token + learned position
embeddings, classifier on the [CLS] output) is trained on CPU, then each
method scores the tokens of held-out sequences for the predicted class.

Metrics (over ``N_EVAL`` held-out sequences):

* top-2 evidence precision: fraction of the two highest-scored tokens
  ([CLS] excluded) that are A or B; random scoring gives 2 / 11 in
  expectation.
* deletion AUC: tokens ([CLS] excluded) are replaced by the neutral filler
  id in decreasing score order, one at a time; the probability of the
  originally predicted class is recorded before and after each step and
  averaged (lower = the top-ranked tokens mattered more).

Scores are ranked as signed values (positive = evidence for the explained
class), as the methods define them; |gradient| is already non-negative.
The table also gives the top-2 precision ranked by |score| and the top-1
precision: the signed relevance methods (LRP, IG) often give the second
marker *negative* relevance for the explained logit (seed 0: B is negative
in ~98% of the class-1 sequences) although deleting it lowers the
probability, so their signed top-2 precision is far below their |score|
one. On this small model raw last-layer attention already points at A and
B, so it is a strong baseline here (see the results file for numbers).
Input x Gradient at the embedding (no baseline) ranks A or B first less
often and its deletion AUC is above random order's on 2 of seeds
0-4, so a plain gradient-times-input product is no stand-in for LRP here.

Run ``python -m benchmarks.transformer_faithfulness``; the table is printed
and written to ``benchmarks/results/transformer_faithfulness.md``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from attribuo.attr import (
    AttentionFlow,
    AttentionRelevance,
    AttentionRollout,
    LayerAttnLRP,
    LayerGradientXActivation,
    LayerIntegratedGradients,
)
from attribuo.attr.attention.maps import collect_maps

VOCAB = 20
LENGTH = 12
CLS, A, B, FILLER = 0, 1, 2, 3  # FILLER is also one of the random fillers, so it is in-distribution
FILLERS = (3, VOCAB)  # filler ids are drawn from [3, VOCAB)
N_EVAL = 200
RESULTS = Path(__file__).parent / "results" / "transformer_faithfulness.md"


def make_data(n: int, seed: int) -> tuple[Tensor, Tensor]:
    """``n`` sequences ``(n, LENGTH)`` with A and B once each, and labels (1 iff A precedes B)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(*FILLERS, (n, LENGTH), generator=g)
    ids[:, 0] = CLS
    # two distinct positions in 1..LENGTH-1 per row: the first gets A, the second B
    pos = torch.rand(n, LENGTH - 1, generator=g).argsort(1)[:, :2] + 1
    rows = torch.arange(n)
    ids[rows, pos[:, 0]] = A
    ids[rows, pos[:, 1]] = B
    labels = (pos[:, 0] < pos[:, 1]).long()
    return ids, labels


class OrderClassifier(nn.Module):
    """Token + learned position embeddings, a 2-layer encoder, a linear head on [CLS]."""

    def __init__(self, d_model: int = 32, heads: int = 4, layers: int = 2) -> None:
        super().__init__()
        # the token embedding is the first (and only) nn.Embedding, so the
        # attention methods find it as the model's input embedding
        self.embed = nn.Embedding(VOCAB, d_model)
        self.pos = nn.Parameter(torch.randn(LENGTH, d_model) * 0.1)
        block = nn.TransformerEncoderLayer(d_model, heads, 2 * d_model, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.head = nn.Linear(d_model, 2)

    def forward(self, ids: Tensor) -> Tensor:
        """Logits ``(batch, 2)``."""
        h = self.encoder(self.embed(ids) + self.pos[: ids.shape[1]])
        return self.head(h[:, 0])


def accuracy(model: nn.Module, ids: Tensor, labels: Tensor) -> float:
    """Fraction of ``ids`` classified as ``labels``."""
    with torch.no_grad():
        return (model(ids).argmax(1) == labels).float().mean().item()


def train_model(seed: int = 0, steps: int = 400, batch: int = 128, lr: float = 3e-3) -> OrderClassifier:
    """Train an :class:`OrderClassifier` on fresh batches (seeded, Adam, CPU); returned in eval mode."""
    torch.manual_seed(seed)
    model = OrderClassifier()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    ids, labels = make_data(steps * batch, seed + 1)
    model.train()
    for step in range(steps):
        x, y = ids[step * batch : (step + 1) * batch], labels[step * batch : (step + 1) * batch]
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def _token_sum(x: Tensor) -> Tensor:
    return x.sum(-1).detach().double()


def method_scores(model: OrderClassifier, ids: Tensor, target: Tensor) -> dict[str, Tensor]:
    """One score per token ``(batch, LENGTH)`` from each method, for ``target`` (the predicted class)."""
    baseline = torch.full_like(ids, FILLER)
    baseline[:, 0] = CLS
    gen = torch.Generator().manual_seed(1234)
    last_map = collect_maps(model, ids).maps[-1]
    saliency = LayerGradientXActivation(model, model.embed, multiply_by_inputs=False)
    out: dict[str, Tensor] = {
        "AttnLRP (LayerAttnLRP, embedding)": _token_sum(LayerAttnLRP(model, model.embed).attribute(ids, target=target)),
        "CP-LRP (attention_rule='constant')": _token_sum(
            LayerAttnLRP(model, model.embed, attention_rule="constant").attribute(ids, target=target)
        ),
        "AttentionRelevance (transformer_attribution)": AttentionRelevance(model).attribute(ids, target=target).double(),
        "AttentionRelevance (generic)": AttentionRelevance(model, variant="generic").attribute(ids, target=target).double(),
        "AttentionRollout": AttentionRollout(model).attribute(ids).double(),
        "AttentionFlow": AttentionFlow(model, resolution=10_000).attribute(ids).double(),
        "Raw attention (last layer, head mean, [CLS] row)": last_map.mean(1)[:, 0].double(),
        "LayerIntegratedGradients (embedding, filler baseline)": _token_sum(
            LayerIntegratedGradients(model, model.embed).attribute(ids, baselines=baseline, target=target, n_steps=32)
        ),
        "abs(gradient) at embedding (LayerGradientXActivation, multiply_by_inputs=False)": saliency.attribute(
            ids, target=target
        ).abs().sum(-1).detach().double(),
        "Input x Gradient (LayerGradientXActivation, embedding)": _token_sum(
            LayerGradientXActivation(model, model.embed).attribute(ids, target=target)
        ),
        "Random order": torch.rand(ids.shape, generator=gen, dtype=torch.float64),
    }
    return out


def evidence_precision(scores: Tensor, ids: Tensor, k: int = 2) -> float:
    """Fraction of the ``k`` top-scored non-[CLS] tokens that are A or B, over all sequences."""
    top = scores[:, 1:].topk(k, dim=1).indices + 1
    picked = ids.gather(1, top)
    return ((picked == A) | (picked == B)).double().mean().item()


def deletion_auc(model: nn.Module, scores: Tensor, ids: Tensor, target: Tensor) -> float:
    """Mean probability of ``target`` while non-[CLS] tokens are replaced by FILLER, highest score first."""
    order = scores[:, 1:].argsort(1, descending=True) + 1
    current = ids.clone()
    steps = [current.clone()]
    rows = torch.arange(ids.shape[0])
    for j in range(order.shape[1]):
        current[rows, order[:, j]] = FILLER
        steps.append(current.clone())
    stacked = torch.stack(steps, 1)  # (batch, steps, tokens): one forward for all
    with torch.no_grad():
        probs = model(stacked.flatten(0, 1)).softmax(-1).reshape(ids.shape[0], len(steps), -1)
    chosen = probs.gather(2, target[:, None, None].expand(-1, len(steps), 1))[..., 0]
    return chosen.mean().item()


@dataclass
class Row:
    """One line of the table."""

    method: str
    precision: float
    precision_abs: float
    top1: float
    deletion: float


def faithfulness_table(model: OrderClassifier, ids: Tensor) -> list[Row]:
    """Top-2 evidence precision and deletion AUC of each method on ``ids`` for the predicted class."""
    with torch.no_grad():
        target = model(ids).argmax(1)
    return [
        Row(
            name, evidence_precision(s, ids), evidence_precision(s.abs(), ids), evidence_precision(s, ids, 1),
            deletion_auc(model, s, ids, target),
        )
        for name, s in method_scores(model, ids, target).items()
    ]


def markdown(rows: list[Row], acc: float) -> str:
    """The table as Markdown, with a header line on the setup."""
    lines = [
        f"Task: label = A before B; {LENGTH} tokens, vocabulary {VOCAB}; held-out accuracy {acc:.3f}; "
        f"{N_EVAL} held-out sequences; target = predicted class. Random top-2 precision in expectation: "
        f"{2 / (LENGTH - 1):.3f}.",
        "",
        "| method | top-2 evidence precision | top-2, ranked by abs(score) | top-1 evidence precision "
        "| deletion AUC (lower = more faithful) |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {r.method} | {r.precision:.3f} | {r.precision_abs:.3f} | {r.top1:.3f} | {r.deletion:.3f} |" for r in rows
    ]
    return "\n".join(lines) + "\n"


def main(run: Callable[[], OrderClassifier] = train_model) -> None:
    """Train, score, print the table and write it to ``benchmarks/results``."""
    model = run()
    test_ids, test_labels = make_data(2000, seed=99)
    acc = accuracy(model, test_ids, test_labels)
    rows = faithfulness_table(model, test_ids[:N_EVAL])
    text = markdown(rows, acc)
    print(text)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text)


if __name__ == "__main__":
    main()
