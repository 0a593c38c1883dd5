"""`gpt-flax generate PROMPT`: continue a prompt with a model directory (or a Hub id).

    gpt-flax generate "The future of AI is" --model path/to/openai-gpt --max-length 50
    gpt-flax generate "The future of AI is" --model openai-community/openai-gpt --do-sample --top-p 0.9 --seed 0 --stream

The logic is `gpt_flax.pipeline`; this module parses flags and prints one text per sequence
(`--stream`: the text as it is produced). Compiled code is cached on disk (JAX's persistent
compilation cache, in --compile-cache), so a second run with the same sizes starts at once.
"""

from __future__ import annotations

import argparse
import os
import sys

from gpt_flax.cache import cache_root

DEFAULT_COMPILE_CACHE = str(cache_root() / "jax")  # ~/.cache/gpt_flax/jax unless GPT_FLAX_CACHE_DIR moves it


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "generate",
        help="continue a prompt with an OpenAI GPT model (KV-cached decoding)",
        description="Generate text from PROMPT with a model directory or a Hub id, with the defaults of "
        "transformers' text-generation pipeline (256 new tokens, sampled; --greedy to turn sampling off).",
    )
    p.add_argument("prompt", metavar="PROMPT", help="the text to continue")
    p.add_argument(
        "--model",
        required=True,
        help="a model directory (config.json, weights and the tokenizer's vocab.json + merges.txt) or a Hub id",
    )
    p.add_argument("--tokenizer", default=None, help="the tokenizer's directory or Hub id (default: --model)")
    p.add_argument("--max-length", type=int, default=None,
                   help="total length in tokens, prompt included (default: 256 new tokens, as transformers' text-generation pipeline)")
    p.add_argument("--max-new-tokens", type=int, default=None, help="new tokens to generate (wins over --max-length)")
    sampling = p.add_mutually_exclusive_group()
    sampling.add_argument("--do-sample", action="store_true", default=None, help="sample (the default)")
    sampling.add_argument("--greedy", dest="do_sample", action="store_false", default=None, help="greedy decoding instead of sampling")
    p.add_argument("--temperature", type=float, default=None, help="divide the logits by this before sampling (> 0)")
    p.add_argument("--top-k", type=int, default=None, help="sample from the k most likely tokens only (default 50; 0: all)")
    p.add_argument("--top-p", type=float, default=None,
                   help="sample from the smallest set of tokens whose probability exceeds this, in (0, 1]")
    p.add_argument("--min-p", type=float, default=None,
                   help="drop tokens less likely than this times the most likely one, in [0, 1]")
    p.add_argument("--typical-p", type=float, default=None, help="typical sampling's probability mass, in (0, 1]")
    p.add_argument("--repetition-penalty", type=float, default=None,
                   help="penalise the tokens already in the text (> 1 less repetition; 1.0 off)")
    p.add_argument("--no-repeat-ngram-size", type=int, default=None, help="never repeat an n-gram of this size")
    p.add_argument("--min-new-tokens", type=int, default=None, help="no end-of-text before this many new tokens")
    p.add_argument("--num-beams", type=int, default=None, help="beam search over this many beams (default 1: none)")
    p.add_argument("--seed", type=int, default=None, help="random seed for sampling (default: a fresh one)")
    p.add_argument("--num-return-sequences", type=int, default=None, help="sequences to sample for the prompt (default 1)")
    p.add_argument("--stream", action="store_true", help="print the text as it is produced (one sequence)")
    p.add_argument("--compile-cache", default=DEFAULT_COMPILE_CACHE,
                   help=f"directory for JAX's persistent compilation cache; '' to disable (default {DEFAULT_COMPILE_CACHE})")
    return p


def _generate_options(args) -> dict:
    names = (
        "max_length", "max_new_tokens", "do_sample", "temperature", "top_k", "top_p", "seed", "num_return_sequences",
        "repetition_penalty", "no_repeat_ngram_size", "min_new_tokens", "num_beams", "min_p", "typical_p",
    )  # fmt: skip
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


