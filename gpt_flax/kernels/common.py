"""Tile-level pieces shared by the GPU (Triton) and TPU (Mosaic) flash-attention kernels.

Everything here works on one [bq, bk] tile of scores inside a kernel body: the masked scores
(transformers' -1e4 causal fill plus the additive padding bias) and the dropout keep mask, drawn
from the same counter-based hash that `gpt_flax.attention.xla_attention` uses, so a kernel's
forward and backward passes and the XLA reference drop exactly the same entries.

Positions come from 2-D `broadcasted_iota`, which both Triton and Mosaic lower (Mosaic has no
1-D vectors).
"""

from __future__ import annotations

import dataclasses
import inspect
import math

import jax
import jax.numpy as jnp
from jax import lax

from gpt_flax.attention import CAUSAL_MASK_VALUE, dropout_keep

# lax.dot_general dimension numbers: [m, k] x [n, k] -> [m, n] (contract both minor axes).
NT_DIMS = (((1,), (1,)), ((), ()))
# [k, m] x [k, n] -> [m, n] (contract both major axes): dV = P^T dO, dK = dS^T Q.
TN_DIMS = (((0,), (0,)), ((), ()))


def check_tiles(blocks, smallest: int) -> None:
    """Every `block*` field of a block-size dataclass a power of two >= `smallest`: the kernels pad T
    to the largest tile, so every other must divide it."""
    for f in dataclasses.fields(blocks):
        value = getattr(blocks, f.name)
        if f.name.startswith("block") and (not isinstance(value, int) or value < smallest or value & (value - 1)):
            raise ValueError(f"{type(blocks).__name__}.{f.name} must be a power of two >= {smallest}; got {value!r}")


@dataclasses.dataclass(frozen=True)
class TileMath:
    """Static description of what a kernel applies to each score tile.

    head_dim is the real (unpadded) K: the softmax scale is 1/sqrt(head_dim) whatever the kernel
    pads K to. `has_bias` adds the [S] padding bias; `dropout_rate` > 0 applies the hash mask;
    `has_head_mask` scales by head_mask[h] (and makes the dq kernel emit d head_mask rows).
    """

    head_dim: int
    dropout_rate: float = 0.0
    has_bias: bool = False
    has_head_mask: bool = False
    # Of every product in the kernels: HIGHEST for float32 inputs, which Triton would otherwise run
    # in TF32 (10-bit mantissa, ~1e-3 off); None (the default) for bfloat16 and float16.
    precision: lax.Precision | None = None

    @property
    def scale(self) -> float:
        return 1.0 / math.sqrt(self.head_dim)

    @property
    def has_dropout(self) -> bool:
        return self.dropout_rate > 0.0

    @property
    def keep_scale(self) -> float:
        """Inverted-dropout factor 1 / (1 - rate), applied to the kept probabilities."""
        return 1.0 / (1.0 - self.dropout_rate)


def kernel_output(shape, dtype, like):
    """A kernel output's ShapeDtypeStruct. Inside `jax.shard_map` (checking which mesh axes values
    vary over) it must vary as the inputs do: `like`'s manual axes (`vma` in newer JAX)."""
    aval = jax.typeof(like)
    for name in ("manual_axis_type", "vma"):
        if name in _STRUCT_FIELDS and getattr(aval, name, None) is not None:
            return jax.ShapeDtypeStruct(shape, dtype, **{name: getattr(aval, name)})
    return jax.ShapeDtypeStruct(shape, dtype)


_STRUCT_FIELDS = frozenset(inspect.signature(jax.ShapeDtypeStruct).parameters)


def _varying_axes(x) -> frozenset:
    aval = jax.typeof(x)
    mat = getattr(aval, "manual_axis_type", None)
    if mat is not None:
        return frozenset(mat.varying)
    return frozenset(getattr(aval, "vma", None) or ())


def vary_like(x, like):
    """`x` marked as varying over the `jax.shard_map` axes `like` varies over (a no-op outside one).

    A custom VJP must return cotangents that vary as its inputs do; an input that is the same on
    every shard (head_mask) gets a per-shard kernel gradient, so it is made per-shard first and
    JAX sums its cotangent over the shards when it transposes this."""
    axes = tuple(sorted(_varying_axes(like) - _varying_axes(x)))
    if not axes:
        return x
    if hasattr(lax, "pcast"):
        return lax.pcast(x, axes, to="varying")
    return lax.pvary(x, axes)


def positions(bq: int, bk: int, q_start, k_start):
    """Absolute query [bq, 1]-like and key [1, bk]-like positions of a tile, as [bq, bk] int32."""
    q_pos = lax.broadcasted_iota(jnp.int32, (bq, bk), 0) + q_start
    k_pos = lax.broadcasted_iota(jnp.int32, (bq, bk), 1) + k_start
    return q_pos, k_pos


def tile_scores(math_: TileMath, q, k, *, q_start, k_start, causal: bool, bias=None):
    """Scores of one tile, float32 [bq, bk], masked as `modeling_openai.Attention._attn` does.

    q [bq, K], k [bk, K] in the input dtype, accumulated in float32. `causal` is static: tiles
    entirely at or below the diagonal skip the compare-and-select. `bias` broadcasts as [1, bk].
    """
    s = lax.dot_general(q, k, NT_DIMS, preferred_element_type=jnp.float32, precision=math_.precision) * math_.scale
    if causal:
        q_pos, k_pos = positions(q.shape[0], k.shape[0], q_start, k_start)
        s = jnp.where(k_pos <= q_pos, s, CAUSAL_MASK_VALUE)
    if bias is not None:
        s = s + bias
    return s


def tile_keep(math_: TileMath, row_hash, *, bq: int, bk: int, k_start):
    """Dropout keep mask [bq, bk] for rows with hashes `row_hash` ([bq, 1] uint32) and keys from k_start."""
    k_pos = lax.broadcasted_iota(jnp.int32, (bq, bk), 1) + k_start
    return dropout_keep(row_hash, k_pos.astype(jnp.uint32), math_.dropout_rate)


def causal_kv_blocks(q_start, bq: int, bk: int, num_kv_blocks: int):
    """(n_full, n_visible) key blocks for query rows [q_start, q_start + bq).

    Key blocks [0, n_full) lie wholly at or below the diagonal (no mask needed); blocks
    [n_full, n_visible) straddle it; blocks from n_visible on are never seen (FlashAttention-2
    section 3.1.1, causal block skipping). Traced non-negative int32 scalars: `lax.div` truncates,
    which is floor division here and lowers without the sign fix-up of `//`.
    """
    n_full = jnp.minimum(lax.div(q_start + 1, bk), num_kv_blocks)
    n_visible = jnp.minimum(lax.div(q_start + bq + bk - 1, bk), num_kv_blocks)
    return n_full, n_visible


def causal_q_blocks(k_start, bq: int, bk: int, num_q_blocks: int):
    """(first, first_full) query blocks for key rows [k_start, k_start + bk).

    Query blocks before `first` never see these keys; blocks [first, first_full) straddle the
    diagonal; blocks from `first_full` on see every key of the block.
    """
    first = jnp.minimum(lax.div(k_start, bq), num_q_blocks)
    first_full = jnp.minimum(lax.div(k_start + bk - 1 + bq - 1, bq), num_q_blocks)
    return first, jnp.maximum(first, first_full)
