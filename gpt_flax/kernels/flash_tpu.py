"""Flash attention for TPUs in Pallas' Mosaic dialect: forward, dK/dV and dQ kernels.

Lowered by `pl.pallas_call` to a `tpu_custom_call` when the caller is compiled for TPU; runs in
Pallas' interpreter on the CPU for the tests. Unlike the Triton kernels, which loop over the other
sequence axis inside one program, Mosaic kernels put that loop in the grid as the last,
"arbitrary" (sequential) dimension and carry the online-softmax state (m, l, acc) in VMEM scratch
across its steps (FlashAttention-2, Dao 2023, algorithms 1 and 2). Key (or query) blocks on the
far side of the causal diagonal are skipped with `pl.when`, and their index maps are clamped to
the last useful block so the pipeline issues no DMA for them.

Layout: q, k, v, out [B, H, T, K] (`flash.py` transposes from the model's [B, T, H, K]);
per-row vectors [B, H, T, 1]; the padding bias [B, 1, S]; head_mask [H] in SMEM. T is a multiple
of every block size (multiples of 128: the lane width); K is 64 or a multiple of 128.
"""

from __future__ import annotations

import dataclasses
import functools

import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from gpt_flax.kernels.common import TN_DIMS, TileMath, check_tiles, kernel_output, tile_keep, tile_scores

LANES = 128  # TPU vector lane width: minor block dims are multiples of it (or the full dim)


