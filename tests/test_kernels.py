"""The Pallas flash-attention kernels against `xla_attention`, in Pallas' interpreter on the CPU.

Both kernel families run here: the Triton ones (cpu="interpret") and the Mosaic ones
(cpu="interpret_tpu"), on small shapes with T not a multiple of the block, mixed left/right
padding, dropout and head_mask; then the full model with "pallas" against "xla"; then the
lowering for real hardware (`jax.export` for CUDA and TPU from this CPU).

    pytest tests/test_kernels.py
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gpt_flax import heads
from gpt_flax.attention import dropout_keep_mask, dropout_row_hash, xla_attention
from gpt_flax.config import OpenAIGPTConfig
from gpt_flax.kernels import GPUBlockSizes, TPUBlockSizes, flash, flash_attention
from gpt_flax.kernels.common import TileMath, tile_keep

F32_TOL = 1e-5  # float32: elementwise, absolute and relative
LOW_TOL = 2e-2  # bfloat16 / float16: max |error| relative to max |reference|

# Unequal, small blocks: T = 33 and 70 are not multiples of them, and the forward and the two
# backward kernels tile the diagonal differently.
GPU_BLOCKS = GPUBlockSizes(block_q=32, block_k=16, block_q_dkv=16, block_k_dkv=32, block_q_dq=32, block_k_dq=16)
# The fused backward (atomic dQ), its key blocks wider than its query blocks and the forward's.
GPU_FUSED = GPUBlockSizes(block_q=32, block_k=16, fused_bwd=True, block_q_bwd=16, block_k_bwd=32)
TPU_BLOCKS = TPUBlockSizes(block_q=128, block_k=128, block_q_dkv=128, block_k_dkv=128, block_q_dq=256, block_k_dq=128)

KERNEL_CALL = {"cuda": "__gpu$xla.gpu.triton", "tpu": "tpu_custom_call"}
# Kernels in a gradient: the forward and one (fused) or two (dK/dV, dQ) backward kernels. The TPU
# backward is always split.
GRAD_KERNELS = {"cuda": 2 if GPUBlockSizes().fused_bwd else 3, "tpu": 3}
EXPORT_CHECKS = [jax.export.DisabledSafetyCheck.custom_call(KERNEL_CALL["cuda"])]


def make_case(seed, dtype, batch, seq, heads_, head_dim, padding):
    """q, k, v, attention_mask ([B, T] or None) and which batch rows hold an unpadded key.

    padding: None, "left", "right", "mixed" (even rows left, odd rows right), or "empty" (mixed,
    and the last row all padding)."""
    rs = np.random.RandomState(seed)
    q, k, v = (jnp.asarray(rs.normal(size=(batch, seq, heads_, head_dim)), dtype) for _ in range(3))
    mask = None
    if padding is not None:
        mask = np.ones((batch, seq), np.float32)
        for b in range(batch):
            n_pad = rs.randint(1, seq // 2 + 1)
            left = padding == "left" or (padding in ("mixed", "empty") and b % 2 == 0)
            if left:
                mask[b, :n_pad] = 0
            else:
                mask[b, seq - n_pad :] = 0
        if padding == "empty":
            mask[-1] = 0
    # A left-padded query sees only padded keys: transformers then averages over the row's unpadded
    # (future) keys, and the kernels match it. In a row of padding only, every score is rounded to
    # finfo.min and the output no longer depends on q and k; transformers' autodiff still carries
    # their gradient through that softmax, ours is zero, so the gradients are compared elsewhere.
    seeing = np.ones(batch, bool) if mask is None else mask.any(axis=1)
    return q, k, v, (None if mask is None else jnp.asarray(mask)), jnp.asarray(seeing)


def losses(impl_kwargs, cotangent):
    """sum(out * cotangent) as a function of (q, k, v, head_mask), for either side."""

    def kernel(q, k, v, hm):
        out = flash_attention(q, k, v, head_mask=hm, **impl_kwargs["kernel"])
        return jnp.sum(out.astype(jnp.float32) * cotangent), out

    def reference(q, k, v, hm):
        q, k, v = (x.astype(jnp.float32) for x in (q, k, v))
        out, _ = xla_attention(q, k, v, head_mask=hm, **impl_kwargs["reference"])
        return jnp.sum(out * cotangent), out

    grad = lambda f: jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2, 3), has_aux=True))
    return grad(kernel), grad(reference)


def assert_close(actual, expected, dtype, what, rows=None):
    actual, expected = np.asarray(actual, np.float32), np.asarray(expected, np.float32)
    assert np.all(np.isfinite(actual)), f"{what}: not finite"
    if rows is not None:
        actual, expected = actual[rows], expected[rows]
    if dtype == jnp.float32:
        np.testing.assert_allclose(actual, expected, atol=F32_TOL, rtol=F32_TOL, err_msg=what)
    else:
        err = np.max(np.abs(actual - expected)) / max(np.max(np.abs(expected)), 1e-6)
        assert err <= LOW_TOL, f"{what}: relative error {err:.3g} > {LOW_TOL}"


CASES = [
    # cpu mode, dtype, B, T, H, K, padding, dropout, head_mask
    ("interpret", jnp.float32, 2, 7, 2, 16, None, 0.0, False),
    ("interpret", jnp.float32, 2, 33, 2, 64, "mixed", 0.1, True),
    ("interpret", jnp.float32, 1, 70, 3, 128, "right", 0.2, False),
    ("interpret", jnp.float32, 2, 45, 2, 48, "left", 0.0, True),
    ("interpret", jnp.float32, 3, 70, 2, 64, "empty", 0.1, True),
    ("interpret", jnp.bfloat16, 2, 70, 2, 64, "mixed", 0.1, True),
    ("interpret", jnp.float16, 2, 33, 2, 32, "right", 0.1, False),
    ("interpret_tpu", jnp.float32, 2, 33, 2, 64, "mixed", 0.1, True),
    ("interpret_tpu", jnp.float32, 1, 300, 2, 128, "mixed", 0.1, True),
    ("interpret_tpu", jnp.bfloat16, 2, 70, 2, 64, None, 0.1, False),
    ("interpret_tpu", jnp.float32, 3, 40, 2, 64, "empty", 0.0, False),
]


FUSED_CASES = [
    # dtype, B, T, H, K, padding, dropout, head_mask
    (jnp.float32, 2, 33, 2, 64, "mixed", 0.1, True),
    (jnp.float32, 1, 70, 3, 128, "left", 0.2, False),
    (jnp.bfloat16, 2, 70, 2, 64, "right", 0.1, True),
]


@pytest.mark.parametrize("cpu, dtype, batch, seq, heads_, head_dim, padding, rate, use_head_mask", CASES)
def test_kernel_matches_reference(cpu, dtype, batch, seq, heads_, head_dim, padding, rate, use_head_mask):
    check_case(cpu, GPU_BLOCKS, dtype, batch, seq, heads_, head_dim, padding, rate, use_head_mask)


@pytest.mark.parametrize("dtype, batch, seq, heads_, head_dim, padding, rate, use_head_mask", FUSED_CASES)
def test_fused_backward_matches_reference(dtype, batch, seq, heads_, head_dim, padding, rate, use_head_mask):
    check_case("interpret", GPU_FUSED, dtype, batch, seq, heads_, head_dim, padding, rate, use_head_mask)


def check_case(cpu, gpu_blocks, dtype, batch, seq, heads_, head_dim, padding, rate, use_head_mask):
    case_seed = seq * 7 + head_dim
    q, k, v, mask, seeing = make_case(case_seed, dtype, batch, seq, heads_, head_dim, padding)
    rs = np.random.RandomState(case_seed + 1)
    cotangent = jnp.asarray(rs.normal(size=q.shape), jnp.float32) * seeing[:, None, None, None]
    hm = jnp.asarray(rs.uniform(0.2, 1.2, heads_), jnp.float32).at[-1].set(0.0) if use_head_mask else None
    seed = jnp.uint32(1234 + seq) if rate else None
    common = {"attention_mask": mask, "dropout_rate": rate, "dropout_seed": seed}
    kernel, reference = losses(
        {"kernel": dict(common, cpu=cpu, gpu_blocks=gpu_blocks, tpu_blocks=TPU_BLOCKS), "reference": common},
        cotangent,
    )
    args = (q, k, v, hm)
    (_, out), grads = kernel(*args)
    (_, ref_out), ref_grads = reference(*args)
    assert out.dtype == dtype
    assert_close(out, ref_out, dtype, "out")
    for name, g, ref_g in zip(("dq", "dk", "dv"), grads, ref_grads):
        assert g.dtype == dtype
        assert_close(g, ref_g, dtype, name)
    if use_head_mask:
        # d head_mask[h] sums B*T*S products, in a different order on each side: the float32
        # reference is itself ~1e-5 off a float64 one on a head whose sum cancels to ~0.4 (the
        # fused T=33 case), so here float32 is held to F32_TOL relative to the largest |d head_mask|.
        err = np.max(np.abs(np.asarray(grads[3]) - np.asarray(ref_grads[3]))) / np.max(np.abs(ref_grads[3]))
        assert err <= (F32_TOL if dtype == jnp.float32 else LOW_TOL), f"d head_mask: relative error {err:.3g}"


def test_dropout_changes_the_output_and_follows_the_seed():
    """The comparison above would pass for a kernel that ignored dropout only if the reference did too."""
    q, k, v, _, _ = make_case(0, jnp.float32, 1, 20, 2, 16, None)
    run = lambda seed: flash_attention(q, k, v, dropout_rate=0.5, dropout_seed=seed, gpu_blocks=GPU_BLOCKS)
    plain = flash_attention(q, k, v, gpu_blocks=GPU_BLOCKS)
    a, b = run(jnp.uint32(1)), run(jnp.uint32(2))
    assert not np.allclose(a, plain) and not np.allclose(a, b)
    np.testing.assert_array_equal(a, run(jnp.uint32(1)))


def test_tile_keep_is_the_reference_hash():
    """The kernels' tile mask equals xla_attention's [B, H, T, S] mask, tile by tile."""
    batch, heads_, seq, rate, bq, bk = 2, 3, 40, 0.3, 8, 16
    seed = jnp.uint32(99)
    full = np.asarray(dropout_keep_mask(seed, batch, heads_, seq, seq, rate))
    m = TileMath(head_dim=16, dropout_rate=rate)
    for b, h, q0, k0 in [(0, 0, 0, 0), (1, 2, 24, 16), (1, 1, 32, 0)]:
        rows = dropout_row_hash(seed, jnp.uint32(b * heads_ + h), jnp.arange(q0, q0 + bq, dtype=jnp.uint32))
        tile = tile_keep(m, rows[:, None], bq=bq, bk=bk, k_start=k0)
        np.testing.assert_array_equal(np.asarray(tile), full[b, h, q0 : q0 + bq, k0 : k0 + bk][:, : min(bk, seq - k0)])
    assert 0.2 < 1 - full.mean() < 0.4


# -- the full model ---------------------------------------------------------------------------
TINY = {"vocab_size": 37, "n_positions": 11, "n_embd": 32, "n_layer": 2, "n_head": 2, "initializer_range": 0.2}
FLAGS = {"output_attentions": False, "output_hidden_states": False, "remat": False}


def lm_loss(config, dtype=jnp.float32):
    def f(params, inputs, labels, rng):
        out = heads.forward_lm(params, config, inputs, labels, rng=rng, flags=dict(FLAGS, dtype=dtype))
        return out.loss, out.logits

    return f


def test_model_pallas_equals_xla():
    """Logits, loss and every parameter gradient, with right and left padding and training-mode
    dropout (T=7). With left padding the last pad position predicts the first token: its logits
    count in the loss, as in transformers."""
    config = OpenAIGPTConfig(**TINY)
    params = heads.init_params(config, "lm", jax.random.key(0))
    rs = np.random.RandomState(0)
    ids = jnp.asarray(rs.randint(0, 37, (3, 7)), jnp.int32)
    mask = jnp.asarray([[1] * 7, [1] * 5 + [0] * 2, [0] * 3 + [1] * 4], jnp.float32)
    labels = jnp.where(mask > 0, ids, -100)
    inputs = {"input_ids": ids, "attention_mask": mask}
    results = {}
    for impl in ("xla", "pallas"):
        f = jax.value_and_grad(lm_loss(config.replace(attention_impl=impl)), has_aux=True)
        results[impl] = jax.jit(f)(params, inputs, labels, jax.random.key(1))
    (loss_x, logits_x), grads_x = results["xla"]
    (loss_p, logits_p), grads_p = results["pallas"]
    np.testing.assert_allclose(logits_p, logits_x, atol=F32_TOL, rtol=F32_TOL)
    np.testing.assert_allclose(loss_p, loss_x, atol=F32_TOL, rtol=F32_TOL)
    flat_x, flat_p = jax.tree_util.tree_leaves_with_path(grads_x), jax.tree_util.tree_leaves(grads_p)
    assert len(flat_x) == len(flat_p)
    for (path, gx), gp in zip(flat_x, flat_p):
        np.testing.assert_allclose(gp, gx, atol=F32_TOL, rtol=1e-4, err_msg=jax.tree_util.keystr(path))


# -- lowering for real hardware from this CPU ---------------------------------------------------
def kernel_calls(exported) -> list[str]:
    return re.findall(r"custom_call @([\w$.]+)", exported.mlir_module())


@pytest.mark.parametrize("platform", ["cuda", "tpu"])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_model_lowers_with_the_kernel(monkeypatch, platform, dtype):
    """Forward and gradient of the jitted model hold the real kernel. ("pallas": in a process with
    no GPU or TPU, "auto" is plain XLA; with one it is this, chosen when lowered.)"""
    # The Triton kernels: on a Hopper host "auto" would pick the Mosaic GPU ones (test_kernels_mosaic.py).
    monkeypatch.setattr(flash, "_local_gpus_are_hopper", lambda: False)
    config = OpenAIGPTConfig(**TINY, attention_impl="pallas")
    params = heads.init_params(config, "lm", jax.random.key(0))
    ids = jnp.zeros((2, 7), jnp.int32)
    inputs = {"input_ids": ids, "attention_mask": jnp.ones((2, 7), jnp.float32)}
    loss = lm_loss(config, dtype)
    forward = lambda p, i, l, r: loss(p, i, l, r)[1]
    gradient = jax.grad(lambda p, i, l, r: loss(p, i, l, r)[0])
    for fn, n_kernels in ((forward, 1), (gradient, GRAD_KERNELS[platform])):
        exported = jax.export.export(jax.jit(fn), platforms=[platform], disabled_checks=EXPORT_CHECKS)(
            params, inputs, ids, jax.random.key(1)
        )
        calls = kernel_calls(exported)
        assert calls.count(KERNEL_CALL[platform]) == n_kernels, calls


@pytest.mark.parametrize("platform, gpu_blocks", [("cuda", None), ("cuda", "split"), ("cuda", "fused"), ("tpu", None)])
def test_kernel_lowers_without_fallback(platform, gpu_blocks):
    """Every option on (mask, head_mask, dropout, odd T and K): only kernels, no interpreter loop."""
    q = jnp.ones((2, 100, 3, 80), jnp.bfloat16)
    blocks = None if gpu_blocks is None else GPUBlockSizes(fused_bwd=gpu_blocks == "fused")
    n_kernels = GRAD_KERNELS[platform] if blocks is None else (2 if blocks.fused_bwd else 3)

    def loss(q, k, v):
        out = flash_attention(
            q,
            k,
            v,
            attention_mask=jnp.ones((2, 100)),
            head_mask=jnp.ones(3),
            dropout_rate=0.1,
            dropout_seed=jnp.uint32(5),
            gpu_blocks=blocks,
        )
        return out.astype(jnp.float32).sum()

    exported = jax.export.export(
        jax.jit(jax.grad(loss, argnums=(0, 1, 2))), platforms=[platform], disabled_checks=EXPORT_CHECKS
    )(q, q, q)
    assert kernel_calls(exported) == [KERNEL_CALL[platform]] * n_kernels
    # One loop only: the key chunks of the left-padding rows' dropout (flash._unseeing_rows), run
    # when a batch has such rows. An interpreted kernel would add its grid loops.
    assert exported.mlir_module().count("stablehlo.while") == 1


def test_block_sizes_and_inputs_that_would_compute_wrong_are_refused():
    """Tiles that do not divide the largest (T is padded to it) would skip keys and queries: refused,
    as are head_mask shapes the kernels would read past and dropout rates outside [0, 1)."""
    with pytest.raises(ValueError, match=r"TPUBlockSizes.block_q must be a power of two >= 128; got 384"):
        TPUBlockSizes(block_q=384)
    with pytest.raises(ValueError, match=r"GPUBlockSizes.block_k must be a power of two >= 16; got 48"):
        GPUBlockSizes(block_k=48)
    with pytest.raises(ValueError, match=r"GPUBlockSizes.block_q must be a power of two >= 16; got 8"):
        GPUBlockSizes(block_q=8)
    assert TPUBlockSizes(block_q=512).fit(300).block_q == 512  # 300 rounds up to 512: still a power of two
    q = jnp.ones((1, 8, 2, 16), jnp.float32)
    with pytest.raises(ValueError, match=r"head_mask must be \[H\] = \(2,\); got shape \(1,\)"):
        flash_attention(q, q, q, head_mask=jnp.ones(1))
    with pytest.raises(ValueError, match=r"dropout_rate must be in \[0, 1\); got 1.0"):
        flash_attention(q, q, q, dropout_rate=1.0, dropout_seed=jnp.uint32(0))
    with pytest.raises(ValueError, match=r"shape \[B, T, H, K\]"):
        flash_attention(q[0], q[0], q[0])
