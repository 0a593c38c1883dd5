"""`flash_attention`: GPT-1's attention as one differentiable function with a Pallas kernel per platform.

The backend is chosen when the function is lowered, not when it is traced
(`jax.lax.platform_dependent`), so one jitted function lowers to the Triton kernels for CUDA, the
Mosaic kernels for TPU, and, for the CPU, either the same Triton kernels run by Pallas'
interpreter (`cpu="interpret"`, for tests) or plain XLA (`cpu="xla"`, what `attention_impl="auto"`
uses), whichever platform it is lowered for (one at a time: Pallas refuses a multi-platform
export that holds both kernel families). A `custom_vjp` keeps only q, k, v, the output and the per-row log-sum-exp; the backward
kernels recompute the probabilities tile by tile, and the dropout mask from its hash.

    out = flash_attention(q, k, v, attention_mask=m, head_mask=hm, dropout_rate=0.1, dropout_seed=s)

Semantics are those of `gpt_flax.attention.xla_attention` with T == S and no `q_offset` (the
dispatcher in `attention.py` falls back to XLA otherwise).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental.custom_partitioning import custom_partitioning
from jax.sharding import NamedSharding, PartitionSpec

from gpt_flax.attention import CAUSAL_MASK_VALUE, attended_keys, causal_mask, dropout_keep, dropout_row_hash
from gpt_flax.kernels import flash_gpu, flash_mgpu, flash_tpu
from gpt_flax.kernels.common import TileMath, vary_like

MAX_HEAD_DIM = 256
CPU_MODES = ("interpret", "interpret_tpu", "interpret_mosaic", "xla")
GPU_KERNELS = ("auto", "triton", "mosaic")


@dataclasses.dataclass(frozen=True)
class _Plan:
    """Everything static about one call: tile math, CPU mode, block sizes per lowering."""

    math: TileMath
    cpu: str = "interpret"
    gpu_blocks: flash_gpu.GPUBlockSizes | None = None
    tpu_blocks: flash_tpu.TPUBlockSizes | None = None
    gpu_kernel: str = "triton"  # "triton" or "mosaic" (resolved from "auto" by flash_attention)
    mosaic_blocks: flash_mgpu.MosaicBlockSizes | None = None


def _round_up(x: int, m: int) -> int:
    return -(-x // m) * m


def _pad_axis(x, axis: int, size: int):
    if x.shape[axis] == size:
        return x
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, size - x.shape[axis])
    return jnp.pad(x, widths)


# -- the GPU lowering: [B, T, H, K] kept, T padded to the blocks, K to a power of two ----------
def _gpu_shapes(plan: _Plan, seq: int, head_dim: int):
    blocks = (plan.gpu_blocks or flash_gpu.default_block_sizes(head_dim)).fit(seq)
    return blocks, _round_up(seq, blocks.multiple), max(16, 1 << (head_dim - 1).bit_length())


def _gpu_forward(plan, q, k, v, bias, row_hash, hm, *, interpret=False):
    if plan.gpu_kernel == "mosaic":
        return _mosaic_forward(plan, q, k, v, bias, row_hash, hm, interpret=interpret)
    seq, head_dim = q.shape[1], q.shape[3]
    blocks, tp, kp = _gpu_shapes(plan, seq, head_dim)
    q, k, v = (_pad_axis(_pad_axis(x, 1, tp), 3, kp) for x in (q, k, v))
    out, lse = flash_gpu.forward(
        plan.math, blocks, q, k, v, _pad_axis(bias, 1, tp), _pad_axis(row_hash, 2, tp), hm, interpret=interpret
    )
    return out[:, :seq, :, :head_dim], lse[:, :, :seq]


def _gpu_backward(plan, q, k, v, bias, row_hash, hm, lse, delta, do, *, interpret=False):
    if plan.gpu_kernel == "mosaic":
        return _mosaic_backward(plan, q, k, v, bias, row_hash, hm, lse, delta, do, interpret=interpret)
    seq, head_dim = q.shape[1], q.shape[3]
    blocks, tp, kp = _gpu_shapes(plan, seq, head_dim)
    q, k, v, do = (_pad_axis(_pad_axis(x, 1, tp), 3, kp) for x in (q, k, v, do))
    bias, row_hash, lse, delta = (
        _pad_axis(bias, 1, tp),
        _pad_axis(row_hash, 2, tp),
        _pad_axis(lse, 2, tp),
        _pad_axis(delta, 2, tp),
    )
    dq, dk, dv, dhm_rows = flash_gpu.backward(
        plan.math, blocks, q, k, v, bias, row_hash, hm, lse, delta, do, interpret=interpret
    )
    unpad = (slice(None), slice(0, seq), slice(None), slice(0, head_dim))
    return dq[unpad], dk[unpad], dv[unpad], jnp.sum(dhm_rows[:, :, :seq], axis=2)


# -- the Hopper lowering (Mosaic GPU): [B, T, H, K] kept, T padded, head_mask folded into v -------
def _mosaic_inputs(plan, q, k, v, bias, row_hash, hm):
    blocks = plan.mosaic_blocks or flash_mgpu.MosaicBlockSizes()
    tp = _round_up(q.shape[1], blocks.multiple)
    if plan.math.has_head_mask:  # P (hm V) = hm (P V): one scale per head, so the kernels need not know
        v = v * hm[None, None, :, None].astype(v.dtype)
    # The kernels' softmax runs on exp2: the bias in base-2 units, clamped first so that padding's
    # finfo.min stays finite. Not scaled then clamped: XLA's simplifier folds (x * finfo.min) * log2(e)
    # into x * -inf, NaN for every unpadded key (0 * -inf), whenever the mask is traced, not constant.
    bias2 = jnp.maximum(bias, jnp.finfo(jnp.float32).min / flash_mgpu.LOG2E) * flash_mgpu.LOG2E
    q, k, v = (_pad_axis(x, 1, tp) for x in (q, k, v))
    return blocks, tp, q, k, v, _pad_axis(bias2, 1, tp), _pad_axis(row_hash, 2, tp)


def _mosaic_forward(plan, q, k, v, bias, row_hash, hm, *, interpret=False):
    seq = q.shape[1]
    blocks, _, q, k, v, bias2, row_hash = _mosaic_inputs(plan, q, k, v, bias, row_hash, hm)
    out, lse = flash_mgpu.forward(plan.math, blocks, q, k, v, bias2, row_hash, interpret=interpret)
    return out[:, :seq], lse[:, :, :seq]


def _mosaic_backward(plan, q, k, v, bias, row_hash, hm, lse, delta, do, *, interpret=False):
    seq = q.shape[1]
    blocks, tp, qp, kp, vp, bias2, row_hash = _mosaic_inputs(plan, q, k, v, bias, row_hash, hm)
    lse, delta = (_pad_axis(x, 2, tp) for x in (lse, delta))
    dq, dk, dv_scaled = flash_mgpu.backward(
        plan.math, blocks, qp, kp, vp, bias2, row_hash, lse, delta, _pad_axis(do, 1, tp), interpret=interpret
    )
    dq, dk, dv_scaled = (x[:, :seq] for x in (dq, dk, dv_scaled))
    if not plan.math.has_head_mask:
        return dq, dk, dv_scaled, jnp.zeros((q.shape[0], hm.shape[0]), jnp.float32)
    dv = (dv_scaled.astype(jnp.float32) * hm[None, None, :, None]).astype(v.dtype)
    dhm = jnp.einsum("bthk,bthk->bh", dv_scaled.astype(jnp.float32), v.astype(jnp.float32))
    return dq, dk, dv, dhm


def _resolve_gpu_kernel(choice: str, dtype, head_dim: int) -> str:
    """The CUDA kernels to lower: "mosaic" (Hopper, bfloat16/float16, K 64 or 128) or "triton"."""
    if choice == "triton":
        return "triton"
    supported = flash_mgpu.supports(dtype, head_dim)
    if choice == "mosaic":
        if not supported:
            raise ValueError(
                f"gpu_kernel='mosaic' takes bfloat16 or float16 with head_dim in {flash_mgpu.HEAD_DIMS}; "
                f"got {jnp.dtype(dtype).name} and {head_dim=} (use 'triton' or 'auto')"
            )
        return "mosaic"
    return "mosaic" if supported and _local_gpus_are_hopper() else "triton"


def _local_gpus_are_hopper() -> bool:
    """Whether this process's CUDA devices are all sm_90 (H100/H200). "auto" keeps Triton otherwise,
    and when there is no CUDA device (an export from the CPU: Triton lowers for any recent GPU).
    Both kernel families lower for "cuda", so `platform_dependent` cannot tell them apart; this is
    decided when tracing, from this host: to export from a Hopper host for other GPUs, pass
    gpu_kernel="triton"."""
    try:
        devices = jax.devices("cuda")
    except RuntimeError:
        return False
    return bool(devices) and all(getattr(d, "compute_capability", "") == "9.0" for d in devices)


# -- the TPU lowering: [B, H, T, K], T padded to 128-multiples, K to 64 or a 128-multiple ------
def _tpu_shapes(plan: _Plan, seq: int, head_dim: int):
    blocks = (plan.tpu_blocks or flash_tpu.TPUBlockSizes()).fit(seq)
    kp = head_dim if head_dim == 64 or head_dim % flash_tpu.LANES == 0 else _round_up(head_dim, flash_tpu.LANES)
    return blocks, _round_up(seq, blocks.multiple), kp


def _to_bhtk(x, tp, kp):
    return _pad_axis(_pad_axis(jnp.transpose(x, (0, 2, 1, 3)), 2, tp), 3, kp)  # [B, H, Tp, Kp]


def _tpu_forward(plan, q, k, v, bias, row_hash, hm, *, interpret=False):
    seq, head_dim = q.shape[1], q.shape[3]
    blocks, tp, kp = _tpu_shapes(plan, seq, head_dim)
    q, k, v = (_to_bhtk(x, tp, kp) for x in (q, k, v))
    bias = _pad_axis(bias, 1, tp)[:, None, :]  # [B, 1, Tp]
    row_hash = _pad_axis(row_hash, 2, tp)[..., None]  # [B, H, Tp, 1]
    out, lse = flash_tpu.forward(plan.math, blocks, q, k, v, bias, row_hash, hm, interpret=interpret)
    return jnp.transpose(out[:, :, :seq, :head_dim], (0, 2, 1, 3)), lse[:, :, :seq, 0]


def _tpu_backward(plan, q, k, v, bias, row_hash, hm, lse, delta, do, *, interpret=False):
    seq, head_dim = q.shape[1], q.shape[3]
    blocks, tp, kp = _tpu_shapes(plan, seq, head_dim)
    q, k, v, do = (_to_bhtk(x, tp, kp) for x in (q, k, v, do))
    bias = _pad_axis(bias, 1, tp)[:, None, :]
    row_hash, lse, delta = (_pad_axis(x, 2, tp)[..., None] for x in (row_hash, lse, delta))
    dq, dk, dv, dhm_rows = flash_tpu.backward(
        plan.math, blocks, q, k, v, bias, row_hash, hm, lse, delta, do, interpret=interpret
    )

    def back(x):
        return jnp.transpose(x[:, :, :seq, :head_dim], (0, 2, 1, 3))

    return back(dq), back(dk), back(dv), jnp.sum(dhm_rows[:, :, :seq, 0], axis=2)


# -- the XLA lowering (CPU for attention_impl="auto", and any platform without a kernel) -------
def _xla_output(plan, q, k, v, bias, row_hash, hm):
    """xla_attention's arithmetic, op for op, on the prepared inputs; also returns the scores."""
    m = plan.math
    seq = q.shape[1]
    scores = jnp.einsum("bthk,bshk->bhts", q, k).astype(jnp.float32) / math.sqrt(m.head_dim)
    scores = jnp.where(causal_mask(seq, seq), scores, CAUSAL_MASK_VALUE)  # [B, H, T, S]
    if m.has_bias:
        scores = scores + bias[:, None, None, :]
    probs = jax.nn.softmax(scores, axis=-1)
    if m.has_dropout:
        keep = dropout_keep(row_hash[..., None], jnp.arange(seq, dtype=jnp.uint32), m.dropout_rate)
        probs = jnp.where(keep, probs / (1.0 - m.dropout_rate), 0.0)
    if m.has_head_mask:  # hm [H], or [B, H] (the backward's, for d head_mask per batch row)
        probs = probs * hm[..., :, None, None]
    return jnp.einsum("bhts,bshk->bthk", probs.astype(v.dtype), v), scores


