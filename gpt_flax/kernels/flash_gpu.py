"""Flash attention for GPUs in Pallas' Triton dialect: forward, dK/dV and dQ kernels, fused backward.

Lowered by `pl.pallas_call` to a Triton custom call (`__gpu$xla.gpu.triton`) when the caller is
compiled for CUDA; the same kernels run in Pallas' interpreter on the CPU (`interpret=True`),
which is how the tests check them. The grid walks (query or key block, batch, head); each program
loops over the other sequence axis with an online softmax (FlashAttention-2, Dao 2023, algorithm 1
for the forward; algorithm 2 for the backward, either split into a dK/dV and a dQ kernel that
each recompute the scores, seven matmuls per tile pair, or fused into one kernel per key block
that adds its dQ contributions to a float32 buffer with atomic adds, five matmuls, as the paper's
algorithm 2 does), so no [T, S] tile is ever written to memory.

Layout: q, k, v, out [B, T, H, Kp] (the model's layout, no transpose); per-row vectors (lse,
delta, dropout row hashes) [B, H, T]; the padding bias [B, S]. T is a multiple of every block size
and Kp a power of two >= 16 (Triton's `tl.dot` and `tl.arange` need both); `flash.py` pads.
"""

from __future__ import annotations

import dataclasses
import functools

import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from gpt_flax.kernels.common import (
    TN_DIMS,
    TileMath,
    causal_kv_blocks,
    causal_q_blocks,
    check_tiles,
    kernel_output,
    tile_keep,
    tile_scores,
)


@dataclasses.dataclass(frozen=True)
class GPUBlockSizes:
    """Tile sizes (powers of two >= 16) and Triton launch parameters, per kernel."""

    # Defaults: the best of benchmarks/attention.py --sweep 2048 on an H200 (bf16, K=64); see
    # benchmarks/RESULTS.md.
    block_q: int = 64
    block_k: int = 64
    block_q_dkv: int = 64
    block_k_dkv: int = 64
    block_q_dq: int = 64
    block_k_dq: int = 64
    num_warps: int = 4
    num_stages: int = 3
    num_warps_bwd: int = 4
    num_stages_bwd: int = 2
    # The fused backward (`fused_bwd=True`): one kernel per key block, dQ by float32 atomic adds,
    # tiles block_q_bwd x block_k_bwd, launched with num_warps_bwd / num_stages_bwd. Its dQ sums
    # in no fixed order, so its gradients can differ from run to run in the last bits. Off by
    # default: on an H200 it made forward+backward about 2x slower than the split backward
    # (Pallas lowers each atomic add as an acquire-release atomic per element; RESULTS.md).
    fused_bwd: bool = False
    block_q_bwd: int = 64
    block_k_bwd: int = 64

    def __post_init__(self):
        check_tiles(self, 16)
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name.startswith("num_warps") and (not isinstance(value, int) or value < 1 or value & (value - 1)):
                raise ValueError(f"GPUBlockSizes.{f.name} must be a power of two; got {value!r}")
            if f.name.startswith("num_stages") and (not isinstance(value, int) or value < 1):
                raise ValueError(f"GPUBlockSizes.{f.name} must be a positive integer; got {value!r}")

    def fit(self, seq_len: int) -> GPUBlockSizes:
        """Shrink blocks longer than the (power-of-two rounded) sequence, never below 16."""
        cap = max(16, pl.next_power_of_2(seq_len))
        return dataclasses.replace(
            self,
            **{f.name: min(getattr(self, f.name), cap) for f in dataclasses.fields(self) if f.name.startswith("block")},
        )

    @property
    def multiple(self) -> int:
        """T and S are padded to a multiple of this (every block size of the kernels in use divides it)."""
        bwd = ("q_bwd", "k_bwd") if self.fused_bwd else ("q_dkv", "k_dkv", "q_dq", "k_dq")
        return max(getattr(self, f"block_{name}") for name in ("q", "k", *bwd))


def default_block_sizes(head_dim: int) -> GPUBlockSizes:
    """Blocks for an H100/H200-class GPU. Only K <= 64 was tuned; wider heads get smaller key
    tiles to stay in registers and shared memory (checked for correctness at K=128 on an H200)."""
    if head_dim <= 64:
        return GPUBlockSizes()
    if head_dim <= 128:
        return GPUBlockSizes(block_q=128, block_k=32, num_warps=8, num_stages=2, block_q_dkv=32, block_k_dq=32)
    return GPUBlockSizes(
        block_q=64,
        block_k=32,
        block_q_dkv=32,
        block_k_dkv=32,
        block_q_dq=32,
        block_k_dq=32,
        num_warps=8,
        num_stages=2,
        num_warps_bwd=8,
    )


