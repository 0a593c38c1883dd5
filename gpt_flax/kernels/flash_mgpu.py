"""Flash attention for Hopper GPUs in Pallas' Mosaic GPU dialect: forward, dQ and dK/dV kernels.

The Triton kernels (`flash_gpu.py`) leave Hopper's tensor cores half idle: Triton's Pallas lowering
loads tiles with ordinary loads and has no warp specialisation. These kernels are written for
sm_90a directly: tiles arrive by TMA into swizzled shared memory, a producer warpgroup streams them
through a ring of `steps` buffers guarded by mbarriers, and consumer warpgroups multiply with
`wgmma` (FlashAttention-3, Shah et al. 2024, section 3.1). The forward runs two consumer
warpgroups per CTA over adjacent query blocks that share the streamed keys, and, optionally, the
ping-pong schedule of section 3.2 (one warpgroup's softmax under the other's matmuls). The
backward is FlashAttention-2's split form: a dQ kernel over query blocks and a dK/dV kernel over
key blocks, each recomputing the probabilities (seven matmuls per tile pair, every operand in the
form `wgmma` takes without a transposed register operand).

Semantics are those of `flash_gpu.py` (the same `TileMath`: causal fill, padding bias, the hash
dropout of `common.tile_keep`) with two differences the caller (`flash.py`) arranges: head_mask is
folded into v (out = P (hm V) = hm (P V)), and the padding bias comes in base-2 units
(`bias * log2(e)`, clamped first to stay in float32's range), since the softmax here runs on exp2.

Layout: q, k, v, out [B, T, H, K] (the model's layout); lse, delta, row hashes [B, H, T]; the bias
[B, T]. K is 64 or 128 and the dtype bfloat16 or float16 (wgmma's 16-bit forms; TMA's 128-byte
swizzle wants K * 2 bytes a multiple of 128). T is a multiple of `blocks.multiple`.

Every kernel also runs in Mosaic GPU's interpreter on the CPU (`interpret=True`, JAX >= 0.10),
which simulates the warpgroups, shared memory, TMA and barriers; that is how the tests check the
index arithmetic and the barrier protocol without a GPU.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import mosaic_gpu as plgpu

from gpt_flax.attention import CAUSAL_MASK_VALUE, dropout_keep
from gpt_flax.kernels.common import TileMath, check_tiles, kernel_output

LOG2E = math.log2(math.e)
# Registers per thread after `setmaxnreg`, by consumer warpgroups per CTA: the producer gives its
# share to the consumers, the total within the 64K registers of a CTA of (consumers + 1) x 128 threads.
PRODUCER_REGISTERS = 40
CONSUMER_REGISTERS = {1: 232, 2: 232}
HEAD_DIMS = (64, 128)
# Shared memory a CTA may take on sm_90 (the opt-in maximum of the H100 and H200).
SMEM_LIMIT = 227 * 1024
SMEM_ALIGNMENT = 1024  # Pallas starts every shared-memory buffer at this boundary
MBARRIER_BYTES = 8
DTYPES = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))


@dataclasses.dataclass(frozen=True)
class MosaicBlockSizes:
    """Tile sizes (powers of two >= 64) and pipeline depths of the Mosaic GPU kernels.

    The forward CTA covers 2 * block_q query rows (one block per consumer warpgroup); the dQ
    kernel's CTA block_q_dq rows, the dK/dV kernel's block_k_dkv keys. `steps` buffers are in
    flight per stream. `pingpong` orders the forward's two warpgroups (FlashAttention-3's
    schedule barrier). Whether a kernel's buffers fit a CTA's shared memory depends on head_dim
    too; it is checked when the kernel is traced (`_check_smem`)."""

    block_q: int = 64
    block_k: int = 128
    steps: int = 2
    pingpong: bool = True
    block_q_dq: int = 64
    block_k_dq: int = 64
    block_q_dkv: int = 64
    block_k_dkv: int = 64
    steps_bwd: int = 2
    wgs_bwd: int = 2

    def __post_init__(self):
        check_tiles(self, 64)
        if self.wgs_bwd not in (1, 2):
            raise ValueError(f"MosaicBlockSizes.wgs_bwd must be 1 or 2; got {self.wgs_bwd}")
        if self.steps < 2 or self.steps_bwd < 2:
            raise ValueError(
                f"MosaicBlockSizes needs steps >= 2 and steps_bwd >= 2; got {self.steps}, {self.steps_bwd}"
            )

    @property
    def multiple(self) -> int:
        """T is padded to a multiple of this: every tile of every kernel is a power of two, so the
        largest divides it and all the others divide the largest."""
        return max(
            2 * self.block_q,
            self.block_k,
            self.wgs_bwd * self.block_q_dq,
            self.block_k_dq,
            self.block_q_dkv,
            self.wgs_bwd * self.block_k_dkv,
        )


def supports(dtype, head_dim: int) -> bool:
    """Whether these kernels take inputs of this dtype and head size."""
    return jnp.dtype(dtype) in DTYPES and head_dim in HEAD_DIMS


# -- what differs between the hardware lowering and the interpreter -----------------------------
def _transposed(ref):
    """A [m, n] shared-memory ref seen as [n, m] (a wgmma operand); `transpose_ref` before JAX 0.11."""
    if hasattr(ref, "transpose"):
        return ref.transpose((1, 0))
    return plgpu.transpose_ref(ref, (1, 0))


@dataclasses.dataclass(frozen=True)
class _Ops:
    """The few operations the interpreter lacks (`plgpu.load`, `pl.run_state` over accumulators),
    written both ways; the arithmetic of the kernels is the same."""

    interpret: bool

    def vector(self, ref, axis: int):
        """A [n] float32/uint32 vector from shared memory, laid out to broadcast along `axis` of a
        wgmma tile (axis 1: one value per row; 0: one per column)."""
        if self.interpret:
            return ref[...]
        return plgpu.load(ref, (), layout=plgpu.Layout.WGMMA.reduce(axis))

    def tile(self, x):
        if self.interpret:
            return x
        return plgpu.layout_cast(x, plgpu.Layout.WGMMA)

    def row_vector(self, x):
        if self.interpret:
            return x
        return plgpu.layout_cast(x, plgpu.Layout.WGMMA.reduce(1))

    def iota(self, shape, dim):
        if self.interpret:
            return lax.broadcasted_iota(jnp.int32, shape, dim)
        return plgpu.broadcasted_iota(jnp.int32, shape, dim, layout=plgpu.Layout.WGMMA)

    def _operand(self, x, transpose: bool):
        value = x[...] if hasattr(x, "shape") and not isinstance(x, jax.Array) else x
        return value.T if transpose else value

    def matmul(self, a, b, shape, *, transpose_b=False, before_wait=None):
        """a @ b (b^T with `transpose_b`) into a fresh float32 [m, n] accumulator; `before_wait`
        runs after the product is issued, before it is awaited. a: registers or shared memory, b:
        shared memory. The interpreter (whose wgmma takes no transposed operand) multiplies the
        loaded tiles instead."""
        if self.interpret:
            out = jnp.dot(self._operand(a, False), self._operand(b, transpose_b), preferred_element_type=jnp.float32)
            if before_wait is not None:
                before_wait()
            return out
        b = _transposed(b) if transpose_b else b

        def body(acc):
            plgpu.wgmma(acc, a, b)
            if before_wait is not None:
                before_wait()
            return acc[...]

        return pl.run_scoped(body, plgpu.ACC(shape, jnp.float32))

    def products(self, operands, shape):
        """a @ b (b^T where flagged) for each (a, b, transpose_b), issued together, one wait."""
        if self.interpret:
            return tuple(self.matmul(a, b, shape, transpose_b=tb) for a, b, tb in operands)
        zeros = self.tile(jnp.zeros(shape, jnp.float32))
        return self.accumulate([(zeros, a, b, tb) for a, b, tb in operands])

    def accumulate(self, products, after_issue=None):
        """acc + a @ b (b^T where flagged) for each (acc, a, b, transpose_b), issued together."""
        if self.interpret:
            outs = tuple(acc + self.matmul(a, b, acc.shape, transpose_b=tb) for acc, a, b, tb in products)
            if after_issue is not None:
                after_issue()
            return outs

        def body(refs):
            for ref, (_, a, b, tb) in zip(refs, products, strict=True):
                plgpu.wgmma(ref, a, _transposed(b) if tb else b)
            if after_issue is not None:
                after_issue()

        return pl.run_state(body)(tuple(plgpu.ACC.init(acc) for acc, *_ in products))


def _interpret_params(interpret: bool):
    if not interpret:
        return None
    params = getattr(plgpu, "InterpretGPUParams", None)
    if params is None:
        from jax._src.pallas.mosaic_gpu.interpret.params import InterpretGPUParams as params
    return params()


def _smem_tile(shape, dtype):
    """A shared-memory tile in the 128-byte-swizzled layout TMA writes and wgmma reads."""
    return plgpu.SMEM(shape, dtype, transforms=(plgpu.TilingTransform((8, 64)), plgpu.SwizzleTransform(128)))


def _log2_scores(m: TileMath, s, *, q_pos, k_pos, bias, causal: bool):
    """Raw q.k products -> scores in base-2 units (scale, causal fill, padding bias), float32."""
    t = s * (m.scale * LOG2E)
    if causal:
        t = jnp.where(k_pos <= q_pos, t, CAUSAL_MASK_VALUE * LOG2E)
    if bias is not None:
        t = t + bias
    return t


# -- forward ------------------------------------------------------------------------------------
def _rows(x, shape):
    """A per-row vector broadcast over a [rows, cols] tile."""
    return lax.broadcast_in_dim(x, shape, (0,))


def _cols(x, shape):
    """A per-column vector broadcast over a [rows, cols] tile."""
    return lax.broadcast_in_dim(x, shape, (1,))


def _keep(m: TileMath, row_hash, k_pos):
    """The dropout keep mask of a tile: `common.tile_keep`'s hash, on positions laid out for wgmma."""
    return dropout_keep(row_hash, k_pos.astype(jnp.uint32), m.dropout_rate)