def _xla_forward(plan, q, k, v, bias, row_hash, hm):
    out, scores = _xla_output(plan, q, k, v, bias, row_hash, hm)
    return out, jax.nn.logsumexp(scores, axis=-1)


def _xla_backward(plan, q, k, v, bias, row_hash, hm, lse, delta, do):
    del lse, delta
    hm_rows = jnp.broadcast_to(hm, (q.shape[0], hm.shape[0]))
    _, vjp = jax.vjp(lambda q, k, v, hm: _xla_output(plan, q, k, v, bias, row_hash, hm)[0], q, k, v, hm_rows)
    return vjp(do)


# -- dispatch at lowering time ------------------------------------------------------------------
# cpu="interpret_mosaic" is the one mode without `platform_dependent`: Mosaic GPU's interpreter
# runs on ordered io_callbacks, an effect that a `platform_dependent` branch may not carry (its
# lowering then fails for every platform), so that mode lowers the interpreted kernels alone and
# is for the CPU only (tests).
def _cpu(plan, gpu_fn, tpu_fn):
    if plan.cpu == "interpret":  # the Triton kernels, whichever kernels CUDA gets
        return functools.partial(gpu_fn, dataclasses.replace(plan, gpu_kernel="triton"), interpret=True)
    if plan.cpu == "interpret_tpu":
        return functools.partial(tpu_fn, plan, interpret=True)
    return None


