"""Converting a full-size openai-gpt checkpoint (116M parameters): ours against transformers' own load.

    python benchmarks/convert.py                      # makes a random full-size checkpoint first
    python benchmarks/convert.py --checkpoint DIR     # or uses yours (a transformers directory)

Every measurement is a fresh subprocess: peak memory is its `ru_maxrss` (imports included, and shown
apart), seconds are the call alone, after imports. Each side runs once untimed first so the file is
in the page cache for all; then the sides alternate `--repeats` times and the medians are reported.
Rows: transformers' `OpenAIGPTLMHeadModel.from_pretrained` (the baseline), `convert.pipeline.convert`
to our Flax format (read + map + write + fsync), and `FlaxOpenAIGPTLMHeadModel.from_pretrained`
(read + map into a model, nothing written). Target: convert no slower, peak under 2x the checkpoint.
"""

from __future__ import annotations

import os
import sys

# benchmarks/tokenize.py shadows the standard library's `tokenize` (which `inspect` imports) for scripts run
# from this folder: take the folder off the import path before anything else is imported.
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [os.path.dirname(HERE)] + [p for p in sys.path if os.path.abspath(p or os.curdir) != HERE]

import argparse
import json
import shutil
import statistics
import subprocess
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_MEASURE = """
import json, resource, sys, time
sys.path.insert(0, {repo!r})
{imports}
def rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
before = rss_mb()
start = time.perf_counter()
{work}
seconds = time.perf_counter() - start
print(json.dumps({{"seconds": seconds, "peak_mb": rss_mb(), "import_mb": before}}))
"""

SIDES = {
    "transformers from_pretrained": (
        "import torch, transformers; torch.set_num_threads({threads})",
        "model = transformers.OpenAIGPTLMHeadModel.from_pretrained({src!r})",
    ),
    "gpt-flax convert -> flax": (
        "from convert.pipeline import convert",
        "convert({src!r}, {dst!r}, to='flax')",
    ),
    "gpt-flax from_pretrained": (
        "import jax; from gpt_flax import FlaxOpenAIGPTLMHeadModel",
        "model = FlaxOpenAIGPTLMHeadModel.from_pretrained({src!r}); jax.block_until_ready(model.params)",
    ),
}
BASELINE = "transformers from_pretrained"


def make_checkpoint(directory: str, safe: bool) -> None:
    code = (
        "import torch, transformers; torch.manual_seed(0); "
        "m = transformers.OpenAIGPTLMHeadModel(transformers.OpenAIGPTConfig()); "
        f"m.save_pretrained({directory!r}, safe_serialization={safe})"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def measure(side: str, src: str, scratch: str, threads: int) -> dict:
    dst = os.path.join(scratch, "out")
    imports, work = SIDES[side]
    code = _MEASURE.format(
        repo=REPO, imports=imports.format(threads=threads), work=work.format(src=src, dst=dst)
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    shutil.rmtree(dst, ignore_errors=True)
    return json.loads(out.strip().splitlines()[-1])


def checkpoint_bytes(directory: str) -> int:
    return sum(os.path.getsize(os.path.join(directory, f)) for f in os.listdir(directory) if not f.endswith(".json"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="a transformers checkpoint directory (default: make a random one)")
    parser.add_argument("--format", choices=("safetensors", "bin"), default="safetensors",
                        help="the format of the made checkpoint (default safetensors)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per side (default 3)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        src = args.checkpoint
        if src is None:
            src = os.path.join(scratch, "openai-gpt-random")
            make_checkpoint(src, args.format == "safetensors")
        size_mb = checkpoint_bytes(src) / 2**20
        runs: dict = {side: [] for side in SIDES}
        for side in SIDES:
            measure(side, src, scratch, args.threads)  # warm-up: page cache, pyc files
        for _ in range(args.repeats):
            for side in SIDES:
                runs[side].append(measure(side, src, scratch, args.threads))

    median = {side: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for side, rs in runs.items()}
    base = median[BASELINE]
    print(f"checkpoint: {src} ({size_mb:.0f} MiB of weights), medians of {args.repeats} runs, one subprocess each")
    print(f"{'side':<30} {'seconds':>8} {'x base':>7} {'peak MiB':>9} {'x base':>7} {'peak/ckpt':>9} {'imports MiB':>11}")
    for side, m in median.items():
        print(
            f"{side:<30} {m['seconds']:>8.2f} {m['seconds'] / base['seconds']:>7.2f} {m['peak_mb']:>9.0f} "
            f"{m['peak_mb'] / base['peak_mb']:>7.2f} {m['peak_mb'] / size_mb:>9.2f} {m['import_mb']:>11.0f}"
        )


if __name__ == "__main__":
    main()
