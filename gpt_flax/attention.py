"""Causal self-attention as one pure function, dispatched by name ("xla", "pallas", "cudnn", "auto").

The model calls `attention(q, k, v, ...)` and never looks inside, so a kernel can be added or
swapped without touching the model. Every implementation computes, per head (transformers
`modeling_openai.Attention._attn`):

    w = q @ k^T / sqrt(K)
    w = w * tril + (-1e4) * (1 - tril)              # GPT's causal mask is -1e4, not -inf
    w = w + (1 - attention_mask) * finfo.min       # key padding mask, [B, S]
    p = dropout(softmax(w)) * head_mask[h]
    out = p @ v

Axes: B batch, T query length, S key length, H heads, K head dim.

Attention dropout draws its keep mask from a counter-based hash of (seed, batch, head, query, key)
rather than from `jax.random`, so a fused kernel can regenerate the same mask in its backward pass
without storing it, and the XLA path and the kernels drop exactly the same entries.

Implementations (`OpenAIGPTConfig.attention_impl`):
    "auto"    (default) the Pallas kernels on CUDA and TPU, XLA on the CPU, picked when lowered
              (in a process without a GPU or TPU, plain "xla": every autodiff mode works)
    "pallas"  `gpt_flax.kernels.flash_attention` everywhere; on the CPU in Pallas' interpreter (slow)
    "cudnn"   `jax.nn.dot_product_attention`'s cuDNN kernel on CUDA for bf16/fp16 without dropout
    "xla"     `xla_attention`, the reference
`output_attentions=True` and KV-cache shapes (T != S, or q_offset given) always run "xla".
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

# transformers' causal fill value (modeling_openai.Attention._attn): `w * b + -1e4 * (1 - b)`.
CAUSAL_MASK_VALUE = -1e4


def attended_keys(attention_mask):
    """[B, S] bool: the keys transformers' additive mask `(1 - m) * finfo.min` leaves visible.

    That is m >= 1 (the bias is 0, or positive): any float32 m below 1 has 1 - m >= 6e-8, a bias of
    at least 6e-8 * finfo.min, about -2e31, so a fractional mask value pads its key as 0 does in any
    row with an unpadded key. (In a row without one, the keys of the largest m win: see
    `kernels.flash._unseeing_rows`.)"""
    return attention_mask.astype(jnp.float32) >= 1.0


_GOLDEN = 0x9E3779B9  # 2^32 / golden ratio, spreads consecutive key indices before mixing


def fmix32(x):
    """MurmurHash3's 32-bit finaliser: a bijection on uint32 with full avalanche."""
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x85EBCA6B)
    x = x ^ (x >> 13)
    x = x * jnp.uint32(0xC2B2AE35)
    return x ^ (x >> 16)


def dropout_row_hash(seed, bh, q):
    """Per-(batch*head, query) hash; uint32 arrays that broadcast. `bh` = b * H + h."""
    return fmix32(fmix32(jnp.asarray(seed).astype(jnp.uint32) ^ bh.astype(jnp.uint32)) ^ q.astype(jnp.uint32))


def dropout_keep(row_hash, k, rate: float):
    """Boolean keep mask for keys `k` given `dropout_row_hash` values; keeps with probability 1 - rate."""
    threshold = jnp.uint32(min(int(rate * 2.0**32), 2**32 - 1))
    return fmix32(row_hash ^ (k.astype(jnp.uint32) * jnp.uint32(_GOLDEN))) >= threshold


def dropout_keep_mask(seed, batch: int, heads: int, q_len: int, k_len: int, rate: float):
    """The full [B, H, T, S] keep mask, for the XLA path and for tests of the kernels."""
    bh = jnp.arange(batch * heads, dtype=jnp.uint32).reshape(batch, heads, 1, 1)
    q = jnp.arange(q_len, dtype=jnp.uint32).reshape(1, 1, q_len, 1)
    k = jnp.arange(k_len, dtype=jnp.uint32).reshape(1, 1, 1, k_len)
    return dropout_keep(dropout_row_hash(seed, bh, q), k, rate)