def forward(m: TileMath, blocks: MosaicBlockSizes, q, k, v, bias2, row_hash, *, interpret=False):
    """q, k, v [B, T, H, K] -> (out [B, T, H, K], lse [B, H, T] float32, natural log)."""
    batch, seq, heads, head_dim = q.shape
    bq, bk = blocks.block_q, blocks.block_k
    num_kv = seq // bk
    steps = min(blocks.steps, num_kv)
    ops = _Ops(interpret)
    dtype = q.dtype
    pingpong = blocks.pingpong

    def kernel(q_ref, k_ref, v_ref, bias_ref, hash_ref, out_ref, lse_ref, smem, barriers):
        qo_smem, k_smem, v_smem, bias_smem, lse_smem, hash_smem = smem
        q_bar, kv_bar, kv_used, schedule = barriers
        b = lax.axis_index("batch")
        h = lax.axis_index("heads")
        wg = lax.axis_index("wg")
        cta_start = lax.axis_index("q_seq") * (2 * bq)
        # Key blocks the CTA's last query row sees: the producer loads these, both consumers consume them.
        cta_steps = jnp.minimum(lax.div(cta_start + 2 * bq + bk - 1, bk), num_kv)

        def rendezvous():
            if pingpong:
                plgpu.barrier_arrive(schedule)
                plgpu.barrier_wait(schedule)

        @pl.when(wg < 2)
        def _consumer():
            plgpu.set_max_registers(CONSUMER_REGISTERS[2], action="increase")
            q_start = cta_start + wg * bq
            rows = pl.ds(q_start, bq)
            plgpu.copy_gmem_to_smem(q_ref.at[b, rows, h], qo_smem.at[wg], q_bar.at[wg])
            if m.has_dropout:
                plgpu.copy_gmem_to_smem(hash_ref.at[b, h, rows], hash_smem.at[wg], q_bar.at[wg])
            plgpu.barrier_wait(q_bar.at[wg])
            row_hash = _rows(ops.vector(hash_smem.at[wg], 1), (bq, bk)) if m.has_dropout else None
            q_pos = ops.iota((bq, bk), 0) + q_start

            n_full = jnp.minimum(lax.div(q_start + 1, bk), num_kv)
            n_visible = jnp.minimum(lax.div(q_start + bq + bk - 1, bk), num_kv)
            plgpu.barrier_wait(kv_bar.at[0])  # every query row sees key block 0
            if pingpong:
                pl.when(wg == 1)(rendezvous)

            def step(j, carry, causal):
                acc, m_i, l_i = carry
                slot = lax.rem(j, steps)
                s = ops.matmul(qo_smem.at[wg], k_smem.at[slot], (bq, bk), transpose_b=True, before_wait=rendezvous)
                bias = _cols(ops.vector(bias_smem.at[slot], 0), (bq, bk)) if m.has_bias else None
                k_pos = ops.iota((bq, bk), 1) + j * bk
                t = _log2_scores(m, s, q_pos=q_pos, k_pos=k_pos, bias=bias, causal=causal)
                m_new = jnp.maximum(m_i, jnp.max(t, axis=1))
                alpha = jnp.exp2(m_i - m_new)
                p = jnp.exp2(t - _rows(m_new, (bq, bk)))
                l_i = l_i * alpha + jnp.sum(p, axis=1)  # the denominator counts dropped entries too
                if m.has_dropout:
                    p = jnp.where(_keep(m, row_hash, k_pos), p, 0.0)
                acc = acc * _rows(alpha, (bq, head_dim))
                rendezvous()

                def wait_next():
                    nxt = j + 1

                    @pl.when(nxt < n_visible)
                    def _():
                        plgpu.barrier_wait(kv_bar.at[lax.rem(nxt, steps)])

                (acc,) = ops.accumulate([(acc, p.astype(dtype), v_smem.at[slot], False)], after_issue=wait_next)
                plgpu.barrier_arrive(kv_used.at[slot])
                return acc, m_new, l_i

            carry = (
                ops.tile(jnp.zeros((bq, head_dim), jnp.float32)),
                ops.row_vector(jnp.full((bq,), -jnp.inf, jnp.float32)),
                ops.row_vector(jnp.zeros((bq,), jnp.float32)),
            )
            carry = lax.fori_loop(0, n_full, functools.partial(step, causal=False), carry)
            acc, m_i, l_i = lax.fori_loop(n_full, n_visible, functools.partial(step, causal=True), carry)

            # Key blocks only the other warpgroup needs: mark them used once they have landed (so no
            # arrival counts toward an earlier fill of the slot), and keep the schedule paired.
            @pl.loop(n_visible, cta_steps)
            def _(j):
                plgpu.barrier_wait(kv_bar.at[lax.rem(j, steps)])
                plgpu.barrier_arrive(kv_used.at[lax.rem(j, steps)])
                rendezvous()
                rendezvous()

            if pingpong:
                pl.when(wg == 0)(rendezvous)

            out = acc * _rows(m.keep_scale / l_i, (bq, head_dim))
            qo_smem.at[wg][...] = out.astype(dtype)
            lse_smem.at[wg][...] = m_i * (1.0 / LOG2E) + jnp.log(l_i)
            plgpu.commit_smem()
            plgpu.copy_smem_to_gmem(qo_smem.at[wg], out_ref.at[b, rows, h], commit_group=False)
            plgpu.copy_smem_to_gmem(lse_smem.at[wg], lse_ref.at[b, h, rows], commit_group=False)
            plgpu.commit_smem_to_gmem_group()
            plgpu.wait_smem_to_gmem(0)

        @pl.when(wg == 2)
        def _producer():
            refs = (k_ref, v_ref, bias_ref if m.has_bias else None)
            _key_producer(refs, (k_smem, v_smem, bias_smem), kv_bar, kv_used, b, h, bk, cta_steps, steps)

    smem = (
        _smem_tile((2, bq, head_dim), dtype),
        _smem_tile((steps, bk, head_dim), dtype),
        _smem_tile((steps, bk, head_dim), dtype),
        plgpu.SMEM((steps, bk), jnp.float32) if m.has_bias else None,
        plgpu.SMEM((2, bq), jnp.float32),
        plgpu.SMEM((2, bq), jnp.uint32) if m.has_dropout else None,
    )
    barriers = (
        plgpu.Barrier(num_arrivals=2 if m.has_dropout else 1, num_barriers=2),
        plgpu.Barrier(num_arrivals=3 if m.has_bias else 2, num_barriers=steps),
        plgpu.Barrier(num_arrivals=2, num_barriers=steps),
        plgpu.Barrier(num_arrivals=2),
    )
    out_type = (kernel_output(q.shape, dtype, q), kernel_output((batch, heads, seq), jnp.float32, q))
    _check_smem("forward", blocks, q, smem, barriers, reduces=True)
    launch = _launch(kernel, out_type, smem, barriers, (heads, seq // (2 * bq), batch), "q_seq", 2, interpret)
    return launch(q, k, v, bias2, row_hash)


def _launch(kernel, out_type, smem, barriers, grid, seq_axis: str, consumers: int, interpret: bool):
    """`plgpu.kernel` over (heads, seq_axis, batch) with `consumers` warpgroups and one producer."""
    return plgpu.kernel(
        kernel,
        out_type=out_type,
        scratch_types=(smem, barriers),
        grid=grid,
        grid_names=("heads", seq_axis, "batch"),
        num_threads=consumers + 1,
        thread_name="wg",
        compiler_params=plgpu.CompilerParams(approx_math=True),
        **({"interpret": _interpret_params(True)} if interpret else {}),
    )


def _check_smem(name: str, blocks: MosaicBlockSizes, q, smem, barriers, *, reduces: bool):
    """Refuse, before lowering, block sizes whose buffers do not fit a Hopper CTA's shared memory.

    Counted as Pallas' lowering allocates it: every buffer from a 1 KiB boundary, the scratch of
    cross-warp reductions (the forward's row max and sum), 8 bytes per mbarrier. Mosaic's own
    check comes later, at lowering, and names no block size."""
    total = 0
    for ref in jax.tree.leaves(smem):
        total = -(-total // SMEM_ALIGNMENT) * SMEM_ALIGNMENT + math.prod(ref.shape) * jnp.dtype(ref.dtype).itemsize
    total = -(-total // SMEM_ALIGNMENT) * SMEM_ALIGNMENT
    for barrier in barriers:  # num_barriers: an int, or a shape before JAX 0.11
        count = barrier.num_barriers
        total += MBARRIER_BYTES * (count if isinstance(count, int) else math.prod(count))
    if reduces:
        total += getattr(plgpu.CompilerParams(), "reduction_scratch_bytes", 0)
    if total > SMEM_LIMIT:
        raise ValueError(
            f"{blocks} need {total} bytes of shared memory in the Mosaic GPU {name} kernel for head_dim="
            f"{q.shape[-1]}; a Hopper CTA has {SMEM_LIMIT}: lower the steps or the tile sizes"
        )


# -- backward -----------------------------------------------------------------------------------
def _recomputed_probs(t, lse2):
    """The forward's probabilities from base-2 scores and log-sum-exps, at most 1.

    A backward tile can reach keys the forward's tiles for that row did not (its tiles differ): for
    a left-padded row whose visible keys are all padding the forward's lse is about finfo.min, and
    such a key's causal fill (-1e4) would give exp2 of ~1e38, inf, and inf * 0 = NaN in dS. Those
    rows get no gradient (their output is replaced outside the kernels), so capping at 1 changes
    nothing else: every other entry is at most 1 already."""
    return jnp.exp2(jnp.minimum(t - lse2, 0.0))


def _dropped(m: TileMath, keep, x):
    """Inverted dropout of a tile: kept entries scaled by 1 / (1 - rate), dropped ones 0."""
    return jnp.where(keep, x * m.keep_scale, 0.0) if m.has_dropout else x


def _dq(m: TileMath, blocks: MosaicBlockSizes, q, k, v, bias2, row_hash, lse, delta, do, interpret):
    """dQ [B, T, H, K]: `wgs` consumer warpgroups per CTA, one query block each, over the key
    blocks streamed once for all of them (a warpgroup whose rows end earlier sees the extra blocks
    fully masked, which adds nothing)."""
    batch, seq, heads, head_dim = q.shape
    bq, bk, wgs = blocks.block_q_dq, blocks.block_k_dq, blocks.wgs_bwd
    num_kv = seq // bk
    steps = min(blocks.steps_bwd, num_kv)
    ops = _Ops(interpret)
    dtype = q.dtype

    def kernel(q_ref, k_ref, v_ref, bias_ref, hash_ref, lse_ref, delta_ref, do_ref, dq_ref, smem, barriers):
        q_smem, do_smem, lse_smem, delta_smem, hash_smem, k_smem, v_smem, bias_smem = smem
        q_bar, kv_bar, kv_used = barriers
        b = lax.axis_index("batch")
        h = lax.axis_index("heads")
        wg = lax.axis_index("wg")
        cta_start = lax.axis_index("q_seq") * (wgs * bq)
        cta_visible = jnp.minimum(lax.div(cta_start + wgs * bq + bk - 1, bk), num_kv)

        @pl.when(wg < wgs)
        def _consumer():
            plgpu.set_max_registers(CONSUMER_REGISTERS[wgs], action="increase")
            q_start = cta_start + wg * bq
            rows = pl.ds(q_start, bq)
            bar = q_bar.at[wg]
            plgpu.copy_gmem_to_smem(q_ref.at[b, rows, h], q_smem.at[wg], bar)
            plgpu.copy_gmem_to_smem(do_ref.at[b, rows, h], do_smem.at[wg], bar)
            plgpu.copy_gmem_to_smem(lse_ref.at[b, h, rows], lse_smem.at[wg], bar)
            plgpu.copy_gmem_to_smem(delta_ref.at[b, h, rows], delta_smem.at[wg], bar)
            if m.has_dropout:
                plgpu.copy_gmem_to_smem(hash_ref.at[b, h, rows], hash_smem.at[wg], bar)
            plgpu.barrier_wait(bar)
            lse2 = _rows(ops.vector(lse_smem.at[wg], 1) * LOG2E, (bq, bk))
            delta_t = _rows(ops.vector(delta_smem.at[wg], 1), (bq, bk))
            row_hash = _rows(ops.vector(hash_smem.at[wg], 1), (bq, bk)) if m.has_dropout else None
            q_pos = ops.iota((bq, bk), 0) + q_start
            n_full = jnp.minimum(lax.div(q_start + 1, bk), num_kv)
            plgpu.barrier_wait(kv_bar.at[0])

            def step(j, dq_acc, causal):
                slot = lax.rem(j, steps)
                s, dp = ops.products(
                    [(q_smem.at[wg], k_smem.at[slot], True), (do_smem.at[wg], v_smem.at[slot], True)], (bq, bk)
                )
                bias = _cols(ops.vector(bias_smem.at[slot], 0), (bq, bk)) if m.has_bias else None
                k_pos = ops.iota((bq, bk), 1) + j * bk
                p = _recomputed_probs(_log2_scores(m, s, q_pos=q_pos, k_pos=k_pos, bias=bias, causal=causal), lse2)
                if m.has_dropout:
                    dp = _dropped(m, _keep(m, row_hash, k_pos), dp)
                ds = p * (dp - delta_t)

                def wait_next():
                    nxt = j + 1

                    @pl.when(nxt < cta_visible)
                    def _():
                        plgpu.barrier_wait(kv_bar.at[lax.rem(nxt, steps)])

                (dq_acc,) = ops.accumulate([(dq_acc, ds.astype(dtype), k_smem.at[slot], False)], after_issue=wait_next)
                plgpu.barrier_arrive(kv_used.at[slot])
                return dq_acc

            dq_acc = ops.tile(jnp.zeros((bq, head_dim), jnp.float32))
            dq_acc = lax.fori_loop(0, n_full, functools.partial(step, causal=False), dq_acc)
            dq_acc = lax.fori_loop(n_full, cta_visible, functools.partial(step, causal=True), dq_acc)
            q_smem.at[wg][...] = (dq_acc * m.scale).astype(dtype)
            plgpu.commit_smem()
            plgpu.copy_smem_to_gmem(q_smem.at[wg], dq_ref.at[b, rows, h])
            plgpu.wait_smem_to_gmem(0)

        @pl.when(wg == wgs)
        def _producer():
            refs = (k_ref, v_ref, bias_ref if m.has_bias else None)
            _key_producer(refs, (k_smem, v_smem, bias_smem), kv_bar, kv_used, b, h, bk, cta_visible, steps)

    smem = (
        _smem_tile((wgs, bq, head_dim), dtype),
        _smem_tile((wgs, bq, head_dim), dtype),
        plgpu.SMEM((wgs, bq), jnp.float32),
        plgpu.SMEM((wgs, bq), jnp.float32),
        plgpu.SMEM((wgs, bq), jnp.uint32) if m.has_dropout else None,
        _smem_tile((steps, bk, head_dim), dtype),
        _smem_tile((steps, bk, head_dim), dtype),
        plgpu.SMEM((steps, bk), jnp.float32) if m.has_bias else None,
    )
    barriers = (
        plgpu.Barrier(num_arrivals=5 if m.has_dropout else 4, num_barriers=wgs),
        plgpu.Barrier(num_arrivals=3 if m.has_bias else 2, num_barriers=steps),
        plgpu.Barrier(num_arrivals=wgs, num_barriers=steps),
    )
    out_type = kernel_output(q.shape, dtype, q)
    _check_smem("dQ", blocks, q, smem, barriers, reduces=False)
    launch = _launch(kernel, out_type, smem, barriers, (heads, seq // (wgs * bq), batch), "q_seq", wgs, interpret)
    return launch(q, k, v, bias2, row_hash, lse, delta, do)


def _dkv(m: TileMath, blocks: MosaicBlockSizes, q, k, v, bias2, row_hash, lse, delta, do, interpret):
    """(dK, dV) [B, T, H, K]: `wgs` consumer warpgroups per CTA, one key block each, over the
    query blocks streamed once for all of them (from the first block the CTA's first key is seen
    by; a warpgroup with later keys sees that block masked). Every tile is in the transposed
    orientation (S^T = K Q^T), so that P^T and dS^T are wgmma's register operand for dV = P^T dO
    and dK = dS^T Q."""
    batch, seq, heads, head_dim = q.shape
    bq, bk, wgs = blocks.block_q_dkv, blocks.block_k_dkv, blocks.wgs_bwd
    num_q = seq // bq
    steps = min(blocks.steps_bwd, num_q)
    ops = _Ops(interpret)
    dtype = q.dtype

    def kernel(q_ref, k_ref, v_ref, bias_ref, hash_ref, lse_ref, delta_ref, do_ref, dk_ref, dv_ref, smem, barriers):
        k_smem, v_smem, bias_smem, q_smem, do_smem, lse_smem, delta_smem, hash_smem = smem
        k_bar, q_bar, q_used = barriers
        b = lax.axis_index("batch")
        h = lax.axis_index("heads")
        wg = lax.axis_index("wg")
        cta_start = lax.axis_index("kv_seq") * (wgs * bk)
        first = lax.div(cta_start, bq)  # query blocks before this one see none of the CTA's keys

        @pl.when(wg < wgs)
        def _consumer():
            plgpu.set_max_registers(CONSUMER_REGISTERS[wgs], action="increase")
            k_start = cta_start + wg * bk
            keys = pl.ds(k_start, bk)
            bar = k_bar.at[wg]
            plgpu.copy_gmem_to_smem(k_ref.at[b, keys, h], k_smem.at[wg], bar)
            plgpu.copy_gmem_to_smem(v_ref.at[b, keys, h], v_smem.at[wg], bar)
            if m.has_bias:
                plgpu.copy_gmem_to_smem(bias_ref.at[b, keys], bias_smem.at[wg], bar)
            plgpu.barrier_wait(bar)
            bias = _rows(ops.vector(bias_smem.at[wg], 1), (bk, bq)) if m.has_bias else None
            k_pos = ops.iota((bk, bq), 0) + k_start
            # Query blocks from first_full on see every key of this warpgroup's block.
            first_full = jnp.maximum(first, jnp.minimum(lax.div(k_start + bk - 1 + bq - 1, bq), num_q))
            plgpu.barrier_wait(q_bar.at[0])

            def step(i, carry, causal):
                dk_acc, dv_acc = carry
                slot = lax.rem(i - first, steps)
                st, dpt = ops.products(
                    [(k_smem.at[wg], q_smem.at[slot], True), (v_smem.at[wg], do_smem.at[slot], True)], (bk, bq)
                )
                q_pos = ops.iota((bk, bq), 1) + i * bq
                lse2 = _cols(ops.vector(lse_smem.at[slot], 0) * LOG2E, (bk, bq))
                pt = _recomputed_probs(_log2_scores(m, st, q_pos=q_pos, k_pos=k_pos, bias=bias, causal=causal), lse2)
                keep = _keep(m, _cols(ops.vector(hash_smem.at[slot], 0), (bk, bq)), k_pos) if m.has_dropout else None
                dpt = _dropped(m, keep, dpt)
                dst = pt * (dpt - _cols(ops.vector(delta_smem.at[slot], 0), (bk, bq)))

                def wait_next():
                    nxt = i + 1

                    @pl.when(nxt < num_q)
                    def _():
                        plgpu.barrier_wait(q_bar.at[lax.rem(nxt - first, steps)])

                dv_acc, dk_acc = ops.accumulate(
                    [
                        (dv_acc, _dropped(m, keep, pt).astype(dtype), do_smem.at[slot], False),
                        (dk_acc, dst.astype(dtype), q_smem.at[slot], False),
                    ],
                    after_issue=wait_next,
                )
                plgpu.barrier_arrive(q_used.at[slot])
                return dk_acc, dv_acc

            zeros = ops.tile(jnp.zeros((bk, head_dim), jnp.float32))
            carry = lax.fori_loop(first, first_full, functools.partial(step, causal=True), (zeros, zeros))
            dk_acc, dv_acc = lax.fori_loop(first_full, num_q, functools.partial(step, causal=False), carry)
            k_smem.at[wg][...] = (dk_acc * m.scale).astype(dtype)
            v_smem.at[wg][...] = dv_acc.astype(dtype)
            plgpu.commit_smem()
            plgpu.copy_smem_to_gmem(k_smem.at[wg], dk_ref.at[b, keys, h], commit_group=False)
            plgpu.copy_smem_to_gmem(v_smem.at[wg], dv_ref.at[b, keys, h], commit_group=False)
            plgpu.commit_smem_to_gmem_group()
            plgpu.wait_smem_to_gmem(0)

        @pl.when(wg == wgs)
        def _producer():
            plgpu.set_max_registers(PRODUCER_REGISTERS, action="decrease")

            def load(i):
                slot = lax.rem(i - first, steps)
                rows = pl.ds(i * bq, bq)
                bar = q_bar.at[slot]
                plgpu.copy_gmem_to_smem(q_ref.at[b, rows, h], q_smem.at[slot], bar)
                plgpu.copy_gmem_to_smem(do_ref.at[b, rows, h], do_smem.at[slot], bar)
                plgpu.copy_gmem_to_smem(lse_ref.at[b, h, rows], lse_smem.at[slot], bar)
                plgpu.copy_gmem_to_smem(delta_ref.at[b, h, rows], delta_smem.at[slot], bar)
                if m.has_dropout:
                    plgpu.copy_gmem_to_smem(hash_ref.at[b, h, rows], hash_smem.at[slot], bar)

            _produce(load, q_used, first, num_q, steps)

    smem = (
        _smem_tile((wgs, bk, head_dim), dtype),
        _smem_tile((wgs, bk, head_dim), dtype),
        plgpu.SMEM((wgs, bk), jnp.float32) if m.has_bias else None,
        _smem_tile((steps, bq, head_dim), dtype),
        _smem_tile((steps, bq, head_dim), dtype),
        plgpu.SMEM((steps, bq), jnp.float32),
        plgpu.SMEM((steps, bq), jnp.float32),
        plgpu.SMEM((steps, bq), jnp.uint32) if m.has_dropout else None,
    )
    barriers = (
        plgpu.Barrier(num_arrivals=3 if m.has_bias else 2, num_barriers=wgs),
        plgpu.Barrier(num_arrivals=5 if m.has_dropout else 4, num_barriers=steps),
        plgpu.Barrier(num_arrivals=wgs, num_barriers=steps),
    )
    out = kernel_output(k.shape, dtype, k)
    _check_smem("dK/dV", blocks, q, smem, barriers, reduces=False)
    launch = _launch(kernel, (out, out), smem, barriers, (heads, seq // (wgs * bk), batch), "kv_seq", wgs, interpret)
    return launch(q, k, v, bias2, row_hash, lse, delta, do)


def _key_producer(refs, smem, ready, used, b, h, bk: int, stop, steps: int):
    """The producer warpgroup of the forward and dQ kernels: key blocks 0..stop-1 of (b, h), each
    its k, v and (when `refs` holds one) padding-bias tiles into one slot of the ring, signalling
    `ready` and reusing a slot once `used` says its consumers are done with it."""
    plgpu.set_max_registers(PRODUCER_REGISTERS, action="decrease")
    k_ref, v_ref, bias_ref = refs
    k_smem, v_smem, bias_smem = smem

    def load(j):
        slot = lax.rem(j, steps)
        keys = pl.ds(j * bk, bk)
        plgpu.copy_gmem_to_smem(k_ref.at[b, keys, h], k_smem.at[slot], ready.at[slot])
        plgpu.copy_gmem_to_smem(v_ref.at[b, keys, h], v_smem.at[slot], ready.at[slot])
        if bias_ref is not None:
            plgpu.copy_gmem_to_smem(bias_ref.at[b, keys], bias_smem.at[slot], ready.at[slot])

    _produce(load, used, 0, stop, steps)


def _produce(load, used, start, stop, steps):
    """The producer's loop: fill slots for steps start..stop-1, each slot again once its last
    fill is used, then wait for the last fills to be used (every phase observed)."""

    @pl.loop(start, jnp.minimum(stop, start + steps))
    def _(j):
        load(j)

    @pl.loop(start + steps, stop)
    def _(j):
        plgpu.barrier_wait(used.at[lax.rem(j - start, steps)])
        load(j)

    @pl.loop(jnp.maximum(stop - steps, start), stop)
    def _(j):
        plgpu.barrier_wait(used.at[lax.rem(j - start, steps)])


def backward(m: TileMath, blocks: MosaicBlockSizes, q, k, v, bias2, row_hash, lse, delta, do, *, interpret=False):
    """(dq, dk, dv) [B, T, H, K] in q's dtype; lse and delta [B, H, T] float32 (lse natural log)."""
    dq = _dq(m, blocks, q, k, v, bias2, row_hash, lse, delta, do, interpret)
    if interpret:
        # The interpreter's simulated GPU runs one kernel at a time; XLA would start the two
        # independent kernels together (and the interpreter would then hang). Order them.
        dq, do = lax.optimization_barrier((dq, do))
    dk, dv = _dkv(m, blocks, q, k, v, bias2, row_hash, lse, delta, do, interpret)
    return dq, dk, dv
