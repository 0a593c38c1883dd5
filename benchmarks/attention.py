"""Benchmark causal attention: the Pallas kernel against cuDNN and XLA, forward and forward+backward.

    python benchmarks/attention.py                 # T in {512, 2048, 8192}, bf16, 12 heads of 64
    python benchmarks/attention.py --check         # first: the kernels against XLA on this device
    python benchmarks/attention.py --sweep 2048    # first: try GPU block sizes at T=2048, bench the best
    python benchmarks/attention.py --variants split fused   # time (and --check) named GPU block variants

Each row times one jitted function after a warm-up call, median of `--repeats` runs of `--iters`
calls, with `block_until_ready`. FLOPs count the causal half of the score and value matmuls:
forward 2 * B*H*T^2*K (two matmuls of 2*B*H*T^2*K, halved), backward 2.5x that. The batch is
`--tokens` // T, so every T does the same number of tokens.
"""

from __future__ import annotations

import os
import sys

# benchmarks/tokenize.py shadows the standard library's `tokenize` (which `inspect` imports) for scripts run
# from this folder: take the folder off the import path before anything else is imported.
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [os.path.dirname(HERE)] + [p for p in sys.path if os.path.abspath(p or os.curdir) != HERE]

import argparse
import dataclasses
import functools
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from gpt_flax.attention import attention, xla_attention
from gpt_flax.kernels import flash_attention
from gpt_flax.kernels.flash_gpu import default_block_sizes
from gpt_flax.kernels.flash_mgpu import MosaicBlockSizes, supports

DTYPES = {"bfloat16": jnp.bfloat16, "float16": jnp.float16, "float32": jnp.float32}
BWD_FLOP_FACTOR = 2.5  # five [T, T] matmuls backward against two forward (FlashAttention-2 section 4)


def causal_flops(batch, heads, seq, head_dim, with_backward):
    fwd = 2.0 * batch * heads * seq * seq * head_dim
    return fwd * (1.0 + BWD_FLOP_FACTOR) if with_backward else fwd


def time_fn(fn, args, iters, repeats):
    """Median seconds per call of the jitted `fn` after one warm-up (compile) call."""
    jax.block_until_ready(fn(*args))
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(iters):
            out = fn(*args)
        jax.block_until_ready(out)
        runs.append((time.perf_counter() - start) / iters)
    return statistics.median(runs)


def make_fns(attn):
    """(forward, forward+backward) jitted from `attn(q, k, v) -> out`."""

    def fwd_bwd(q, k, v, do):
        _, vjp = jax.vjp(attn, q, k, v)
        return vjp(do)

    return jax.jit(attn), jax.jit(fwd_bwd)


# Named GPU kernel variants: overrides of default_block_sizes(K). "split" is the dK/dV + dQ backward,
# the "fused" ones the single backward kernel with atomic dQ (flash_gpu.GPUBlockSizes.fused_bwd).
FUSED = {"fused_bwd": True, "block_q_bwd": 64, "block_k_bwd": 64, "num_warps_bwd": 4, "num_stages_bwd": 2}
VARIANTS = {
    "split": {"fused_bwd": False},
    "fused": FUSED,
    "fused-k128": {**FUSED, "block_k_bwd": 128, "num_warps_bwd": 8},
    "fused-q32k128": {**FUSED, "block_q_bwd": 32, "block_k_bwd": 128, "num_stages_bwd": 3},
    "fused-fwd128": {**FUSED, "block_q": 128, "block_k": 64, "num_warps": 8, "num_stages": 3},
}


# The Hopper kernels (flash_mgpu.py, gpu_kernel="mosaic"): overrides of MosaicBlockSizes().
MOSAIC_VARIANTS = {
    "mosaic": {},
    "mosaic-k64": {"block_k": 64},
    "mosaic-nopp": {"pingpong": False},
    "mosaic-s3": {"steps": 3, "steps_bwd": 3},
    "mosaic-dq128": {"block_q_dq": 128, "block_k_dkv": 128},
    "mosaic-w1": {"wgs_bwd": 1},
}
ALL_VARIANTS = sorted(VARIANTS) + sorted(MOSAIC_VARIANTS)


def variant_blocks(name: str, head_dim: int):
    if name in MOSAIC_VARIANTS:
        return MosaicBlockSizes(**MOSAIC_VARIANTS[name])
    return dataclasses.replace(default_block_sizes(head_dim), **VARIANTS[name])


