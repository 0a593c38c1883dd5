"""`gpt-flax init-random DIR`: write a randomly initialised model directory, for smoke tests offline.

    gpt-flax init-random ./gpt-demo --tokenizer tests/fixtures/openai-gpt-tokenizer --n-layer 2 --n-embd 64

The directory has transformers' layout (config.json + model.safetensors, `--format flax` for ours)
and, with --tokenizer, the tokenizer's files, so `gpt-flax generate --model DIR`, our
`from_pretrained` and transformers' `from_pretrained` all load it without a network.
"""

from __future__ import annotations

import argparse

DEFAULT_VOCAB_SIZE = 40478  # OpenAI GPT's BPE vocabulary (transformers' OpenAIGPTConfig default)
HEADS = {"base": "FlaxOpenAIGPTModel", "lm": "FlaxOpenAIGPTLMHeadModel", "double": "FlaxOpenAIGPTDoubleHeadsModel",
         "cls": "FlaxOpenAIGPTForSequenceClassification"}


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "init-random",
        help="write a randomly initialised model directory (for smoke tests without the Hub)",
        description="Write a model with transformers' initialisation to DIR, optionally with a tokenizer.",
    )
    p.add_argument("directory", metavar="DIR", help="where to write the model")
    p.add_argument("--tokenizer", default=None,
                   help="a tokenizer directory (vocab.json + merges.txt) to copy in; vocab_size is its size")
    p.add_argument("--head", choices=sorted(HEADS), default="lm", help="which model (default lm)")
    p.add_argument("--format", choices=("hf", "flax"), default="hf", help="checkpoint format (default hf)")
    p.add_argument("--n-layer", type=int, default=2, help="layers (default 2)")
    p.add_argument("--n-embd", type=int, default=64, help="model width (default 64)")
    p.add_argument("--n-head", type=int, default=4, help="attention heads (default 4)")
    p.add_argument("--n-positions", type=int, default=512, help="maximum sequence length (default 512)")
    p.add_argument("--vocab-size", type=int, default=None,
                   help=f"vocabulary size (default {DEFAULT_VOCAB_SIZE}; with --tokenizer, only the tokenizer's)")
    p.add_argument("--seed", type=int, default=0, help="initialisation seed (default 0)")
    p.add_argument("--overwrite", action="store_true", help="write into DIR even if it is not empty")
    return p


def run(args) -> int:
    import gpt_flax
    from convert.writers import atomic_directory, check_destination
    from gpt_flax import OpenAIGPTConfig

    check_destination(args.directory, args.overwrite, option="--overwrite")  # before any work; and again on writing
    tokenizer = None
    vocab_size = DEFAULT_VOCAB_SIZE if args.vocab_size is None else args.vocab_size
    if args.tokenizer is not None:
        tokenizer = gpt_flax.OpenAIGPTTokenizer.from_pretrained(args.tokenizer)
        vocab_size = len(tokenizer)
        # Fewer rows than the tokenizer has ids leave some ids with no embedding; more lets the model sample
        # ids the tokenizer cannot decode. Only the tokenizer's own size makes a consistent directory.
        if args.vocab_size not in (None, vocab_size):
            raise ValueError(
                f"--vocab-size {args.vocab_size} does not match the tokenizer's {vocab_size} tokens; "
                "drop --vocab-size (it follows --tokenizer) or --tokenizer"
            )
    config = OpenAIGPTConfig(
        vocab_size=vocab_size, n_positions=args.n_positions, n_embd=args.n_embd, n_layer=args.n_layer,
        n_head=args.n_head,
    )
    model = getattr(gpt_flax, HEADS[args.head])(config, seed=args.seed)
    with atomic_directory(args.directory, overwrite=args.overwrite) as staging:  # model and tokenizer, or nothing
        written = model.save_pretrained(staging, format=args.format)
        if tokenizer is not None:
            try:
                tokenizer.save_pretrained(staging)
            except OSError as e:  # name the user's directory, not the staging one
                raise OSError(str(e).replace(staging, args.directory)) from None
    size = sum(written.values()) if isinstance(written, dict) else 0
    print(f"wrote a random {HEADS[args.head]} ({args.n_layer} x {args.n_embd}, vocab {vocab_size}) to "
          f"{args.directory} ({size / 2**20:.1f} MiB)")
    return 0
