"""The GPT-1 transformer body as pure functions: embeddings, one post-LN block, the scanned stack.

    h0 = tokens_embed[ids] + positions_embed[pos] + tokens_embed[token_type_ids]   (then dropout)
    n  = LN1(x + Attn(x));  h = LN2(n + MLP(n))                                      (per block)

transformers `modeling_openai.OpenAIGPTModel`. There is no final LayerNorm. All layers share one
compiled block: per-layer params are stacked on a leading [L] axis and run under `lax.scan`.

Axes: B batch, T length, D model width (n_embd), H heads, K head dim, F MLP width, V vocab, L layers.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from gpt_flax import attention as attn_lib
from gpt_flax.config import OpenAIGPTConfig
from gpt_flax.layers import ACT_FNS, dense, dropout, dropout_seeds, init_dense, init_layer_norm, layer_norm, normal

# What the backward pass keeps of each block's matmul and elementwise work (see `transformer`).
SAVE_POLICY = jax.checkpoint_policies.dots_saveable


class TransformerOutput(NamedTuple):
    last_hidden_state: jax.Array  # [B, T, D]
    hidden_states: tuple | None  # L + 1 tensors [B, T, D]: embeddings, then each block's output
    attentions: tuple | None  # L tensors [B, H, T, T]


def init_transformer_params(config: OpenAIGPTConfig, rng, dtype=jnp.float32) -> dict:
    """transformers' init: normal(0, initializer_range) weights, zero biases, unit LayerNorm gains."""
    L, D, std = config.n_layer, config.n_embd, config.initializer_range
    keys = jax.random.split(rng, 6)
    return {
        "tokens_embed": {"embedding": normal(keys[0], (config.vocab_size, D), std, dtype)},
        "positions_embed": {"embedding": normal(keys[1], (config.n_positions, D), std, dtype)},
        "h": {
            "attn": {
                "c_attn": init_dense(keys[2], (L, D, 3 * D), std, dtype),
                "c_proj": init_dense(keys[3], (L, D, D), std, dtype),
            },
            "ln_1": init_layer_norm((L, D), dtype),
            "mlp": {
                "c_fc": init_dense(keys[4], (L, D, 4 * D), std, dtype),
                "c_proj": init_dense(keys[5], (L, 4 * D, D), std, dtype),
            },
            "ln_2": init_layer_norm((L, D), dtype),
        },
    }


def embed(params, config: OpenAIGPTConfig, input_ids, inputs_embeds, token_type_ids, position_ids, dtype):
    """[B, T] ids (or [B, T, D] embeddings) -> [B, T, D]. Token types reuse the token table."""
    table = params["tokens_embed"]["embedding"]
    if inputs_embeds is None:
        inputs_embeds = jnp.take(table, input_ids, axis=0)
    seq_len = inputs_embeds.shape[1]
    if position_ids is None:
        position_ids = jnp.arange(seq_len)[None, :]
    positions = jnp.take(params["positions_embed"]["embedding"], position_ids, axis=0)
    h = inputs_embeds.astype(dtype) + positions.astype(dtype)
    if token_type_ids is not None:
        h = h + jnp.take(table, token_type_ids, axis=0).astype(dtype)
    return h


class LayerRngs(NamedTuple):
    """A layer's dropout seeds (uint32 scalars): attention probabilities, attention output, MLP output."""

    attn_seed: jax.Array
    attn_resid: jax.Array
    mlp_resid: jax.Array


