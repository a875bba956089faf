"""Token labels and word groups: readable names for token ids, and which tokens make a word."""

from __future__ import annotations

import warnings
from typing import Any

from torch import Tensor

# markers tokenizers put on a piece that starts a word (byte-level BPE, SentencePiece)
_WORD_START = ("Ġ", "▁", " ")
# and on a piece that continues one (WordPiece)
_CONTINUES = "##"


def _clean(token: str) -> str:
    return token.replace("\n", "\\n").strip()


def pretty_tokens(ids: Tensor, tokenizer: Any) -> list[str]:
    """Readable labels of ``ids`` (no byte-level markers such as 'Ġ').

    The ids are decoded to text and re-encoded with character offsets, so
    each label is the text span of its token; tokens whose spans overlap
    the previous one (several tokens of one emoji) are marked
    ``" [OVERLAP]"``. When the tokenizer gives no offsets or re-encodes
    differently, each id is decoded on its own.

    Example:
        >>> import torch
        >>> class Chars:  # one id per character, no offsets
        ...     def decode(self, ids):
        ...         return "".join(chr(i) for i in ids.reshape(-1).tolist())
        >>> pretty_tokens(torch.tensor([104, 105]), Chars())
        ['h', 'i']
    """
    ids_list = [int(i) for i in ids.reshape(-1).tolist()]
    text = tokenizer.decode(ids)
    try:
        enc = tokenizer(text, return_offsets_mapping=True, add_special_tokens=False)
        got, offsets = list(enc["input_ids"]), list(enc["offset_mapping"])
    except (TypeError, KeyError, NotImplementedError, ValueError):
        got, offsets = [], []
    labels: list[str] = []
    previous_end = -1
    k = 0
    for i, (token_id, (start, end)) in enumerate(zip(got, offsets)):
        if start == end:  # no span given: runs to the next token's start (or the end)
            end = offsets[i + 1][0] if i + 1 < len(offsets) else len(text)
        if k >= len(ids_list) or token_id != ids_list[k]:
            continue  # e.g. a space token only present without special tokens
        labels.append(_clean(text[start:end]) + (" [OVERLAP]" if previous_end > start else ""))
        previous_end = end
        k += 1
    if len(labels) == len(ids_list):
        return labels
    if got:
        warnings.warn(
            f"re-encoding the output gave {len(labels)} labels for {len(ids_list)} tokens; "
            "decoding each token on its own",
            stacklevel=3,
        )
    return decoded_tokens(ids, tokenizer)


def decoded_tokens(ids: Tensor, tokenizer: Any) -> list[str]:
    """Each id decoded on its own, cleaned (the fallback of :func:`pretty_tokens`)."""
    flat = ids.reshape(-1)
    return [_clean(tokenizer.decode(flat[j : j + 1])) for j in range(flat.numel())]


def word_groups(pieces: list[str]) -> list[list[int]]:
    """Indices of the pieces that make each word, from the tokenizer's word markers.

    A piece starting with a space marker ('Ġ', '▁', ' ') starts a word;
    one starting with '##' continues the previous word; special tokens such
    as ``<s>`` or ``[CLS]`` stand alone. Pieces without markers (a
    tokenizer that splits on spaces) are words of their own, unless the
    tokenizer marks continuations with '##'.

    Example:
        >>> word_groups(["Ġplay", "ing", "Ġgolf"])
        [[0, 1], [2]]
        >>> word_groups(["[CLS]", "play", "##ing", "golf"])
        [[0], [1, 2], [3]]
    """
    starts_marked = any(p.startswith(_WORD_START) for p in pieces)
    groups: list[list[int]] = []
    for i, piece in enumerate(pieces):
        if _is_special(piece) or not groups:
            new_word = True
        elif piece.startswith(_CONTINUES):
            new_word = False
        elif starts_marked:
            new_word = piece.startswith(_WORD_START) or _is_special(pieces[i - 1])
        else:
            new_word = True
        if new_word:
            groups.append([i])
        else:
            groups[-1].append(i)
    return groups


def _is_special(piece: str) -> bool:
    return (piece.startswith("<") and piece.endswith(">")) or (piece.startswith("[") and piece.endswith("]"))


def word_label(pieces: list[str]) -> str:
    """The text of a word made of tokenizer pieces (markers dropped)."""
    text = "".join(p[2:] if p.startswith(_CONTINUES) else p for p in pieces)
    for marker in _WORD_START:
        text = text.replace(marker, " ")
    return _clean(text)
