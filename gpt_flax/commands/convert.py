"""`gpt-flax convert SRC DST`: checkpoints between transformers' format, OpenAI's release and ours.

    gpt-flax convert openai-community/openai-gpt out/ --head lm --to flax --dtype bfloat16 --verify
    python -m gpt_flax convert out/ back/ --to hf --bin

The logic is `convert.pipeline.convert`; this module only parses flags and prints. Progress goes to
stderr when it is a terminal; the summary to stdout.
"""

from __future__ import annotations

import argparse
import os
import sys

from convert.mapping import HEADS
from convert.tensors import FLOAT_DTYPES


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "convert",
        help="convert a checkpoint between transformers' format, OpenAI's original release and gpt-flax's",
        description="Convert SRC into DST: HF PyTorch checkpoints (safetensors or .bin, sharded or not), "
        "OpenAI's original release and gpt-flax's Flax format, for any of the four heads.",
    )
    p.add_argument("src", metavar="SRC", help="a Hub model id, a checkpoint directory, or an original-release "
                   "directory (params_shapes.json + params_0..9.npy)")
    p.add_argument("dst", metavar="DST", help="the directory to write; it must not exist or be empty, unless --overwrite")
    p.add_argument("--head", choices=HEADS, default=None,
                   help="the model to convert into (default: the one SRC was saved from); heads SRC lacks are "
                   "newly initialised, weights the head does not use are listed")
    p.add_argument("--to", choices=("flax", "hf"), default="flax",
                   help="flax: gpt-flax's format (default); hf: transformers' (config.json + model.safetensors)")
    p.add_argument("--dtype", choices=tuple(FLOAT_DTYPES), default=None,
                   help="cast floating weights to this dtype (default: keep SRC's)")
    p.add_argument("--bin", action="store_true", help="with --to hf, also write pytorch_model.bin")
    p.add_argument("--verify", action="store_true",
                   help="run the converted model and transformers' on sample inputs and print the max abs "
                   "difference (needs torch and transformers); exit 1 if it is too large")
    p.add_argument("--config", default=None,
                   help="a config.json to use where SRC has none (an original release of unpublished size)")
    p.add_argument("--revision", default=None, help="Hub revision (branch, tag or commit) of SRC")
    p.add_argument("--cache-dir", default=None, help="Hugging Face cache directory for a Hub SRC")
    p.add_argument("--overwrite", action="store_true", help="replace the checkpoint in a non-empty DST")
    p.add_argument("--seed", type=int, default=0, help="seed for newly initialised heads (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def run(args) -> int:
    from convert.pipeline import convert
    from convert.verify import TOLERANCE, torch_available, verify
    from convert.writers import check_destination

    check_destination(args.dst, args.overwrite, src=args.src, option="--overwrite")  # convert checks again
    config = _read_config(args.config) if args.config else None
    options = {"revision": args.revision, "cache_dir": args.cache_dir, "config": config}
    report = convert(
        args.src,
        args.dst,
        head=args.head,
        to=args.to,
        dtype=args.dtype,
        bin=args.bin,
        overwrite=args.overwrite,
        seed=args.seed,
        progress=not args.quiet and sys.stderr.isatty(),
        **options,
    )
    print("\n".join(report.summary()))
    if not args.verify:
        return 0
    if not torch_available():
        print("verify: skipped, torch and transformers are not installed")
        return 0
    try:
        diffs, scale = verify(report, **options)
    except (OSError, ValueError, RuntimeError, KeyError, TypeError, AttributeError) as error:  # transformers could
        # not load or run a side; a KeyError's message is a bare key, so its type is named too
        text = str(error).strip()
        first = text.splitlines()[0] if text else type(error).__name__
        if not isinstance(error, (OSError, ValueError, RuntimeError)):
            first = f"{type(error).__name__}: {first}"
        print(f"gpt-flax convert: error: {args.dst} was written, but --verify failed: {first}", file=sys.stderr)
        return 1
    worst = max(diffs.values())
    print(f"verify: max abs difference {', '.join(f'{k} {v:.3g}' for k, v in diffs.items())} (outputs up to {scale:.3g})")
    if worst > TOLERANCE * max(1.0, scale):
        print(f"gpt-flax convert: error: outputs differ by {worst:.3g}, more than {TOLERANCE:g} x scale", file=sys.stderr)
        return 1
    return 0


def _read_config(path: str):
    """--config's file, or one line naming the option and the file (not a bare errno)."""
    from gpt_flax.config import OpenAIGPTConfig

    if not os.path.exists(path):
        raise FileNotFoundError(f"--config {path}: no such file")
    if os.path.isdir(path):
        raise IsADirectoryError(f"--config {path}: a directory, not a config.json file")
    try:
        return OpenAIGPTConfig.from_json_file(path)
    except OSError as error:  # unreadable; a bad JSON's ValueError already names the file
        raise OSError(f"--config {path}: {(error.strerror or str(error)).lower()}") from None
