"""Generation speed: our KV-cached `generate` against transformers' `generate`, same weights, one run.

    python benchmarks/generate.py                           # full size, fp32, 8-token prompt, 256 new tokens, batch 1 and 8
    python benchmarks/generate.py --batch-sizes 1 --hf-max-seconds 1000   # let transformers finish every row

transformers' OpenAI GPT has no KV cache: new token t re-runs the whole prefix, so its cost per token
grows with t. All 256 tokens at batch 8 take it many minutes on a small CPU, so its `generate` runs
with `max_time=--hf-max-seconds`: where that stops it early, it was timed on its first (cheapest)
tokens only, the table says how many, and the ratio is a lower bound.

The floor: a decode step must read every weight once (the 12 blocks and, for the logits, the
token embedding), so per-token latency >= parameter bytes / memory bandwidth, the bandwidth
measured here as a large array copy (bytes read + bytes written over the time). Greedy tokens are
checked equal on both sides first. Each side: a warm-up call (our compile), then the best of
`--repeats` timed calls.

On the CPU ours decodes on its C++ kernels (gpt_flax/kernels/cpu_decode); the column "XLA only"
times ours again with them turned off, in the same run.
"""

from __future__ import annotations

import os
import sys

# benchmarks/tokenize.py would shadow the standard library's `tokenize` if this folder stayed on the path.
HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path[:] = [REPO] + [p for p in sys.path if os.path.abspath(p or os.curdir) != HERE]

import argparse
import functools
import time

import jax
import numpy as np

from gpt_flax import FlaxOpenAIGPTLMHeadModel, OpenAIGPTConfig, generation
from gpt_flax.kernels import cpu_decode

COPY_BYTES = 256 * 2**20  # large enough to stream from memory, not from the 32 MiB L3


def copy_bandwidth(repeats: int = 7) -> float:
    """Bytes moved per second (read + written) by a large numpy copy, best of `repeats`."""
    src = np.ones(COPY_BYTES // 4, np.float32)
    dst = np.empty_like(src)
    best = min(_timed(lambda: np.copyto(dst, src)) for _ in range(repeats))
    return 2 * src.nbytes / best


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bytes_per_step(params: dict) -> int:
    """What a decode step must read: every block weight, the token table (the tied LM head), one position row."""
    body = params["transformer"]
    blocks = sum(x.nbytes for x in jax.tree_util.tree_leaves(body["h"]))
    table = body["tokens_embed"]["embedding"]
    position_row = body["positions_embed"]["embedding"][0]
    return blocks + table.nbytes + position_row.nbytes


def torch_model(model):
    import torch
    import transformers

    from convert.mapping import flax_to_hf

    d = model.config.to_dict()
    d = {k: v for k, v in d.items() if k != "attention_impl"}
    d["id2label"] = {int(k): v for k, v in d["id2label"].items()}
    hf = transformers.OpenAIGPTLMHeadModel(transformers.OpenAIGPTConfig(**d)).eval()
    state = {k: torch.from_numpy(np.array(v, np.float32)) for k, v in flax_to_hf(model.params, model.config, "lm").items()}
    missing, unexpected = hf.load_state_dict(state, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
    hf.tie_weights()
    return hf


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8], help="batch sizes to time (default 1 8)")
    parser.add_argument("--prompt-length", type=int, default=8, help="prompt tokens per row (default 8)")
    parser.add_argument("--new-tokens", type=int, default=256, help="new tokens per row for ours (default 256)")
    parser.add_argument("--hf-max-seconds", type=float, default=120.0,
                        help="time limit of transformers' generate per batch size (default 120; where it stops it "
                        "early, its first tokens only are timed)")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per side after the warm-up (default 3)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads (default: all cores)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights and prompts")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    bandwidth = copy_bandwidth()
    config = OpenAIGPTConfig()
    model = FlaxOpenAIGPTLMHeadModel(config, seed=args.seed)
    step_bytes = bytes_per_step(model.params)
    floor_ms = step_bytes / bandwidth * 1e3
    hf = torch_model(model)
    print(f"device: {jax.devices()[0].device_kind}, {os.cpu_count()} cores; jax {jax.__version__}, torch {torch.__version__}")
    print(f"copy bandwidth {bandwidth / 1e9:.1f} GB/s; a decode step reads {step_bytes / 1e6:.0f} MB of weights: "
          f"floor {floor_ms:.1f} ms per step")
    print(f"full size (12 x 768, vocab {config.vocab_size}), fp32, prompt {args.prompt_length} tokens, "
          f"{args.new_tokens} new tokens (transformers: until {args.hf_max_seconds:g} s)")
    kernels = generation.use_cpu_kernel(np.float32)
    print("ours decodes on " + ("its CPU kernels" if kernels else f"XLA only ({cpu_decode.unavailable_reason() or 'not the CPU'})"))
    rows = []
    for batch in args.batch_sizes:
        ids = np.random.default_rng(args.seed + batch).integers(0, config.vocab_size, (batch, args.prompt_length))
        total = args.prompt_length + args.new_tokens
        run = functools.partial(model.generate, ids, max_new_tokens=args.new_tokens)
        compile_s = _timed(run)
        ours_s = min(_timed(run) for _ in range(args.repeats))
        ours = run()
        assert ours.shape == (batch, total)
        with_kernels = generation.use_cpu_kernel
        generation.use_cpu_kernel = lambda dtype: False
        try:
            _timed(run)
            xla_s = min(_timed(run) for _ in range(args.repeats))
            assert np.array_equal(run(), ours), "ours with and without the CPU kernels chose different tokens"
        finally:
            generation.use_cpu_kernel = with_kernels

        with torch.no_grad():
            hf.generate(torch.tensor(ids), max_new_tokens=2, do_sample=False, pad_token_id=0)  # warm-up
            start = time.perf_counter()
            theirs = hf.generate(
                torch.tensor(ids),
                max_new_tokens=args.new_tokens,
                do_sample=False,
                pad_token_id=0,
                max_time=args.hf_max_seconds,
            ).numpy()
            hf_s = time.perf_counter() - start
        hf_new = theirs.shape[1] - args.prompt_length
        same = np.array_equal(ours[:, : theirs.shape[1]], theirs)
        ours_tps = batch * args.new_tokens / ours_s
        hf_tps = batch * hf_new / hf_s
        step_ms = ours_s / args.new_tokens * 1e3
        xla_ms = xla_s / args.new_tokens * 1e3
        rows.append(
            (batch, ours_tps, hf_tps, hf_new, ours_tps / hf_tps, step_ms, step_ms / floor_ms, xla_ms, compile_s - ours_s, same)
        )

    print()
    print("| batch | ours tok/s | transformers tok/s (tokens timed) | ratio | ours ms/token | floor ms | "
          "latency / floor | XLA only ms/token | compile s | same tokens |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for batch, ours_tps, hf_tps, hf_new, ratio, step_ms, over, xla_ms, compile_s, same in rows:
        bound = ">= " if hf_new < args.new_tokens else ""
        print(f"| {batch} | {ours_tps:.1f} | {hf_tps:.2f} ({hf_new}) | {bound}{ratio:.1f}x | {step_ms:.1f} | "
              f"{floor_ms:.1f} | {over:.2f}x | {xla_ms:.1f} | {compile_s:.1f} | {'yes' if same else 'NO'} |")


if __name__ == "__main__":
    main()