@dataclasses.dataclass(frozen=True)
class TPUBlockSizes:
    """Tile sizes: powers of two >= 128 (T is padded to the largest, which the others must divide).
    Not yet tuned on a TPU (none was available)."""

    block_q: int = 256
    block_k: int = 256
    block_q_dkv: int = 256
    block_k_dkv: int = 256
    block_q_dq: int = 256
    block_k_dq: int = 256

    def __post_init__(self):
        check_tiles(self, LANES)

    def fit(self, seq_len: int) -> TPUBlockSizes:
        """Shrink blocks longer than the sequence (rounded up to a power of two >= 128)."""
        cap = LANES * pl.next_power_of_2(max(1, -(-seq_len // LANES)))
        return TPUBlockSizes(**{f.name: min(getattr(self, f.name), cap) for f in dataclasses.fields(self)})

    @property
    def multiple(self) -> int:
        return max(getattr(self, f.name) for f in dataclasses.fields(self))


def _compiler_params():
    return pltpu.CompilerParams(dimension_semantics=("parallel", "parallel", "parallel", "arbitrary"))


def _last_kv_block(i, bq, bk):
    """Last key block that query block i can see (causal). lax.div: Mosaic lowers no floor division."""
    return lax.div(i * bq + bq - 1, bk)


def _first_q_block(j, bq, bk):
    """First query block that can see key block j (causal)."""
    return lax.div(j * bk, bq)


# -- forward ----------------------------------------------------------------------------------
def _fwd_kernel(
    q_ref, k_ref, v_ref, bias_ref, hash_ref, hm_ref, o_ref, lse_ref, m_scr, l_scr, acc_scr, *, m: TileMath, bq, bk
):
    # q_ref [bq, K]; k_ref, v_ref [bk, K]; bias_ref [1, bk]; hash_ref [bq, 1] uint32; hm_ref [H] (SMEM)
    # o_ref [bq, K]; lse_ref [bq, 1]; scratch m, l [bq, 1], acc [bq, K] float32
    h, i, j = pl.program_id(1), pl.program_id(2), pl.program_id(3)
    q_start, k_start = i * bq, j * bk

    @pl.when(j == 0)
    def _init():
        m_scr[...] = jnp.full(m_scr.shape, -jnp.inf, jnp.float32)
        l_scr[...] = jnp.zeros(l_scr.shape, jnp.float32)
        acc_scr[...] = jnp.zeros(acc_scr.shape, jnp.float32)

    def step(causal):
        s = tile_scores(
            m,
            q_ref[...],
            k_ref[...],
            q_start=q_start,
            k_start=k_start,
            causal=causal,
            bias=bias_ref[...] if m.has_bias else None,
        )
        m_prev = m_scr[...]
        m_new = jnp.maximum(m_prev, jnp.max(s, axis=1, keepdims=True))
        alpha = jnp.exp(m_prev - m_new)
        p = jnp.exp(s - m_new)  # [bq, bk]
        l_scr[...] = alpha * l_scr[...] + jnp.sum(p, axis=1, keepdims=True)
        m_scr[...] = m_new
        if m.has_dropout:
            p = jnp.where(tile_keep(m, hash_ref[...], bq=bq, bk=bk, k_start=k_start), p, 0.0)
        v = v_ref[...]
        acc_scr[...] = alpha * acc_scr[...] + jnp.dot(
            p.astype(v.dtype), v, preferred_element_type=jnp.float32, precision=m.precision
        )

    visible = k_start <= q_start + bq - 1
    below = k_start + bk - 1 <= q_start
    pl.when(visible & below)(lambda: step(False))
    pl.when(visible & jnp.logical_not(below))(lambda: step(True))

    @pl.when(j == pl.num_programs(3) - 1)
    def _finish():
        scale = m.keep_scale / l_scr[...]
        if m.has_head_mask:
            scale = scale * hm_ref[h]
        o_ref[...] = (acc_scr[...] * scale).astype(o_ref.dtype)
        lse_ref[...] = m_scr[...] + jnp.log(l_scr[...])


def forward(m: TileMath, blocks: TPUBlockSizes, q, k, v, bias, row_hash, head_mask, *, interpret=False):
    """q, k, v [B, H, T, K] -> (out [B, H, T, K], lse [B, H, T, 1] float32)."""
    batch, heads, seq, kd = q.shape
    bq, bk = blocks.block_q, blocks.block_k

    def kv_index(b, h, i, j):
        return (b, h, jnp.minimum(j, _last_kv_block(i, bq, bk)), 0)

    q_tile = pl.BlockSpec((None, None, bq, kd), lambda b, h, i, j: (b, h, i, 0))
    row_tile = pl.BlockSpec((None, None, bq, 1), lambda b, h, i, j: (b, h, i, 0))
    return pl.pallas_call(
        functools.partial(_fwd_kernel, m=m, bq=bq, bk=bk),
        grid=(batch, heads, seq // bq, seq // bk),
        in_specs=[
            q_tile,
            pl.BlockSpec((None, None, bk, kd), kv_index),
            pl.BlockSpec((None, None, bk, kd), kv_index),
            pl.BlockSpec((None, 1, bk), lambda b, h, i, j: (b, 0, kv_index(b, h, i, j)[2])),
            row_tile,
            pl.BlockSpec(memory_space=pltpu.SMEM),
        ],
        out_specs=[q_tile, row_tile],
        out_shape=[
            kernel_output(q.shape, q.dtype, q),
            kernel_output((batch, heads, seq, 1), jnp.float32, q),
        ],
        scratch_shapes=[
            pltpu.VMEM((bq, 1), jnp.float32),
            pltpu.VMEM((bq, 1), jnp.float32),
            pltpu.VMEM((bq, kd), jnp.float32),
        ],
        compiler_params=_compiler_params(),
        interpret=interpret,
        name="gpt_flash_fwd",
    )(q, k, v, bias, row_hash, head_mask)


# -- backward ---------------------------------------------------------------------------------
def _tile_grads(
    m: TileMath, q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, hash_ref, bias_ref, hm, *, q_start, k_start, causal
):
    """(p_kept, ds, dp_raw_kept) of one tile; see flash_gpu._tile_grads."""
    bq, bk = q_ref.shape[0], k_ref.shape[0]
    s = tile_scores(
        m,
        q_ref[...],
        k_ref[...],
        q_start=q_start,
        k_start=k_start,
        causal=causal,
        bias=bias_ref[...] if m.has_bias else None,
    )
    p = jnp.exp(jnp.minimum(s - lse_ref[...], 0.0))  # [bq, bk]; min: see flash_gpu._tile_grads
    dp_raw = lax.dot_general(
        do_ref[...], v_ref[...], (((1,), (1,)), ((), ())), preferred_element_type=jnp.float32, precision=m.precision
    )
    if m.has_dropout:
        keep = tile_keep(m, hash_ref[...], bq=bq, bk=bk, k_start=k_start)
        p_kept = jnp.where(keep, p, 0.0)
        dp_raw = jnp.where(keep, dp_raw, 0.0)
    else:
        p_kept = p
    dp = dp_raw * (m.keep_scale * hm) if (m.has_dropout or m.has_head_mask) else dp_raw
    return p_kept, p * (dp - delta_ref[...]), dp_raw


def _dkdv_kernel(
    q_ref,
    k_ref,
    v_ref,
    bias_ref,
    do_ref,
    lse_ref,
    delta_ref,
    hash_ref,
    hm_ref,
    dk_ref,
    dv_ref,
    dk_scr,
    dv_scr,
    *,
    m: TileMath,
    bq,
    bk,
):
    # grid (b, h, key block j, query block i); q_ref, do_ref [bq, K]; k_ref, v_ref [bk, K]
    h, j, i = pl.program_id(1), pl.program_id(2), pl.program_id(3)
    q_start, k_start = i * bq, j * bk
    hm = hm_ref[h] if m.has_head_mask else 1.0

    @pl.when(i == 0)
    def _init():
        dk_scr[...] = jnp.zeros(dk_scr.shape, jnp.float32)
        dv_scr[...] = jnp.zeros(dv_scr.shape, jnp.float32)

    def step(causal):
        p_kept, ds, _ = _tile_grads(
            m,
            q_ref,
            k_ref,
            v_ref,
            do_ref,
            lse_ref,
            delta_ref,
            hash_ref,
            bias_ref,
            hm,
            q_start=q_start,
            k_start=k_start,
            causal=causal,
        )
        do, q = do_ref[...], q_ref[...]
        dv_scr[...] += lax.dot_general(
            p_kept.astype(do.dtype), do, TN_DIMS, preferred_element_type=jnp.float32, precision=m.precision
        )
        dk_scr[...] += lax.dot_general(
            ds.astype(q.dtype), q, TN_DIMS, preferred_element_type=jnp.float32, precision=m.precision
        )

    visible = q_start + bq - 1 >= k_start
    above = q_start >= k_start + bk - 1  # every row of the block sees every key
    pl.when(visible & above)(lambda: step(False))
    pl.when(visible & jnp.logical_not(above))(lambda: step(True))

    @pl.when(i == pl.num_programs(3) - 1)
    def _finish():
        dv_scale = m.keep_scale * hm if (m.has_dropout or m.has_head_mask) else 1.0
        dk_ref[...] = (dk_scr[...] * m.scale).astype(dk_ref.dtype)
        dv_ref[...] = (dv_scr[...] * dv_scale).astype(dv_ref.dtype)


def _dq_kernel(
    q_ref,
    k_ref,
    v_ref,
    bias_ref,
    do_ref,
    lse_ref,
    delta_ref,
    hash_ref,
    hm_ref,
    dq_ref,
    dhm_ref,
    dq_scr,
    dhm_scr,
    *,
    m: TileMath,
    bq,
    bk,
):
    # grid (b, h, query block i, key block j); dhm_ref [bq, 1]: per-row parts of d head_mask[h]
    h, i, j = pl.program_id(1), pl.program_id(2), pl.program_id(3)
    q_start, k_start = i * bq, j * bk
    hm = hm_ref[h] if m.has_head_mask else 1.0

    @pl.when(j == 0)
    def _init():
        dq_scr[...] = jnp.zeros(dq_scr.shape, jnp.float32)
        dhm_scr[...] = jnp.zeros(dhm_scr.shape, jnp.float32)

    def step(causal):
        p_kept, ds, dp_raw = _tile_grads(
            m,
            q_ref,
            k_ref,
            v_ref,
            do_ref,
            lse_ref,
            delta_ref,
            hash_ref,
            bias_ref,
            hm,
            q_start=q_start,
            k_start=k_start,
            causal=causal,
        )
        k = k_ref[...]
        dq_scr[...] += jnp.dot(ds.astype(k.dtype), k, preferred_element_type=jnp.float32, precision=m.precision)
        if m.has_head_mask:
            dhm_scr[...] += jnp.sum(p_kept * dp_raw, axis=1, keepdims=True)

    visible = k_start <= q_start + bq - 1
    below = k_start + bk - 1 <= q_start
    pl.when(visible & below)(lambda: step(False))
    pl.when(visible & jnp.logical_not(below))(lambda: step(True))

    @pl.when(j == pl.num_programs(3) - 1)
    def _finish():
        dq_ref[...] = (dq_scr[...] * m.scale).astype(dq_ref.dtype)
        dhm_ref[...] = dhm_scr[...] * m.keep_scale


def backward(
    m: TileMath, blocks: TPUBlockSizes, q, k, v, bias, row_hash, head_mask, lse, delta, do, *, interpret=False
):
    """Gradients (dq, dk, dv [B, H, T, K], dhm_rows [B, H, T, 1]) of the forward above."""
    batch, heads, seq, kd = q.shape
    smem = pl.BlockSpec(memory_space=pltpu.SMEM)

    # dK, dV: grid (b, h, key block j, query block i); query blocks before the diagonal are clamped.
    bq, bk = blocks.block_q_dkv, blocks.block_k_dkv

    def q_index(b, h, j, i):
        return (b, h, jnp.maximum(i, _first_q_block(j, bq, bk)), 0)

    q_tile = pl.BlockSpec((None, None, bq, kd), q_index)
    row_tile = pl.BlockSpec((None, None, bq, 1), q_index)
    kv_tile = pl.BlockSpec((None, None, bk, kd), lambda b, h, j, i: (b, h, j, 0))
    dk, dv = pl.pallas_call(
        functools.partial(_dkdv_kernel, m=m, bq=bq, bk=bk),
        grid=(batch, heads, seq // bk, seq // bq),
        in_specs=[
            q_tile,
            kv_tile,
            kv_tile,
            pl.BlockSpec((None, 1, bk), lambda b, h, j, i: (b, 0, j)),
            q_tile,
            row_tile,
            row_tile,
            row_tile,
            smem,
        ],
        out_specs=[kv_tile, kv_tile],
        out_shape=[kernel_output(k.shape, k.dtype, q), kernel_output(v.shape, v.dtype, q)],
        scratch_shapes=[pltpu.VMEM((bk, kd), jnp.float32), pltpu.VMEM((bk, kd), jnp.float32)],
        compiler_params=_compiler_params(),
        interpret=interpret,
        name="gpt_flash_bwd_dkdv",
    )(q, k, v, bias, do, lse, delta, row_hash, head_mask)

    # dQ: grid (b, h, query block i, key block j); key blocks past the diagonal are clamped.
    bq, bk = blocks.block_q_dq, blocks.block_k_dq

    def kv_index(b, h, i, j):
        return (b, h, jnp.minimum(j, _last_kv_block(i, bq, bk)), 0)

    q_tile = pl.BlockSpec((None, None, bq, kd), lambda b, h, i, j: (b, h, i, 0))
    row_tile = pl.BlockSpec((None, None, bq, 1), lambda b, h, i, j: (b, h, i, 0))
    kv_tile = pl.BlockSpec((None, None, bk, kd), kv_index)
    dq, dhm_rows = pl.pallas_call(
        functools.partial(_dq_kernel, m=m, bq=bq, bk=bk),
        grid=(batch, heads, seq // bq, seq // bk),
        in_specs=[
            q_tile,
            kv_tile,
            kv_tile,
            pl.BlockSpec((None, 1, bk), lambda b, h, i, j: (b, 0, kv_index(b, h, i, j)[2])),
            q_tile,
            row_tile,
            row_tile,
            row_tile,
            smem,
        ],
        out_specs=[q_tile, row_tile],
        out_shape=[kernel_output(q.shape, q.dtype, q), kernel_output((batch, heads, seq, 1), jnp.float32, q)],
        scratch_shapes=[pltpu.VMEM((bq, kd), jnp.float32), pltpu.VMEM((bq, 1), jnp.float32)],
        compiler_params=_compiler_params(),
        interpret=interpret,
        name="gpt_flash_bwd_dq",
    )(q, k, v, bias, do, lse, delta, row_hash, head_mask)
    return dq, dk, dv, dhm_rows