def _forward_here(plan, *args):
    """(out [B, T, H, K], lse [B, H, T] float32) from the kernel of the platform being lowered for."""
    if plan.cpu == "interpret_mosaic":  # see the note above
        return _mosaic_forward(plan, *args, interpret=True)
    xla = functools.partial(_xla_forward, plan)
    return lax.platform_dependent(
        *args,
        cpu=_cpu(plan, _gpu_forward, _tpu_forward) or xla,
        cuda=functools.partial(_gpu_forward, plan),
        tpu=functools.partial(_tpu_forward, plan),
        default=xla,
    )


def _backward_here(plan, *args):
    """(dq, dk, dv, d head_mask per batch row [B, H]) from the kernel of the platform being lowered for."""
    if plan.cpu == "interpret_mosaic":
        return _mosaic_backward(plan, *args, interpret=True)
    xla = functools.partial(_xla_backward, plan)
    return lax.platform_dependent(
        *args,
        cpu=_cpu(plan, _gpu_backward, _tpu_backward) or xla,
        cuda=functools.partial(_gpu_backward, plan),
        tpu=functools.partial(_tpu_backward, plan),
        default=xla,
    )


# -- under jit with inputs sharded over devices ------------------------------------------------
# To XLA's partitioner a kernel is one opaque call: it would gather B and H onto every device and
# run the whole batch on each. Every output of the kernels belongs to one (batch row, head) (the
# dropout row hashes come in computed from global indices, d head_mask comes out per batch row),
# so `custom_partitioning` lets each device run them on its own slice of B and H; T and K are
# gathered whole. The rules name the operands' axes in `_forward_here` / `_backward_here` order.
FORWARD_RULE = "b t h k, b t h k, b t h k, b t, b h t, h -> b t h k, b h t"
BACKWARD_RULE = "b t h k, b t h k, b t h k, b t, b h t, h, b h t, b h t, b t h k -> b t h k, b t h k, b t h k, b h"


