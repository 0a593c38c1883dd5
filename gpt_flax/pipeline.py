"""`pipeline("text-generation")`: text in, text out, as transformers' TextGenerationPipeline.

    from gpt_flax import pipeline
    generator = pipeline("text-generation", model="path/to/openai-gpt")
    generator("The future of AI is", max_length=50, do_sample=True, prng_key=0)
    # [{"generated_text": "The future of AI is ..."}]

A string gives a list of `num_return_sequences` dicts; a list of strings gives one such list per
string, each generating what it would alone (one left-padded batch when all get the same number of
new tokens, else one by one, as transformers runs them). Keyword
arguments are `generate`'s, plus `return_full_text` (default True: the prompt, as given, then the
continuation), `return_tensors` (token ids instead of text), `seed` (an int for `prng_key`) and
transformers' `prefix`, `handle_long_generation="hole"`, `stop_sequence`, `clean_up_tokenization_spaces`,
`skip_special_tokens`, `return_text` and `batch_size` (accepted; every prompt runs as if alone).

Defaults, as transformers 4.56.2 sets them: the pipeline's own (256 new tokens, sampling at
temperature 0.7 with GenerationConfig's top_k=50), then the model's generation_config.json where
those are GenerationConfig's global defaults (a max_length there other than 20 replaces the
default 256 new tokens), then the model config's
`task_specific_params["text-generation"]` (openai-gpt's: do_sample=True, max_length=50; the default
max_new_tokens still wins over that max_length, as in transformers), then the pipeline's keyword
arguments, then the call's; the tokenizer's pad token fills stopped rows when neither config
names a pad_token_id. Three differences, all where transformers fails the user: a max_length
given without max_new_tokens (to `pipeline` or to the call) is honoured, where transformers warns
and still generates 256 new tokens; the default 256 stops at n_positions, where transformers
runs past the position table and fails; and `pipeline`'s keyword arguments win over
task_specific_params, which in transformers override them.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np

from gpt_flax.generation import GLOBAL_GENERATION_DEFAULTS as GLOBAL_DEFAULTS
from gpt_flax.generation import _as_key, _resolve_max_new_tokens

TASK = "text-generation"
# transformers' TextGenerationPipeline._default_generation_config, with GenerationConfig's top_k.
PIPELINE_DEFAULTS = {"max_new_tokens": 256, "do_sample": True, "temperature": 0.7, "top_k": 50}
GENERATE_OPTIONS = frozenset(
    (
        "max_new_tokens",
        "max_length",
        "do_sample",
        "temperature",
        "top_k",
        "top_p",
        "eos_token_id",
        "pad_token_id",
        "num_return_sequences",
        "repetition_penalty",
        "no_repeat_ngram_size",
        "min_new_tokens",
        "min_length",
        "num_beams",
        "length_penalty",
        "early_stopping",
        "bad_words_ids",
        "suppress_tokens",
        "begin_suppress_tokens",
        "forced_bos_token_id",
        "forced_eos_token_id",
        "min_p",
        "typical_p",
        "epsilon_cutoff",
        "eta_cutoff",
        "sequence_bias",
        "renormalize_logits",
        "prng_key",
        "streamer",
    )
)
PIPELINE_OPTIONS = frozenset(
    (
        "return_full_text", "return_tensors", "return_text", "seed", "batch_size", "prefix", "handle_long_generation",
        "stop_sequence", "clean_up_tokenization_spaces", "skip_special_tokens",
    )
)  # fmt: skip


class TextGenerationPipeline:
    """Tokenize, `model.generate`, decode. `model`: an LM-head model; `tokenizer`: OpenAIGPTTokenizer."""

    def __init__(self, model, tokenizer, **defaults: Any):
        if not hasattr(model, "generate"):
            raise TypeError(f"{type(model).__name__} has no LM head to generate with; use FlaxOpenAIGPTLMHeadModel")
        self.model = model
        self.tokenizer = tokenizer
        _check_options(defaults)
        # transformers' order (Pipeline.__init__, `_prepare_generation_config(use_model_defaults=True)`):
        # the model's generation_config.json fills what the pipeline's defaults leave at
        # GenerationConfig's global defaults (so not max_new_tokens, do_sample, temperature), and a
        # max_length from it other than 20 displaces the default 256 new tokens.
        # Its generate then lays the file's max_new_tokens back (files of transformers >= 4.50).
        file = getattr(model, "generation_config", None) or {}
        base = dict(PIPELINE_DEFAULTS)
        for key, value in file.items():
            if key in GLOBAL_DEFAULTS and base.get(key, GLOBAL_DEFAULTS[key]) == GLOBAL_DEFAULTS[key] != value:
                base[key] = 0 if key == "top_k" and value is None else value  # a null top_k: no top-k filter
        if base.get("max_new_tokens") == PIPELINE_DEFAULTS["max_new_tokens"] and base.get("max_length", 20) != 20:
            del base["max_new_tokens"]
            if file.get("max_new_tokens") is not None and _version(file.get("transformers_version")) >= (4, 50):
                base["max_new_tokens"] = file["max_new_tokens"]
        task_params = (model.config.extra or {}).get("task_specific_params") or {}
        self.task_defaults = {**base, **(task_params.get(TASK) or {})}
        # The tokenizer's pad token when the model's generation settings name none: a loaded
        # generation_config.json's (config.json's ignored, as transformers), else config.json's.
        model_pad = (
            file.get("pad_token_id") if file and not file.get("_from_model_config") else model.config.pad_token_id
        )
        tokenizer_pad = getattr(tokenizer, "pad_token_id", None)
        if self.task_defaults.get("pad_token_id") is None and model_pad is None and tokenizer_pad is not None:
            self.task_defaults["pad_token_id"] = tokenizer_pad
        self.defaults = defaults

    def __call__(self, text_inputs: str | list, **kwargs: Any):
        single = isinstance(text_inputs, str)
        try:
            texts = [text_inputs] if single else list(text_inputs)
        except TypeError:
            texts = []
        if not texts or not all(isinstance(t, str) for t in texts):
            raise TypeError(
                f"text-generation takes a string or a non-empty list of strings, got {type(text_inputs).__name__}"
            )
        _check_options(kwargs)
        given = {**self.defaults, **kwargs}  # what the user asked for, at construction or now
        options = {**self.task_defaults, **given}
        output = self._output_options(options, self.defaults, kwargs)
        seed = options.pop("seed", None)
        if seed is not None:
            if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
                raise ValueError(f"seed must be an int, got {seed!r}")
            options.setdefault("prng_key", int(seed))
        batch_size = options.pop("batch_size", None)  # each prompt generates what it would alone, in any batch
        if batch_size is not None and (not isinstance(batch_size, (int, np.integer)) or batch_size < 1):
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        stop_sequence = options.pop("stop_sequence", None)
        if stop_sequence is not None:  # as transformers: any token of the stop sequence ends a row
            options["eos_token_id"] = list(self.tokenizer.encode(_check_str(stop_sequence, "stop_sequence")))
            if not options["eos_token_id"]:
                raise ValueError(f"stop_sequence={stop_sequence!r} has no tokens to stop at")
        prefix = _check_str(options.pop("prefix", None) or "", "prefix")
        hole = options.pop("handle_long_generation", None)
        if hole not in (None, "hole"):
            raise ValueError(f"{hole!r} is not a valid value for handle_long_generation: expected None or 'hole'")
        if "max_new_tokens" not in given and "max_new_tokens" in options and "max_length" in given:
            del options["max_new_tokens"]  # the user's max_length counts (transformers would ignore it)
        if prefix:  # transformers: max_length and min_length do not count the prefix's tokens
            prefix_length = len(self.tokenizer(prefix)["input_ids"])
            if options.get("max_new_tokens") is None and options.get("max_length") is not None:
                options["max_length"] += prefix_length
            if "min_new_tokens" not in given and given.get("min_length"):  # a keyword's, not a file's
                options["min_length"] += prefix_length
        ids, mask, hole_budgets = self._encode([prefix + text for text in texts], options if hole else None)
        # Each prompt's own number of new tokens, as if it ran alone (transformers runs them one by one).
        capped = "max_new_tokens" not in given and options.get("max_new_tokens") is not None
        budgets = hole_budgets or [self._budget(int(length), options, capped) for length in mask.sum(axis=1)]
        options.pop("max_length", None)
        # min_length counts each prompt's own tokens too: as min_new_tokens per prompt (which wins over it).
        min_length = options.pop("min_length", None)
        if options.get("min_new_tokens") is None and min_length:
            budgets = [(b, max(0, min_length - int(n))) for b, n in zip(budgets, mask.sum(axis=1))]
        else:
            budgets = [(b, options.get("min_new_tokens")) for b in budgets]
        if not options.get("do_sample", False):  # greedy: the sampling options the caller did not give are moot
            for name in ("temperature", "top_k", "top_p"):
                if name not in given:
                    options.pop(name, None)
        if hasattr(self.model, "_generate"):  # options resolved here, generation_config.json included
            options = self.model._with_token_defaults(options)
        n = options.get("num_return_sequences", 1)
        if len(set(budgets)) == 1:  # one left-padded batch
            sequences = self._run(ids, mask, {**options, **_lengths(budgets[0])})
            new = [sequences[i * n : (i + 1) * n, ids.shape[1] :] for i in range(len(texts))]
        else:  # prompts whose budgets differ run one by one, each with its own key
            key = options.pop("prng_key", None)
            new = []
            for i, budget in enumerate(budgets):
                row = ids[i][mask[i] == 1][None]
                own = {**options, **_lengths(budget)}
                if key is not None:
                    own["prng_key"] = jax.random.fold_in(_as_key(key), i)
                new.append(self._run(row, None, own)[:, row.shape[1] :])
        eos = options.get("eos_token_id")
        eos = self.model.config.eos_token_id if eos is None else eos
        results = []
        for i, text in enumerate(texts):
            prompt_ids = ids[i][mask[i] == 1]
            rows = _own_length(new[i], eos)
            if output["return_tensors"]:
                results.append(
                    [{"generated_token_ids": [int(t) for t in prompt_ids] + [int(t) for t in row]} for row in rows]
                )
            else:
                results.append([{"generated_text": self._text(text, prompt_ids, row, output)} for row in rows])
        return results[0] if single else results

    @staticmethod
    def _output_options(options: dict, defaults: dict, kwargs: dict) -> dict:
        """What the results hold, popped from `options`: the call's choice, else the pipeline's, each
        checked on its own as transformers' `_sanitize_parameters` checks it."""
        for name in ("return_full_text", "return_tensors", "return_text"):
            options.pop(name, None)
        kind = _return_type(kwargs) or _return_type(defaults) or "full_text"
        return {
            "return_full_text": kind == "full_text",
            "return_tensors": kind == "tensors",
            "clean_up_tokenization_spaces": options.pop("clean_up_tokenization_spaces", True),
            "skip_special_tokens": options.pop("skip_special_tokens", True),
        }

    def _budget(self, length: int, options: dict, capped: bool):
        """The new tokens for a prompt of `length` tokens alone: max_new_tokens (a default one stopping at
        the position table's end), else max_length - length, else generate's default."""
        config = self.model.config
        if options.get("max_new_tokens") is None:
            return _resolve_max_new_tokens(config, length, None, options.get("max_length"))
        if not capped:
            return options["max_new_tokens"]
        room = config.n_positions - length  # a default length stops at the position table's end, as generate's
        if room < 1:
            raise ValueError(
                f"the prompt's {length} tokens fill n_positions={config.n_positions}: no position is left to generate into"
            )
        return min(options["max_new_tokens"], room)

    def _run(self, ids, mask, options: dict) -> np.ndarray:
        if hasattr(self.model, "_generate"):
            return self.model._generate(ids, attention_mask=mask, **options)
        return self.model.generate(ids, attention_mask=mask, **options)

    def _encode(self, texts: list, hole: dict | None = None):
        """Left-padded ids and mask [B, T]; padded here because GPT's tokenizer has no pad token.
        `hole` (the generate options, for handle_long_generation="hole"): a prompt that leaves too few
        positions for the new tokens keeps only its last tokens."""
        rows = [list(r) for r in self.tokenizer(texts)["input_ids"]]
        for text, row in zip(texts, rows):
            if not row:
                raise ValueError(f"the prompt {text!r} has no tokens: GPT has no start token to generate from")
        hole_budgets = None
        if hole is not None:  # each prompt's new tokens fixed from its length before the cut
            cut = [self._cut_for_hole(row, hole) for row in rows]
            rows = [row for row, _ in cut]
            if hole.get("max_new_tokens") is None:
                hole_budgets = [new_tokens for _, new_tokens in cut]
        vocab = self.model.config.vocab_size
        for text, row in zip(texts, rows):
            if max(row) >= vocab:
                raise ValueError(
                    f"the tokenizer gives id {max(row)} for {text!r}, but the model's vocab_size={vocab}: "
                    f"the tokenizer ({len(self.tokenizer)} tokens) does not belong to this model"
                )
        width = max(len(r) for r in rows)
        ids = np.zeros((len(rows), width), np.int32)
        mask = np.zeros((len(rows), width), np.int32)
        for i, row in enumerate(rows):
            ids[i, width - len(row) :], mask[i, width - len(row) :] = row, 1
        return ids, mask, hole_budgets

    def _cut_for_hole(self, row: list, options: dict) -> tuple[list, int]:
        """transformers' handle_long_generation="hole": (the prompt's last tokens, as many as leave room for
        the new ones within the tokenizer's model_max_length (here also the model's n_positions), the
        number of new tokens: max_new_tokens, or max_length less the whole prompt)."""
        if options.get("max_new_tokens") is not None:
            new_tokens = options["max_new_tokens"]
        else:
            new_tokens = (options.get("max_length") or 20) - len(row)
            if new_tokens < 0:
                raise ValueError(
                    f"handle_long_generation='hole': max_length={options.get('max_length') or 20} is shorter than the "
                    f"{len(row)}-token prompt, so how many new tokens are expected is unknown; pass max_new_tokens"
                )
        limit = min(self.tokenizer.model_max_length, self.model.config.n_positions)
        if len(row) + new_tokens <= limit:
            return row, new_tokens
        keep = limit - new_tokens
        if keep <= 0:
            raise ValueError(
                f"handle_long_generation='hole' cannot make room: {new_tokens} new tokens need more than the "
                f"model's {limit} positions"
            )
        return row[-keep:], new_tokens

    def _text(self, prompt: str, prompt_ids, new_ids, output: dict) -> str:
        """transformers' postprocess: decode prompt + new tokens, cut the decoded prompt's length,
        and put the prompt as the user wrote it in front (GPT's tokenizer lowercases); a prefix's
        tokens are in `prompt_ids`, so its text is cut too."""

        def decode(ids):
            return self.tokenizer.decode(
                [int(i) for i in ids],
                skip_special_tokens=output["skip_special_tokens"],
                clean_up_tokenization_spaces=output["clean_up_tokenization_spaces"],
            )

        full = decode(np.concatenate([prompt_ids, new_ids]))
        new_text = full[len(decode(prompt_ids)) :]
        return prompt + new_text if output["return_full_text"] else new_text


