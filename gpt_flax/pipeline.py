"""`pipeline("text-generation")`: text in, text out, as transformers' TextGenerationPipeline.

    from gpt_flax import pipeline
    generator = pipeline("text-generation", model="path/to/openai-gpt")
    generator("The future of AI is", max_length=50, do_sample=True, prng_key=0)
    # [{"generated_text": "The future of AI is ..."}]

A string gives a list of `num_return_sequences` dicts; a list of strings gives one such list per
string, generated as one left-padded batch (each row generates what it would alone). Keyword
arguments are `generate`'s, plus `return_full_text` (default True: the prompt, as given, then the
continuation) and `seed` (an int for `prng_key`). As in transformers, the model config's
`task_specific_params["text-generation"]` (openai-gpt's: do_sample=True, max_length=50) are the
defaults.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

TASK = "text-generation"


class TextGenerationPipeline:
    """Tokenize, `model.generate`, decode. `model`: an LM-head model; `tokenizer`: OpenAIGPTTokenizer."""

    def __init__(self, model, tokenizer, **defaults: Any):
        if not hasattr(model, "generate"):
            raise TypeError(f"{type(model).__name__} has no LM head to generate with; use FlaxOpenAIGPTLMHeadModel")
        self.model = model
        self.tokenizer = tokenizer
        task_params = (model.config.extra or {}).get("task_specific_params") or {}
        self.defaults = {**(task_params.get(TASK) or {}), **defaults}

    def __call__(self, text_inputs: str | list, **kwargs: Any):
        single = isinstance(text_inputs, str)
        texts = [text_inputs] if single else list(text_inputs)
        if not texts or not all(isinstance(t, str) for t in texts):
            raise TypeError("text-generation takes a string or a non-empty list of strings")
        options = {**self.defaults, **kwargs}
        return_full_text = options.pop("return_full_text", True)
        seed = options.pop("seed", None)
        if seed is not None:
            options.setdefault("prng_key", int(seed))
        n = options.get("num_return_sequences", 1)
        ids, mask = self._encode(texts)
        sequences = self.model.generate(ids, attention_mask=mask, **options)
        results = []
        for i, text in enumerate(texts):
            prompt_ids = ids[i][mask[i] == 1]
            rows = sequences[i * n : (i + 1) * n, ids.shape[1] :]
            results.append([{"generated_text": self._text(text, prompt_ids, row, return_full_text)} for row in rows])
        return results[0] if single else results

    def _encode(self, texts: list):
        """Left-padded ids and mask [B, T]; padded here because GPT's tokenizer has no pad token."""
        rows = [list(r) for r in self.tokenizer(texts)["input_ids"]]
        for text, row in zip(texts, rows):
            if not row:
                raise ValueError(f"the prompt {text!r} has no tokens: GPT has no start token to generate from")
        width = max(len(r) for r in rows)
        ids = np.zeros((len(rows), width), np.int32)
        mask = np.zeros((len(rows), width), np.int32)
        for i, row in enumerate(rows):
            ids[i, width - len(row) :], mask[i, width - len(row) :] = row, 1
        return ids, mask

    def _text(self, prompt: str, prompt_ids, new_ids, return_full_text: bool) -> str:
        """transformers' postprocess: decode prompt + new tokens, cut the decoded prompt's length,
        and put the prompt as the user wrote it in front (GPT's tokenizer lowercases)."""
        decode = lambda ids: self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=True)
        full = decode(np.concatenate([prompt_ids, new_ids]))
        new_text = full[len(decode(prompt_ids)) :]
        return prompt + new_text if return_full_text else new_text


def pipeline(task: str, model: Any = None, tokenizer: Any = None, **kwargs: Any) -> TextGenerationPipeline:
    """transformers' `pipeline` for "text-generation". `model`: a FlaxOpenAIGPTLMHeadModel or a path /
    Hub id to load one from; `tokenizer`: an OpenAIGPTTokenizer or a path / Hub id (default: the
    model's path). Other keyword arguments become defaults of every call."""
    from gpt_flax.modeling import FlaxOpenAIGPTLMHeadModel
    from gpt_flax.tokenizer import OpenAIGPTTokenizer

    if task != TASK:
        raise ValueError(f"unsupported task {task!r}; gpt_flax.pipeline supports {TASK!r}")
    if model is None:
        raise ValueError("pipeline needs a model: a FlaxOpenAIGPTLMHeadModel, a local directory or a Hub id")
    source: str | None = None
    if isinstance(model, (str, os.PathLike)):
        source = os.fspath(model)
        model = FlaxOpenAIGPTLMHeadModel.from_pretrained(source)
    if tokenizer is None:
        if source is None:
            raise ValueError("pass tokenizer= (an OpenAIGPTTokenizer or its directory) with a model object")
        tokenizer = source
    if isinstance(tokenizer, (str, os.PathLike)):
        tokenizer = OpenAIGPTTokenizer.from_pretrained(os.fspath(tokenizer))
    return TextGenerationPipeline(model, tokenizer, **kwargs)
