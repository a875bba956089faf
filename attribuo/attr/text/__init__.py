"""Text and language models: LLM attribution, interpretable inputs, embedding helpers."""

from .embeddings import (
    InterpretableEmbeddingBase,
    TokenReferenceBase,
    configure_interpretable_embedding_layer,
    remove_interpretable_embedding_layer,
)
from .interpretable_input import (
    ImageMaskInput,
    InterpretableInput,
    TextTemplateInput,
    TextTokenInput,
)
from .llm_attr import LLMAttribution
from .llm_gradient import LLMGradientAttribution
from .llm_result import LLMAttributionResult
from .remote import RemoteLLMAttribution, RemoteLLMProvider, VLLMProvider
from .scoring import TargetScorer

__all__ = [
    "ImageMaskInput",
    "InterpretableEmbeddingBase",
    "InterpretableInput",
    "LLMAttribution",
    "LLMAttributionResult",
    "LLMGradientAttribution",
    "RemoteLLMAttribution",
    "RemoteLLMProvider",
    "TargetScorer",
    "VLLMProvider",
    "TextTemplateInput",
    "TextTokenInput",
    "TokenReferenceBase",
    "configure_interpretable_embedding_layer",
    "remove_interpretable_embedding_layer",
]