def _return_type(source: dict) -> str | None:
    """The results one set of keyword arguments asks for: "full_text", "new_text", "tensors" or None."""
    full, tensors, text = (source.get(k) for k in ("return_full_text", "return_tensors", "return_text"))
    if full is not None:
        if text is not None:
            raise ValueError("`return_text` is mutually exclusive with `return_full_text`")
        if tensors is not None:
            raise ValueError("`return_full_text` is mutually exclusive with `return_tensors`")
        return "full_text" if full else "new_text"
    if tensors is not None and text is not None:
        raise ValueError("`return_text` is mutually exclusive with `return_tensors`")
    return "tensors" if tensors else None


def _check_str(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    return value


def _lengths(budget: tuple) -> dict:
    """generate's length options for a prompt's (max_new_tokens, min_new_tokens or None)."""
    most, least = budget
    return {"max_new_tokens": most} if least is None else {"max_new_tokens": most, "min_new_tokens": least}


def _check_options(options: dict) -> None:
    unknown = sorted(set(options) - GENERATE_OPTIONS - PIPELINE_OPTIONS)
    if unknown:
        known = ", ".join(sorted(GENERATE_OPTIONS | PIPELINE_OPTIONS))
        raise TypeError(f"text-generation does not take {', '.join(unknown)}; it takes {known}")


def _version(text) -> tuple:
    """(major, minor) of a transformers_version string; a missing one counts as new."""
    if text is None:
        return (10**6, 0)
    try:
        return tuple(int(x) for x in str(text).split(".")[:2])
    except ValueError:
        return (0, 0)


def _own_length(rows, eos) -> np.ndarray:
    """A prompt's `num_return_sequences` rows [n, N] of new tokens, cut where they would have stopped
    alone: once every one of them has emitted an eos (the batch runs on while other prompts' rows do).
    Rows of the group that stopped earlier keep their padding, as in transformers."""
    eos = [] if eos is None else [int(e) for e in np.atleast_1d(eos)]
    hits = np.isin(rows, eos)
    if not eos or not hits.any(axis=1).all():
        return rows
    return rows[:, : int(hits.argmax(axis=1).max()) + 1]


def pipeline(
    task: str,
    model: Any = None,
    tokenizer: Any = None,
    *,
    revision: str | None = None,
    token: str | bool | None = None,
    model_kwargs: dict | None = None,
    **kwargs: Any,
) -> TextGenerationPipeline:
    """transformers' `pipeline` for "text-generation". `model`: a FlaxOpenAIGPTLMHeadModel or a path /
    Hub id to load one from (with `revision`, `token` and `model_kwargs` for its from_pretrained);
    `tokenizer`: an OpenAIGPTTokenizer or a path / Hub id (default: the model's path). Other keyword
    arguments become defaults of every call."""
    from gpt_flax.modeling import FlaxOpenAIGPTLMHeadModel
    from gpt_flax.tokenizer import OpenAIGPTTokenizer

    if task != TASK:
        raise ValueError(f"unsupported task {task!r}; gpt_flax.pipeline supports {TASK!r}")
    if model is None:
        raise ValueError("pipeline needs a model: a FlaxOpenAIGPTLMHeadModel, a local directory or a Hub id")
    source: str | None = None
    if isinstance(model, (str, os.PathLike)):
        source = os.fspath(model)
        model = FlaxOpenAIGPTLMHeadModel.from_pretrained(source, revision=revision, token=token, **(model_kwargs or {}))
    if tokenizer is None:
        if source is None:
            raise ValueError("pass tokenizer= (an OpenAIGPTTokenizer or its directory) with a model object")
        tokenizer = source
    if isinstance(tokenizer, (str, os.PathLike)):
        tokenizer = OpenAIGPTTokenizer.from_pretrained(os.fspath(tokenizer), revision=revision, token=token)
    return TextGenerationPipeline(model, tokenizer, **kwargs)
