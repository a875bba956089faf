"""LLMGradientAttribution: gradient attribution of each response token to the prompt's tokens."""

from __future__ import annotations

from copy import copy
from typing import Any

import torch
from torch import Tensor, nn

from ..._engine.errors import ArgumentValueError
from ..base import Attribution
from ..layer.activation import LayerGradientXActivation
from ..layer.gradient_shap import LayerGradientShap
from ..layer.path_integrals import LayerIntegratedGradients
from ..relevance.attnlrp import LayerAttnLRP
from .interpretable_input import InterpretableInput, TextTokenInput
from .llm_attr import BaseLLMAttribution, _pieces
from .llm_result import LLMAttributionResult
from .scoring import TargetScorer
from .tokens import pretty_tokens


class _ResponseLogProbs(nn.Module):
    """Row ``r`` of the output: ``log p(target[r] | prompt, target[:r])``, all from one forward.

    Only for causal models: the prompt ids are followed by ``target[:-1]``.
    Given ``rows`` (each row's response index, expanded by the wrapped
    method with the inputs) only each row's own position is projected onto
    the vocabulary; otherwise all positions are, and the wrapped method
    picks column ``r`` for row ``r`` through its ``target``.
    """

    def __init__(self, owner: LLMGradientAttribution, inp: InterpretableInput, target: Tensor,
                 scorer: TargetScorer) -> None:
        super().__init__()
        self.owner, self.inp, self.target, self.scorer = [owner], inp, target, scorer
        if isinstance(owner.model, nn.Module):
            self.model = owner.model  # a submodule, so state checks see the model

    def forward(self, perturbed_tensor: Tensor, rows: Tensor | None = None) -> Tensor:
        ids = self.owner[0]._format_model_input(self.inp.to_model_input(perturbed_tensor))["input_ids"]
        if rows is not None:
            return self.scorer.row_log_probs(ids, self.target.to(ids.device), rows)
        return self.scorer.teacher_forced(ids, self.target.to(ids.device))


class _TokenLogProb(nn.Module):
    """``log p(target[index] | prompt, target[:index])``: one response token, any model."""

    def __init__(self, owner: LLMGradientAttribution, inp: InterpretableInput, target: Tensor, index: int) -> None:
        super().__init__()
        self.owner, self.inp, self.target, self.index = [owner], inp, target, index
        if isinstance(owner.model, nn.Module):
            self.model = owner.model

    def forward(self, perturbed_tensor: Tensor) -> Tensor:
        owner = self.owner[0]
        ids = owner._format_model_input(self.inp.to_model_input(perturbed_tensor))["input_ids"]
        if self.index:
            prefix = self.target[: self.index].to(ids.device).expand(ids.shape[0], -1)
            ids = torch.cat([ids, prefix], dim=1)
        logits = TargetScorer(owner.model).call(input_ids=ids)
        return torch.log_softmax(logits[:, -1], dim=-1)[:, self.target[self.index]]


class LLMGradientAttribution(BaseLLMAttribution):
    """Gradient attribution of an LLM's response to the tokens of its prompt.

    Wraps LayerIntegratedGradients, LayerGradientXActivation,
    LayerGradientShap or LayerAttnLRP built on the model and its embedding
    layer (LayerAttnLRP: AttnLRP relevance of each response token's log
    probability, one forward and one backward for all of them). For each
    response token the method explains its log probability given the
    prompt and the earlier response tokens; the embedding attributions
    are summed over the embedding dimension. ``token_attr`` has one row per
    response token and ``seq_attr`` is their sum.

    On a causal model all response tokens are explained in one call of the
    wrapped method: one row per token, each reading its own position of a
    single teacher-forced forward. Other models (and LayerGradientShap,
    whose random draws then match Captum's) go token by token.

    Example:
        >>> from attribuo.attr import LayerIntegratedGradients, LLMGradientAttribution
        >>> lig = LayerIntegratedGradients(model, model.emb)  # doctest: +SKIP
        >>> llm_attr = LLMGradientAttribution(lig, tokenizer)  # doctest: +SKIP
        >>> res = llm_attr.attribute(TextTokenInput("a b c", tokenizer), target="d e")  # doctest: +SKIP
        >>> res.token_attr.shape  # 2 response tokens x 4 prompt tokens (with <sos>)  # doctest: +SKIP
        torch.Size([2, 4])
    """

    SUPPORTED_METHODS = (LayerGradientShap, LayerGradientXActivation, LayerIntegratedGradients, LayerAttnLRP)
    SUPPORTED_INPUTS = (TextTokenInput,)

    def __init__(self, attr_method: Attribution, tokenizer: Any) -> None:
        super().__init__(attr_method, tokenizer)
        self.attr_method = copy(attr_method)

    def attribute(
        self,
        inp: InterpretableInput,
        target: str | Tensor | None = None,
        gen_args: dict[str, Any] | None = None,
        *,
        skip_tokens: list[int] | list[str] | None = None,
        **kwargs: Any,
    ) -> LLMAttributionResult:
        """Attribute each token of the target response (generated when None) to the prompt tokens.

        ``skip_tokens`` drops tokens from the target as in
        :meth:`LLMAttribution.attribute`. ``**kwargs`` go to the wrapped
        method's ``attribute`` (e.g. ``n_steps``, ``baselines``,
        ``internal_batch_size``).
        """
        if "additional_forward_args" in kwargs or kwargs.get("return_convergence_delta"):
            raise ArgumentValueError(
                "`additional_forward_args` and `return_convergence_delta` are not supported "
                "by LLMGradientAttribution"
            )
        if "target" in kwargs:
            raise ArgumentValueError("`target` is the response here; the wrapped method's target is set per token")
        target_tokens = self._get_target_tokens(inp, target, gen_args, skip_tokens).to(self.device)
        x = inp.to_tensor().to(self.device)
        scorer = self._scorer()
        prompt_ids = self._format_model_input(inp.to_model_input())["input_ids"]
        n_prompt = prompt_ids.shape[1]
        t = len(target_tokens)
        if scorer.causal and not isinstance(self.attr_method, LayerGradientShap):
            method = copy(self.attr_method)
            method.forward_func = _ResponseLogProbs(self, inp, target_tokens, scorer)
            rows = x.expand(t, *x.shape[1:])
            index = torch.arange(t, device=x.device)
            if scorer.output_head(prompt_ids, target_tokens) is not None:
                attr = method.attribute(rows, additional_forward_args=(index,), **kwargs)
            else:
                attr = method.attribute(rows, target=index, **kwargs)
            attr = attr.detach()
            attr = attr[:, :n_prompt].sum(-1)  # drop the response positions; sum over the embedding
        else:
            per_token = []
            for index in range(t):
                method = copy(self.attr_method)
                method.forward_func = _TokenLogProb(self, inp, target_tokens, index)
                token_attr = method.attribute(x, **kwargs).detach()
                per_token.append(token_attr[:, :n_prompt].sum(-1))
            attr = torch.cat(per_token, dim=0)
        if isinstance(inp, TextTokenInput) and inp.itp_mask is not None:
            attr = attr[:, inp.itp_mask[0].to(attr.device)]
        return LLMAttributionResult(
            seq_attr=attr.sum(0),
            token_attr=attr,
            input_tokens=inp.values,
            output_tokens=pretty_tokens(target_tokens, self.tokenizer),
            inp=inp,
            output_pieces=_pieces(target_tokens, self.tokenizer),
        )