def _per_batch_and_head(fn, rule: str):
    operands, results = ([tuple(a.split()) for a in side.split(",")] for side in rule.split("->"))

    def shardings(arg_shapes, axes_lists):
        q = arg_shapes[0].sharding  # q's batch and head axes (mesh axis names, tuples of them, or None)
        if not isinstance(q, NamedSharding):
            raise TypeError(f"flash_attention under jit takes inputs with a NamedSharding; got {q}")
        spec = tuple(q.spec) + (None,) * (4 - len(q.spec))
        split = {"b": spec[0], "h": spec[2]}
        return tuple(NamedSharding(q.mesh, PartitionSpec(*(split.get(a) for a in axes))) for axes in axes_lists)

    def infer(plan, mesh, arg_shapes, result_shape):
        return shardings(arg_shapes, results)

    def partition(plan, mesh, arg_shapes, result_shape):
        local = functools.partial(fn, plan)
        return arg_shapes[0].sharding.mesh, local, shardings(arg_shapes, results), shardings(arg_shapes, operands)

    partitioned = custom_partitioning(fn, static_argnums=(0,))
    partitioned.def_partition(
        partition, infer_sharding_from_operands=infer, sharding_rule=rule, need_replication_factors=("t", "k")
    )

    def call(plan, *args):
        # One device: nothing to partition. Mosaic GPU's interpreter carries effects it refuses.
        # Inside jax.shard_map the caller has split the inputs already (on axes left automatic,
        # the kernels are gathered as any opaque call is).
        if jax.device_count() == 1 or plan.cpu == "interpret_mosaic" or _inside_shard_map():
            return fn(plan, *args)
        # `custom_partitioning` has no vmap rule: under vmap (per-example gradients, ...) the kernels
        # run batched as they are, unpartitioned, as on one device.
        local = jax.custom_batching.custom_vmap(functools.partial(partitioned, plan))

        @local.def_vmap
        def _batched(axis_size, in_batched, *batched_args):
            in_axes = [0 if b else None for b in in_batched]
            out = jax.vmap(functools.partial(fn, plan), in_axes=in_axes)(*batched_args)
            return out, jax.tree_util.tree_map(lambda _: True, out)

        return local(*args)

    return call


