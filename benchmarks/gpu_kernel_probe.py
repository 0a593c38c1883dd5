"""The flash kernels on a GPU with their optional inputs as arguments of the jitted function, as the model
passes them (a batch's attention_mask, a head_mask, a dropout seed), against XLA. One line per case.

    PYTHONPATH=$PWD python3 benchmarks/gpu_kernel_probe.py

On an H100 (2026-11-27) the Mosaic GPU kernels returned NaN in every row for a traced attention_mask
(bf16, T 8 and 100, any mask dtype) while a constant mask, as `attention.py --check` passes it, was
right; Triton was right throughout. `_resolve_gpu_kernel` keeps "auto" off Mosaic for masked, head-masked
and dropout calls until every "mosaic" line here reads ok.
"""

from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [os.path.dirname(HERE)] + [p for p in sys.path if os.path.abspath(p or os.curdir) != HERE]

import jax
import jax.numpy as jnp
import numpy as np

from gpt_flax.attention import xla_attention
from gpt_flax.kernels import flash_attention

TOLERANCE = 3e-2  # bf16 against float32 XLA, max |error| / max |reference|


def main() -> None:
    print("jax", jax.__version__, jax.devices(), flush=True)
    for T in (8, 100):
        keys = jax.random.split(jax.random.key(0), 3)
        q, k, v = (jax.random.normal(key, (2, T, 12, 64), jnp.float32) for key in keys)
        q16, k16, v16 = (x.astype(jnp.bfloat16) for x in (q, k, v))
        mask = np.ones((2, T), np.int32)
        mask[1, : T // 2] = 0
        cases = {  # name: (the traced arguments, the static dropout rate)
            "plain": ({}, 0.0),
            "mask": ({"attention_mask": jnp.asarray(mask)}, 0.0),
            "head_mask": ({"head_mask": jnp.linspace(1.0, 0.0, 12)}, 0.0),
            "dropout": ({"dropout_seed": jnp.uint32(7)}, 0.1),
        }
        for name, (traced, rate) in cases.items():
            ref = xla_attention(q, k, v, dropout_rate=rate, **traced)[0]
            for kernel in ("mosaic", "triton"):

                def attend(a, b, c, extra, kernel=kernel, rate=rate):
                    return flash_attention(a, b, c, gpu_kernel=kernel, dropout_rate=rate, **extra)

                try:
                    out = np.asarray(jax.jit(attend)(q16, k16, v16, traced), np.float32)
                    err = float(np.abs(out - np.asarray(ref)).max() / np.abs(np.asarray(ref)).max())
                    ok = bool(np.isfinite(out).all()) and err <= TOLERANCE
                    print(f"T={T} {name} traced, {kernel}: finite {np.isfinite(out).all()}, err {err:.2e} "
                          f"{'ok' if ok else 'FAIL'}", flush=True)  # fmt: skip
                except Exception as e:  # noqa: BLE001 - one line per failing case
                    print(f"T={T} {name} {kernel}: failed {type(e).__name__}: {str(e)[:200]} FAIL", flush=True)


if __name__ == "__main__":
    main()