def impls(dropout: float, blocks, variants=(), head_dim=64, baselines=True):
    """name -> attn(q, k, v): the implementations to time (cuDNN only without dropout).

    With `variants`, one "pallas-<name>" entry per variant replaces the single "pallas" entry.
    """
    seed = jnp.uint32(0) if dropout else None
    kw = {"dropout_rate": dropout, "dropout_seed": seed}
    named = {f"pallas-{n}": variant_blocks(n, head_dim) for n in variants} or {"pallas": blocks}
    out = {name: functools.partial(_pallas, blocks=b, kw=kw) for name, b in named.items()}
    if baselines:
        out["xla"] = lambda q, k, v: xla_attention(q, k, v, **kw)[0]
        if not dropout:
            out["cudnn"] = lambda q, k, v: attention(q, k, v, impl="cudnn")[0]
    return out


def _pallas(q, k, v, *, blocks, kw):
    if isinstance(blocks, MosaicBlockSizes):
        return flash_attention(q, k, v, gpu_kernel="mosaic", mosaic_blocks=blocks, **kw)
    return flash_attention(q, k, v, gpu_blocks=blocks, gpu_kernel="triton", **kw)


def inputs(batch, seq, heads, head_dim, dtype, seed=0):
    keys = jax.random.split(jax.random.key(seed), 4)
    return [jax.random.normal(key, (batch, seq, heads, head_dim), dtype) for key in keys]