def _inside_shard_map() -> bool:
    mesh = jax.sharding.get_abstract_mesh()
    return bool(getattr(mesh, "manual_axes", ()))


_forward = _per_batch_and_head(_forward_here, FORWARD_RULE)
_backward = _per_batch_and_head(_backward_here, BACKWARD_RULE)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _flash(plan, q, k, v, bias, row_hash, hm):
    return _forward(plan, q, k, v, bias, row_hash, hm)[0]


def _flash_fwd(plan, q, k, v, bias, row_hash, hm):
    out, lse = _forward(plan, q, k, v, bias, row_hash, hm)
    return out, (q, k, v, bias, row_hash, hm, out, lse)


def _flash_bwd(plan, residuals, do):
    q, k, v, bias, row_hash, hm, out, lse = residuals
    # delta_i = sum_k dO_ik O_ik = sum_j dP_ij P_ij (FlashAttention-2 section 3.1.2), also with
    # dropout and head_mask folded into O.
    delta = jnp.einsum("bthk,bthk->bht", do.astype(jnp.float32), out.astype(jnp.float32))
    dq, dk, dv, dhm = _backward(plan, q, k, v, bias, row_hash, hm, lse, delta, do.astype(q.dtype))
    return dq, dk, dv, None, None, jnp.sum(dhm, axis=0).astype(hm.dtype)


_flash.defvjp(_flash_fwd, _flash_bwd)


