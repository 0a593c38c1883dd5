"""Pure building blocks over param dicts: layer norm, dense, activations, dropout, parameter init.

Leaf names follow Flax conventions (`kernel`, `bias`, `scale`, `embedding`) under transformers'
module names, so `h/attn/c_attn/kernel` is `h.{i}.attn.c_attn.weight` stacked over layers.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


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
    """x @ kernel (+ bias) in x's dtype. kernel is [in, out], like transformers' Conv1D weight."""
    y = x @ p["kernel"].astype(x.dtype)
    if "bias" in p:
        y = y + p["bias"].astype(x.dtype)
    return y


def dropout(rng, x, rate: float):
    """Inverted dropout; identity when rng is None or rate is 0."""
    if rng is None or rate == 0.0:
        return x
    keep = jax.random.bernoulli(rng, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x))


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