def block(
    p,
    x,
    config: OpenAIGPTConfig,
    *,
    attention_mask=None,
    head_mask=None,
    rngs: LayerRngs | None = None,
    output_attentions: bool = False,
    save_policy=None,
):
    """One post-LN block (transformers `Block.forward`). x [B, T, D] -> ([B, T, D], probs or None).

    `save_policy` (a `jax.checkpoint_policies` policy) decides what the backward pass keeps of the
    work after the attention call; the attention function keeps its own residuals either way, so a
    kernel's custom backward is never re-run forward.
    """
    B, T, D = x.shape
    H, K = config.n_head, config.head_dim
    # One [B*T, D] view of the input serves the QKV projection and the residual add, so the backward
    # pass keeps it once (a [B, T, D] and a [B*T, D] copy would be two residuals).
    x = x.reshape(B * T, D)
    qkv = dense(p["attn"]["c_attn"], x)  # [B*T, 3D], split q | k | v
    q, k, v = (t.reshape(B, T, H, K) for t in jnp.split(qkv, 3, axis=-1))

    def finish(p, x, a, rngs):
        a = dense(p["attn"]["c_proj"], a.reshape(B * T, D))
        attn_rng, mlp_rng = (None, None) if rngs is None else (rngs.attn_resid, rngs.mlp_resid)
        a = dropout(attn_rng, a, config.resid_pdrop)
        n = layer_norm(p["ln_1"], x + a, config.layer_norm_epsilon)
        m = dense(p["mlp"]["c_proj"], ACT_FNS[config.afn](dense(p["mlp"]["c_fc"], n)))
        m = dropout(mlp_rng, m, config.resid_pdrop)
        return layer_norm(p["ln_2"], n + m, config.layer_norm_epsilon).reshape(B, T, D)

    if save_policy is not None:
        finish = jax.checkpoint(finish, policy=save_policy, prevent_cse=False)
    a, probs = attn_lib.attention(
        q,
        k,
        v,
        impl=config.attention_impl,
        attention_mask=attention_mask,
        head_mask=head_mask,
        dropout_rate=config.attn_pdrop if rngs is not None else 0.0,
        dropout_seed=rngs.attn_seed if rngs is not None else None,
        output_attentions=output_attentions,
    )
    return finish(p, x, a, rngs), probs


def _layer_rngs(rng, n_layer: int) -> LayerRngs:
    seeds = dropout_seeds(rng, (n_layer, 3))  # [L, 3]
    return LayerRngs(seeds[:, 0], seeds[:, 1], seeds[:, 2])


def head_mask_per_layer(head_mask, config: OpenAIGPTConfig):
    """[H], [L, H] or transformers' own [L, 1, H, 1, 1] -> [L, H] (transformers `get_head_mask`), or None."""
    if head_mask is None:
        return None
    head_mask = jnp.asarray(head_mask, jnp.float32)
    if head_mask.ndim == 1:
        head_mask = jnp.broadcast_to(head_mask, (config.n_layer, config.n_head))
    elif head_mask.ndim == 5:
        head_mask = head_mask.reshape(config.n_layer, config.n_head)
    return head_mask


def transformer(
    params,
    config: OpenAIGPTConfig,
    input_ids=None,
    attention_mask=None,
    token_type_ids=None,
    position_ids=None,
    head_mask=None,
    inputs_embeds=None,
    *,
    rng=None,
    output_attentions: bool = False,
    output_hidden_states: bool = False,
    dtype=jnp.float32,
    remat: bool = False,
) -> TransformerOutput:
    """The OpenAIGPTModel forward on 2-D inputs ([B, T] ids or [B, T, D] embeddings).

    `rng` enables dropout (training); None is inference. `remat` recomputes each block in the
    backward pass instead of storing its activations. Without it, the backward keeps the matmul
    outputs and recomputes the elementwise work between them (LayerNorm, GELU, dropout masks):
    stacking all of that over the layers cost more in memory traffic than recomputing it (a 7%
    faster CPU training step at full size).
    """
    h = embed(params, config, input_ids, inputs_embeds, token_type_ids, position_ids, dtype)
    layer_rngs = None
    if rng is not None:
        embd_rng, layers_rng = jax.random.split(rng)
        h = dropout(dropout_seeds(embd_rng), h, config.embd_pdrop)
        layer_rngs = _layer_rngs(layers_rng, config.n_layer)
    head_mask = head_mask_per_layer(head_mask, config)

    def step(x, layer):
        p, hm, rngs = layer
        y, probs = block(
            p,
            x,
            config,
            attention_mask=attention_mask,
            head_mask=hm,
            rngs=rngs,
            output_attentions=output_attentions,
            save_policy=None if remat else SAVE_POLICY,
        )
        return y, (x if output_hidden_states else None, probs)

    if remat:
        step = jax.checkpoint(step, prevent_cse=False)
    h, (inputs, probs) = jax.lax.scan(step, h, (params["h"], head_mask, layer_rngs))
    hidden_states = None
    if output_hidden_states:
        hidden_states = tuple(inputs[i] for i in range(config.n_layer)) + (h,)
    attentions = tuple(probs[i] for i in range(config.n_layer)) if output_attentions else None
    return TransformerOutput(h, hidden_states, attentions)
