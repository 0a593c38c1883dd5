"""gpt-flax: OpenAI GPT (GPT-1) in JAX/Flax."""

from gpt_flax.config import OpenAIGPTConfig
from gpt_flax.modeling import (
    FlaxOpenAIGPTDoubleHeadsModel,
    FlaxOpenAIGPTForSequenceClassification,
    FlaxOpenAIGPTLMHeadModel,
    FlaxOpenAIGPTModel,
)

__all__ = [
    "OpenAIGPTConfig",
    "FlaxOpenAIGPTModel",
    "FlaxOpenAIGPTLMHeadModel",
    "FlaxOpenAIGPTDoubleHeadsModel",
    "FlaxOpenAIGPTForSequenceClassification",
]
