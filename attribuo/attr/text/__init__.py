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
from .llm_attr import LLMAttribution, LLMGradientAttribution
from .llm_result import LLMAttributionResult

__all__ = [
    "ImageMaskInput",
    "InterpretableEmbeddingBase",
    "InterpretableInput",
    "LLMAttribution",
    "LLMAttributionResult",
    "LLMGradientAttribution",
    "TextTemplateInput",
    "TextTokenInput",
    "TokenReferenceBase",
    "configure_interpretable_embedding_layer",
    "remove_interpretable_embedding_layer",
]