def _check_local(path: str, what: str) -> None:
    """A missing directory that is not a Hub id is a typo: say so before trying the network."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"{what} {path!r} is a file; pass the model directory")
    if not os.path.isdir(path) and (path.startswith((".", "/", "~")) or path.count("/") > 1):
        raise FileNotFoundError(f"{what} directory {path!r} does not exist")


class TextStreamer:
    """Prints a sequence's text as its tokens arrive: decodes all tokens so far, prints what is new.

    The prompt is printed with the first token, not before: generate checks its options before the
    first token, so an option it refuses leaves stdout empty (one line on stderr, nothing else)."""

    def __init__(self, tokenizer, prompt: str, prompt_ids, out=None):
        # sys.stdout is looked up now, not when the module was imported (it may have been replaced since).
        self.tokenizer, self.prompt_ids, self.out = tokenizer, list(prompt_ids), out or sys.stdout
        self.pending = prompt  # not yet printed
        self.tokens: list = []
        self.printed = 0

    def _write(self, text: str) -> None:
        self.out.write(self.pending + text)
        self.out.flush()
        self.pending = ""

    def __call__(self, tokens) -> None:
        if self.pending:
            self._write("")  # the prompt, now that generation has begun
        self.tokens.append(int(tokens[0]))
        full = self.tokenizer.decode(self.prompt_ids + self.tokens, skip_special_tokens=True)
        prompt = len(self.tokenizer.decode(self.prompt_ids, skip_special_tokens=True))
        text = full[prompt:]
        # The last word may still grow (BPE pieces end with </w>): print up to its start.
        cut = text.rfind(" ")
        if cut > self.printed:
            self._write(text[self.printed : cut])
            self.printed = cut
        self.text = text

    def end(self) -> None:
        self._write(getattr(self, "text", "")[self.printed :] + "\n")


def _usable_cache(path: str) -> bool:
    """Whether the compile cache directory can be made and written; if not, one line says so (no cache)."""
    try:
        os.makedirs(path, exist_ok=True)
        if not os.access(path, os.W_OK):
            raise PermissionError(f"{path} is not writable")
    except OSError as error:
        reason = error.strerror or str(error)
        print(f"gpt-flax generate: warning: no compile cache ({path}: {reason}); compiling afresh", file=sys.stderr)
        return False
    return True


def run(args) -> int:
    if args.compile_cache and _usable_cache(args.compile_cache):
        import jax

        jax.config.update("jax_compilation_cache_dir", args.compile_cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    from gpt_flax.pipeline import pipeline

    _check_local(args.model, "--model")
    if args.tokenizer:
        _check_local(args.tokenizer, "--tokenizer")
    if not args.tokenizer and os.path.isdir(args.model) and not os.path.isfile(os.path.join(args.model, "vocab.json")):
        raise FileNotFoundError(f"{args.model} holds no tokenizer (vocab.json + merges.txt); pass --tokenizer DIR")
    if args.stream and args.num_return_sequences not in (None, 1):
        raise ValueError("--stream prints one sequence; drop --num-return-sequences or --stream")
    if args.stream and args.num_beams not in (None, 1):  # transformers' streamers refuse beam search too
        raise ValueError(
            "--stream prints tokens as they are chosen, which beam search does not; drop --num-beams or --stream"
        )
    options = _generate_options(args)
    generator = pipeline("text-generation", model=args.model, tokenizer=args.tokenizer or args.model)
    if not args.stream:
        for result in generator(args.prompt, **options):
            print(result["generated_text"])
        return 0
    options["num_return_sequences"] = 1  # whatever the model's generation_config.json says
    prompt_ids = generator.tokenizer(args.prompt)["input_ids"]
    streamer = TextStreamer(generator.tokenizer, args.prompt, prompt_ids)
    generator(args.prompt, streamer=streamer, **options)
    streamer.end()
    return 0
