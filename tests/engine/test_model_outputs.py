"""Reading the explained score off transformer outputs."""

from __future__ import annotations

import pytest
import torch

from attribuo._engine.model_outputs import explained_scores, logits_of


def test_every_target_form_on_next_token_logits():
    logits = torch.arange(2 * 3 * 4.0).reshape(2, 3, 4)  # (batch, positions, vocab)
    assert explained_scores(logits, 1, 2)[0].tolist() == [9.0, 21.0]  # last position
    assert explained_scores(logits, [1, 2], 2)[0].tolist() == [9.0, 22.0]
    assert explained_scores(logits, (1, 2), 2)[0].tolist() == [6.0, 18.0]  # (position, token)
    assert explained_scores(logits, [(0, 1), (2, 3)], 2)[0].tolist() == [1.0, 23.0]
    scores, chosen = explained_scores(logits, None, 2)  # the top next token
    assert chosen.tolist() == [3, 3] and scores.tolist() == [11.0, 23.0]


def test_model_outputs_and_tuples_give_their_logits():
    logits = torch.randn(2, 5)
    assert logits_of({"loss": None, "logits": logits}) is logits
    assert logits_of((logits, "cache")) is logits
    with pytest.raises(TypeError, match="logits"):
        logits_of("text")
    scores, chosen = explained_scores({"logits": logits}, None, 2)
    torch.testing.assert_close(scores, logits.max(1).values)