def flash_attention(
    q,
    k,
    v,
    *,
    attention_mask=None,
    head_mask=None,
    dropout_rate: float = 0.0,
    dropout_seed=None,
    cpu: str = "interpret",
    gpu_blocks: flash_gpu.GPUBlockSizes | None = None,
    tpu_blocks: flash_tpu.TPUBlockSizes | None = None,
    gpu_kernel: str = "auto",
    mosaic_blocks: flash_mgpu.MosaicBlockSizes | None = None,
):
    """Causal flash attention. q, k, v [B, T, H, K] -> out [B, T, H, K] in q's dtype.

    attention_mask [B, T] (1 keep, 0 pad; any dtype), head_mask [H], dropout_seed a uint32
    scalar (dropout is off when it is None or dropout_rate is 0). `cpu` picks what runs when
    lowered for the CPU: "interpret" (the Triton kernels in Pallas' interpreter), "interpret_tpu"
    (the TPU Mosaic kernels, likewise), "interpret_mosaic" (the Hopper kernels in Mosaic GPU's
    interpreter, whatever the platform: for tests on the CPU, called eagerly, since under
    `jax.jit` JAX 0.10's interpreter was seen to hang on batches of two) or "xla". `gpu_kernel` picks what is lowered for CUDA: "triton", "mosaic" (the
    Hopper kernels: bfloat16/float16, head_dim 64 or 128) or "auto" (see `_resolve_gpu_kernel`).
    Block sizes default per platform and head size. Under `jax.jit` with inputs sharded over
    several devices, each device runs the kernels on its share of B and H (T and K gathered whole);
    such a program cannot be exported with `jax.export`, the same program inside `jax.shard_map` can.
    """
    if q.ndim != 4:
        raise ValueError(f"flash_attention takes q, k, v of shape [B, T, H, K]; got {q.shape=}")
    batch, seq, heads, head_dim = q.shape
    if k.shape != q.shape or v.shape != q.shape:
        raise ValueError(
            f"flash_attention needs q, k, v of one shape [B, T, H, K]; got {q.shape=}, {k.shape=}, {v.shape=}"
        )
    if k.dtype != q.dtype or v.dtype != q.dtype:
        raise ValueError(f"flash_attention needs q, k, v of one dtype; got {q.dtype=}, {k.dtype=}, {v.dtype=}")
    if attention_mask is not None and tuple(attention_mask.shape) != (batch, seq):
        raise ValueError(f"attention_mask must be [B, T] = {(batch, seq)}; got shape {tuple(attention_mask.shape)}")
    if head_mask is not None and tuple(jnp.shape(head_mask)) != (heads,):
        raise ValueError(f"head_mask must be [H] = ({heads},); got shape {tuple(jnp.shape(head_mask))}")
    if not 0.0 <= dropout_rate < 1.0:
        raise ValueError(f"dropout_rate must be in [0, 1); got {dropout_rate!r}")
    if head_dim > MAX_HEAD_DIM:
        raise ValueError(f"flash_attention supports head_dim up to {MAX_HEAD_DIM}; got {head_dim=}")
    if cpu not in CPU_MODES:
        raise ValueError(f"unknown {cpu=}; expected one of {CPU_MODES}")
    if gpu_kernel not in GPU_KERNELS:
        raise ValueError(f"unknown {gpu_kernel=}; expected one of {GPU_KERNELS}")
    if q.dtype not in (jnp.float32, jnp.bfloat16, jnp.float16):
        raise ValueError(f"flash_attention supports float32, bfloat16 and float16; got {q.dtype=}")
    has_dropout = dropout_rate > 0.0 and dropout_seed is not None
    if attention_mask is not None:
        bias = (1.0 - attention_mask.astype(jnp.float32)) * jnp.finfo(jnp.float32).min  # [B, S]
    else:
        bias = jnp.zeros((batch, seq), jnp.float32)
    if has_dropout:
        bh = jnp.arange(batch * heads, dtype=jnp.uint32).reshape(batch, heads, 1)
        row_hash = dropout_row_hash(jnp.asarray(dropout_seed), bh, jnp.arange(seq, dtype=jnp.uint32))  # [B, H, T]
    else:
        row_hash = jnp.zeros((batch, heads, seq), jnp.uint32)
    hm = jnp.ones((heads,), jnp.float32) if head_mask is None else jnp.asarray(head_mask).astype(jnp.float32)
    hm = vary_like(hm, q)
    math_ = TileMath(
        head_dim=head_dim,
        dropout_rate=float(dropout_rate) if has_dropout else 0.0,
        has_bias=attention_mask is not None,
        has_head_mask=head_mask is not None,
        precision=lax.Precision.HIGHEST if q.dtype == jnp.float32 else None,
    )
    if cpu == "interpret_mosaic":
        if gpu_kernel == "triton":
            raise ValueError("cpu='interpret_mosaic' runs the Mosaic GPU kernels; it cannot take gpu_kernel='triton'")
        _resolve_gpu_kernel("mosaic", q.dtype, head_dim)  # the same refusal as on a GPU
    plan = _Plan(math_, cpu, gpu_blocks, tpu_blocks, _resolve_gpu_kernel(gpu_kernel, q.dtype, head_dim), mosaic_blocks)
    out = _flash(plan, q, k, v, bias, row_hash, hm)
    if attention_mask is None:
        return out
    return _unseeing_rows(out, v, attention_mask, row_hash, hm, math_)


