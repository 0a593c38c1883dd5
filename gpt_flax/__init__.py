"""gpt-flax: OpenAI GPT (GPT-1) in JAX/Flax."""

from gpt_flax.config import OpenAIGPTConfig

__all__ = ["OpenAIGPTConfig"]
