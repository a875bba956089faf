"""Attribution of a remotely hosted LLM that reports log probabilities (vLLM, OpenAI-compatible).

:class:`RemoteLLMAttribution` runs a perturbation method locally and asks a
:class:`RemoteLLMProvider` for the log probabilities of the response after
each perturbed prompt, several requests at a time. :class:`VLLMProvider`
talks to a vLLM server through the ``openai`` client (the ``remote`` extra).
"""

from __future__ import annotations

import logging
import os
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch
from torch import Tensor

from ..._engine.errors import ArgumentTypeError
from ..base import Attribution
from .interpretable_input import InterpretableInput
from .llm_attr import DEFAULT_GEN_ARGS, LLMAttribution, _Scoring

logger = logging.getLogger(__name__)


class RemoteLLMProvider(ABC):
    """A hosted LLM that generates text and reports the log probabilities of a given response.

    Subclasses set ``api_url`` and implement :meth:`generate` and
    :meth:`get_logprobs`.

    Example:
        >>> class Echo(RemoteLLMProvider):
        ...     api_url = "local"
        ...     def generate(self, prompt, **gen_args):
        ...         return "ok"
        ...     def get_logprobs(self, input_prompt, target_str, tokenizer=None):
        ...         return [-0.5] * len(target_str.split())
        >>> Echo().get_logprobs("a b", "c d")
        [-0.5, -0.5]
    """

    api_url: str

    @abstractmethod
    def generate(self, prompt: str, **gen_args: Any) -> str:
        """The text the model generates after ``prompt``."""

    @abstractmethod
    def get_logprobs(self, input_prompt: str, target_str: str, tokenizer: Any = None) -> list[float]:
        """``log p(token | prompt, earlier tokens)`` for each token of ``target_str``."""