def bench(args, blocks):
    rows = []
    for seq in args.seq_lens:
        batch = max(1, args.tokens // seq)
        q, k, v, do = inputs(batch, seq, args.heads, args.head_dim, DTYPES[args.dtype])
        for dropout in args.dropout:
            variants = args.dropout_variants if dropout and args.dropout_variants else args.variants
            for name, attn in impls(dropout, blocks, variants, args.head_dim, not args.no_baselines).items():
                fwd, fwd_bwd = make_fns(attn)
                row = {"T": seq, "B": batch, "impl": name, "dropout": dropout}
                for key, fn, fn_args, with_bwd in (
                    ("fwd", fwd, (q, k, v), False),
                    ("fwd+bwd", fwd_bwd, (q, k, v, do), True),
                ):
                    try:
                        sec = time_fn(fn, fn_args, args.iters, args.repeats)
                    except Exception as e:  # noqa: BLE001 - e.g. XLA out of memory at long T
                        print(f"  T={seq} {name} {key}: failed: {type(e).__name__}: {str(e)[:300]}", flush=True)
                        sec = float("nan")
                    row[key] = sec
                    row[key + " TFLOP/s"] = causal_flops(batch, args.heads, seq, args.head_dim, with_bwd) / sec / 1e12
                print(f"  {row}", flush=True)
                rows.append(row)
    return rows


def print_table(rows, device_name):
    print(f"\n### {device_name}\n")
    print("| T | B | dropout | impl | fwd ms | fwd TFLOP/s | fwd+bwd ms | fwd+bwd TFLOP/s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['T']} | {r['B']} | {r['dropout']} | {r['impl']} | {r['fwd'] * 1e3:.3f} | {r['fwd TFLOP/s']:.1f} "
            f"| {r['fwd+bwd'] * 1e3:.3f} | {r['fwd+bwd TFLOP/s']:.1f} |"
        )
    print("\nSpeed of pallas relative to the others (their time / pallas time; > 1 means pallas is faster):\n")
    print("| T | dropout | pallas | vs | fwd | fwd+bwd |")
    print("|---|---|---|---|---|---|")
    by_key = {(r["T"], r["dropout"], r["impl"]): r for r in rows}
    for (seq, dropout, impl), p in by_key.items():
        if not impl.startswith("pallas"):
            continue
        for (seq2, dropout2, other), r in by_key.items():
            if (seq2, dropout2) == (seq, dropout) and other != impl and other in ("xla", "cudnn", "pallas-split"):
                print(
                    f"| {seq} | {dropout} | {impl} | {other} | {r['fwd'] / p['fwd']:.2f}x "
                    f"| {r['fwd+bwd'] / p['fwd+bwd']:.2f}x |"
                )


# -- block-size sweep (GPU) -----------------------------------------------------------------------
FWD_CANDIDATES = [(128, 64, 4, 2), (128, 64, 4, 3), (128, 128, 8, 3), (64, 64, 4, 3)]  # bq, bk, warps, stages
BWD_CANDIDATES = [
    # block_q_dkv, block_k_dkv, block_q_dq, block_k_dq, warps, stages
    (64, 64, 64, 64, 4, 2),
    (32, 128, 128, 32, 4, 2),
    (64, 128, 128, 64, 8, 2),
    (32, 64, 64, 32, 4, 3),
]


def sweep(args, seq):
    """Best GPUBlockSizes at T=seq: forward blocks first, then backward blocks with that forward."""
    batch = max(1, args.tokens // seq)
    q, k, v, do = inputs(batch, seq, args.heads, args.head_dim, DTYPES[args.dtype])
    best = default_block_sizes(args.head_dim)

    def timed(blocks, with_bwd):
        fwd, fwd_bwd = make_fns(lambda q, k, v: flash_attention(q, k, v, gpu_blocks=blocks))
        try:
            return time_fn(fwd_bwd if with_bwd else fwd, (q, k, v, do) if with_bwd else (q, k, v), 3, 3)
        except Exception as e:  # noqa: BLE001 - a block size Triton cannot fit in shared memory
            print(f"  {blocks}: failed: {type(e).__name__}: {str(e)[:200]}", flush=True)
            return float("inf")

    results = []
    for bq, bk, warps, stages in FWD_CANDIDATES:
        blocks = dataclasses.replace(best, block_q=bq, block_k=bk, num_warps=warps, num_stages=stages)
        results.append((timed(blocks, False), blocks))
        print(f"  fwd {bq=} {bk=} {warps=} {stages=}: {results[-1][0] * 1e3:.3f} ms", flush=True)
    best = min(results, key=lambda r: r[0])[1]
    results = []
    for qd, kd, qq, kq, warps, stages in BWD_CANDIDATES:
        blocks = dataclasses.replace(
            best,
            block_q_dkv=qd,
            block_k_dkv=kd,
            block_q_dq=qq,
            block_k_dq=kq,
            num_warps_bwd=warps,
            num_stages_bwd=stages,
        )
        results.append((timed(blocks, True), blocks))
        print(f"  fwd+bwd dkv=({qd},{kd}) dq=({qq},{kq}) {warps=} {stages=}: {results[-1][0] * 1e3:.3f} ms", flush=True)
    best = min(results, key=lambda r: r[0])[1]
    print(f"best blocks at T={seq}: {best}", flush=True)
    return best


# -- correctness on the device ----------------------------------------------------------------------
def with_grads(attn):
    """(q, k, v, do) -> (out, (dq, dk, dv))."""

    def f(q, k, v, do):
        out, vjp = jax.vjp(attn, q, k, v)
        return out, vjp(do.astype(out.dtype))

    return f


CHECK_CASES = [  # B, T, H, K, dropout: odd T, K 64 / 128 / 80 (padded to 128 on GPUs)
    (2, 100, 3, 64, 0.1),
    (1, 1000, 2, 128, 0.1),
    (2, 257, 2, 80, 0.0),
]


def check(variants=(None,)):
    """Failures per variant (None: the default blocks) of the kernels against xla_attention at full
    float32 matmul precision; each case's reference is computed once for all variants."""
    failures = dict.fromkeys(variants, 0)
    for dtype, tol in ((jnp.float32, 2e-5), (jnp.bfloat16, 2e-2)):
        for batch, seq, heads, head_dim, rate in CHECK_CASES:
            q, k, v, do = inputs(batch, seq, heads, head_dim, dtype, seed=seq)
            lengths = np.array([seq, seq * 2 // 3] * batch)[:batch]
            mask = jnp.asarray(np.arange(seq)[None, :] < lengths[:, None], jnp.float32)  # right padding
            hm = jnp.linspace(1.0, 0.0, heads)
            kw = {"attention_mask": mask, "head_mask": hm, "dropout_rate": rate, "dropout_seed": jnp.uint32(seq)}

            def reference(q, k, v, kw=kw):
                return xla_attention(*(x.astype(jnp.float32) for x in (q, k, v)), **kw)[0]

            with jax.default_matmul_precision("highest"):
                ref_out, ref_grads = jax.jit(with_grads(reference))(q, k, v, do)
            for variant in variants:
                blocks = variant_blocks(variant, head_dim) if variant else None
                mosaic = isinstance(blocks, MosaicBlockSizes)
                if mosaic and not supports(dtype, head_dim):
                    continue  # the Hopper kernels take bfloat16/float16 and K 64 or 128 only

                def kernel(q, k, v, kw=kw, blocks=blocks):
                    return _pallas(q, k, v, blocks=blocks, kw=kw) if blocks else flash_attention(q, k, v, **kw)

                label = f"check {variant or 'default'} {jnp.dtype(dtype).name} B={batch} T={seq} H={heads} K={head_dim}"
                try:
                    lowered = jax.jit(kernel).lower(q, k, v).as_text()
                    call = "mosaic_gpu" if mosaic else "__gpu$xla.gpu.triton"
                    assert call in lowered or jax.default_backend() != "gpu", f"no {call} call in the lowering"
                    with jax.default_matmul_precision("highest"):
                        out, grads = jax.jit(with_grads(kernel))(q, k, v, do)
                except Exception as e:  # noqa: BLE001 - e.g. a variant's tiles do not fit; the others still run
                    print(f"{label}: failed: {type(e).__name__}: {str(e)[:300]} FAIL", flush=True)
                    failures[variant] += 1
                    continue
                for name, a, b in zip(("out", "dq", "dk", "dv"), (out, *grads), (ref_out, *ref_grads)):
                    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
                    err = np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-6)
                    ok = np.all(np.isfinite(a)) and err <= tol
                    failures[variant] += not ok
                    print(
                        f"{label} dropout={rate} {name}: max err / max |ref| = {err:.2e} {'ok' if ok else 'FAIL'}",
                        flush=True,
                    )
    return failures


def check_cudnn():
    """attention_impl="cudnn" with a padding mask against XLA (bf16): reported, not counted as a kernel failure."""
    q, k, v, do = inputs(2, 256, 2, 64, jnp.bfloat16, seed=1)
    mask = jnp.asarray(np.arange(256)[None, :] < np.array([[256], [200]]), jnp.float32)
    try:
        out, grads = jax.jit(with_grads(lambda q, k, v: attention(q, k, v, impl="cudnn", attention_mask=mask)[0]))(
            q, k, v, do
        )
        with jax.default_matmul_precision("highest"):
            ref_out, ref_grads = jax.jit(
                with_grads(
                    lambda q, k, v: xla_attention(*(x.astype(jnp.float32) for x in (q, k, v)), attention_mask=mask)[0]
                )
            )(q, k, v, do)
        for name, a, b in zip(("out", "dq", "dk", "dv"), (out, *grads), (ref_out, *ref_grads)):
            a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
            print(
                f"check cudnn bf16 padded {name}: max err / max |ref| = {np.max(np.abs(a - b)) / np.max(np.abs(b)):.2e}"
            )
    except Exception as e:  # noqa: BLE001 - cuDNN's own limits; the kernel checks above are what count
        print(f"check cudnn with a padding mask: failed: {type(e).__name__}: {str(e)[:500]}", flush=True)
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq-lens", type=int, nargs="+", default=[512, 2048, 8192], help="sequence lengths T")
    parser.add_argument("--tokens", type=int, default=16384, help="batch * T for every T")
    parser.add_argument("--heads", type=int, default=12, help="attention heads H")
    parser.add_argument("--head-dim", type=int, default=64, help="head size K")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bfloat16", help="q, k, v dtype")
    parser.add_argument("--dropout", type=float, nargs="+", default=[0.0], help="attention dropout rates to time")
    parser.add_argument("--iters", type=int, default=10, help="calls per timed run")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs; the median is reported")
    parser.add_argument("--check", action="store_true", help="first compare the kernels with XLA on this device")
    parser.add_argument("--sweep", type=int, default=None, metavar="T", help="first pick GPU block sizes at this T")
    parser.add_argument("--check-only", action="store_true", help="stop after --check")
    parser.add_argument(
        "--variants", nargs="+", choices=ALL_VARIANTS, default=(), help="time these GPU kernel variants side by side"
    )
    parser.add_argument(
        "--dropout-variants", nargs="+", choices=ALL_VARIANTS, default=(), help="the variants for dropout > 0 rows"
    )
    parser.add_argument("--no-baselines", action="store_true", help="time only the Pallas variants (no XLA, cuDNN)")
    args = parser.parse_args(argv)

    device = jax.devices()[0]
    print(f"jax {jax.__version__}, device: {device.device_kind} ({device.platform})", flush=True)
    if args.check and args.variants:
        # Every variant is checked and then timed; the log says which failed, so one bad variant
        # does not cost the others' numbers in a single device run.
        failed = [name for name, n in check(args.variants).items() if n]
        print(f"correctness check: {'FAILED for ' + ', '.join(failed) if failed else 'all variants ok'}", flush=True)
    elif args.check and sum(check().values()) + check_cudnn():
        print("correctness check FAILED", flush=True)
        return 1
    if args.check_only:
        return 0
    blocks = sweep(args, args.sweep) if args.sweep else None
    rows = bench(args, blocks)
    print_table(rows, device.device_kind)
    if blocks is not None:
        print(f"\npallas GPU blocks: {blocks}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