# Key chunk of the dropout case below: its [B, H, T, chunk] keep mask is what it holds at once.
UNSEEING_CHUNK = 64


def _unseeing_rows(out, v, attention_mask, row_hash, hm, math_: TileMath):
    """transformers' result on the query rows that see no unpadded key, written over the kernel's.

    Query i of row b sees no unpadded key when i < f, f = the row's first unpadded position (every
    query, if the row is all padding). Its visible keys then score finfo.min (padding) and its
    future keys -1e4 (the causal fill), so transformers' softmax is uniform over the row's unpadded
    keys, all of them in the future (over all T keys for a row of padding), then dropout and
    head_mask as usual. That only depends on v, so it is computed here in XLA (its gradient
    flows to v alone) rather than in the causal kernels, which never visit future keys. Only
    left-padded rows have such queries; other batches skip this (a `lax.cond`).
    """
    batch, seq, heads, _ = v.shape
    real = attended_keys(attention_mask)  # [B, S]
    any_real = jnp.any(real, axis=1)
    first = jnp.where(any_real, jnp.argmax(real, axis=1), seq)  # [B]
    # A row with no unpadded key: every bias (1 - m) * finfo.min is so large that the scores are lost
    # beside it, so the keys of its largest bias tie (all keys when all m are 0, or round 1 - m to 1)
    # and every query's softmax is uniform over them.
    bias = (1.0 - attention_mask.astype(jnp.float32)) * jnp.finfo(jnp.float32).min
    largest = bias == jnp.max(bias, axis=1, keepdims=True)
    keys = jnp.where(any_real[:, None], real, largest).astype(jnp.float32)
    weight = keys / jnp.sum(keys, axis=1, keepdims=True)  # [B, S]: the uniform probabilities
    unseeing = jnp.arange(seq)[None, :] < first[:, None]  # [B, T]

    def uniform(v):
        vf = v.astype(jnp.float32)
        if not math_.has_dropout:
            mean = jnp.einsum("bs,bshk->bhk", weight, vf)
            res = jnp.broadcast_to(mean[:, None], (batch, seq, heads, vf.shape[-1]))
        else:  # keep_ij differs per query: sum over key chunks, the keep mask recomputed in the backward
            pad = -seq % UNSEEING_CHUNK
            w = jnp.pad(weight, ((0, 0), (0, pad))).reshape(batch, -1, UNSEEING_CHUNK).transpose(1, 0, 2)
            vc = jnp.pad(vf, ((0, 0), (0, pad), (0, 0), (0, 0)))
            vc = vc.reshape(batch, -1, UNSEEING_CHUNK, heads, vf.shape[-1]).transpose(1, 0, 2, 3, 4)

            @jax.checkpoint
            def chunk(acc, xs):
                i, w_c, v_c = xs
                k_pos = (i * UNSEEING_CHUNK + jnp.arange(UNSEEING_CHUNK)).astype(jnp.uint32)
                keep = dropout_keep(row_hash[..., None], k_pos, math_.dropout_rate)  # [B, H, T, c]
                probs = jnp.where(keep, w_c[:, None, None, :] * math_.keep_scale, 0.0)
                return acc + jnp.einsum("bhtc,bchk->bthk", probs, v_c), None

            n = vc.shape[0]
            res, _ = lax.scan(chunk, jnp.zeros(vf.shape, jnp.float32), (jnp.arange(n), w, vc))
        if math_.has_head_mask:
            res = res * hm[None, None, :, None]
        return res.astype(out.dtype)

    # Without such rows `fixed` is `out` itself (not zeros: under shard_map it must vary as out does).
    fixed = lax.cond(jnp.any(unseeing), lambda v, out: uniform(v), lambda v, out: out, v, out)
    return jnp.where(unseeing[:, :, None, None], fixed, out)