class VLLMProvider(RemoteLLMProvider):
    """A vLLM server's OpenAI-compatible completions API.

    Args:
        api_url: the server's base URL, e.g. ``"http://127.0.0.1:8000/v1"``.
        model_name: the served model; the first one the server lists when None.

    The API key is ``$OPENAI_API_KEY`` (``"EMPTY"`` when unset). Log
    probabilities come from one request per prompt with
    ``prompt_logprobs=0``: the server scores ``prompt + target`` and the
    last ``len(target tokens)`` entries are the response's.

    Example:
        >>> provider = VLLMProvider("http://127.0.0.1:8000/v1", model_name="llama")  # doctest: +SKIP
        >>> provider.get_logprobs("The capital of France is", " Paris", tokenizer)  # doctest: +SKIP
        [-0.12]
    """

    def __init__(self, api_url: str, model_name: str | None = None) -> None:
        try:
            from openai import OpenAI
        except ImportError as exc:
            raise ImportError(
                "VLLMProvider needs the 'openai' package: pip install 'attribuo[remote]' "
                "(or pip install openai)"
            ) from exc
        if not isinstance(api_url, str):
            raise ArgumentTypeError(f"`api_url` must be a str, got {type(api_url).__name__}")
        if not api_url.strip():
            raise ValueError("API URL is required: `api_url` is empty")
        self.api_url = api_url
        try:
            self.client = OpenAI(base_url=api_url, api_key=os.getenv("OPENAI_API_KEY", "EMPTY"))
            if model_name is None:
                models = self.client.models.list().data
                if not models:
                    raise ValueError(f"No models available from the vLLM API at {api_url}")
                model_name = models[0].id
                logger.info("VLLMProvider: no model_name given, using %s", model_name)
        except ValueError:
            raise
        except ConnectionError as exc:
            raise ConnectionError(f"Failed to connect to vLLM API at {api_url}: {exc}") from exc
        self.model_name = model_name

    def generate(self, prompt: str, **gen_args: Any) -> str:
        """Completion of ``prompt``; ``max_new_tokens`` (default 25) becomes the API's ``max_tokens``."""
        args = dict(gen_args)
        if "max_tokens" not in args:
            args["max_tokens"] = args.pop("max_new_tokens", 25)
        args.pop("do_sample", None)  # a Hugging Face argument the API does not know
        try:
            response = self.client.completions.create(model=self.model_name, prompt=prompt, **args)
        except ConnectionError as exc:
            raise ConnectionError(f"Failed to connect to vLLM API: {exc}") from exc
        if not getattr(response, "choices", None):
            raise KeyError("API response missing expected 'choices' data")
        return response.choices[0].text

    def get_logprobs(self, input_prompt: str, target_str: str, tokenizer: Any = None) -> list[float]:
        """Log probabilities of ``target_str``'s tokens after ``input_prompt``, from the server."""
        if tokenizer is None:
            raise ValueError("Tokenizer is required: VLLMProvider.get_logprobs counts the target's tokens")
        if not target_str:
            raise ValueError("Target string cannot be empty")
        n_target = len(tokenizer.encode(target_str, add_special_tokens=False))
        try:
            response = self.client.completions.create(
                model=self.model_name,
                prompt=input_prompt + target_str,
                temperature=0.0,
                max_tokens=1,
                extra_body={"prompt_logprobs": 0},
            )
        except ConnectionError as exc:
            raise ConnectionError(f"Failed to connect to vLLM API when getting logprobs: {exc}") from exc
        if not getattr(response, "choices", None):
            raise KeyError("API response missing expected 'choices' data")
        entries = getattr(response.choices[0], "prompt_logprobs", None)
        if not entries:
            raise KeyError("API response missing 'prompt_logprobs' data")
        values = []
        try:
            for probs in entries[-n_target:]:
                if not probs:
                    raise ValueError("Empty probability data in API response")
                if len(probs) != 1:
                    raise ValueError(f"expected one token per position in prompt_logprobs, got {len(probs)}")
                values.append(next(iter(probs.values()))["logprob"])
        except (IndexError, KeyError, TypeError) as exc:
            raise IndexError(f"Unexpected format in log probability data: {exc!r}") from exc
        if len(values) != n_target:
            raise ValueError(f"Not enough logprobs received: expected {n_target}, got {len(values)}")
        return values


class _PlaceholderModel:
    """Stands in for the model a perturbation method is built on; only its ``device`` is read."""

    def __init__(self) -> None:
        self.device: torch.device | str = torch.device("cpu")

    def __call__(self, *args: Any, **kwargs: Any) -> int:
        return 0


