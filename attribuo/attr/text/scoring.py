"""Scoring a target response: ``log p(target_t | prompt, target_<t)`` for many prompts at once.

The quantity LLM attribution explains is the log probability a model gives
a response, token by token, after a (perturbed) prompt. For a causal
language model it is exactly what one teacher-forced forward of
``prompt + response`` gives at the response positions, so that is how it is
computed here: no generation loop and nothing that depends on a
``transformers`` version's generation internals. Prompts of different
lengths are padded into one batch, with an attention mask and explicit
``position_ids``, and scored many per forward. When the prompts share a
prefix with the unperturbed prompt (everything before the first perturbed
token), its key/value cache is computed once and only the rest is run.

Models that are not known to be causal (a custom module, an encoder) are
scored token by token instead, as generation would: each step is a plain
forward of the prompt and the response so far (or, with
``use_cached_outputs`` and the model's own generation helpers, the steps
Captum runs).
"""

from __future__ import annotations

import copy
import inspect
import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..._engine.errors import ArgumentTypeError, ArgumentValueError

# perturbed prompts are scored many per model call, up to this many tokens per call
# (cached prefix tokens count too: they occupy the key/value cache of every row)
MAX_BATCH_TOKENS = 8192


def batch_tokens() -> int:
    """The token budget of one scoring call: ``$ATTRIBUO_LLM_BATCH_TOKENS`` or :data:`MAX_BATCH_TOKENS`."""
    value = os.environ.get("ATTRIBUO_LLM_BATCH_TOKENS", "")
    return int(value) if value.strip().isdigit() and int(value) > 0 else MAX_BATCH_TOKENS
# a shared prefix shorter than this is recomputed rather than cached
MIN_SHARED_PREFIX = 8
# what one extra model call costs, in tokens run, when splitting prompts by shared prefix
CALL_COST_TOKENS = 64


def logits_of(outputs: Any) -> Tensor:
    """The ``[batch, seq, vocab]`` logits of a model's output (a tensor or an object with ``logits``)."""
    logits = outputs if isinstance(outputs, Tensor) else (
        outputs["logits"] if isinstance(outputs, Mapping) else getattr(outputs, "logits", None)
    )
    if not isinstance(logits, Tensor):
        raise ArgumentTypeError(
            "the model must return logits: a tensor or an object with a `logits` tensor, "
            f"got {type(outputs).__name__}"
        )
    # some models add a dimension of returned heads after the batch: [batch, 1, seq, vocab]
    return logits[:, 0] if logits.dim() == 4 else logits


def _log_softmax(logits: Tensor) -> Tensor:
    # half-precision logits are normalised in float32; float32 and float64 stay as they are
    return torch.log_softmax(logits if logits.dtype in (torch.float32, torch.float64) else logits.float(), dim=-1)


def _parameters(func: Callable) -> tuple[frozenset[str], bool]:
    """``func``'s named parameters, and whether it also takes ``**kwargs``."""
    try:
        params = list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError):
        return frozenset(), True
    names = frozenset(p.name for p in params if p.kind is not inspect.Parameter.VAR_KEYWORD)
    return names, any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def is_causal_lm(model: Any) -> bool:
    """Whether ``model`` is a decoder-only language model whose logits at ``i`` see tokens ``<= i``.

    True for Hugging Face models that can generate and are not
    encoder-decoders, and for any model that sets ``is_causal_lm = True``.
    """
    flag = getattr(model, "is_causal_lm", None)
    if isinstance(flag, bool):
        return flag
    config = getattr(model, "config", None)
    can_generate = getattr(model, "can_generate", None)
    if config is None or not callable(can_generate):
        return False
    try:
        generates = bool(can_generate())
    except Exception:  # noqa: BLE001 (an unusual model: not known to be causal)
        return False
    return generates and not getattr(config, "is_encoder_decoder", False)


