"""The flash kernels on a GPU with their optional inputs as arguments of the jitted function, as the model
passes them (a batch's attention_mask, a head_mask, a dropout seed), against XLA. One line per case.

    PYTHONPATH=$PWD python3 benchmarks/gpu_kernel_probe.py

On an H100 (2026-11-27) the Mosaic GPU kernels returned NaN in every row for a traced attention_mask
(bf16, T 8 and 100, any mask dtype) while a constant mask, as `attention.py --check` passes it, was
right; Triton was right throughout. The cause, found later on the CPU, was XLA folding the padding bias's
(x * finfo.min) * log2(e) into x * -inf (`flash._mosaic_inputs`, now fixed); every "mosaic" line here
should now read ok.

`--diagnose` checks the parts of a masked Mosaic call one at a time, Mosaic kernels only, bf16, B=2,
T=100, masks all ones and right-padded (no query row without a visible key, so no row of the kernels'
output is replaced): the kernels called directly with the padding bias as a jit argument, computed
inside the jit from a traced mask, or a constant; the custom_vjp wrapper alone; the wrapper followed by a
`lax.cond` on a traced predicate (what `_unseeing_rows` adds for a traced mask); the whole
`flash_attention`; and dq, dk, dv of the wrapper. Should a masked call fail again, this says where.
"""

from __future__ import annotations

import functools
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [os.path.dirname(HERE)] + [p for p in sys.path if os.path.abspath(p or os.curdir) != HERE]

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from gpt_flax.attention import xla_attention
from gpt_flax.kernels import flash, flash_attention
from gpt_flax.kernels.common import TileMath

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


def _report(name: str, out, ref, rows=None) -> None:
    """One line: finite, error against the float32 reference, and which (batch row, query) are NaN."""
    out, ref = np.asarray(out, np.float32), np.asarray(ref, np.float32)
    err = float(np.nanmax(np.abs(out - ref)) / np.abs(ref).max()) if np.isfinite(out).any() else float("nan")
    bad = ~np.isfinite(out).all(axis=tuple(range(2, out.ndim)))  # [B, T]
    where = ", ".join(f"b{b}: {int(bad[b].sum())}/{bad.shape[1]} rows" for b in range(bad.shape[0]))
    ok = not bad.any() and err <= TOLERANCE
    print(f"{name}: err {err:.2e}, NaN {where} {'ok' if ok else 'FAIL'}", flush=True)


def diagnose() -> None:
    """Which part of the masked Mosaic call goes wrong: see the module's docstring."""
    print("diagnose: jax", jax.__version__, "XLA_FLAGS", os.environ.get("XLA_FLAGS", ""), flush=True)
    batch, seq, heads, head_dim = 2, 100, 12, 64
    keys = jax.random.split(jax.random.key(1), 4)
    q, k, v, do = (jax.random.normal(key, (batch, seq, heads, head_dim), jnp.float32) for key in keys)
    q16, k16, v16 = (x.astype(jnp.bfloat16) for x in (q, k, v))
    row_hash = jnp.zeros((batch, heads, seq), jnp.uint32)
    hm = jnp.ones((heads,), jnp.float32)
    plan = flash._Plan(TileMath(head_dim=head_dim, has_bias=True), gpu_kernel="mosaic")
    masks = {"ones": np.ones((batch, seq), np.int32), "right-padded": np.ones((batch, seq), np.int32)}
    masks["right-padded"][1, seq // 2 :] = 0

    def bias_of(mask):
        return (1.0 - jnp.asarray(mask).astype(jnp.float32)) * jnp.finfo(jnp.float32).min

    def wrapper(q, k, v, bias):
        return flash._flash(plan, q, k, v, bias, row_hash, hm)

    def kernel(q, k, v, bias):
        return flash._mosaic_forward(plan, q, k, v, bias, row_hash, hm)[0]

    def then_cond(q, k, v, mask):
        return lax.cond(jnp.any(mask == 0), lambda o: o * 1, lambda o: o, wrapper(q, k, v, bias_of(mask)))

    def whole(q, k, v, mask):
        return flash_attention(q, k, v, attention_mask=mask, gpu_kernel="mosaic")

    def grads(q, k, v, bias):
        return jax.grad(lambda q, k, v: jnp.sum(wrapper(q, k, v, bias).astype(jnp.float32) * do), (0, 1, 2))(q, k, v)

    for mask_name, mask in masks.items():
        ref = xla_attention(q, k, v, attention_mask=jnp.asarray(mask))[0]
        host_bias = np.asarray(bias_of(mask))
        cases = {  # name: (function, its traced arguments after q, k, v)
            "kernel, bias argument": (kernel, (host_bias,)),
            "kernel, bias from traced mask": (lambda q, k, v, m: kernel(q, k, v, bias_of(m)), (mask,)),
            "kernel, constant bias": (functools.partial(kernel, bias=jnp.asarray(host_bias)), ()),
            "custom_vjp wrapper, bias argument": (wrapper, (host_bias,)),
            "wrapper then lax.cond on a traced predicate": (then_cond, (mask,)),
            "flash_attention, traced mask": (whole, (mask,)),
        }
        for name, (fn, extra) in cases.items():
            try:
                _report(f"diagnose {mask_name} mask, {name}", jax.jit(fn)(q16, k16, v16, *extra), ref)
            except Exception as e:  # noqa: BLE001 - one line per failing case
                print(f"diagnose {mask_name} mask, {name}: failed {type(e).__name__}: {str(e)[:200]} FAIL", flush=True)
        ref_grads = jax.grad(lambda q, k, v, m: jnp.sum(xla_attention(q, k, v, attention_mask=m)[0] * do), (0, 1, 2))(
            q, k, v, jnp.asarray(mask)
        )
        try:
            ours = jax.jit(grads)(q16, k16, v16, host_bias)
            for g_name, g, r in zip(("dq", "dk", "dv"), ours, ref_grads, strict=True):
                _report(f"diagnose {mask_name} mask, wrapper {g_name}, bias argument", g, r)
        except Exception as e:  # noqa: BLE001 - one line per failing case
            print(
                f"diagnose {mask_name} mask, wrapper grads: failed {type(e).__name__}: {str(e)[:200]} FAIL", flush=True
            )


if __name__ == "__main__":
    if "--diagnose" in sys.argv[1:]:
        diagnose()
    else:
        main()