class RemoteLLMAttribution(LLMAttribution):
    """Perturbation attribution of a remotely hosted LLM's response.

    Build the perturbation method on :attr:`placeholder_model` (set its
    ``device`` to where results should live); the scores come from
    ``provider.get_logprobs``, up to ``max_concurrency`` requests at once.

    Args:
        attr_method: FeatureAblation, ShapleyValueSampling, ShapleyValues,
            Lime or KernelShap, built on ``RemoteLLMAttribution.placeholder_model``.
        tokenizer: the hosted model's tokenizer (to count and decode tokens).
        provider: a :class:`RemoteLLMProvider`.
        attr_target: ``"log_prob"`` (default) or ``"prob"``.
        max_concurrency: requests in flight at once.

    Example:
        >>> from attribuo.attr import FeatureAblation, TextTemplateInput
        >>> fa = FeatureAblation(RemoteLLMAttribution.placeholder_model)
        >>> remote = RemoteLLMAttribution(fa, tokenizer, VLLMProvider(url))  # doctest: +SKIP
        >>> remote.attribute(TextTemplateInput("{} is in {}", ["Paris", "France"]), " Europe")  # doctest: +SKIP
    """

    placeholder_model = _PlaceholderModel()

    def __init__(
        self,
        attr_method: Attribution,
        tokenizer: Any,
        provider: RemoteLLMProvider,
        attr_target: str = "log_prob",
        *,
        max_concurrency: int = 8,
    ) -> None:
        super().__init__(attr_method=attr_method, tokenizer=tokenizer, attr_target=attr_target)
        if not callable(getattr(provider, "get_logprobs", None)):
            raise ArgumentTypeError(
                f"`provider` must have a get_logprobs method (a RemoteLLMProvider), got {type(provider).__name__}"
            )
        self.provider = provider
        self.max_concurrency = max(1, int(max_concurrency))
        self.attr_method.forward_func = self._remote_forward_func

    def _generate(self, inp: InterpretableInput, gen_args: dict[str, Any] | None) -> Tensor:
        generate = getattr(self.provider, "generate", None)
        if not callable(generate):
            raise ValueError("`target` is required: the provider has no generate method")
        text = generate(self._format_remote_model_input(inp.to_model_input()), **(gen_args or DEFAULT_GEN_ARGS))
        return self.tokenizer.encode(text, return_tensors="pt", add_special_tokens=False)[0]

    def _format_remote_model_input(self, model_input: Any) -> str:
        """The prompt as text (token ids are decoded)."""
        if isinstance(model_input, Tensor):
            return self.tokenizer.decode(model_input.flatten())
        return model_input

    def _scorer(self, reuse_prefix: bool = True) -> Any:
        return None  # the provider scores

    def _step_scores(self, model_inp: Any, target: Tensor, scoring: _Scoring, forward_in_tokens: bool
                     ) -> dict[str, Tensor]:
        # the unperturbed prompt was scored already (the methods start from it): no new request
        log_probs = self._provider_log_probs([self._format_remote_model_input(model_inp)], target, scoring.answers)[0]
        return {"prob": log_probs.exp(), "log_prob": log_probs}

    def _format_model_input(self, model_input: Any) -> Any:
        return model_input  # texts go to the provider as they are

    def _provider_log_probs(
        self, prompts: list[str], target_tokens: Tensor, answers: dict | None = None
    ) -> Tensor:
        """``[n, T]`` log probabilities from the provider, requests run concurrently.

        Prompts found in ``answers`` (and repeats within ``prompts``) are
        not requested again; new answers are added to it.
        """
        answers = {} if answers is None else answers
        key = tuple(int(t) for t in target_tokens.reshape(-1).tolist())
        target_str = self.tokenizer.decode(target_tokens)

        def one(prompt: str) -> list[float]:
            values = self.provider.get_logprobs(input_prompt=prompt, target_str=target_str, tokenizer=self.tokenizer)
            if len(values) != target_tokens.numel():
                raise ValueError(
                    f"Number of token logprobs from provider ({len(values)}) does not match "
                    f"the target's {target_tokens.numel()} tokens"
                )
            return [float(v) for v in values]

        missing = list(dict.fromkeys(p for p in prompts if (p, key) not in answers))
        if len(missing) <= 1 or self.max_concurrency == 1:
            rows = [one(p) for p in missing]
        else:
            with ThreadPoolExecutor(min(self.max_concurrency, len(missing))) as pool:
                rows = list(pool.map(one, missing))
        for prompt, row in zip(missing, rows):
            answers[prompt, key] = torch.tensor(row, dtype=torch.float32, device=self.device)
        return torch.stack([answers[p, key] for p in prompts])

    def _prompts(self, perturbed_tensor: Tensor, inp: InterpretableInput) -> list[str]:
        return [
            self._format_remote_model_input(inp.to_model_input(perturbed_tensor[i : i + 1]))
            for i in range(perturbed_tensor.shape[0])
        ]

    def _prompt_text(self, prompt: str) -> str:
        return prompt

    def _score(self, prompts: list[str], tokens: Tensor, scoring: _Scoring, use_cached_outputs: bool,
               forward_in_tokens: bool) -> Tensor:
        return self._provider_log_probs(prompts, tokens, scoring.answers)

    # Captum's name for the forward function the wrapped method runs
    _remote_forward_func = LLMAttribution._forward_func