def causal_mask(q_len: int, k_len: int, q_offset=None):
    """[T, S] (or [B, 1, T, S] for a per-row offset) bool, True where query i may see key j.

    Query i sits at absolute key position `q_offset + i`; the default offset `S - T` aligns the
    last query with the last key (a prefix cache followed by new queries).
    """
    if q_offset is None:
        q_offset = k_len - q_len
    q_offset = jnp.asarray(q_offset)
    qi = jnp.arange(q_len)[:, None]
    kj = jnp.arange(k_len)[None, :]
    if q_offset.ndim == 1:  # [B]
        return (kj <= qi + q_offset[:, None, None])[:, None]
    return kj <= qi + q_offset


def xla_attention(
    q,
    k,
    v,
    *,
    attention_mask=None,
    head_mask=None,
    dropout_rate: float = 0.0,
    dropout_seed=None,
    q_offset=None,
    output_attentions: bool = False,
):
    """Reference attention in plain XLA. q [B, T, H, K], k and v [B, S, H, K] -> ([B, T, H, K], probs)."""
    batch, q_len, heads, head_dim = q.shape
    k_len = k.shape[1]
    # transformers divides by sqrt(K) (rather than multiplying by its inverse): same rounding here.
    scores = jnp.einsum("bthk,bshk->bhts", q, k).astype(jnp.float32) / math.sqrt(head_dim)
    scores = jnp.where(causal_mask(q_len, k_len, q_offset), scores, CAUSAL_MASK_VALUE)  # [B, H, T, S]
    if attention_mask is not None:
        keep = attention_mask.astype(jnp.float32)[:, None, None, :]
        scores = scores + (1.0 - keep) * jnp.finfo(jnp.float32).min
    probs = jax.nn.softmax(scores, axis=-1)
    if dropout_rate > 0.0 and dropout_seed is not None:
        keep = dropout_keep_mask(dropout_seed, batch, heads, q_len, k_len, dropout_rate)
        probs = jnp.where(keep, probs / (1.0 - dropout_rate), 0.0)
    if head_mask is not None:
        probs = probs * head_mask.astype(jnp.float32)[None, :, None, None]
    probs = probs.astype(v.dtype)
    out = jnp.einsum("bhts,bshk->bthk", probs, v)
    return out, (probs if output_attentions else None)


# -- the kernels -----------------------------------------------------------------------------
# They run only where T == S and q_offset is None (training, full-sequence inference); decoding
# with a KV cache (T < S, per-row offsets) always takes `xla_attention`.
FLASH_MAX_HEAD_DIM = 256


def _flash(cpu: str):
    """`flash_attention` with `cpu` ("interpret" or "xla") as what runs when lowered for the CPU."""

    def fn(
        q,
        k,
        v,
        *,
        attention_mask=None,
        head_mask=None,
        dropout_rate=0.0,
        dropout_seed=None,
        q_offset=None,
        output_attentions=False,
    ):
        del q_offset, output_attentions  # resolve_impl sends those cases to "xla"
        from gpt_flax.kernels import flash_attention  # the kernels import this module's hash

        out = flash_attention(
            q,
            k,
            v,
            attention_mask=attention_mask,
            head_mask=head_mask,
            dropout_rate=dropout_rate,
            dropout_seed=dropout_seed,
            cpu=cpu,
        )
        return out, None

    return fn


