"""Pure building blocks over param dicts: layer norm, dense, activations, dropout, parameter init.

Leaf names follow Flax conventions (`kernel`, `bias`, `scale`, `embedding`) under transformers'
module names, so `h/attn/c_attn/kernel` is `h.{i}.attn.c_attn.weight` stacked over layers.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from gpt_flax.attention import dropout_keep, dropout_row_hash


def gelu_new(x):
    """The tanh approximation transformers calls "gelu" for this model (activations.NewGELUActivation)."""
    return 0.5 * x * (1.0 + jnp.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * jnp.power(x, 3.0))))


def silu(x):
    return x * jax.nn.sigmoid(x)


# transformers' modeling_openai.ACT_FNS ("gelu" and "gelu_new" are the same function there too).
ACT_FNS = {"gelu": gelu_new, "gelu_new": gelu_new, "relu": jax.nn.relu, "silu": silu, "swish": silu}


def layer_norm(p, x, eps: float):
    """LayerNorm over the last axis, computed in float32 (as torch does for fp32 and autocast)."""
    xf = x.astype(jnp.float32)
    mean = xf.mean(-1, keepdims=True)
    var = jnp.square(xf - mean).mean(-1, keepdims=True)
    y = (xf - mean) * jax.lax.rsqrt(var + eps)
    y = y * p["scale"].astype(jnp.float32) + p["bias"].astype(jnp.float32)
    return y.astype(x.dtype)


def dense(p, x):
    """x @ kernel (+ bias) in x's dtype. kernel is [in, out], like transformers' Conv1D weight.

    The leading axes are flattened first (as Conv1D's `view(-1, nx)` does): XLA:CPU's kernel gradient
    over several contracting axes is about 1.5x slower than over one.
    """
    kernel = p["kernel"].astype(x.dtype)
    y = (x.reshape(-1, x.shape[-1]) @ kernel).reshape(x.shape[:-1] + kernel.shape[-1:])
    if "bias" in p:
        y = y + p["bias"].astype(x.dtype)
    return y


def dropout(seed, x, rate: float):
    """Inverted dropout from a uint32 `seed`; identity when seed is None or rate is 0.

    The keep mask is attention dropout's counter-based hash over (row, column) of x viewed as
    [rows, last axis]: about 20x cheaper on the CPU than threefry bits, and as reproducible.
    """
    if seed is None or rate == 0.0:
        return x
    rows = jnp.arange(x.size // x.shape[-1], dtype=jnp.uint32).reshape(x.shape[:-1] + (1,))
    cols = jnp.arange(x.shape[-1], dtype=jnp.uint32)
    keep = dropout_keep(dropout_row_hash(seed, jnp.uint32(0), rows), cols, rate)
    return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x))


def dropout_seeds(rng, shape=()):
    """uint32 seeds for `dropout` (and attention dropout) drawn from a JAX key."""
    return jax.random.bits(rng, shape, jnp.uint32)


def normal(rng, shape, std: float, dtype):
    """transformers' `_init_weights`: weights ~ normal(0, initializer_range)."""
    return (std * jax.random.normal(rng, shape, jnp.float32)).astype(dtype)


def init_dense(rng, shape, std: float, dtype, bias: bool = True):
    p = {"kernel": normal(rng, shape, std, dtype)}
    if bias:
        p["bias"] = jnp.zeros(shape[:-2] + shape[-1:], dtype)
    return p


def init_layer_norm(shape, dtype):
    return {"scale": jnp.ones(shape, dtype), "bias": jnp.zeros(shape, dtype)}