# -- forward ----------------------------------------------------------------------------------
def _fwd_kernel(q_ref, k_ref, v_ref, bias_ref, hash_ref, hm_ref, o_ref, lse_ref, *, m: TileMath, bq, bk):
    # q_ref [bq, Kp]; k_ref, v_ref [S, Kp]; bias_ref [S]; hash_ref [bq] uint32; hm_ref [1]
    # o_ref [bq, Kp]; lse_ref [bq] float32
    q_start = pl.program_id(0) * bq
    q = q_ref[...]
    row_hash = hash_ref[...][:, None] if m.has_dropout else None  # [bq, 1]
    kp = q.shape[-1]

    def body(j, carry, causal):
        acc, m_i, l_i = carry
        k_start = j * bk
        keys = pl.ds(pl.multiple_of(k_start, bk), bk)
        bias = bias_ref[keys][None, :] if m.has_bias else None
        s = tile_scores(m, q, k_ref[keys, :], q_start=q_start, k_start=k_start, causal=causal, bias=bias)
        m_new = jnp.maximum(m_i, jnp.max(s, axis=1))
        alpha = jnp.exp(m_i - m_new)
        p = jnp.exp(s - m_new[:, None])  # [bq, bk]
        l_new = alpha * l_i + jnp.sum(p, axis=1)  # softmax denominators count dropped entries too
        if m.has_dropout:
            p = jnp.where(tile_keep(m, row_hash, bq=bq, bk=bk, k_start=k_start), p, 0.0)
        v = v_ref[keys, :]
        acc = alpha[:, None] * acc + jnp.dot(
            p.astype(v.dtype), v, preferred_element_type=jnp.float32, precision=m.precision
        )
        return acc, m_new, l_new

    n_full, n_visible = causal_kv_blocks(q_start, bq, bk, k_ref.shape[0] // bk)
    carry = (jnp.zeros((bq, kp), jnp.float32), jnp.full((bq,), -jnp.inf, jnp.float32), jnp.zeros((bq,), jnp.float32))
    carry = lax.fori_loop(0, n_full, functools.partial(body, causal=False), carry)
    acc, m_i, l_i = lax.fori_loop(n_full, n_visible, functools.partial(body, causal=True), carry)

    scale = m.keep_scale / l_i
    out = acc * scale[:, None]
    if m.has_head_mask:
        out = out * hm_ref[...]
    o_ref[...] = out.astype(o_ref.dtype)
    lse_ref[...] = m_i + jnp.log(l_i)


def forward(m: TileMath, blocks: GPUBlockSizes, q, k, v, bias, row_hash, head_mask, *, interpret=False):
    """q, k, v [B, T, H, Kp] -> (out [B, T, H, Kp], lse [B, H, T] float32)."""
    batch, seq, heads, kp = q.shape
    bq, bk = blocks.block_q, blocks.block_k
    full_seq = pl.BlockSpec((None, seq, None, kp), lambda i, b, h: (b, 0, h, 0))
    q_tile = pl.BlockSpec((None, bq, None, kp), lambda i, b, h: (b, i, h, 0))
    row_tile = pl.BlockSpec((None, None, bq), lambda i, b, h: (b, h, i))
    return pl.pallas_call(
        functools.partial(_fwd_kernel, m=m, bq=bq, bk=bk),
        grid=(seq // bq, batch, heads),
        in_specs=[
            q_tile,
            full_seq,
            full_seq,
            pl.BlockSpec((None, seq), lambda i, b, h: (b, 0)),
            row_tile,
            pl.BlockSpec((1,), lambda i, b, h: (h,)),
        ],
        out_specs=[q_tile, row_tile],
        out_shape=[
            kernel_output(q.shape, q.dtype, q),
            kernel_output((batch, heads, seq), jnp.float32, q),
        ],
        compiler_params=plgpu.CompilerParams(num_warps=blocks.num_warps, num_stages=blocks.num_stages),
        interpret=interpret,
        name="gpt_flash_fwd",
    )(q, k, v, bias, row_hash, head_mask)


# -- backward ---------------------------------------------------------------------------------
def _tile_grads(m: TileMath, q, k, v, do, lse, delta, row_hash, hm, bias, *, q_start, k_start, causal):
    """Recompute one tile's probabilities and return (p_kept, ds, dp_raw_kept).

    p_kept = P * keep (before the 1/(1-rate) and head_mask factors), ds = dL/dS, and
    dp_raw_kept = (dO V^T) * keep, whose sum against P gives d head_mask.
    """
    bq, bk = q.shape[0], k.shape[0]
    s = tile_scores(m, q, k, q_start=q_start, k_start=k_start, causal=causal, bias=bias)
    # min(., 0): p <= 1 even where the backward's tiles reach keys the forward's did not and the
    # row saw only padded keys (lse ~ finfo.min); exact elsewhere, since s <= lse.
    p = jnp.exp(jnp.minimum(s - lse, 0.0))  # [bq, bk]
    dp_raw = lax.dot_general(do, v, (((1,), (1,)), ((), ())), preferred_element_type=jnp.float32, precision=m.precision)
    if m.has_dropout:
        keep = tile_keep(m, row_hash, bq=bq, bk=bk, k_start=k_start)
        p_kept = jnp.where(keep, p, 0.0)
        dp_raw = jnp.where(keep, dp_raw, 0.0)
    else:
        p_kept = p
    dp = dp_raw * (m.keep_scale * hm) if (m.has_dropout or m.has_head_mask) else dp_raw
    ds = p * (dp - delta)
    return p_kept, ds, dp_raw


def _dkdv_kernel(
    q_ref, k_ref, v_ref, bias_ref, do_ref, lse_ref, delta_ref, hash_ref, hm_ref, dk_ref, dv_ref, *, m: TileMath, bq, bk
):
    # q_ref, do_ref [T, Kp]; lse_ref, delta_ref, hash_ref [T]; k_ref, v_ref [bk, Kp]; bias_ref [bk]
    k_start = pl.program_id(0) * bk
    k, v = k_ref[...], v_ref[...]
    bias = bias_ref[...][None, :] if m.has_bias else None
    hm = hm_ref[...][None, :] if m.has_head_mask else 1.0  # [1, 1]
    kp = k.shape[-1]

    def body(i, carry, causal):
        dk, dv = carry
        q_start = i * bq
        rows = pl.ds(pl.multiple_of(q_start, bq), bq)
        q, do = q_ref[rows, :], do_ref[rows, :]
        row_hash = hash_ref[rows][:, None] if m.has_dropout else None
        p_kept, ds, _ = _tile_grads(
            m,
            q,
            k,
            v,
            do,
            lse_ref[rows][:, None],
            delta_ref[rows][:, None],
            row_hash,
            hm,
            bias,
            q_start=q_start,
            k_start=k_start,
            causal=causal,
        )
        dv = dv + lax.dot_general(
            p_kept.astype(do.dtype), do, TN_DIMS, preferred_element_type=jnp.float32, precision=m.precision
        )
        dk = dk + lax.dot_general(
            ds.astype(q.dtype), q, TN_DIMS, preferred_element_type=jnp.float32, precision=m.precision
        )
        return dk, dv

    first, first_full = causal_q_blocks(k_start, bq, bk, q_ref.shape[0] // bq)
    carry = (jnp.zeros((bk, kp), jnp.float32), jnp.zeros((bk, kp), jnp.float32))
    carry = lax.fori_loop(first, first_full, functools.partial(body, causal=True), carry)
    dk, dv = lax.fori_loop(first_full, q_ref.shape[0] // bq, functools.partial(body, causal=False), carry)
    dv_scale = m.keep_scale * hm if (m.has_dropout or m.has_head_mask) else 1.0
    dk_ref[...] = (dk * m.scale).astype(dk_ref.dtype)
    dv_ref[...] = (dv * dv_scale).astype(dv_ref.dtype)


def _dq_kernel(
    q_ref, k_ref, v_ref, bias_ref, do_ref, lse_ref, delta_ref, hash_ref, hm_ref, dq_ref, dhm_ref, *, m: TileMath, bq, bk
):
    # q_ref, do_ref [bq, Kp]; lse_ref, delta_ref, hash_ref [bq]; k_ref, v_ref [S, Kp]; bias_ref [S]
    # dq_ref [bq, Kp]; dhm_ref [bq]: per-row contributions to d head_mask[h]
    q_start = pl.program_id(0) * bq
    q, do = q_ref[...], do_ref[...]
    lse, delta = lse_ref[...][:, None], delta_ref[...][:, None]
    row_hash = hash_ref[...][:, None] if m.has_dropout else None
    hm = hm_ref[...][None, :] if m.has_head_mask else 1.0

    def body(j, carry, causal):
        dq, dhm = carry
        k_start = j * bk
        keys = pl.ds(pl.multiple_of(k_start, bk), bk)
        k = k_ref[keys, :]
        bias = bias_ref[keys][None, :] if m.has_bias else None
        p_kept, ds, dp_raw = _tile_grads(
            m, q, k, v_ref[keys, :], do, lse, delta, row_hash, hm, bias, q_start=q_start, k_start=k_start, causal=causal
        )
        dq = dq + jnp.dot(ds.astype(k.dtype), k, preferred_element_type=jnp.float32, precision=m.precision)
        if m.has_head_mask:
            dhm = dhm + jnp.sum(p_kept * dp_raw, axis=1)
        return dq, dhm

    n_full, n_visible = causal_kv_blocks(q_start, bq, bk, k_ref.shape[0] // bk)
    carry = (jnp.zeros(q.shape, jnp.float32), jnp.zeros((bq,), jnp.float32))
    carry = lax.fori_loop(0, n_full, functools.partial(body, causal=False), carry)
    dq, dhm = lax.fori_loop(n_full, n_visible, functools.partial(body, causal=True), carry)
    dq_ref[...] = (dq * m.scale).astype(dq_ref.dtype)
    dhm_ref[...] = dhm * m.keep_scale


def _fused_bwd_kernel(
    q_ref,
    k_ref,
    v_ref,
    bias_ref,
    do_ref,
    lse_ref,
    delta_ref,
    hash_ref,
    hm_ref,
    _dq_zeros_ref,
    dq_ref,
    dk_ref,
    dv_ref,
    dhm_ref,
    *,
    m: TileMath,
    bq,
    bk,
):
    # q_ref, do_ref [T, Kp]; lse_ref, delta_ref, hash_ref [T]; k_ref, v_ref [bk, Kp]; bias_ref [bk]
    # dq_ref [T, Kp] float32, aliased to the zeros input, += dS K over this key block (atomic:
    # every key block's program adds into the same rows); dk_ref, dv_ref [bk, Kp];
    # dhm_ref [bk]: per-key contributions to d head_mask[h]
    k_start = pl.program_id(0) * bk
    k, v = k_ref[...], v_ref[...]
    bias = bias_ref[...][None, :] if m.has_bias else None
    hm = hm_ref[...][None, :] if m.has_head_mask else 1.0  # [1, 1]
    kp = k.shape[-1]

    def body(i, carry, causal):
        dk, dv, dhm = carry
        q_start = i * bq
        rows = pl.ds(pl.multiple_of(q_start, bq), bq)
        q, do = q_ref[rows, :], do_ref[rows, :]
        row_hash = hash_ref[rows][:, None] if m.has_dropout else None
        p_kept, ds, dp_raw = _tile_grads(
            m,
            q,
            k,
            v,
            do,
            lse_ref[rows][:, None],
            delta_ref[rows][:, None],
            row_hash,
            hm,
            bias,
            q_start=q_start,
            k_start=k_start,
            causal=causal,
        )
        ds = ds.astype(q.dtype)
        dv = dv + lax.dot_general(
            p_kept.astype(do.dtype), do, TN_DIMS, preferred_element_type=jnp.float32, precision=m.precision
        )
        dk = dk + lax.dot_general(ds, q, TN_DIMS, preferred_element_type=jnp.float32, precision=m.precision)
        plgpu.atomic_add(
            dq_ref, (rows, slice(None)), jnp.dot(ds, k, preferred_element_type=jnp.float32, precision=m.precision)
        )
        if m.has_head_mask:
            dhm = dhm + jnp.sum(p_kept * dp_raw, axis=0)
        return dk, dv, dhm

    first, first_full = causal_q_blocks(k_start, bq, bk, q_ref.shape[0] // bq)
    carry = (jnp.zeros((bk, kp), jnp.float32), jnp.zeros((bk, kp), jnp.float32), jnp.zeros((bk,), jnp.float32))
    carry = lax.fori_loop(first, first_full, functools.partial(body, causal=True), carry)
    dk, dv, dhm = lax.fori_loop(first_full, q_ref.shape[0] // bq, functools.partial(body, causal=False), carry)
    dv_scale = m.keep_scale * hm if (m.has_dropout or m.has_head_mask) else 1.0
    dk_ref[...] = (dk * m.scale).astype(dk_ref.dtype)
    dv_ref[...] = (dv * dv_scale).astype(dv_ref.dtype)
    dhm_ref[...] = dhm * m.keep_scale


def _fused_backward(m: TileMath, blocks: GPUBlockSizes, q, k, v, bias, row_hash, head_mask, lse, delta, do, interpret):
    batch, seq, heads, kp = q.shape
    bq, bk = blocks.block_q_bwd, blocks.block_k_bwd
    full_seq = pl.BlockSpec((None, seq, None, kp), lambda i, b, h: (b, 0, h, 0))
    full_rows = pl.BlockSpec((None, None, seq), lambda i, b, h: (b, h, 0))
    key_tile = pl.BlockSpec((None, bk, None, kp), lambda i, b, h: (b, i, h, 0))
    dq, dk, dv, dhm_rows = pl.pallas_call(
        functools.partial(_fused_bwd_kernel, m=m, bq=bq, bk=bk),
        grid=(seq // bk, batch, heads),
        in_specs=[
            full_seq,
            key_tile,
            key_tile,
            pl.BlockSpec((None, bk), lambda i, b, h: (b, i)),
            full_seq,
            full_rows,
            full_rows,
            full_rows,
            pl.BlockSpec((1,), lambda i, b, h: (h,)),
            full_seq,
        ],
        out_specs=[full_seq, key_tile, key_tile, pl.BlockSpec((None, None, bk), lambda i, b, h: (b, h, i))],
        out_shape=[
            kernel_output(q.shape, jnp.float32, q),
            kernel_output(k.shape, k.dtype, q),
            kernel_output(v.shape, v.dtype, q),
            kernel_output((batch, heads, seq), jnp.float32, q),
        ],
        input_output_aliases={9: 0},
        compiler_params=plgpu.CompilerParams(num_warps=blocks.num_warps_bwd, num_stages=blocks.num_stages_bwd),
        interpret=interpret,
        name="gpt_flash_bwd_fused",
    )(q, k, v, bias, do, lse, delta, row_hash, head_mask, jnp.zeros(q.shape, jnp.float32))
    return (dq * m.scale).astype(q.dtype), dk, dv, dhm_rows


def backward(
    m: TileMath, blocks: GPUBlockSizes, q, k, v, bias, row_hash, head_mask, lse, delta, do, *, interpret=False
):
    """Gradients (dq, dk, dv [B, T, H, Kp], dhm_rows [B, H, T] float32) of the forward above.

    dhm_rows holds per-row (split) or per-key (fused) parts of d head_mask; their sum is the same.
    """
    if blocks.fused_bwd:
        return _fused_backward(m, blocks, q, k, v, bias, row_hash, head_mask, lse, delta, do, interpret)
    batch, seq, heads, kp = q.shape
    params = plgpu.CompilerParams(num_warps=blocks.num_warps_bwd, num_stages=blocks.num_stages_bwd)
    full_seq = pl.BlockSpec((None, seq, None, kp), lambda i, b, h: (b, 0, h, 0))
    full_rows = pl.BlockSpec((None, None, seq), lambda i, b, h: (b, h, 0))
    full_bias = pl.BlockSpec((None, seq), lambda i, b, h: (b, 0))
    head = pl.BlockSpec((1,), lambda i, b, h: (h,))

    def tile(n):
        return pl.BlockSpec((None, n, None, kp), lambda i, b, h: (b, i, h, 0))

    def row_tile(n):
        return pl.BlockSpec((None, None, n), lambda i, b, h: (b, h, i))

    bq, bk = blocks.block_q_dkv, blocks.block_k_dkv
    dk, dv = pl.pallas_call(
        functools.partial(_dkdv_kernel, m=m, bq=bq, bk=bk),
        grid=(seq // bk, batch, heads),
        in_specs=[
            full_seq,
            tile(bk),
            tile(bk),
            pl.BlockSpec((None, bk), lambda i, b, h: (b, i)),
            full_seq,
            full_rows,
            full_rows,
            full_rows,
            head,
        ],
        out_specs=[tile(bk), tile(bk)],
        out_shape=[kernel_output(k.shape, k.dtype, q), kernel_output(v.shape, v.dtype, q)],
        compiler_params=params,
        interpret=interpret,
        name="gpt_flash_bwd_dkdv",
    )(q, k, v, bias, do, lse, delta, row_hash, head_mask)

    bq, bk = blocks.block_q_dq, blocks.block_k_dq
    dq, dhm_rows = pl.pallas_call(
        functools.partial(_dq_kernel, m=m, bq=bq, bk=bk),
        grid=(seq // bq, batch, heads),
        in_specs=[tile(bq), full_seq, full_seq, full_bias, tile(bq), row_tile(bq), row_tile(bq), row_tile(bq), head],
        out_specs=[tile(bq), row_tile(bq)],
        out_shape=[kernel_output(q.shape, q.dtype, q), kernel_output((batch, heads, seq), jnp.float32, q)],
        compiler_params=params,
        interpret=interpret,
        name="gpt_flash_bwd_dq",
    )(q, k, v, bias, do, lse, delta, row_hash, head_mask)
    return dq, dk, dv, dhm_rows
