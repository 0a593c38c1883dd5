"""The Hopper flash-attention kernels (`gpt_flax.kernels.flash_mgpu`, Mosaic GPU) on the CPU.

Their arithmetic, index math and barrier protocol run in Mosaic GPU's interpreter (which simulates
the warpgroups, shared memory, TMA copies and mbarriers) against `xla_attention`; their lowering
for a real GPU (Mosaic GPU's `mosaic_gpu_v2` custom call, the sm_90a code built when XLA compiles
it there) is exported from here. The interpreter's kernels are called eagerly, not under `jax.jit`:
under jit, XLA:CPU may run two of its simulated kernels at once, which the interpreter's one
simulated GPU does not support.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax._src.pallas.mosaic_gpu.interpret.params import InterpretGPUParams
from jax.experimental.mosaic.gpu import core as mosaic_core

from gpt_flax.attention import xla_attention
from gpt_flax.kernels import flash, flash_attention, flash_mgpu
from gpt_flax.kernels.common import TileMath
from gpt_flax.kernels.flash import _resolve_gpu_kernel
from gpt_flax.kernels.flash_mgpu import MosaicBlockSizes

LOW_TOL = 2e-2  # max |error| relative to max |reference|, as tests/test_kernels.py holds bfloat16
MOSAIC_CALL = "mosaic_gpu_v2"


def relative_error(actual, expected):
    actual, expected = np.asarray(actual, np.float32), np.asarray(expected, np.float32)
    assert np.all(np.isfinite(actual))
    return np.max(np.abs(actual - expected)) / max(np.max(np.abs(expected)), 1e-6)


CASES = [
    # dtype, B, T, H, K, blocks, padding, dropout, head_mask
    (jnp.bfloat16, 2, 100, 2, 64, MosaicBlockSizes(), "mixed", 0.1, True),
    (jnp.float16, 1, 130, 1, 128, MosaicBlockSizes(block_k=64, pingpong=False, wgs_bwd=1), "right", 0.0, False),
    (jnp.bfloat16, 1, 300, 1, 64, MosaicBlockSizes(steps=3, steps_bwd=3), None, 0.2, False),
    # Left padding over a whole key block, and backward tiles reaching keys the forward's did not.
    (jnp.bfloat16, 1, 128, 1, 64, MosaicBlockSizes(block_k=64), "left64", 0.1, False),
]


@pytest.mark.parametrize("dtype, batch, seq, heads_, head_dim, blocks, padding, rate, use_head_mask", CASES)
def test_mosaic_kernels_match_reference(
    monkeypatch, capfd, dtype, batch, seq, heads_, head_dim, blocks, padding, rate, use_head_mask
):
    # The interpreter's happens-before race detector watches every shared-memory and TMA access:
    # a slot refilled before its consumers are done with it, or read before it lands, is reported.
    monkeypatch.setattr(flash_mgpu, "_interpret_params", lambda interpret: InterpretGPUParams(detect_races=True))
    rs = np.random.RandomState(seq + head_dim)
    q, k, v = (jnp.asarray(rs.normal(size=(batch, seq, heads_, head_dim)), dtype) for _ in range(3))
    mask = None
    if padding is not None:
        mask = np.ones((batch, seq), np.float32)
        for b in range(batch):
            n_pad = rs.randint(1, seq // 3)
            if padding == "left64":
                mask[b, :64] = 0
            elif padding == "mixed" and b % 2 == 0:  # left padding: queries that see no unpadded key
                mask[b, :n_pad] = 0
            else:
                mask[b, seq - n_pad :] = 0
        mask = jnp.asarray(mask)
    cotangent = jnp.asarray(rs.normal(size=q.shape), jnp.float32)
    hm = jnp.asarray(rs.uniform(0.2, 1.2, heads_), jnp.float32).at[-1].set(0.0) if use_head_mask else None
    kw = {"attention_mask": mask, "dropout_rate": rate, "dropout_seed": jnp.uint32(seq) if rate else None}

    def kernel(q, k, v, hm):
        out = flash_attention(q, k, v, head_mask=hm, cpu="interpret_mosaic", mosaic_blocks=blocks, **kw)
        return jnp.sum(out.astype(jnp.float32) * cotangent), out

    def reference(q, k, v, hm):
        out, _ = xla_attention(*(x.astype(jnp.float32) for x in (q, k, v)), head_mask=hm, **kw)
        return jnp.sum(out * cotangent), out

    argnums = (0, 1, 2, 3) if use_head_mask else (0, 1, 2)
    (_, out), grads = jax.value_and_grad(kernel, argnums=argnums, has_aux=True)(q, k, v, hm)
    with jax.default_matmul_precision("highest"):
        (_, ref_out), ref_grads = jax.jit(jax.value_and_grad(reference, argnums=argnums, has_aux=True))(q, k, v, hm)
    assert out.dtype == dtype and all(g.dtype == dtype for g in grads[:3])
    for name, a, b in zip(("out", "dq", "dk", "dv", "d head_mask"), (out, *grads), (ref_out, *ref_grads)):
        err = relative_error(a, b)
        assert err <= LOW_TOL, f"{name}: relative error {err:.3g} > {LOW_TOL}"
    # The detector prints each race it finds (its state is reset for every kernel launched).
    assert "RACE DETECTED" not in capfd.readouterr().out


def kernel_calls(exported) -> list[str]:
    return re.findall(r"custom_call @([\w$.]+)", exported.mlir_module())


@pytest.mark.parametrize("head_dim", [64, 128])
def test_mosaic_kernels_lower_for_cuda(head_dim):
    """Forward and gradient with every option on hold the three Mosaic GPU kernels and no Triton
    kernel or interpreter loop (the one while loop is the left-padding rows' dropout chunks)."""
    q = jnp.ones((2, 100, 3, head_dim), jnp.bfloat16)

    def attend(q, k, v):
        return flash_attention(
            q,
            k,
            v,
            attention_mask=jnp.ones((2, 100)),
            head_mask=jnp.ones(3),
            dropout_rate=0.1,
            dropout_seed=jnp.uint32(5),
            gpu_kernel="mosaic",
        )

    grad = jax.grad(lambda q, k, v: attend(q, k, v).astype(jnp.float32).sum(), argnums=(0, 1, 2))
    for fn, n_kernels in ((attend, 1), (grad, 3)):
        exported = jax.export.export(jax.jit(fn), platforms=["cuda"])(q, q, q)
        assert kernel_calls(exported) == [MOSAIC_CALL] * n_kernels
        assert exported.mlir_module().count("stablehlo.while") == 1


def test_auto_lowers_mosaic_on_hopper_for_every_option(monkeypatch):
    """On a Hopper host "auto" lowers the Mosaic GPU kernels for a plain call and for one given a mask,
    head_mask and dropout seed as arguments (Triton took those for a while, until the traced mask's NaN
    was fixed: see test_traced_mask_head_mask_and_seed_under_jit)."""
    monkeypatch.setattr(flash, "_local_gpus_are_hopper", lambda: True)
    q = jnp.ones((2, 64, 3, 64), jnp.bfloat16)
    plain = jax.export.export(jax.jit(lambda q: flash_attention(q, q, q)), platforms=["cuda"])(q)

    def every_option(q, mask, head_mask, seed):
        kw = {"attention_mask": mask, "head_mask": head_mask, "dropout_rate": 0.1, "dropout_seed": seed}
        return flash_attention(q, q, q, **kw)

    args = (q, jnp.ones((2, 64), jnp.int32), jnp.ones(3), jnp.uint32(1))
    assert kernel_calls(plain) == [MOSAIC_CALL]
    assert kernel_calls(jax.export.export(jax.jit(every_option), platforms=["cuda"])(*args)) == [MOSAIC_CALL]


def test_gpu_kernel_choice(monkeypatch):
    # "auto" picks the Hopper kernels when this process's CUDA devices are all sm_90 and the inputs suit them.
    for hopper in (False, True):
        monkeypatch.setattr(flash, "_local_gpus_are_hopper", lambda hopper=hopper: hopper)
        assert _resolve_gpu_kernel("auto", jnp.bfloat16, 64) == ("mosaic" if hopper else "triton")
        assert _resolve_gpu_kernel("auto", jnp.float32, 64) == "triton"
        assert _resolve_gpu_kernel("auto", jnp.bfloat16, 80) == "triton"
        assert _resolve_gpu_kernel("triton", jnp.bfloat16, 64) == "triton"
    assert _resolve_gpu_kernel("mosaic", jnp.float16, 128) == "mosaic"
    q = jnp.ones((1, 8, 1, 64), jnp.float32)
    with pytest.raises(ValueError, match="float32 and head_dim=64"):
        flash_attention(q, q, q, gpu_kernel="mosaic")
    q = jnp.ones((1, 8, 1, 80), jnp.bfloat16)
    with pytest.raises(ValueError, match="bfloat16 and head_dim=80"):
        flash_attention(q, q, q, cpu="interpret_mosaic")
    with pytest.raises(ValueError, match="gpu_kernel='cutlass'"):
        flash_attention(q, q, q, gpu_kernel="cutlass")
    with pytest.raises(ValueError, match="block_q must be a power of two >= 64; got 32"):
        MosaicBlockSizes(block_q=32)
    with pytest.raises(ValueError, match="block_k must be a power of two >= 64; got 192"):
        MosaicBlockSizes(block_k=192)  # T is padded to the largest tile, which the others must divide
    with pytest.raises(ValueError, match="cannot take gpu_kernel='triton'"):
        flash_attention(q, q, q, cpu="interpret_mosaic", gpu_kernel="triton")
    with pytest.raises(ValueError, match="wgs_bwd must be 1 or 2"):
        MosaicBlockSizes(wgs_bwd=3)


@pytest.mark.parametrize(
    "blocks, math_",
    [
        (MosaicBlockSizes(), TileMath(head_dim=128)),
        (MosaicBlockSizes(steps=3, steps_bwd=3, wgs_bwd=1), TileMath(head_dim=128, dropout_rate=0.1, has_bias=True)),
    ],
)
def test_shared_memory_count_is_mosaics(monkeypatch, blocks, math_):
    """Our count of each kernel's shared memory agrees byte for byte with Mosaic GPU's own."""
    q = jnp.ones((1, 512, 1, 128), jnp.bfloat16)  # enough key and query blocks for three stages
    zeros, hashes = jnp.zeros((1, 1, 512)), jnp.zeros((1, 1, 512), jnp.uint32)
    kernels = {
        "forward": lambda q: flash_mgpu.forward(math_, blocks, q, q, q, zeros[0], hashes),
        "dQ": lambda q: flash_mgpu._dq(math_, blocks, q, q, q, zeros[0], hashes, zeros, zeros, q, False),
        "dK/dV": lambda q: flash_mgpu._dkv(math_, blocks, q, q, q, zeros[0], hashes, zeros, zeros, q, False),
    }
    for name, fn in kernels.items():
        monkeypatch.setattr(flash_mgpu, "SMEM_LIMIT", 0)
        with pytest.raises(ValueError, match=f"bytes of shared memory in the Mosaic GPU {name} kernel") as ours:
            jax.eval_shape(lambda q, fn=fn: fn(q), q)  # a new function each time: no trace cached
        monkeypatch.setattr(flash_mgpu, "SMEM_LIMIT", 1 << 30)
        with mosaic_core.artificial_shared_memory_limit(1), pytest.raises(ValueError, match="shared memory") as theirs:
            jax.export.export(jax.jit(lambda q, fn=fn: fn(q)), platforms=["cuda"])(q)
        count = int(re.search(r"need (\d+) bytes", str(ours.value)).group(1))
        assert count == int(re.search(r"smem_bytes=(\d+) >", str(theirs.value)).group(1)), name


def test_shared_memory_is_checked_before_lowering():
    """Block sizes too large for a Hopper CTA's 227 KiB fail when traced, naming the kernel and the
    blocks, not later in Mosaic's lowering with a byte count alone."""
    q = jnp.ones((1, 512, 2, 128), jnp.bfloat16)
    too_big = MosaicBlockSizes(steps=3)  # three 128-key stages of k and v at head_dim 128: 232520 bytes
    with pytest.raises(ValueError, match=r"steps=3.* need 232520 bytes of shared memory in the Mosaic GPU forward"):
        attend = jax.jit(lambda q: flash_attention(q, q, q, gpu_kernel="mosaic", mosaic_blocks=too_big))
        jax.export.export(attend, platforms=["cuda"])(q)
    too_big = MosaicBlockSizes(block_q_dkv=128, steps_bwd=3, wgs_bwd=1)
    with pytest.raises(ValueError, match="need .* bytes of shared memory in the Mosaic GPU dK/dV kernel"):
        loss = lambda q: flash_attention(q, q, q, cpu="interpret_mosaic", mosaic_blocks=too_big).sum()
        jax.eval_shape(jax.grad(loss), q)


def test_traced_mask_head_mask_and_seed_under_jit():
    """The inputs as a jitted model passes them, arguments rather than constants. On an H100 a traced
    attention_mask gave NaN: XLA folded the bias's (x * finfo.min) * log2(e) into x * -inf, 0 * -inf for
    every unpadded key. The same XLA passes run here around the interpreted kernel (forward only: one
    simulated kernel at a time)."""
    rs = np.random.RandomState(3)
    q, k, v = (jnp.asarray(rs.normal(size=(1, 100, 2, 64)), jnp.bfloat16) for _ in range(3))
    mask = np.ones((1, 100), np.int32)
    mask[0, 80:] = 0
    head_mask = np.array([0.5, 1.5], np.float32)

    def kernel(q, k, v, mask, head_mask, seed):
        kw = {"attention_mask": mask, "head_mask": head_mask, "dropout_seed": seed}
        return flash_attention(q, k, v, dropout_rate=0.1, cpu="interpret_mosaic", **kw)

    out = jax.jit(kernel)(q, k, v, mask, head_mask, np.uint32(11))
    f32 = (x.astype(jnp.float32) for x in (q, k, v))
    ref, _ = xla_attention(
        *f32, attention_mask=jnp.asarray(mask), head_mask=head_mask, dropout_rate=0.1, dropout_seed=np.uint32(11)
    )
    assert relative_error(out, ref) <= LOW_TOL
