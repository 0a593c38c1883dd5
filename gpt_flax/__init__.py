"""gpt-flax: OpenAI GPT (GPT-1) in JAX/Flax."""

from gpt_flax.config import OpenAIGPTConfig
from gpt_flax.modeling import (
    FlaxOpenAIGPTDoubleHeadsModel,
    FlaxOpenAIGPTForSequenceClassification,
    FlaxOpenAIGPTLMHeadModel,
    FlaxOpenAIGPTModel,
)
from gpt_flax.pipeline import pipeline
from gpt_flax.tokenizer import OpenAIGPTTokenizer

__all__ = [
    "FlaxOpenAIGPTDoubleHeadsModel",
    "FlaxOpenAIGPTForSequenceClassification",
    "FlaxOpenAIGPTLMHeadModel",
    "FlaxOpenAIGPTModel",
    "OpenAIGPTConfig",
    "OpenAIGPTTokenizer",
    "pipeline",
]