def cudnn_attention(
    q,
    k,
    v,
    *,
    attention_mask=None,
    head_mask=None,
    dropout_rate=0.0,
    dropout_seed=None,
    q_offset=None,
    output_attentions=False,
):
    """cuDNN's fused attention (`jax.nn.dot_product_attention`) when lowered for CUDA, XLA elsewhere.

    cuDNN takes bfloat16 and float16 only and has no hook for this model's dropout hash, so float32
    inputs and attention dropout fall back to `xla_attention`, and so does a process without CUDA
    devices (`jax.nn.dot_product_attention` checks cuDNN when traced). Masked positions get cuDNN's own
    large negative value rather than -1e4 / finfo.min: identical on every row that sees at least
    one unpadded key.
    """
    del q_offset, output_attentions
    kwargs = {"attention_mask": attention_mask, "head_mask": head_mask}
    if (dropout_rate > 0.0 and dropout_seed is not None) or q.dtype == jnp.float32:
        return xla_attention(q, k, v, dropout_rate=dropout_rate, dropout_seed=dropout_seed, **kwargs)

    def cudnn(q, k, v):
        mask = None
        if attention_mask is not None:  # [B, 1, T, S] bool, True = attend
            mask = attended_keys(attention_mask)[:, None, None, :]
            mask = jnp.broadcast_to(mask, (q.shape[0], 1, q.shape[1], k.shape[1]))
        out = jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=True, implementation="cudnn")
        if head_mask is not None:
            out = out * head_mask.astype(out.dtype)[None, None, :, None]
        return out

    if not _has_cuda():
        return xla_attention(q, k, v, **kwargs)
    out = jax.lax.platform_dependent(q, k, v, cuda=cudnn, default=lambda q, k, v: xla_attention(q, k, v, **kwargs)[0])
    return out, None


def _has_cuda() -> bool:
    """Whether this process has CUDA devices: JAX checks the cuDNN version while tracing, not lowering."""
    try:
        return bool(jax.devices("cuda"))
    except RuntimeError:
        return False


def auto_attention(q, k, v, **kwargs):
    """The Pallas kernels on GPU and TPU, plain XLA on the CPU, chosen when lowered.

    In a process with no GPU or TPU it is `xla_attention` itself: the kernels' custom_vjp would
    stop forward-mode and higher-order autodiff (jax.jvp, hessians) there, and their Pallas
    branches would be traced for nothing. To export for a GPU or TPU from such a process, use
    "pallas".
    """
    if not _has_accelerator():
        return xla_attention(q, k, v, **kwargs)
    return _flash("xla")(q, k, v, **kwargs)


def _has_accelerator() -> bool:
    return jax.default_backend() != "cpu"


_IMPLEMENTATIONS: dict[str, Callable] = {
    "xla": xla_attention,
    "pallas": _flash("interpret"),
    "cudnn": cudnn_attention,
    "auto": auto_attention,
}


def register(name: str, fn: Callable) -> None:
    """Add an implementation with `xla_attention`'s signature."""
    _IMPLEMENTATIONS[name] = fn


def resolve_impl(
    impl: str, output_attentions: bool = False, *, q_len=None, k_len=None, head_dim=None, q_offset=None
) -> str:
    """The implementation that will run for `impl` on inputs of these sizes.

    "auto" stays "auto": whether that is XLA (CPU) or the Pallas kernel (GPU, TPU) is decided
    when the function is lowered. Probabilities (`output_attentions`) only come from "xla", and
    so does anything the kernels do not cover: a KV cache (q_offset set, or T != S), and, for
    "auto", heads wider than FLASH_MAX_HEAD_DIM ("pallas" raises for those instead).
    """
    if impl not in _IMPLEMENTATIONS:
        raise ValueError(f"unknown attention implementation {impl!r}; known: {sorted(_IMPLEMENTATIONS)}")
    if output_attentions:
        return "xla"
    if impl in ("auto", "pallas", "cudnn") and (q_offset is not None or q_len != k_len):
        return "xla"
    if impl == "auto" and head_dim is not None and head_dim > FLASH_MAX_HEAD_DIM:
        return "xla"
    return impl


def attention(q, k, v, *, impl: str = "auto", output_attentions: bool = False, **kwargs):
    """Dispatch to the named implementation. Returns (out [B, T, H, K], probs [B, H, T, S] or None)."""
    name = resolve_impl(
        impl,
        output_attentions,
        q_len=q.shape[1],
        k_len=k.shape[1],
        head_dim=q.shape[3],
        q_offset=kwargs.get("q_offset"),
    )
    return _IMPLEMENTATIONS[name](q, k, v, output_attentions=output_attentions, **kwargs)