def position_limit(model: Any) -> int | None:
    """The longest sequence the model's position embeddings cover, when its config says."""
    config = getattr(model, "config", None)
    for name in ("n_positions", "max_position_embeddings"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def shared_prefix_length(rows: list[Tensor], reference: Tensor) -> list[int]:
    """For each 1-D row, how many of its first tokens equal ``reference``'s."""
    out = []
    for row in rows:
        n = min(row.numel(), reference.numel())
        differ = (row[:n] != reference[:n].to(row.device)).nonzero()
        out.append(int(differ[0]) if differ.numel() else n)
    return out


def split_by_prefix(prefix: list[int], lengths: list[int], t: int) -> list[tuple[list[int], int]]:
    """Batches of rows and the shared prefix each reuses, chosen to run the fewest tokens.

    Rows are sorted by their shared prefix; a batch of consecutive rows
    reuses the smallest prefix among them and pads the rest to its longest
    suffix. A dynamic program picks the split minimising tokens run plus
    :data:`CALL_COST_TOKENS` per batch, within :func:`batch_tokens` (counting
    the cached prefix, which every row's key/value cache holds).
    """
    order = sorted(range(len(prefix)), key=lambda i: prefix[i])
    p = np.array([prefix[i] for i in order], dtype=np.int64)
    n_tok = np.array([lengths[i] for i in order], dtype=np.int64)
    n = len(order)
    budget = batch_tokens()
    best = np.zeros(n + 1)
    start = np.zeros(n + 1, dtype=np.int64)
    for j in range(1, n + 1):
        # batch = sorted rows i..j-1, for every i at once
        longest = np.maximum.accumulate(n_tok[:j][::-1])[::-1]
        width = longest - p[:j] + t
        count = j - np.arange(j)
        cost = best[:j] + count * width + CALL_COST_TOKENS
        cost[count * (longest + t) > budget] = np.inf
        cost[j - 1] = min(cost[j - 1], best[j - 1] + width[j - 1] + CALL_COST_TOKENS)  # one row always fits
        start[j] = int(np.argmin(cost))
        best[j] = cost[start[j]]
    batches = []
    j = n
    while j > 0:
        i = int(start[j])
        batches.append(([order[k] for k in range(i, j)], int(p[i])))
        j = i
    return batches[::-1]


class TargetScorer:
    """Log probabilities of one target response after each of many prompts.

    ``model`` follows Hugging Face's conventions (``model(input_ids=...,
    attention_mask=..., position_ids=...)`` returns logits); ``pad_id`` fills
    the padding of shorter prompts (masked, so its value does not matter).
    ``reuse_prefix`` allows the key/value cache of the unperturbed prompt's
    shared prefix to be reused (Hugging Face causal models only).

    Example:
        >>> import torch
        >>> class Bigram(torch.nn.Module):  # logits at i depend on token i only: causal
        ...     is_causal_lm = True
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.table = torch.nn.Embedding(5, 5)
        ...     def forward(self, input_ids, attention_mask=None, position_ids=None):
        ...         return self.table(input_ids)
        >>> model = Bigram()
        >>> scorer = TargetScorer(model)
        >>> prompts = [torch.tensor([1, 2]), torch.tensor([3])]  # two lengths: one padded batch
        >>> scores = scorer.score([{"input_ids": p[None]} for p in prompts], torch.tensor([4, 0]))
        >>> expected = torch.log_softmax(model.table.weight, -1)[[2, 4], [4, 0]]
        >>> torch.allclose(scores[0], expected), scores.shape
        (True, torch.Size([2, 2]))
    """

    def __init__(self, model: Any, pad_id: int = 0, reuse_prefix: bool = True) -> None:
        self.model = model
        self.pad_id = pad_id
        self.causal = is_causal_lm(model)
        forward = model.forward if isinstance(model, nn.Module) else model
        names, any_keyword = _parameters(forward)
        self._keywords = None if any_keyword else names
        # a forward that builds a key/value cache by default is told not to when nothing reuses it
        self._no_cache = {"use_cache": False} if "use_cache" in names else {}
        # transformers 5 renamed ``past_key_values`` to ``cache``
        self._cache_arg = next((a for a in ("cache", "past_key_values") if a in names), None)
        self._keep_arg = next((a for a in ("logits_to_keep", "num_logits_to_keep") if a in names), None)
        config = getattr(model, "config", None)
        self.reuse_prefix = (
            reuse_prefix and self.causal and self._cache_arg is not None
            and getattr(config, "sliding_window", None) is None
        )
        self._reference: tuple[Tensor, Any] | None = None  # unperturbed ids and their cache
        self._head: Any = None  # the output layer, once checked to give the model's logits
        self._head_checked = False

    def _takes(self, name: str) -> bool:
        return self._keywords is None or name in self._keywords

    def call(self, **kwargs: Any) -> Tensor:
        """Logits for ``input_ids`` and whichever other keywords the model takes."""
        ids = kwargs["input_ids"]
        taken = {k: v for k, v in kwargs.items() if self._takes(k)}
        if "input_ids" in taken:
            return logits_of(self.model(**taken))
        taken.pop("input_ids", None)
        return logits_of(self.model(ids, **taken))  # a plain ``model(ids)``

    # ---------------------------------------------------------------- scoring
    def score(
        self,
        prompts: list[dict[str, Any]],
        target: Tensor,
        by_tokens: bool = True,
        use_cache: bool = False,
        reference: Tensor | None = None,
    ) -> Tensor:
        """``[len(prompts), len(target)]``: ``log p(target_t | prompt, target_<t)`` per prompt.

        ``prompts`` are model-input mappings (``input_ids`` of shape ``[1,
        L]``, maybe more). ``by_tokens`` asks for generation's semantics;
        on a causal model one teacher-forced forward gives exactly those.
        ``reference`` (1-D ids of the unperturbed prompt) enables prefix reuse.
        """
        target = target.reshape(-1)
        forced = self.causal or not by_tokens
        rows: list[Tensor | None] = [None] * len(prompts)
        plain = [i for i, p in enumerate(prompts) if list(p) == ["input_ids"] and p["input_ids"].shape[0] == 1]
        plain_set = set(plain)
        others = [i for i in range(len(prompts)) if i not in plain_set]
        with torch.no_grad():
            padded = forced and self._takes("attention_mask") and self._takes("position_ids")
            for group, prefix in self._batches(prompts, plain, target.numel(), padded, reference):
                ids = [prompts[i]["input_ids"][0] for i in group]
                if not forced:
                    scores = self._stepwise(ids, target, use_cache)
                elif prefix:
                    scores = self._forced_after_prefix(ids, target, prefix, reference)  # type: ignore[arg-type]
                else:
                    scores = self._forced(ids, target)
                for i, row in zip(group, scores):
                    rows[i] = row
            for i in others:  # extra model inputs (images, ...): one prompt per call
                scores = (self._forced_one(prompts[i], target) if forced
                          else self._stepwise_one(prompts[i], target, use_cache))
                rows[i] = scores[0]
        if not rows:
            return torch.zeros(0, target.numel())
        return torch.stack(rows)  # type: ignore[arg-type]

    def log_probs(self, prompt: dict[str, Any], target: Tensor, by_tokens: bool = True) -> Tensor:
        """``[len(target), vocab]``: the full next-token distributions along the target."""
        ids = prompt["input_ids"]
        n, t = ids.shape[1], target.numel()
        self._check_length(n + t)
        combined = torch.cat([ids[:1], target.reshape(1, -1).to(ids.device)], dim=1)
        with torch.no_grad():
            if self.causal or not by_tokens or list(prompt) != ["input_ids"]:
                logits = self.call(**{**prompt, "input_ids": combined})[0, n - 1 : n - 1 + t]
            else:  # not known causal: each step sees only the response so far
                logits = torch.stack([self.call(input_ids=combined[:, : n + k])[0, -1] for k in range(t)])
        return _log_softmax(logits)

    def _with_response(self, ids: Tensor, target: Tensor) -> Tensor:
        """``ids + target[:-1]`` per row (what a causal model reads to predict every target token)."""
        combined = torch.cat([ids, target[:-1].to(ids.device).expand(ids.shape[0], -1)], dim=1)
        self._check_length(combined.shape[1])
        return combined

    def teacher_forced(self, ids: Tensor, target: Tensor) -> Tensor:
        """``[k, len(target)]`` log probabilities for rows of prompt ids of one length, with gradients.

        One forward of ``ids + target[:-1]``; only for causal models.
        """
        t = target.numel()
        kwargs: dict[str, Any] = {"input_ids": self._with_response(ids, target), **self._no_cache}
        if self._keep_arg is not None:
            kwargs[self._keep_arg] = t
        return self._gather(self.call(**kwargs)[:, -t:], 1, target)

    def row_log_probs(self, ids: Tensor, target: Tensor, rows: Tensor) -> Tensor:
        """``[k]``: for each row ``i``, ``log p(target[rows[i]] | prompt, target[:rows[i]])``, with gradients.

        Like :meth:`teacher_forced` but each row reads only its own
        position: the final hidden states at those positions go through the
        model's output layer, so the vocabulary projection runs once per row
        instead of once per response token. Only for models whose
        :meth:`output_head` is not None.
        """
        head = self.output_head(ids, target)
        kwargs: dict[str, Any] = {
            "input_ids": self._with_response(ids, target), "output_hidden_states": True, **self._no_cache,
        }
        if self._keep_arg is not None:
            kwargs[self._keep_arg] = 1
        hidden = self.model(**kwargs).hidden_states[-1]
        rows = rows.to(ids.device)
        picked = hidden[torch.arange(ids.shape[0], device=ids.device), ids.shape[1] - 1 + rows]
        return _log_softmax(head(picked)).gather(1, target.to(ids.device)[rows][:, None])[:, 0]

    def output_head(self, ids: Tensor, target: Tensor) -> Any:
        """The model's output layer when it maps the last hidden states to the logits exactly, else None."""
        if self._head_checked:
            return self._head
        self._head_checked = True
        get = getattr(self.model, "get_output_embeddings", None)
        head = get() if callable(get) else None
        if not isinstance(head, nn.Module):
            return None
        try:
            with torch.no_grad():
                out = self.model(input_ids=self._with_response(ids[:1], target), output_hidden_states=True)
                hidden = getattr(out, "hidden_states", None)
                same = hidden is not None and torch.allclose(
                    head(hidden[-1][:, -1]), logits_of(out)[:, -1], rtol=1e-4, atol=1e-5
                )
        except (TypeError, ValueError, RuntimeError):
            same = False  # a model without hidden states or an unusual head: the general path
        self._head = head if same else None
        return self._head

    def _batches(
        self, prompts: list[dict], members: list[int], t: int, padded: bool, reference: Tensor | None
    ) -> list[tuple[list[int], int]]:
        """Batches of prompt indices and the shared prefix length each reuses (0: none)."""
        if not members:
            return []
        lengths = {i: prompts[i]["input_ids"].shape[1] for i in members}
        if padded and self.reuse_prefix and reference is not None:
            ids = [prompts[i]["input_ids"][0] for i in members]
            prefix = shared_prefix_length(ids, reference)
            # keep one token after the prefix in every row: its logits predict the first target token
            prefix = [min(p, lengths[i] - 1) for p, i in zip(prefix, members)]
            if max(prefix) >= MIN_SHARED_PREFIX:
                plan = split_by_prefix(prefix, [lengths[i] for i in members], t)
                return [([members[k] for k in rows], p if p >= MIN_SHARED_PREFIX else 0) for rows, p in plan]
        by_length: dict[int, list[int]] = {}
        for i in members:
            by_length.setdefault(0 if padded else lengths[i], []).append(i)
        batches = []
        for group in by_length.values():
            longest = max(lengths[i] for i in group) + t
            step = max(1, batch_tokens() // max(longest, 1))
            batches += [(group[s : s + step], 0) for s in range(0, len(group), step)]
        return batches

    def _check_length(self, length: int) -> None:
        limit = position_limit(self.model)
        if limit is not None and length > limit:
            raise ArgumentValueError(
                f"the prompt and the target are {length} tokens together, more than the model's "
                f"{limit} positions; shorten the prompt or the target"
            )

    def _pack(self, rows: list[Tensor], target: Tensor) -> tuple[Tensor, Tensor, int]:
        """``[pad..., row, target]`` per row, its mask, and where the target starts."""
        lengths = [r.numel() for r in rows]
        longest = max(lengths)
        device = rows[0].device
        ids = torch.full((len(rows), longest + target.numel()), self.pad_id, dtype=rows[0].dtype, device=device)
        mask = torch.zeros(ids.shape, dtype=torch.long, device=device)
        for i, (r, n) in enumerate(zip(rows, lengths)):
            ids[i, longest - n : longest] = r
            mask[i, longest - n :] = 1
        ids[:, longest:] = target.to(device)
        return ids, mask, longest

    def _keep(self, kwargs: dict[str, Any], t: int) -> int:
        """Ask for the logits of the last ``t + 1`` positions only, where the model allows; the offset."""
        if self._keep_arg is None:
            return 0
        kwargs[self._keep_arg] = t + 1
        return kwargs["input_ids"].shape[1] - (t + 1)

    def _gather(self, logits: Tensor, start: int, target: Tensor) -> Tensor:
        # logits at position i predict token i + 1
        t = target.numel()
        log_probs = _log_softmax(logits[:, start - 1 : start - 1 + t])
        return log_probs.gather(2, target.to(logits.device).expand(len(logits), -1).unsqueeze(-1)).squeeze(-1)

    def _forced(self, prompts: list[Tensor], target: Tensor) -> Tensor:
        """One forward of left-padded ``[pad..., prompt, target]`` rows, masked, with explicit positions."""
        t = target.numel()
        ids, mask, start = self._pack(prompts, target)
        self._check_length(ids.shape[1])
        kwargs: dict[str, Any] = {"input_ids": ids}
        ragged = len({p.numel() for p in prompts}) > 1
        if ragged or self._takes("attention_mask"):
            kwargs["attention_mask"] = mask
        if ragged:
            kwargs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)
        kwargs.update(self._no_cache)
        offset = self._keep(kwargs, t)
        return self._gather(self.call(**kwargs), start - offset, target)

    def _prefix_cache(self, reference: Tensor, length: int, rows: int) -> Any:
        """The key/value cache of ``reference[:length]``, repeated for ``rows`` rows (a fresh copy)."""
        cached = self._reference
        if cached is None or cached[0].numel() < length or not torch.equal(cached[0][:length], reference[:length]):
            out = self.model(input_ids=reference[None], use_cache=True)
            cache = getattr(out, "cache", None)
            if cache is None:
                cache = getattr(out, "past_key_values", None)
            self._reference = cached = (reference, cache)
        cache = cached[1]
        if isinstance(cache, (tuple, list)):  # the legacy form: per layer (key, value, ...) [b, heads, seq, d]
            return tuple(tuple(t[..., :length, :].repeat_interleave(rows, 0) for t in layer) for layer in cache)
        cache = copy.deepcopy(cache)
        extra = cached[0].numel() - length
        if extra:  # a negative count removes that many tokens in transformers 4 and 5 alike
            cache.crop(-extra)
        cache.batch_repeat_interleave(rows)
        return cache

    def _forced_after_prefix(self, prompts: list[Tensor], target: Tensor, prefix: int, reference: Tensor) -> Tensor:
        """Rows sharing their first ``prefix`` tokens: the prefix comes from the cache, the rest is run.

        Layout ``[prefix (cached)][pad...][rest of the row][target]``: the
        padding sits between prefix and suffix, masked, and positions
        continue from the prefix.
        """
        t = target.numel()
        self._check_length(max(p.numel() for p in prompts) + t)
        ids, mask, start = self._pack([p[prefix:] for p in prompts], target)
        cache = self._prefix_cache(reference.to(ids.device), prefix, len(prompts))
        full_mask = torch.cat([torch.ones(len(prompts), prefix, dtype=mask.dtype, device=mask.device), mask], 1)
        kwargs: dict[str, Any] = {
            "input_ids": ids,
            "attention_mask": full_mask,
            "position_ids": prefix + (mask.cumsum(-1) - 1).clamp(min=0),
            "cache_position": torch.arange(prefix, prefix + ids.shape[1], device=ids.device),
            "use_cache": True,
            self._cache_arg: cache,  # type: ignore[dict-item]
        }
        offset = self._keep(kwargs, t)
        return self._gather(self.call(**kwargs), start - offset, target)

    def _forced_one(self, prompt: dict[str, Any], target: Tensor) -> Tensor:
        ids = prompt["input_ids"]
        n, t = ids.shape[1], target.numel()
        self._check_length(n + t)
        combined = torch.cat([ids, target.to(ids.device).expand(ids.shape[0], -1)], dim=1)
        mask = torch.ones(combined.shape, dtype=torch.long, device=ids.device)
        logits = self.call(**{**prompt, "input_ids": combined, "attention_mask": mask})
        return self._gather(logits, n, target)

    def _stepwise(self, prompts: list[Tensor], target: Tensor, use_cache: bool) -> Tensor:
        return self._stepwise_one({"input_ids": torch.stack(prompts)}, target, use_cache)

    def _stepwise_one(self, prompt: dict[str, Any], target: Tensor, use_cache: bool) -> Tensor:
        """Token by token, as generation scores them (prompts of one length)."""
        model = self.model
        kwargs = dict(prompt)
        ids = kwargs["input_ids"]
        b = ids.shape[0]
        helpers = ("prepare_inputs_for_generation", "_update_model_kwargs_for_generation")
        use_cache = use_cache and all(callable(getattr(model, name, None)) for name in helpers)
        kwargs.setdefault("attention_mask", torch.ones(ids.shape, dtype=torch.long, device=ids.device))
        if use_cache:
            kwargs["cache_position"] = torch.arange(ids.shape[1], device=ids.device)
        kwargs["use_cache"] = use_cache
        scores, outputs = [], None
        for token in target.to(ids.device):
            if use_cache:  # the model's own helpers, as generation runs them (custom models)
                if outputs is not None:
                    kwargs = model._update_model_kwargs_for_generation(outputs, kwargs)
                rest = {k: v for k, v in kwargs.items() if k != "input_ids"}
                # the ids go positionally: helpers name that parameter differently
                outputs = model(**model.prepare_inputs_for_generation(kwargs["input_ids"], **rest))
                logits = logits_of(outputs)
            else:
                shape = kwargs["input_ids"].shape
                kwargs["attention_mask"] = torch.ones(shape, dtype=torch.long, device=ids.device)
                logits = self.call(**kwargs)
            scores.append(_log_softmax(logits[:, -1])[:, token])
            kwargs["input_ids"] = torch.cat([kwargs["input_ids"], token.expand(b, 1)], dim=1)
        return torch.stack(scores, dim=1)
