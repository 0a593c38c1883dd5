"""Text generation: a KV cache, one prefill, a compiled decode loop, and sampling.

    model = FlaxOpenAIGPTLMHeadModel.from_pretrained("path")
    ids = model.generate(input_ids, attention_mask=mask, max_new_tokens=64)            # greedy
    ids = model.generate(input_ids, do_sample=True, top_p=0.9, prng_key=jax.random.key(0))

transformers' OpenAI GPT has no cache: each new token re-runs the whole prefix. Here the prompt is
run once (`prefill`), its keys and values kept in a cache of static shape, and every later token is
one `decode_step` that embeds one token per row, writes its key/value into the cache and attends
over the cache. The decode loop is a `lax.while_loop` inside one jitted function, compiled once
per (batch, prompt bucket, cache bucket), never per token.

Prompts of different lengths share a batch by left padding: row b's real tokens sit in cache
slots start[b]..; its positions count from its first real token (GPT's positions are absolute), and
padded slots are masked as keys, so every row generates exactly what it would alone.

Axes: B batch, T prompt slots, S cache slots, D width, H heads, K head dim, V vocab, L layers,
N new tokens, E eos ids.
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
import os
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import io_callback

from gpt_flax import attention as attn_lib
from gpt_flax.config import OpenAIGPTConfig, read_json_object
from gpt_flax.heads import lm_logits
from gpt_flax.kernels import cpu_decode
from gpt_flax.layers import ACT_FNS, dense, layer_norm
from gpt_flax.model import embed
from gpt_flax.outputs import GenerateBeamDecoderOnlyOutput, GenerateDecoderOnlyOutput
from gpt_flax.validation import ragged_rows

logger = logging.getLogger("gpt_flax")

# transformers' GenerationConfig.max_length default. Given neither length, transformers generates
# this many new tokens (it adds the prompt length to the default max_length, then caps it at n_positions).
DEFAULT_NEW_TOKENS = 20
# GenerationConfig's top_k: sampling keeps the 50 most likely tokens unless told otherwise (0: all).
DEFAULT_TOP_K = 50
# Prompts are left-padded to a power of two slots (at least this many), so prompts of similar
# length share one compiled function.
MIN_PROMPT_BUCKET = 8
# The cache holds prompt slots + new tokens rounded up to a multiple of this.
CACHE_BUCKET = 64
# Decode steps read only the live part of the cache: the loop runs in phases whose caches hold
# 128, 256, ... slots (the last phase all S), each a while_loop over arrays of that static size;
# between phases the cache is copied into the next, larger arrays.
FIRST_PHASE_WIDTH = 128


class KVCache(NamedTuple):
    """Keys and values of every cache slot, one array per layer; state that goes in and out.

    Keys are stored transposed, [B, H, K, S], so q @ k^T reads them in the order the matmul wants;
    values [B, H, S, K]. Measured on this CPU (12 layers of one-query attention over 320 slots):
    with keys as [B, H, S, K] XLA copied them transposed every step (5x slower at batch 1); one
    stacked [L, ...] array sliced per layer took 110 ms at batch 8 against 9 ms for per-layer
    arrays (XLA:CPU copies the slice, then runs a slow batched dot on it); [B, S, H, K] and a
    static slice of the slot axis were 2-15x slower too.
    """

    key: tuple  # L arrays [B, H, K, S]
    value: tuple  # L arrays [B, H, S, K]
    length: jax.Array  # int32 []: slots filled so far (the next token goes in slot `length`)
    start: jax.Array  # int32 [B]: row b's first real slot (slots before it are left padding)

    @property
    def size(self) -> int:
        return self.value[0].shape[2]


class Sampler(NamedTuple):
    """How the next token is chosen; static under jit (the values of temperature, top_p, the
    repetition penalty and the minimum of new tokens are not)."""

    do_sample: bool = False
    top_k: int | None = None
    top_p: bool = False  # whether the top-p filter runs (transformers skips it at top_p == 1)
    repetition_penalty: bool = False  # whether the penalty runs (transformers skips it at 1.0)
    no_repeat_ngram_size: int = 0  # 0: no n-gram is banned
    min_new_tokens: bool = False  # whether eos may be banned early (needs a minimum and an eos)
    sequence_bias: tuple = ()  # ((token ids, bias), ...) added where a row would complete the ids
    bad_words: tuple = ()  # token sequences never to complete (bad_words_ids, less a lone eos)
    forced_bos: int | None = None  # the first token, where the prompt is one token wide (forced_bos_token_id)
    forced_eos: tuple = ()  # the ids forced at the last step (forced_eos_token_id)
    suppress: tuple = ()  # ids never generated (suppress_tokens)
    begin_suppress: tuple = ()  # ids not generated first (begin_suppress_tokens)
    # The sampling warpers after top-p, off at these values (static: another value compiles anew).
    min_p: float = 0.0
    typical_p: float = 1.0
    epsilon_cutoff: float = 0.0
    eta_cutoff: float = 0.0
    renormalize: bool = False  # log-softmax after all of them (renormalize_logits)

    @property
    def constrained(self) -> bool:
        """Whether any logits processor runs (they read the history or the step)."""
        return bool(
            self.repetition_penalty or self.no_repeat_ngram_size or self.min_new_tokens or self.bad_words
            or self.sequence_bias
            or self.forced_bos is not None or self.forced_eos or self.suppress or self.begin_suppress
        )  # fmt: skip


# -- the cached block ------------------------------------------------------------------------
def _dense(p, x):
    """`layers.dense`, or the CPU kernel's matmul where `pack_layers` packed the kernel."""
    if not isinstance(p["kernel"], cpu_decode.PackedWeight):
        return dense(p, x)
    y = cpu_decode.matmul(x.reshape(-1, x.shape[-1]), p["kernel"]).astype(x.dtype) + p["bias"].astype(x.dtype)
    return y.reshape(x.shape[:-1] + y.shape[-1:])


def _block(p, x, config: OpenAIGPTConfig, attend):
    """`model.block` in inference mode, with attention delegated to `attend(q, k, v) -> (out, aux)`.

    x [B, T, D] -> ([B, T, D], aux); `attend` sees q, k, v [B, T, H, K] and owns the cache.
    """
    B, T, D = x.shape
    qkv = _dense(p["attn"]["c_attn"], x)  # [B, T, 3D], split q | k | v
    q, k, v = (t.reshape(B, T, config.n_head, config.head_dim) for t in jnp.split(qkv, 3, axis=-1))
    a, aux = attend(q, k, v)
    a = _dense(p["attn"]["c_proj"], a.reshape(B, T, D))
    n = layer_norm(p["ln_1"], x + a, config.layer_norm_epsilon)
    m = _dense(p["mlp"]["c_proj"], ACT_FNS[config.afn](_dense(p["mlp"]["c_fc"], n)))
    return layer_norm(p["ln_2"], n + m, config.layer_norm_epsilon), aux


def _positions(slots, start):
    """Position ids of cache slots for rows whose first real slot is `start` [B]; 0 on padding."""
    return jnp.maximum(slots[None, :] - start[:, None], 0)


def split_layers(h_params, n_layer: int) -> tuple:
    """The stacked [L, ...] block params as L separate trees.

    A decode step reads each weight once, so it runs at memory bandwidth; slicing layer l out of
    the stack inside the loop (what `lax.scan` does) copies it first and doubled the step time.
    Split once per `generate` call, outside the loop.
    """
    return tuple(jax.tree_util.tree_map(lambda a, i=i: a[i], h_params) for i in range(n_layer))


def pack_layers(h_params, n_layer: int) -> tuple:
    """`split_layers`, with every dense kernel packed for `cpu_decode.matmul` (float32).

    One pass over the weights per `generate` call, outside the loop, so that every decode step
    reads them in the kernel's order; each kernel is packed straight from its [L, ...] stack.
    """

    def layer(i):
        def take(path, stack):
            return cpu_decode.pack(stack, layer=i) if path[-1].key == "kernel" else stack[i]

        return jax.tree_util.tree_map_with_path(take, h_params)

    return tuple(layer(i) for i in range(n_layer))


def use_cpu_kernel(dtype) -> bool:
    """Whether decoding runs its matmuls on `cpu_decode`: float32 compute on the CPU backend, kernel built."""
    return jnp.dtype(dtype) == jnp.float32 and jax.default_backend() == "cpu" and cpu_decode.available()


def grow_cache(cache: KVCache, size: int) -> KVCache:
    """The same cache in arrays of `size` slots (a copy of what it holds; the new slots are empty)."""
    extra = size - cache.size
    key_pad, value_pad = ((0, 0), (0, 0), (0, 0), (0, extra)), ((0, 0), (0, 0), (0, extra), (0, 0))
    return cache._replace(
        key=tuple(jnp.pad(k, key_pad) for k in cache.key), value=tuple(jnp.pad(v, value_pad) for v in cache.value)
    )


def prefill(params, config: OpenAIGPTConfig, input_ids, start, cache_size: int, dtype=jnp.float32):
    """Run the prompt once. input_ids [B, T] left-padded (row b real from slot start[b]).

    Returns (logits of the last slot [B, V], a cache of `cache_size` slots holding the prompt's).
    """
    T = input_ids.shape[1]
    if cache_size < T:
        raise ValueError(f"cache_size={cache_size} is smaller than the prompt's {T} slots")
    start = jnp.asarray(start, jnp.int32)
    slots = jnp.arange(T)
    x = embed(params, config, input_ids, None, None, _positions(slots, start), dtype)
    key_mask = slots[None, :] >= start[:, None]  # [B, T]

    def attend(q, k, v):
        out, _ = attn_lib.attention(q, k, v, impl=config.attention_impl, attention_mask=key_mask)
        return out, (k.transpose(0, 2, 3, 1), v.transpose(0, 2, 1, 3))  # [B, H, K, T], [B, H, T, K]

    def layer(x, p):
        return _block(p, x, config, attend)

    h, (keys, values) = jax.lax.scan(layer, x, params["h"])  # keys [L, B, H, K, T]
    cache = KVCache(tuple(keys), tuple(values), jnp.asarray(T, jnp.int32), start)
    return lm_logits(params, h[:, -1], params.get("lm_head")), grow_cache(cache, cache_size)


def cached_attention(q, k_t, v, slot, key_mask):
    """One new query per row over the cache: `attention.xla_attention` with q_offset = slot.

    q [B, 1, H, K], k_t [B, H, K, S], v [B, H, S, K], key_mask [B, S] -> [B, 1, H, K]. The same
    math (transformers `Attention._attn`): scores / sqrt(K), the slots after `slot` (not written
    yet) get the causal -1e4, left padding gets + finfo.min, softmax in float32. Written out here
    because the cache's layouts are what keep XLA from copying it every step (see KVCache).
    """
    scores = jnp.einsum("bhk,bhks->bhs", q[:, 0], k_t).astype(jnp.float32) / math.sqrt(q.shape[-1])  # [B, H, S]
    visible = jnp.arange(k_t.shape[-1]) <= slot  # [S]: the causal mask for a query at `slot`
    scores = jnp.where(visible, scores, attn_lib.CAUSAL_MASK_VALUE)
    scores = scores + (1.0 - key_mask.astype(jnp.float32))[:, None, :] * jnp.finfo(jnp.float32).min
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    return jnp.einsum("bhs,bhsk->bhk", probs, v)[:, None]


def decode_step(
    params, config: OpenAIGPTConfig, cache: KVCache, tokens, *, layers=None, lm_head=None, dtype=jnp.float32
):
    """Feed one token per row into slot `cache.length`. tokens [B] -> (logits [B, V], new cache).

    Attends over all S slots of the cache arrays (the slots not written yet are masked); the loop
    keeps those arrays only as large as the phase needs. `layers`: `split_layers(params["h"])`,
    to split once outside a loop. With the CPU kernels (`cpu_decode`): `layers` from `pack_layers`,
    `lm_head` the token table packed (`pack(table, transposed=True)`); attention then reads only the
    slots each row can see. Stepping from Python, jit it with the cache donated (`donate_argnums`)
    so the cache is updated in place, as the compiled loop does.
    """
    if layers is None:
        layers = split_layers(params["h"], config.n_layer)
    slot = cache.length
    zero = jnp.zeros_like(slot)  # index literals of slot's type (with jax_enable_x64 a 0 is int64)
    x = embed(params, config, tokens[:, None], None, None, (slot - cache.start)[:, None], dtype)  # [B, 1, D]
    key_mask = jnp.arange(cache.size)[None, :] >= cache.start[:, None]  # [B, S]: left padding is masked
    keys, values = list(cache.key), list(cache.value)

    for i, p in enumerate(layers):

        def attend(q, k, v, i=i):
            # Write this token's key/value in place (the loop carries the buffers), then attend.
            k_new, v_new = (
                k.transpose(0, 2, 3, 1).astype(keys[i].dtype),
                v.transpose(0, 2, 1, 3).astype(values[i].dtype),
            )
            k_t = jax.lax.dynamic_update_slice(keys[i], k_new, (zero, zero, zero, slot))
            v_c = jax.lax.dynamic_update_slice(values[i], v_new, (zero, zero, slot, zero))
            if lm_head is not None:  # the CPU kernels: read only slots start[b]..slot
                out = cpu_decode.cached_attention(q[:, 0], k_t, v_c, cache.start, slot)[:, None].astype(q.dtype)
            else:
                out = cached_attention(q, k_t, v_c, slot, key_mask)
            return out, (k_t, v_c)

        x, (keys[i], values[i]) = _block(p, x, config, attend)
    if lm_head is None:
        logits = lm_logits(params, x[:, 0], params.get("lm_head"))
    else:
        logits = cpu_decode.matmul(x[:, 0], lm_head)
    return logits, KVCache(tuple(keys), tuple(values), slot + 1, cache.start)


# -- choosing the next token -----------------------------------------------------------------
def _kth_largest(logits, k: int):
    """The k-th largest logit of each row, [B, 1]."""
    return jax.lax.top_k(logits, min(k, logits.shape[-1]))[0][..., -1:]


def top_k_filter(logits, k: int, keep: int = 1):
    """transformers `TopKLogitsWarper`: -inf below the k-th largest logit (ties with it are kept); `keep`
    (its min_tokens_to_keep) raises k."""
    k = min(max(k, keep), logits.shape[-1])
    kth = jax.lax.top_k(logits, k)[0][..., -1:]
    return jnp.where(logits < kth, -jnp.inf, logits)


def top_p_filter(logits, top_p, keep: int = 1):
    """transformers `TopPLogitsWarper`: keep the smallest set of most likely tokens whose
    probability sums past top_p (the most likely token always stays).

    In ascending order the tokens whose cumulative probability is <= 1 - top_p go; they are a
    prefix, so the rest is `logits >= threshold`. Tokens tied with the threshold are all kept
    (transformers keeps whichever of them its sort puts last).
    """
    ordered = jnp.sort(logits, axis=-1)  # ascending
    cumulative = jnp.cumsum(jax.nn.softmax(ordered, axis=-1), axis=-1)
    removed = cumulative <= 1.0 - top_p
    n_removed = jnp.minimum(jnp.sum(removed, axis=-1, keepdims=True), max(logits.shape[-1] - keep, 0))
    threshold = jnp.take_along_axis(ordered, n_removed, axis=-1)
    return jnp.where(logits < threshold, -jnp.inf, logits)


def repetition_penalty_filter(logits, seen, penalty):
    """transformers `RepetitionPenaltyLogitsProcessor`: the logit of every token in `seen` [B, V]
    (bool) divided by `penalty` where positive, multiplied by it where negative."""
    penalized = jnp.where(logits < 0, logits * penalty, logits / penalty)
    return jnp.where(seen, penalized, logits)


def min_p_filter(logits, min_p: float, keep: int = 1):
    """transformers `MinPLogitsWarper`: -inf on tokens less likely than min_p times the most likely one (never
    the `keep` most likely)."""
    probs = jax.nn.softmax(logits, axis=-1)
    removed = probs < min_p * jnp.max(probs, axis=-1, keepdims=True)
    if keep > 1:
        removed = removed & (logits < _kth_largest(logits, keep))
    return jnp.where(removed, -jnp.inf, logits)


def typical_filter(logits, mass: float, keep: int = 1):
    """transformers `TypicalLogitsWarper`: keep the tokens whose surprise is closest to the entropy until their
    probability sums past `mass` (the `keep` closest always stay)."""
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    probs = jnp.exp(log_probs)
    entropy = -jnp.sum(jnp.where(probs > 0, log_probs * probs, 0.0), axis=-1, keepdims=True)
    distance = jnp.abs(-log_probs - entropy)  # inf for tokens already at -inf
    order = jnp.argsort(distance, axis=-1)
    cumulative = jnp.cumsum(jax.nn.softmax(jnp.take_along_axis(logits, order, axis=-1), axis=-1), axis=-1)
    last = jnp.minimum(jnp.sum(cumulative < mass, axis=-1, keepdims=True), logits.shape[-1] - 1)
    threshold = jnp.take_along_axis(jnp.take_along_axis(distance, order, axis=-1), last, axis=-1)
    if keep > 1:
        threshold = jnp.maximum(threshold, -_kth_largest(-distance, keep))
    return jnp.where(distance > threshold, -jnp.inf, logits)


def epsilon_filter(logits, epsilon: float, keep: int = 1):
    """transformers `EpsilonLogitsWarper`: -inf on tokens of probability below epsilon (never the `keep` most
    likely)."""
    probs = jax.nn.softmax(logits, axis=-1)
    return jnp.where((probs < epsilon) & (logits < _kth_largest(logits, keep)), -jnp.inf, logits)


def eta_filter(logits, epsilon: float, keep: int = 1):
    """transformers `EtaLogitsWarper`: -inf on tokens of probability below min(epsilon, sqrt(epsilon) *
    exp(-entropy)) (never the `keep` most likely)."""
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    probs = jnp.exp(log_probs)
    entropy = -jnp.sum(jnp.where(probs > 0, log_probs * probs, 0.0), axis=-1, keepdims=True)
    eta = jnp.minimum(epsilon, math.sqrt(epsilon) * jnp.exp(-entropy))
    return jnp.where((probs < eta) & (logits < _kth_largest(logits, keep)), -jnp.inf, logits)


def sequence_bias_filter(logits, history, valid, biases: tuple):
    """transformers `SequenceBiasLogitsProcessor`: `biases` ((token ids, bias), ...) adds a one-token sequence's
    bias always, and a longer one's to its last token where the row's last tokens are the rest of it and the row
    is at least as long as the sequence. history / valid as `no_repeat_ngram_filter`."""
    B, W = history.shape
    added = jnp.zeros(logits.shape, jnp.float32)
    end = jnp.max(jnp.where(valid, jnp.arange(W)[None, :] + 1, 0), axis=1)  # [B]: one past the row's last token
    count = jnp.sum(valid, axis=1)  # [B] the row's tokens so far
    for word, bias in biases:
        prefix = jnp.asarray(word[:-1], jnp.int32)
        if prefix.size:
            at = end[:, None] - prefix.size + jnp.arange(prefix.size)[None, :]  # [B, n - 1] the row's last tokens
            inside = jnp.take_along_axis(valid, jnp.clip(at, 0, W - 1), axis=1) & (at >= 0)
            tail = jnp.take_along_axis(history, jnp.clip(at, 0, W - 1), axis=1)
            # transformers skips a sequence longer than the tokens so far, even where its prefix is all of them
            hit = jnp.all(inside & (tail == prefix[None, :]), axis=1) & (count >= len(word))  # [B]
        else:
            hit = jnp.ones((B,), bool)
        added = added.at[:, word[-1]].add(jnp.where(hit, jnp.float32(bias), 0.0))
    return logits + added


def bad_words_filter(logits, history, valid, bad_words: tuple):
    """transformers `NoBadWordsLogitsProcessor`: a sequence bias of -inf on each bad word."""
    return sequence_bias_filter(logits, history, valid, tuple((word, -math.inf) for word in bad_words))


def no_repeat_ngram_filter(logits, history, valid, n: int):
    """transformers `NoRepeatNGramLogitsProcessor`: -inf on every token that would complete an
    n-gram already in the row. history [B, W] ids whose valid [B, W] entries are the row's tokens
    so far, one contiguous run per row ending at the same column for every row.

    The last n - 1 tokens are compared with every window of n - 1 tokens; a window that matches
    and lies wholly inside the row bans the token after it. With n = 1 every token seen is banned.
    """
    B, W = history.shape
    if n - 1 >= W:  # no row holds n - 1 tokens yet: nothing to ban (transformers bans nothing either)
        return logits
    end = jnp.max(jnp.where(valid, jnp.arange(W)[None, :] + 1, 0), axis=1)  # [B]: one past the row's last token
    width = W - (n - 1)  # windows start at 0 .. width - 1
    match = valid[:, :width]  # the window starts inside the row
    for j in range(n - 1):
        last_j = jnp.take_along_axis(history, jnp.clip(end - (n - 1) + j, 0, W - 1)[:, None], axis=1)  # [B, 1]
        match = match & (history[:, j : j + width] == last_j)
    match = match & (jnp.arange(width)[None, :] + (n - 1) < end[:, None])  # the banned token is in the row
    banned = jnp.zeros(logits.shape, jnp.int32).at[jnp.arange(B)[:, None], history[:, n - 1 :]].add(match)
    return jnp.where(banned > 0, -jnp.inf, logits)


def row_history(prompt, new_tokens, start, step):
    """(history [B, T + N], valid [B, T + N]): each row's prompt [B, T] (real from slot start[b]) then its
    new tokens [B, N], of which the first `step` are out; what the logits processors see of a row."""
    history = jnp.concatenate([prompt, new_tokens], axis=1)
    column = jnp.arange(history.shape[1])[None, :]
    return history, (column >= start[:, None]) & (column < prompt.shape[1] + step)


def constrain_logits(
    logits, history, valid, step, eos_ids, sampler: Sampler, penalty, min_new_tokens, max_new_tokens=None
):
    """transformers' logits processors that generate supports, in its order (`_get_logits_processor`):
    sequence bias, repetition penalty, no-repeat n-grams, bad words, eos banned while fewer than `min_new_tokens` new
    tokens are out, forced bos / eos, suppressed tokens (always, then at the first step). logits [B, V]
    float32; history [B, W] ids, valid [B, W] (the row's tokens so far: its prompt without padding, then
    what it generated); `step` tokens are out, of `max_new_tokens` at most. Greedy decoding and sampling
    both choose from what this returns."""
    B, V = logits.shape
    vocab = jnp.arange(V)
    if sampler.sequence_bias:
        logits = sequence_bias_filter(logits, history, valid, sampler.sequence_bias)
    if sampler.repetition_penalty:
        seen = jnp.zeros((B, V), jnp.int32).at[jnp.arange(B)[:, None], history].add(valid) > 0
        logits = repetition_penalty_filter(logits, seen, penalty)
    if sampler.no_repeat_ngram_size:
        logits = no_repeat_ngram_filter(logits, history, valid, sampler.no_repeat_ngram_size)
    if sampler.bad_words:
        logits = bad_words_filter(logits, history, valid, sampler.bad_words)
    if sampler.min_new_tokens:
        is_eos = jnp.any(vocab[:, None] == eos_ids[None, :], axis=1)  # [V]
        logits = jnp.where(is_eos[None, :] & (step < min_new_tokens), -jnp.inf, logits)
    # transformers forces bos where the ids so far are one token wide: here each row's prompt, as if alone
    bos_row = (jnp.sum(valid, axis=1) - step == 1)[:, None] if sampler.forced_bos is not None else False  # [B, 1]
    if sampler.forced_bos is not None:
        forced = jnp.where(vocab == sampler.forced_bos, 0.0, -jnp.inf)
        logits = jnp.where(bos_row & (step == 0), forced, logits)
    if sampler.forced_eos:
        forced = jnp.where(jnp.isin(vocab, jnp.asarray(sampler.forced_eos)), 0.0, -jnp.inf)
        logits = jnp.where(step == max_new_tokens - 1, forced, logits)
    if sampler.suppress:
        logits = jnp.where(jnp.isin(vocab, jnp.asarray(sampler.suppress)), -jnp.inf, logits)
    if sampler.begin_suppress:  # at the first new token (the second after a forced bos)
        first = jnp.where(bos_row, 1, 0)
        logits = jnp.where(jnp.isin(vocab, jnp.asarray(sampler.begin_suppress)) & (step == first), -jnp.inf, logits)
    return logits


def process_logits(logits, sampler: Sampler, temperature, top_p, keep: int = 1):
    """The sampling warpers in transformers' order: temperature, top-k, top-p, min-p, typical, epsilon, eta.
    [B, V] float32. `keep`: transformers' min_tokens_to_keep (beam sampling keeps one more than the eos ids,
    so a beam can always go on)."""
    logits = logits.astype(jnp.float32) / temperature
    if sampler.top_k is not None:
        logits = top_k_filter(logits, sampler.top_k, keep)
    if sampler.top_p:
        logits = top_p_filter(logits, top_p, keep)
    if sampler.min_p:
        logits = min_p_filter(logits, sampler.min_p, keep)
    if sampler.typical_p < 1.0:
        logits = typical_filter(logits, sampler.typical_p, keep)
    if sampler.epsilon_cutoff:
        logits = epsilon_filter(logits, sampler.epsilon_cutoff, keep)
    if sampler.eta_cutoff:
        logits = eta_filter(logits, sampler.eta_cutoff, keep)
    return logits


def choose(logits, key, sampler: Sampler, temperature, top_p):
    """Next token per row [B]: argmax (greedy) or a draw from the processed distribution."""
    if not sampler.do_sample:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    # The same distribution from logits whose largest is 0: divided by a tiny temperature, the others
    # go to -inf, never to +inf (which would make every such token a tie, the most likely or not).
    logits = logits.astype(jnp.float32)
    logits = logits - jnp.max(logits, axis=-1, keepdims=True)
    return jax.random.categorical(key, process_logits(logits, sampler, temperature, top_p), axis=-1).astype(jnp.int32)


# -- the compiled loop -----------------------------------------------------------------------
def _decode_weights(params, config: OpenAIGPTConfig, cpu_kernel: bool):
    """(layers, lm_head) for `decode_step`: packed for the CPU kernels, else the layers split (no lm_head)."""
    if not cpu_kernel:
        return split_layers(params["h"], config.n_layer), None
    layers = pack_layers(params["h"], config.n_layer)
    if "lm_head" in params:  # untied
        return layers, cpu_decode.pack(params["lm_head"]["kernel"])
    return layers, cpu_decode.pack(params["tokens_embed"]["embedding"], transposed=True)


def phase_widths(prompt_slots: int, cache_slots: int) -> tuple:
    """Cache sizes of the decode phases: 128, 256, ... past the prompt, then all slots.

    A tail phase shorter than half the one before is merged into it (one compiled step fewer).
    """
    widths = []
    for w in (FIRST_PHASE_WIDTH << i for i in itertools.count()):
        if w >= cache_slots:
            break
        if w > prompt_slots:
            widths.append(w)
    if widths and cache_slots - widths[-1] < widths[-1] // 2:
        widths.pop()
    return tuple(widths) + (cache_slots,)


def _put_step(buffers: tuple, new: tuple, step) -> tuple:
    """Each recorded [R, V] of a step into its [R, N, V] buffer at column `step` (None: not recorded)."""
    at = (0, step, 0)
    return tuple(None if b is None else jax.lax.dynamic_update_slice(b, n[:, None], at) for b, n in zip(buffers, new))


class _State(NamedTuple):
    step: jax.Array  # int32 []: index of the newest chosen token
    last: jax.Array  # [B] the newest chosen token
    cache: KVCache
    tokens: jax.Array  # [B, N] chosen tokens; pad after a row's eos
    done: jax.Array  # [B] bool: the row has emitted an eos
    records: tuple = (None, None)  # [B, N, V] scores and raw logits per step, when generate keeps them


# Streamers of the calls in flight, by id: the compiled loop calls back `_emit` with an id (an
# argument, not a constant) so a new streamer does not recompile anything. An exception a streamer
# raises is kept here (the loop would see only XLA's INTERNAL error), stops the loop, and `generate`
# raises it again: a streamer may stop generation by raising, as in transformers.
_STREAMERS: dict = {}
_STREAM_ERRORS: dict = {}
_stream_ids = itertools.count()


def _emit(stream_id, tokens) -> np.ndarray:
    """Hand one step's tokens to the streamer; True when it raised (the loop then stops)."""
    stream_id = int(stream_id)
    if stream_id not in _STREAM_ERRORS:
        try:
            _STREAMERS[stream_id](np.asarray(tokens))
        except BaseException as e:  # noqa: BLE001 - raised again by `generate`, on the host
            _STREAM_ERRORS[stream_id] = e
    return np.asarray(stream_id in _STREAM_ERRORS)


@functools.partial(
    jax.jit, static_argnames=("config", "sampler", "cache_size", "dtype", "stream", "cpu_kernel", "record")
)
def _generate_loop(
    params,
    input_ids,
    start,
    max_new_tokens,
    temperature,
    top_p,
    eos_ids,
    pad_id,
    key,
    stream_id,
    penalty,
    min_new_tokens,
    *,
    config: OpenAIGPTConfig,
    sampler: Sampler,
    cache_size: int,
    dtype: str,
    stream: bool,
    cpu_kernel: bool,
    record: tuple = (False, False),
):
    """Prefill, then decode until max_new_tokens or every row has emitted an eos.

    input_ids [B, T] left-padded, start [B], eos_ids [E]; scalars max_new_tokens, temperature,
    top_p, pad_id, penalty (the repetition penalty) and min_new_tokens are traced (changing them
    does not recompile). `cpu_kernel`: decode steps run
    their matmuls on `cpu_decode` (`use_cpu_kernel`). `record` = (scores, logits): keep each step's processed
    scores / raw logits [B, V] (float32). Returns (tokens [B, S - T], count, scores, logits), the last two
    [B, S - T, V] or None.
    """
    B, T = input_ids.shape
    dtype = jnp.dtype(dtype)
    layers, lm_head = _decode_weights(params, config, cpu_kernel)

    constrained = sampler.constrained

    def pick(logits, step, done, tokens):
        raw = logits.astype(jnp.float32) if record[1] else None
        if constrained:  # the row's tokens so far: its prompt from start[b], then tokens[:, :step]
            history, valid = row_history(input_ids, tokens, start, step)
            logits = logits.astype(jnp.float32)
            logits = constrain_logits(
                logits, history, valid, step, eos_ids, sampler, penalty, min_new_tokens, max_new_tokens
            )
        token = choose(logits, jax.random.fold_in(key, step), sampler, temperature, top_p)
        scores = None
        if record[0]:  # transformers' scores: after the processors, and the warpers when sampling
            scores = logits.astype(jnp.float32)
            scores = process_logits(scores, sampler, temperature, top_p) if sampler.do_sample else scores
            scores = jax.nn.log_softmax(scores, axis=-1) if sampler.renormalize else scores  # (chooses the same)
        # transformers `_sample`: finished rows get pad_token_id; a row finishes on emitting an eos.
        token = jnp.where(done, pad_id, token)
        done = done | jnp.any(token[:, None] == eos_ids[None, :], axis=-1)
        if stream:
            done = done | io_callback(_emit, jax.ShapeDtypeStruct((), jnp.bool_), stream_id, token, ordered=True)
        return token, done, (scores, raw)

    # The kernels' attention reads only the live slots: one phase over the whole cache.
    widths = (cache_size,) if cpu_kernel else phase_widths(T, cache_size)
    logits, cache = prefill(params, config, input_ids, start, widths[0], dtype)
    tokens = jnp.full((B, cache_size - T), pad_id, jnp.int32)
    first, done, kept = pick(logits, jnp.zeros((), jnp.int32), jnp.zeros((B,), bool), tokens)
    # Each recorded [B, V] goes into its [B, S - T, V] buffer at the step's column.
    records = tuple(None if k is None else jnp.zeros((B, cache_size - T, k.shape[-1]), k.dtype) for k in kept)

    state = _State(
        jnp.zeros((), jnp.int32), first, cache, tokens.at[:, 0].set(first), done, _put_step(records, kept, 0)
    )

    def cond(s: _State):
        return (s.step + 1 < max_new_tokens) & ~jnp.all(s.done) & (s.cache.length < s.cache.size)

    def body(s: _State) -> _State:
        logits, cache = decode_step(params, config, s.cache, s.last, layers=layers, lm_head=lm_head, dtype=dtype)
        token, done, kept = pick(logits, s.step + 1, s.done, s.tokens)
        tokens = jax.lax.dynamic_update_slice(s.tokens, token[:, None], (jnp.zeros_like(s.step), s.step + 1))
        return _State(s.step + 1, token, cache, tokens, done, _put_step(s.records, kept, s.step + 1))

    for width in widths:
        state = jax.lax.while_loop(cond, body, state._replace(cache=grow_cache(state.cache, width)))
    return state.tokens, state.step + 1, *state.records


# -- beam search -----------------------------------------------------------------------------
class Beams(NamedTuple):
    """Static settings of a beam search (transformers' GenerationConfig names)."""

    num_beams: int
    num_return_sequences: int
    early_stopping: bool | str  # True, False or "never"


class _BeamState(NamedTuple):
    """transformers' `_beam_search` state, its [B, beams, ...] arrays holding only the new tokens."""

    step: jax.Array  # int32 []: new tokens in the running beams
    cache: KVCache  # rows b * K + k: running beam k of prompt b
    running: jax.Array  # [B, K, N] new tokens of the running beams (fill after `step`)
    running_scores: jax.Array  # [B, K] their summed log-probabilities
    done: jax.Array  # [B, K, N] the best finished hypotheses (or placeholders)
    done_scores: jax.Array  # [B, K] their length-penalised scores (-1e9: none yet)
    done_lengths: jax.Array  # [B, K] int32: their new tokens
    finished: jax.Array  # [B, K] bool: the slot holds a finished hypothesis (is_sent_finished)
    improvable: jax.Array  # [B, 1] bool: a running beam may still beat the worst finished one
    all_hit: jax.Array  # bool []: every candidate of the last step stopped (no way to continue)
    running_beams: jax.Array  # [B, K, N] int32: the beam (b * K + k) each new token came from, -1 after `step`
    done_beams: jax.Array  # [B, K, N] the same for the finished hypotheses (transformers' beam_indices)
    records: tuple = (None, None)  # [B * K, N, V] scores and raw logits per step, when generate keeps them


def _take_beams(x, index):
    """x [B, W, ...] at index [B, K] along the beam axis (transformers `_gather_beams`)."""
    return jnp.take_along_axis(x, index.reshape(index.shape + (1,) * (x.ndim - 2)), axis=1)


def beam_step(st: _BeamState, log_probs, eos_ids, max_new_tokens, length_penalty, beams: Beams, key=None) -> _BeamState:
    """One step of transformers' `_beam_search` after the model: log_probs [B * K, V] of the running
    beams' next token, processed. The top candidates over all beams (with `key`, beam sampling: drawn
    without replacement from the softmax of their scores, by the Gumbel top-k trick, where transformers
    uses torch.multinomial), the running beams kept among those that did not stop, the finished
    hypotheses merged in by score, the cache reordered to the new beams, and the early-stop heuristic."""
    B, K, N = st.running.shape
    V = log_probs.shape[-1]
    W = max(2, 1 + eos_ids.shape[0]) * K  # beams_to_keep
    step = st.step
    scores = (log_probs.reshape(B, K, V) + st.running_scores[:, :, None]).reshape(B, K * V)
    if key is None:
        top_scores, top_index = jax.lax.top_k(scores, W)  # [B, W]
    else:
        top_index = jax.lax.top_k(scores + jax.random.gumbel(key, scores.shape), W)[1]
        top_scores = jnp.take_along_axis(scores, top_index, axis=1)
    parent, token = top_index // V, top_index % V
    candidates = _take_beams(st.running, parent)  # [B, W, N]
    candidates = jnp.where(jnp.arange(N) == step, token[:, :, None], candidates)
    origins = _take_beams(st.running_beams, parent)  # [B, W, N]: each candidate's beam indices
    origins = jnp.where(jnp.arange(N) == step, (jnp.arange(B)[:, None] * K + parent)[:, :, None], origins)
    hits = (step + 1 >= max_new_tokens) | jnp.any(token[:, :, None] == eos_ids, axis=-1)  # stopping criteria

    # The running beams: the best K candidates that did not stop.
    running_scores = top_scores + hits.astype(jnp.float32) * -1.0e9
    keep = jax.lax.top_k(running_scores, K)[1]
    running = _take_beams(candidates, keep)
    running_beams = _take_beams(origins, keep)
    running_scores = _take_beams(running_scores, keep)
    parent = _take_beams(parent, keep)

    # The finished hypotheses: candidates among the first K that stopped, scored with the length
    # penalty, merged with the ones kept so far; the best K stay.
    did_finish = hits & (jnp.arange(W) < K)[None, :]
    finish_scores = top_scores / jnp.power((step + 1).astype(jnp.float32), length_penalty)
    if beams.early_stopping is True:
        finish_scores += jnp.all(st.finished, axis=1, keepdims=True).astype(jnp.float32) * -1.0e9
    finish_scores += (~st.improvable).astype(jnp.float32) * -1.0e9
    finish_scores += (~did_finish).astype(jnp.float32) * -1.0e9
    merged_scores = jnp.concatenate([st.done_scores, finish_scores], axis=1)
    best = jax.lax.top_k(merged_scores, K)[1]
    done = _take_beams(jnp.concatenate([st.done, candidates], axis=1), best)
    done_beams = _take_beams(jnp.concatenate([st.done_beams, origins], axis=1), best)
    done_scores = _take_beams(merged_scores, best)
    lengths = jnp.concatenate([st.done_lengths, jnp.broadcast_to(step + 1, (B, W)).astype(jnp.int32)], axis=1)
    done_lengths = _take_beams(lengths, best)
    finished = _take_beams(jnp.concatenate([st.finished, did_finish], axis=1), best)

    # The cache follows the running beams (transformers' reorder_cache).
    rows = (jnp.arange(B)[:, None] * K + parent).reshape(-1)
    cache = st.cache._replace(
        key=tuple(jnp.take(k, rows, axis=0) for k in st.cache.key),
        value=tuple(jnp.take(v, rows, axis=0) for v in st.cache.value),
    )
    step = step + 1
    # `_check_early_stop_heuristic`: can the best running beam still beat the worst finished one?
    if beams.early_stopping == "never":
        best_length = jnp.where(length_penalty > 0.0, max_new_tokens, step)
    else:
        best_length = step
    best_possible = running_scores[:, :1] / jnp.power(best_length.astype(jnp.float32), length_penalty)
    worst = jnp.where(finished, jnp.min(done_scores, axis=1, keepdims=True), -1.0e9)
    improvable = st.improvable & jnp.any(best_possible > worst, axis=-1, keepdims=True)
    return _BeamState(
        step, cache, running, running_scores, done, done_scores, done_lengths, finished, improvable, jnp.all(hits),
        running_beams, done_beams, st.records,
    )  # fmt: skip


def _beams_go_on(st: _BeamState, beams: Beams):
    """transformers' `_beam_search_has_unfinished_sequences`."""
    go_on = jnp.any(st.improvable) & ~st.all_hit
    if beams.early_stopping is True:
        go_on = go_on & ~jnp.all(st.finished)
    return go_on


@functools.partial(
    jax.jit, static_argnames=("config", "sampler", "beams", "cache_size", "dtype", "cpu_kernel", "record")
)
def _beam_search_loop(
    params,
    input_ids,
    start,
    max_new_tokens,
    eos_ids,
    fill_id,
    length_penalty,
    penalty,
    min_new_tokens,
    temperature,
    top_p,
    key,
    *,
    config: OpenAIGPTConfig,
    sampler: Sampler,
    beams: Beams,
    cache_size: int,
    dtype: str,
    cpu_kernel: bool,
    record: tuple = (False, False),
):
    """Prefill, then beam search until transformers' stopping rules end it.

    input_ids [B, T] left-padded, start [B]. Returns (new tokens [B, n, S - T] of the n best
    hypotheses per prompt, their lengths [B, n]); past its length a hypothesis holds `fill_id`. Also their
    scores [B, n], beam indices [B, n, S - T] (-1 past the length), the steps run, and with `record` =
    (scores, logits) each step's processed log-probabilities / raw logits [B * K, S - T, V] (else None).
    """
    B, T = input_ids.shape
    K = beams.num_beams
    dtype = jnp.dtype(dtype)
    layers, lm_head = _decode_weights(params, config, cpu_kernel)
    ids = jnp.repeat(input_ids, K, axis=0)  # row b * K + k
    start = jnp.repeat(start, K, axis=0)
    N = cache_size - T
    constrained = sampler.constrained

    def log_probs_of(logits, st: _BeamState):
        log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
        if constrained:  # processors see each beam's tokens, as transformers' `logits_processor(input_ids, ...)`
            history, valid = row_history(ids, st.running.reshape(B * K, N), start, st.step)
            log_probs = constrain_logits(
                log_probs, history, valid, st.step, eos_ids, sampler, penalty, min_new_tokens, max_new_tokens
            )
        if sampler.do_sample:  # the warpers come after the processors in transformers' list
            log_probs = process_logits(log_probs, sampler, temperature, top_p, max(2, 1 + eos_ids.shape[0]))
        if sampler.renormalize:  # transformers' LogitNormalization, last
            log_probs = jax.nn.log_softmax(log_probs, axis=-1)
        return log_probs

    def step(st: _BeamState, logits) -> _BeamState:
        draw = jax.random.fold_in(key, st.step) if sampler.do_sample else None
        log_probs = log_probs_of(logits, st)
        kept = (log_probs if record[0] else None, logits.astype(jnp.float32) if record[1] else None)
        st = st._replace(records=_put_step(st.records, kept, st.step))
        return beam_step(st, log_probs, eos_ids, max_new_tokens, length_penalty, beams, draw)

    widths = (cache_size,) if cpu_kernel else phase_widths(T, cache_size)
    logits, cache = prefill(params, config, ids, start, widths[0], dtype)
    fill = jnp.full((B, K, N), fill_id, jnp.int32)
    state = _BeamState(
        step=jnp.zeros((), jnp.int32),
        cache=cache,
        running=fill,
        running_scores=jnp.zeros((B, K), jnp.float32).at[:, 1:].set(-1.0e9),  # only the first beam expands
        done=fill,
        done_scores=jnp.full((B, K), -1.0e9, jnp.float32),
        done_lengths=jnp.zeros((B, K), jnp.int32),
        finished=jnp.zeros((B, K), bool),
        improvable=jnp.ones((B, 1), bool),
        all_hit=jnp.zeros((), bool),
        running_beams=jnp.full((B, K, N), -1, jnp.int32),
        done_beams=jnp.full((B, K, N), -1, jnp.int32),
        records=tuple(jnp.zeros((B * K, N, logits.shape[-1]), jnp.float32) if r else None for r in record),
    )
    state = step(state, logits)

    def cond(st: _BeamState):
        return _beams_go_on(st, beams) & (st.step < max_new_tokens) & (st.cache.length < st.cache.size)

    def body(st: _BeamState) -> _BeamState:
        last = jnp.take_along_axis(st.running, jnp.broadcast_to(st.step - 1, (B, K, 1)), axis=2).reshape(B * K)
        logits, cache = decode_step(params, config, st.cache, last, layers=layers, lm_head=lm_head, dtype=dtype)
        return step(st._replace(cache=cache), logits)

    for width in widths:
        state = jax.lax.while_loop(cond, body, state._replace(cache=grow_cache(state.cache, width)))
    n = beams.num_return_sequences
    found = (state.done[:, :n], state.done_lengths[:, :n], state.done_scores[:, :n], state.done_beams[:, :n])
    return *found, state.step, *state.records


# -- the host-side door ----------------------------------------------------------------------
def prompt_bucket(length: int) -> int:
    """Prompt slots for a prompt of `length` tokens: the next power of two, at least 8."""
    return max(MIN_PROMPT_BUCKET, 1 << (length - 1).bit_length())


def cache_bucket(prompt_slots: int, max_new_tokens: int) -> int:
    return -(-(prompt_slots + max_new_tokens) // CACHE_BUCKET) * CACHE_BUCKET


def left_align(input_ids: np.ndarray, attention_mask: np.ndarray | None):
    """Move each row's unmasked tokens to its right end, keeping their order.

    Returns (ids [B, T], start [B]): row b's prompt is ids[b, start[b]:]. Left-padded input comes
    back unchanged; right padding (or holes) is moved to the left, the masked tokens kept as they are.
    """
    B, T = input_ids.shape
    if attention_mask is None:
        return input_ids, np.zeros(B, np.int32)
    keep = attention_mask.astype(bool)
    lengths = keep.sum(axis=1)
    if (lengths == 0).any():
        raise ValueError(f"attention_mask row {int(np.argmin(lengths))} masks every token: each row needs a prompt")
    order = np.argsort(keep, axis=1, kind="stable")  # masked positions first, each group in order
    return np.take_along_axis(input_ids, order, axis=1), (T - lengths).astype(np.int32)


def _int_list(name: str, value) -> list:
    """An int or ints, as a list; arrays and tensors (0-d or 1-d) of integers too, as transformers takes them."""
    if hasattr(value, "shape") and not isinstance(value, np.integer):
        array = np.asarray(value)
        if array.ndim <= 1 and (array.size == 0 or np.issubdtype(array.dtype, np.integer)):
            return [int(v) for v in array.reshape(-1)]
        raise ValueError(f"{name} must be an int or a list of ints, got an array of shape {array.shape}, {array.dtype}")
    values = [value] if isinstance(value, (int, np.integer)) else list(value)
    if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
        raise ValueError(f"{name} must be an int or a list of ints, got {value!r}")
    return [int(v) for v in values]


def _check_ids(input_ids, config: OpenAIGPTConfig) -> np.ndarray:
    try:
        ids = np.asarray(input_ids)
    except (TypeError, ValueError):
        if ragged_rows(input_ids):
            raise ValueError(
                f"input_ids rows differ in length ({ragged_rows(input_ids)}): pad them and pass an attention_mask"
            ) from None
        raise TypeError(f"input_ids must be an array or nested list of ints, got {type(input_ids).__name__}") from None
    if ids.ndim != 2:
        raise ValueError(f"input_ids must be [batch, seq_len], got shape {ids.shape}")
    if ids.shape[0] < 1 or ids.shape[1] < 1:
        raise ValueError(f"input_ids must hold at least one token per row, got shape {ids.shape}")
    if not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"input_ids must hold integers, got dtype {ids.dtype}")
    bad = (ids < 0) | (ids >= config.vocab_size)
    if bad.any():
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"input_ids holds {ids[index]} at index {index}, outside [0, {config.vocab_size})")
    return ids.astype(np.int32)


def _as_key(prng_key):
    """A jax.random key from a key, a raw uint32[2] key or an int seed; fresh entropy when None."""
    if prng_key is None:
        return jax.random.key(int.from_bytes(os.urandom(4), "little"))
    if isinstance(prng_key, (int, np.integer)) and not isinstance(prng_key, bool):
        try:
            return jax.random.key(int(prng_key))
        except OverflowError:
            raise ValueError(f"prng_key as an int seed must be in [-2**63, 2**63), got {prng_key}") from None
    if isinstance(prng_key, jax.Array) and jnp.issubdtype(prng_key.dtype, jax.dtypes.prng_key):
        return prng_key
    raw = np.asarray(prng_key) if not isinstance(prng_key, (str, bytes)) else None
    if raw is not None and raw.ndim == 1 and np.issubdtype(raw.dtype, np.integer):
        try:  # uint32[2] for the default threefry keys, uint32[4] for "rbg" ones (jax_default_prng_impl)
            return jax.random.wrap_key_data(jnp.asarray(raw, jnp.uint32))
        except (TypeError, ValueError):
            pass
    raise ValueError(
        "prng_key must be an int seed, a jax.random.key or a raw key (jax.random.PRNGKey, uint32[2] by default), "
        f"got {prng_key!r}"
    )


def generate(
    params,
    config: OpenAIGPTConfig,
    input_ids,
    attention_mask=None,
    max_new_tokens: int | None = None,
    max_length: int | None = None,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_token_id: int | Sequence[int] | None = None,
    pad_token_id: int | None = None,
    num_return_sequences: int = 1,
    prng_key=None,
    *,
    repetition_penalty: float | None = None,
    no_repeat_ngram_size: int | None = None,
    min_new_tokens: int | None = None,
    min_length: int | None = None,
    bad_words_ids: Sequence[Sequence[int]] | None = None,
    suppress_tokens: Sequence[int] | None = None,
    begin_suppress_tokens: Sequence[int] | None = None,
    forced_bos_token_id: int | None = None,
    forced_eos_token_id: int | Sequence[int] | None = None,
    min_p: float | None = None,
    typical_p: float | None = None,
    epsilon_cutoff: float | None = None,
    eta_cutoff: float | None = None,
    sequence_bias=None,
    renormalize_logits: bool | None = None,
    num_beams: int | None = None,
    length_penalty: float | None = None,
    early_stopping: bool | str | None = None,
    streamer: Callable[[np.ndarray], None] | None = None,
    dtype=jnp.float32,
    output_scores: bool = False,
    output_logits: bool = False,
    return_dict_in_generate: bool = False,
) -> np.ndarray | GenerateDecoderOnlyOutput | GenerateBeamDecoderOnlyOutput:
    """Generate from the transformer params (`params["transformer"]` of an LM-head model, with the
    model's `lm_head` beside them when its head is untied).

    input_ids [B, T] (attention_mask [B, T], 1 = token, any padding side) -> int32 [B * n, T + N]:
    the prompts (left-padded: right padding is moved to the left) followed by the new tokens, N of
    them at most max_new_tokens (or max_length - T; given neither, 20, as transformers), fewer
    when every row stopped at an eos. Rows that stopped are filled with pad_token_id (default
    eos). `num_return_sequences` repeats each prompt (sampling only), `prng_key` (key or int
    seed; fresh entropy if None) drives sampling. `streamer(tokens [B * n])` is called with each
    step's tokens as they are chosen; an exception it raises stops the loop and is raised here.
    top_k=None means transformers' default, 50; top_k=0 keeps every token.

    transformers' logits processors, greedy or sampling, before the sampling options:
    `repetition_penalty` (> 0; 1 or None: off) divides the positive logits of every token the row
    holds so far and multiplies the negative ones; `no_repeat_ngram_size` n bans every token that
    would repeat an n-gram of the row; `min_new_tokens` (or `min_length`, prompt width included, as
    max_length) bans the eos ids until that many new tokens are out; `bad_words_ids`, `forced_bos_token_id`,
    `forced_eos_token_id`, `suppress_tokens`, `begin_suppress_tokens` as transformers' processors of those
    names, and `sequence_bias` (first) and `renormalize_logits` (last). A row's tokens are its prompt without the
    masked padding (each row as if alone, as its attention) and what it generated. Sampling: `min_p`, `typical_p`, `epsilon_cutoff`, `eta_cutoff` after top-p.

    `num_beams` > 1: transformers' beam search (with do_sample, beam sampling), its `length_penalty` (default 1.0:
    finished hypotheses scored by summed log-probability / new tokens) and `early_stopping` (False,
    True or "never"); the `num_return_sequences` (<= num_beams) best hypotheses per prompt, those
    shorter than the longest filled as transformers fills them (pad, or the first eos when pad is 0
    or None).

    `return_dict_in_generate=True` returns transformers' output object instead of the array: `sequences`, and on
    request `scores` (`output_scores`: per new token [B * n, V] float32, the logits after the processors and,
    sampling, the warpers: what the token was chosen from) and `logits` (`output_logits`: the model's raw ones).
    Beam search: `GenerateBeamDecoderOnlyOutput`, with `beam_indices`, and per step [B * num_beams, V] scores
    (log-probabilities after the processors) and `sequences_scores`, as transformers'.
    """
    _check_flags(
        output_scores=output_scores, output_logits=output_logits, return_dict_in_generate=return_dict_in_generate
    )
    if (output_scores or output_logits) and not return_dict_in_generate:
        logger.warning(  # as transformers' GenerationConfig.validate
            "return_dict_in_generate is not True, so output_scores / output_logits are ignored: pass "
            "return_dict_in_generate=True to get them"
        )
        output_scores = output_logits = False
    ids = _check_ids(input_ids, config)
    if not config.tie_word_embeddings and "lm_head" not in params:
        raise ValueError(
            "the config unties the LM head (tie_word_embeddings=False): pass the model's lm_head beside the "
            "transformer's params, {**params['transformer'], 'lm_head': params['lm_head']}"
        )
    if streamer is not None and not callable(streamer):
        raise TypeError(f"streamer must be a callable taking each step's tokens, got {type(streamer).__name__}")
    T = ids.shape[1]
    mask = None
    if attention_mask is not None:
        mask = np.asarray(attention_mask)
        if mask.shape != ids.shape:
            raise ValueError(f"attention_mask has shape {mask.shape} but input_ids has shape {ids.shape}")
    longest = T if mask is None else int(np.max(np.sum(mask != 0, axis=1), initial=0))
    max_new_tokens = _resolve_max_new_tokens(config, T, max_new_tokens, max_length, longest)
    sampler, temperature, top_p = _resolve_sampler(do_sample, temperature, top_k, top_p)
    sampler, penalty, min_new = _resolve_processors(
        sampler, repetition_penalty, no_repeat_ngram_size, min_new_tokens, min_length, T, max_new_tokens
    )
    if (
        not isinstance(num_return_sequences, (int, np.integer))
        or isinstance(num_return_sequences, bool)
        or num_return_sequences < 1
    ):
        raise ValueError(f"num_return_sequences must be a positive integer, got {num_return_sequences!r}")
    beams = _resolve_beams(num_beams, length_penalty, early_stopping, num_return_sequences, streamer)
    if num_return_sequences > 1 and not do_sample and beams is None:
        raise ValueError(
            f"num_return_sequences={num_return_sequences} needs do_sample=True: greedy decoding returns the same sequence"
        )
    if eos_token_id is None:
        eos_token_id = config.eos_token_id if config.eos_token_id is not None else []  # 0 is a token id
    eos = _int_list("eos_token_id", eos_token_id)
    sampler = sampler._replace(min_new_tokens=sampler.min_new_tokens and bool(eos))  # as transformers: no eos, no ban
    sampler = _resolve_more_processors(
        sampler, config, eos, bad_words_ids, suppress_tokens, begin_suppress_tokens, forced_bos_token_id,
        forced_eos_token_id, min_p, typical_p, epsilon_cutoff, eta_cutoff, sequence_bias, renormalize_logits,
    )  # fmt: skip
    if any(not 0 <= e < config.vocab_size for e in eos):
        logger.warning("eos_token_id %s is outside [0, %d): no generated token can match it", eos, config.vocab_size)
    if pad_token_id is not None and (not isinstance(pad_token_id, (int, np.integer)) or isinstance(pad_token_id, bool)):
        raise ValueError(f"pad_token_id must be an int, got {pad_token_id!r}")
    if pad_token_id is None:
        pad_token_id = config.pad_token_id
    if pad_token_id is None and eos:
        logger.warning("Setting pad_token_id to eos_token_id:%d for open-end generation.", eos[0])
        pad_token_id = eos[0]
    pad = int(pad_token_id) if pad_token_id is not None else 0

    if beams is not None and max(2, 1 + len(eos)) > config.vocab_size:
        raise ValueError(
            f"beam search keeps {max(2, 1 + len(eos))} candidates per beam ({len(eos)} eos ids), more than the "
            f"vocabulary's {config.vocab_size} tokens"
        )
    ids, start = left_align(ids, mask)
    if beams is not None:
        traced = {
            "length_penalty": 1.0 if length_penalty is None else float(length_penalty),
            "penalty": penalty,
            "min_new_tokens": min_new,
            "temperature": temperature,
            "top_p": top_p,
            "key": _as_key(prng_key) if do_sample else jax.random.key(0),
        }
        outputs = (output_scores, output_logits) if return_dict_in_generate else None
        return _beam_search(
            params, config, ids, start, max_new_tokens, eos, pad_token_id, beams, sampler, dtype, traced, outputs
        )
    if num_return_sequences > 1:  # transformers' _expand_inputs_for_generation: repeat_interleave
        ids, start = np.repeat(ids, num_return_sequences, axis=0), np.repeat(start, num_return_sequences)
    slots = prompt_bucket(T)
    padded = np.concatenate([np.zeros((ids.shape[0], slots - T), np.int32), ids], axis=1)
    stream_id = next(_stream_ids)
    if streamer is not None:
        _STREAMERS[stream_id] = streamer
    try:
        tokens, count, scores, logits = _generate_loop(
            params,
            jnp.asarray(padded),
            jnp.asarray(start + (slots - T), jnp.int32),
            jnp.int32(max_new_tokens),
            jnp.float32(temperature),
            jnp.float32(top_p),
            jnp.asarray(eos, jnp.int32).reshape(-1),
            jnp.int32(pad),
            _as_key(prng_key) if do_sample else jax.random.key(0),
            jnp.int32(stream_id),
            jnp.float32(penalty),
            jnp.int32(min_new),
            config=config,
            sampler=sampler,
            cache_size=cache_bucket(slots, max_new_tokens),
            dtype=jnp.dtype(dtype).name,
            stream=streamer is not None,
            cpu_kernel=use_cpu_kernel(dtype),
            record=(bool(output_scores), bool(output_logits)),
        )
        tokens, count = np.asarray(tokens), int(count)
    finally:
        _STREAMERS.pop(stream_id, None)
        error = _STREAM_ERRORS.pop(stream_id, None)
    if error is not None:
        raise error
    sequences = np.concatenate([ids, tokens[:, :count]], axis=1)
    if not return_dict_in_generate:
        return sequences

    def per_step(kept):  # [B, N, V] -> N arrays [B, V], as transformers' tuples
        return None if kept is None else tuple(np.moveaxis(np.asarray(kept)[:, :count], 1, 0))

    return GenerateDecoderOnlyOutput(sequences=sequences, scores=per_step(scores), logits=per_step(logits))


def _check_flags(**flags) -> None:
    for name, value in flags.items():
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"{name} must be True or False, got {value!r}")


def compute_transition_scores(config: OpenAIGPTConfig, sequences, scores, beam_indices=None, normalize_logits=False):
    """transformers' `compute_transition_scores`: each generated token's score [B * n, N] from `generate`'s
    `sequences` and `scores` (with `normalize_logits`, log-probabilities: scores log-softmaxed over the
    vocabulary first). `beam_indices` [B * n, N] picks each row's beam per step (negative: none, score 0)."""
    sequences = np.asarray(sequences)
    if not isinstance(scores, (tuple, list)) or not scores:
        raise ValueError("scores must be generate's non-empty tuple of per-step [rows, vocab] arrays")
    stacked = np.stack([np.asarray(s, np.float32) for s in scores])  # [N, R, V]
    N, R, V = stacked.shape
    if V != config.vocab_size:
        raise ValueError(f"scores have {V} columns, but the model's vocabulary has {config.vocab_size}")
    if sequences.ndim != 2 or sequences.shape[1] < N:
        raise ValueError(f"sequences {sequences.shape} must be [rows, prompt + {N} new tokens]")
    if normalize_logits:
        stacked = np.asarray(jax.nn.log_softmax(jnp.asarray(stacked), axis=-1))
    if beam_indices is None:
        if sequences.shape[0] != R:
            raise ValueError(f"sequences has {sequences.shape[0]} rows but each score {R}")
        beam_indices = np.broadcast_to(np.arange(R)[:, None], (R, N))
    beam_indices = np.asarray(beam_indices)
    if beam_indices.ndim != 2 or beam_indices.shape[0] != sequences.shape[0]:
        raise ValueError(f"beam_indices {beam_indices.shape} must be [rows of sequences ({sequences.shape[0]}), steps]")
    if int((beam_indices >= 0).sum(-1).max(initial=0)) > N or beam_indices.max(initial=-1) >= R:
        raise ValueError(
            f"beam_indices point past the scores: at most {N} steps of {R} beams each, got {beam_indices.shape[1]} "
            f"steps up to beam {beam_indices.max(initial=-1)}"
        )
    missing = beam_indices < 0
    width = int((~missing).sum(-1).max(initial=0))
    beams, missing = np.where(missing, 0, beam_indices)[:, :width], missing[:, :width]
    tokens = sequences[:, sequences.shape[1] - width :]
    out = stacked[np.arange(width)[None, :], beams, tokens]
    return np.where(missing, 0.0, out).astype(np.float32)


def _resolve_beams(num_beams, length_penalty, early_stopping, num_return_sequences, streamer):
    """The beam search's static settings, or None for one beam (greedy or sampling)."""
    if num_beams is None:
        return None
    if not isinstance(num_beams, (int, np.integer)) or isinstance(num_beams, bool) or num_beams < 1:
        raise ValueError(f"num_beams must be a positive integer, got {num_beams!r}")
    if num_beams == 1:
        return None
    if streamer is not None:
        raise ValueError("`streamer` cannot be used with beam search (as in transformers); set num_beams=1")
    if num_return_sequences > num_beams:
        raise ValueError(
            f"num_return_sequences ({num_return_sequences}) has to be smaller or equal to num_beams ({num_beams})"
        )
    if length_penalty is not None and not (
        isinstance(length_penalty, (int, float, np.floating, np.integer)) and np.isfinite(length_penalty)
    ):
        raise ValueError(f"length_penalty must be a finite number, got {length_penalty!r}")
    if early_stopping is None:
        early_stopping = False
    if early_stopping not in (True, False, "never") or not isinstance(early_stopping, (bool, str)):
        raise ValueError(f"early_stopping must be True, False or 'never', got {early_stopping!r}")
    return Beams(int(num_beams), int(num_return_sequences), early_stopping)


def _beam_search(params, config, ids, start, max_new, eos, pad, beams, sampler, dtype, traced: dict, outputs=None):
    """Run `_beam_search_loop` on left-aligned ids [B, T]; prompt + new tokens [B * n, T + N]. `traced`:
    its arguments that do not recompile it (length_penalty, penalty, min_new_tokens, temperature, top_p, key).
    `outputs` (output_scores, output_logits): return transformers' GenerateBeamDecoderOnlyOutput instead."""
    B, T = ids.shape
    slots = prompt_bucket(T)
    padded = np.concatenate([np.zeros((B, slots - T), np.int32), ids], axis=1)
    # transformers' output_fill_value: `pad_token_id or eos_token_id[0] if eos_token_id is not None else -1`
    fill = (pad if pad else eos[0]) if eos else -1
    record = (bool(outputs and outputs[0]), bool(outputs and outputs[1]))
    tokens, lengths, scores, origins, steps, step_scores, step_logits = _beam_search_loop(
        params,
        jnp.asarray(padded),
        jnp.asarray(start + (slots - T), jnp.int32),
        jnp.int32(max_new),
        jnp.asarray(eos, jnp.int32).reshape(-1),
        jnp.int32(fill),
        jnp.float32(traced["length_penalty"]),
        jnp.float32(traced["penalty"]),
        jnp.int32(traced["min_new_tokens"]),
        jnp.float32(traced["temperature"]),
        jnp.float32(traced["top_p"]),
        traced["key"],
        config=config,
        sampler=sampler,
        beams=beams,
        cache_size=cache_bucket(slots, max_new),
        dtype=jnp.dtype(dtype).name,
        cpu_kernel=use_cpu_kernel(dtype),
        record=record,
    )
    tokens, lengths = np.asarray(tokens), np.asarray(lengths)  # [B, n, S - T], [B, n]
    n = beams.num_return_sequences
    width = int(lengths.max())
    sequences = np.concatenate([np.repeat(ids, n, axis=0), tokens[:, :, :width].reshape(B * n, -1)], axis=1)
    if outputs is None:
        return sequences
    steps = int(steps)

    def per_step(kept):  # [B * K, N, V] -> one [B * K, V] per step run, as transformers' tuples
        return None if kept is None else tuple(np.moveaxis(np.asarray(kept)[:, :steps], 1, 0))

    return GenerateBeamDecoderOnlyOutput(
        sequences=sequences,
        sequences_scores=np.asarray(scores).reshape(B * n) if record[0] else None,
        scores=per_step(step_scores),
        logits=per_step(step_logits),
        beam_indices=np.asarray(origins)[:, :, :width].reshape(B * n, width),
    )


def _resolve_max_new_tokens(
    config: OpenAIGPTConfig, prompt_len: int, max_new_tokens, max_length, longest: int | None = None
) -> int:
    """transformers' rule (`_prepare_generated_length`): max_new_tokens wins over max_length (the prompts'
    padded width `prompt_len` + new); with neither, 20 new tokens, the total capped at n_positions. The
    longest prompt (`longest` tokens, default prompt_len) then feeds all but the last new token back, at
    positions up to longest + new - 2, which the position table must hold (transformers, past it, fails)."""
    longest = prompt_len if longest is None else longest
    if max_new_tokens is None and max_length is None:
        if prompt_len >= config.n_positions:
            raise ValueError(
                f"the prompt's {prompt_len} tokens fill n_positions={config.n_positions}: no room to generate "
                "(GPT's position embeddings are absolute); shorten the prompt"
            )
        max_length = min(prompt_len + DEFAULT_NEW_TOKENS, config.n_positions)
    if max_new_tokens is None:
        if not isinstance(max_length, (int, np.integer)) or isinstance(max_length, bool):
            raise ValueError(f"max_length must be an int (the prompt plus new tokens), got {max_length!r}")
        if max_length <= prompt_len:
            raise ValueError(
                f"max_length={max_length!r} leaves no room after the {prompt_len}-token prompt; "
                "raise max_length or pass max_new_tokens"
            )
        max_new_tokens = int(max_length) - prompt_len
    if not isinstance(max_new_tokens, (int, np.integer)) or isinstance(max_new_tokens, bool) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
    total = longest + int(max_new_tokens)
    if total > config.n_positions + 1:
        raise ValueError(
            f"a {longest}-token prompt and {max_new_tokens} new tokens need positions up to {total - 2}, past "
            f"n_positions={config.n_positions}: GPT's position embeddings are absolute (the last new token is "
            f"never fed back, so prompt + new tokens may reach n_positions + 1 = {config.n_positions + 1})"
        )
    return int(max_new_tokens)


def _positive_float32(value) -> bool:
    """A real number that is finite and > 0 in float32, where the logits are divided by it (1e-46
    is 0 there, 1e39 inf, and 10**400 not even a float64)."""
    if not isinstance(value, (int, float, np.floating, np.integer)) or isinstance(value, bool):
        return False
    try:
        with np.errstate(over="ignore"):
            single = np.float32(float(value))
    except OverflowError:
        return False
    return bool(np.isfinite(single) and single > 0)


def _resolve_sampler(do_sample, temperature, top_k, top_p):
    if not do_sample:  # greedy: the sampling options are not used, so not checked (as transformers)
        return Sampler(do_sample=False, top_k=None, top_p=False), 1.0, 1.0
    if temperature is None:
        temperature = 1.0
    if top_k is None:
        top_k = DEFAULT_TOP_K
    if top_k == 0 and not isinstance(top_k, bool):  # transformers adds no top-k filter for 0
        top_k = None
    if not _positive_float32(temperature):
        raise ValueError(f"temperature must be a finite number > 0 (in float32), got {temperature!r}")
    if top_k is not None and (not isinstance(top_k, (int, np.integer)) or isinstance(top_k, bool) or top_k < 1):
        raise ValueError(f"top_k must be an integer >= 1 (or 0 for no top-k filter), got {top_k!r}")
    if top_p is not None and (not isinstance(top_p, (int, float, np.floating)) or not 0.0 < top_p <= 1.0):
        raise ValueError(f"top_p must be in (0, 1], got {top_p!r}")
    sampler = Sampler(
        do_sample=bool(do_sample),
        top_k=int(top_k) if do_sample and top_k is not None else None,
        top_p=bool(do_sample and top_p is not None and top_p < 1.0),
    )
    return sampler, float(temperature), float(top_p if top_p is not None else 1.0)


def _resolve_processors(sampler, repetition_penalty, no_repeat_ngram_size, min_new_tokens, min_length, T, max_new):
    """Check the logits processors' options; returns (sampler with their flags, penalty, minimum new tokens).
    min_new_tokens wins over min_length, which counts the prompt's T columns (transformers'
    `_prepare_generated_length`)."""
    if repetition_penalty is not None and not _positive_float32(repetition_penalty):
        raise ValueError(
            f"repetition_penalty must be a finite number > 0 (1.0: no penalty), got {repetition_penalty!r}"
        )
    for name, value in (
        ("no_repeat_ngram_size", no_repeat_ngram_size), ("min_new_tokens", min_new_tokens), ("min_length", min_length)
    ):  # fmt: skip
        if value is not None and (not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 0):
            raise ValueError(f"{name} must be an integer >= 0 (0: off), got {value!r}")
    penalty = 1.0 if repetition_penalty is None else float(repetition_penalty)
    if min_new_tokens is not None:
        if min_length:
            logger.warning(
                "Both min_new_tokens (=%d) and min_length (=%d) are set: min_new_tokens takes precedence.",
                min_new_tokens, min_length,
            )  # fmt: skip
        min_new = int(min_new_tokens)
    else:
        min_new = max(0, int(min_length or 0) - T)
    if min_new > max_new:
        logger.warning(
            "Unfeasible length constraints: at least %d new tokens asked for, at most %d allowed; generation "
            "stops at the maximum.", min_new, max_new,
        )  # fmt: skip
    sampler = sampler._replace(
        repetition_penalty=penalty != 1.0,
        no_repeat_ngram_size=int(no_repeat_ngram_size or 0),
        min_new_tokens=min_new > 0,
    )
    return sampler, penalty, min_new


def _token_ids(name: str, value, vocab_size: int) -> tuple:
    """A token id or a list (or array) of them as a tuple, each checked to be in the vocabulary."""
    if not isinstance(value, (list, tuple)) and callable(getattr(value, "tolist", None)):  # numpy, jax, torch
        value = value.tolist()
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise TypeError(f"{name} must be a token id or a list of them, got {value!r}")
    for i in value:
        if not isinstance(i, (int, np.integer)) or isinstance(i, bool) or not 0 <= i < vocab_size:
            raise ValueError(f"{name} holds {i!r}, which is not a token id of the vocabulary [0, {vocab_size})")
    return tuple(int(i) for i in value)


def _sequence_bias(value, vocab_size: int) -> tuple:
    """sequence_bias, transformers' list of [token ids, bias] pairs (or its older dict {token ids tuple: bias}),
    as a sorted tuple of ((ids...), bias) pairs."""
    pairs = list(value.items()) if isinstance(value, dict) else value
    if not isinstance(pairs, (list, tuple)) or not pairs:
        raise ValueError(f"sequence_bias must be a non-empty list of [token ids, bias] pairs, got {value!r}")
    out = {}
    for i, pair in enumerate(pairs):
        if not isinstance(pair, (list, tuple)) or len(pair) != 2 or not isinstance(pair[0], (list, tuple)):
            raise ValueError(f"sequence_bias[{i}] must be a [token ids, bias] pair, got {pair!r}")
        ids, bias = _token_ids(f"sequence_bias[{i}]", pair[0], vocab_size), pair[1]
        if not ids:
            raise ValueError(f"sequence_bias[{i}] has no token ids")
        if not isinstance(bias, (int, float, np.integer, np.floating)) or isinstance(bias, bool) or math.isnan(bias):
            raise ValueError(f"sequence_bias[{i}]'s bias must be a number, got {bias!r}")
        out[ids] = float(bias)  # as transformers' dict: the last pair of the same ids wins
    return tuple(sorted(out.items()))


def _bad_words(value, vocab_size: int) -> tuple:
    """bad_words_ids, a non-empty list of non-empty lists of token ids, as a tuple of tuples."""
    if not isinstance(value, (list, tuple)) or not value or not all(isinstance(w, (list, tuple)) for w in value):
        raise ValueError(f"bad_words_ids must be a non-empty list of lists of token ids, got {value!r}")
    words = [_token_ids(f"bad_words_ids[{i}]", w, vocab_size) for i, w in enumerate(value)]
    empty = [i for i, w in enumerate(words) if not w]
    if empty:
        raise ValueError(f"bad_words_ids[{empty[0]}] is empty: each bad word is a non-empty list of token ids")
    return tuple(sorted(set(words)))  # their order does not matter: one compilation for any


WARPER_RANGES = {  # (name: (low, high, low included, high included)), transformers' warpers' checks
    "min_p": (0.0, 1.0, True, True),
    "typical_p": (0.0, 1.0, False, True),
    "epsilon_cutoff": (0.0, 1.0, True, False),
    "eta_cutoff": (0.0, 1.0, True, False),
}


def _resolve_more_processors(
    sampler, config, eos, bad_words_ids, suppress_tokens, begin_suppress_tokens, forced_bos_token_id,
    forced_eos_token_id, min_p, typical_p, epsilon_cutoff, eta_cutoff, sequence_bias=None, renormalize_logits=None,
) -> Sampler:  # fmt: skip
    """The sampler with transformers' other processors and warpers, checked: bad words (a lone eos is not
    one, as transformers drops it), suppressed tokens, forced bos (`constrain_logits` forces it for the rows whose
    prompt is one token wide, as transformers' processor fires) and eos, min-p, typical-p, epsilon and eta cutoffs
    (sampling only)."""
    V = config.vocab_size
    changes = {}
    if sequence_bias is not None:
        changes["sequence_bias"] = _sequence_bias(sequence_bias, V)
    if renormalize_logits is not None:
        _check_flags(renormalize_logits=renormalize_logits)
        changes["renormalize"] = bool(renormalize_logits)
    if bad_words_ids is not None:
        words = _bad_words(bad_words_ids, V)
        changes["bad_words"] = tuple(w for w in words if not (len(w) == 1 and w[0] in eos))
    # Sets of ids, sorted: the same set in another order compiles nothing new.
    if suppress_tokens is not None:
        changes["suppress"] = tuple(sorted(set(_token_ids("suppress_tokens", suppress_tokens, V))))
    if begin_suppress_tokens is not None:
        changes["begin_suppress"] = tuple(sorted(set(_token_ids("begin_suppress_tokens", begin_suppress_tokens, V))))
    if forced_bos_token_id is not None:
        if isinstance(forced_bos_token_id, (list, tuple)):
            raise TypeError(f"forced_bos_token_id must be one token id, got {forced_bos_token_id!r}")
        (bos,) = _token_ids("forced_bos_token_id", forced_bos_token_id, V)
        changes["forced_bos"] = bos
    if forced_eos_token_id is not None:
        changes["forced_eos"] = tuple(sorted(set(_token_ids("forced_eos_token_id", forced_eos_token_id, V))))
        if not changes["forced_eos"]:
            raise ValueError("forced_eos_token_id is an empty list: name the token(s) to end on, or pass None")
    if not sampler.do_sample:  # greedy: the warpers are not used, so not checked (as transformers)
        return sampler._replace(**changes)
    warpers = {"min_p": min_p, "typical_p": typical_p, "epsilon_cutoff": epsilon_cutoff, "eta_cutoff": eta_cutoff}
    for name, value in warpers.items():
        if value is None:
            continue
        low, high, low_in, high_in = WARPER_RANGES[name]
        if not isinstance(value, (int, float, np.floating, np.integer)) or isinstance(value, bool):
            raise TypeError(f"{name} must be a number, got {value!r}")
        if not ((low <= value if low_in else low < value) and (value <= high if high_in else value < high)):
            raise ValueError(
                f"{name} must be in {'[' if low_in else '('}{low}, {high}{']' if high_in else ')'}, got {value!r}"
            )
        changes[name] = float(value)
    return sampler._replace(**changes)


GENERATION_CONFIG_NAME = "generation_config.json"
# generate's arguments that a generation_config.json (transformers' GenerationConfig) may default.
GENERATION_KEYS = (
    "max_new_tokens", "max_length", "do_sample", "temperature", "top_k", "top_p", "eos_token_id", "pad_token_id",
    "num_return_sequences", "repetition_penalty", "no_repeat_ngram_size", "min_new_tokens", "min_length", "num_beams",
    "length_penalty", "early_stopping", "bad_words_ids", "suppress_tokens", "begin_suppress_tokens",
    "forced_bos_token_id", "forced_eos_token_id", "min_p", "typical_p", "epsilon_cutoff", "eta_cutoff",
    "sequence_bias", "renormalize_logits",
)  # fmt: skip
# Keys that describe the file or only how transformers runs (caches, assistants, what generate
# returns), and GenerationConfig's defaults of the options generate lacks: none of these is reported.
_FILE_METADATA = frozenset(("bos_token_id", "decoder_start_token_id", "transformers_version", "_from_model_config"))
_NO_TOKEN_EFFECT = frozenset((
    "use_cache", "cache_implementation", "cache_config", "return_legacy_cache", "prefill_chunk_size", "low_memory",
    "disable_compile", "compile_config", "is_assistant", "assistant_confidence_threshold", "assistant_early_exit",
    "assistant_lookbehind", "num_assistant_tokens", "num_assistant_tokens_schedule", "target_lookbehind",
    "max_matching_ngram_size", "prompt_lookup_num_tokens", "output_attentions", "output_hidden_states",
    "output_scores", "output_logits", "return_dict_in_generate", "generation_kwargs", "max_time",
))  # fmt: skip
_NO_EFFECT = {
    "num_beam_groups": 1, "diversity_penalty": 0.0, "encoder_repetition_penalty": 1.0,
    "encoder_no_repeat_ngram_size": 0,
}  # fmt: skip


# GenerationConfig()'s values of generate's options (transformers' global defaults).
GLOBAL_GENERATION_DEFAULTS = {
    "max_new_tokens": None, "max_length": 20, "do_sample": False, "temperature": 1.0, "top_k": 50, "top_p": 1.0,
    "eos_token_id": None, "pad_token_id": None, "num_return_sequences": 1, "repetition_penalty": 1.0,
    "no_repeat_ngram_size": 0, "min_new_tokens": None, "min_length": 0, "num_beams": 1, "length_penalty": 1.0,
    "early_stopping": False, "bad_words_ids": None, "suppress_tokens": None, "begin_suppress_tokens": None,
    "forced_bos_token_id": None, "forced_eos_token_id": None, "min_p": None, "typical_p": 1.0, "epsilon_cutoff": 0.0,
    "eta_cutoff": 0.0, "sequence_bias": None, "renormalize_logits": False,
}  # fmt: skip


def read_generation_config(directory) -> dict:
    """A checkpoint's generation_config.json as a dict ({} when it has none), as transformers'
    `GenerationConfig.from_pretrained`; options it sets that `generate` lacks are named in a warning."""
    path = os.path.join(directory, GENERATION_CONFIG_NAME)
    if not os.path.isfile(path):
        return {}
    config = read_json_object(path)
    _warn_unsupported(config, path)
    return config


def model_generation_config(config: OpenAIGPTConfig) -> dict:
    """Without a generation_config.json, transformers' `GenerationConfig.from_model_config`: the generate options
    config.json sets (kept in `config.extra`) default the calls; {} when it sets none."""
    options = {k: v for k, v in (config.extra or {}).items() if k in GENERATION_KEYS and v is not None}
    return {**options, "_from_model_config": True} if options else {}


def _warn_unsupported(config: dict, where: str) -> None:
    """Name in a warning the options of a generation config that change tokens and that generate lacks."""
    ignored = {
        k: v
        for k, v in config.items()
        if k not in GENERATION_KEYS and k not in _FILE_METADATA and k not in _NO_TOKEN_EFFECT
        if v is not None and v is not False and v != {} and v != [] and (k not in _NO_EFFECT or _NO_EFFECT[k] != v)
    }
    if ignored:
        logger.warning("%s sets %s, which gpt-flax's generate does not implement: ignored", where, ignored)


def _as_generation_config(value) -> dict:
    """A call's generation_config (a dict or transformers' GenerationConfig) as a dict."""
    if isinstance(value, dict):
        config = dict(value)
    elif callable(getattr(value, "to_dict", None)):
        config = value.to_dict()
    else:
        raise TypeError(
            f"generation_config must be a dict or a transformers GenerationConfig, got {type(value).__name__}"
        )
    _warn_unsupported(config, "generation_config")
    return config


class GenerationMixin:
    """`generate` for the models with an LM head (their params hold `transformer`).

    `generation_config` (a dict: the checkpoint's generation_config.json, {} without one) holds
    defaults for generate's arguments, as transformers' model.generation_config: an argument left
    None takes the file's value, then generate's own default."""

    generation_config: dict

    def generate(
        self,
        input_ids,
        attention_mask=None,
        max_new_tokens: int | None = None,
        max_length: int | None = None,
        do_sample: bool | None = None,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        eos_token_id: int | Sequence[int] | None = None,
        pad_token_id: int | None = None,
        num_return_sequences: int | None = None,
        prng_key=None,
        *,
        repetition_penalty: float | None = None,
        no_repeat_ngram_size: int | None = None,
        min_new_tokens: int | None = None,
        min_length: int | None = None,
        bad_words_ids: Sequence[Sequence[int]] | None = None,
        suppress_tokens: Sequence[int] | None = None,
        begin_suppress_tokens: Sequence[int] | None = None,
        forced_bos_token_id: int | None = None,
        forced_eos_token_id: int | Sequence[int] | None = None,
        min_p: float | None = None,
        typical_p: float | None = None,
        epsilon_cutoff: float | None = None,
        eta_cutoff: float | None = None,
        sequence_bias=None,
        renormalize_logits: bool | None = None,
        num_beams: int | None = None,
        length_penalty: float | None = None,
        early_stopping: bool | str | None = None,
        generation_config=None,
        params: dict | None = None,
        streamer: Callable[[np.ndarray], None] | None = None,
        output_scores: bool | None = None,
        output_logits: bool | None = None,
        return_dict_in_generate: bool | None = None,
        **unsupported,
    ) -> np.ndarray | GenerateDecoderOnlyOutput | GenerateBeamDecoderOnlyOutput:
        """Prompt + new tokens, int32 [B * num_return_sequences, T + N]; see `generation.generate`.

        Arguments left None take `generation_config` (a dict or transformers' GenerationConfig), else
        the model's (its generation_config.json), as transformers' generate."""
        if unsupported:
            raise TypeError(
                f"generate does not take {', '.join(sorted(unsupported))}: gpt-flax implements greedy decoding, "
                f"sampling and beam search with the options {', '.join(GENERATION_KEYS)}"
            )
        file = getattr(self, "generation_config", None) or {}
        if generation_config is not None:
            file = self._merged_generation_config(_as_generation_config(generation_config), file)
        given = {
            "repetition_penalty": repetition_penalty,
            "no_repeat_ngram_size": no_repeat_ngram_size,
            "min_new_tokens": min_new_tokens,
            "min_length": min_length,
            "num_beams": num_beams,
            "length_penalty": length_penalty,
            "early_stopping": early_stopping,
            "max_new_tokens": max_new_tokens,
            "max_length": max_length,
            "do_sample": do_sample,
            "temperature": temperature,
            "top_k": top_k,
            "top_p": top_p,
            "eos_token_id": eos_token_id,
            "pad_token_id": pad_token_id,
            "num_return_sequences": num_return_sequences,
            "bad_words_ids": bad_words_ids,
            "suppress_tokens": suppress_tokens,
            "begin_suppress_tokens": begin_suppress_tokens,
            "forced_bos_token_id": forced_bos_token_id,
            "forced_eos_token_id": forced_eos_token_id,
            "min_p": min_p,
            "typical_p": typical_p,
            "epsilon_cutoff": epsilon_cutoff,
            "eta_cutoff": eta_cutoff,
            "sequence_bias": sequence_bias,
            "renormalize_logits": renormalize_logits,
        }
        options = _file_defaults(file, given)
        options.update({k: v for k, v in given.items() if v is not None})
        options = self._with_token_defaults(options, file)
        outputs = {
            "output_scores": output_scores,
            "output_logits": output_logits,
            "return_dict_in_generate": return_dict_in_generate,
        }  # a call's flag, else the generation config's, else False
        options.update({k: bool(file.get(k, False)) if v is None else v for k, v in outputs.items()})
        return self._generate(input_ids, attention_mask, params=params, prng_key=prng_key, streamer=streamer, **options)

    def compute_transition_scores(self, sequences, scores, beam_indices=None, normalize_logits: bool = False):
        """Each generated token's score [B * n, N] from `generate(..., return_dict_in_generate=True,
        output_scores=True)`'s `sequences` and `scores`, as transformers' (log-probabilities with
        `normalize_logits=True`)."""
        return compute_transition_scores(self.config, sequences, scores, beam_indices, normalize_logits)

    def _merged_generation_config(self, given: dict, file: dict) -> dict:
        """transformers' `_prepare_generation_config` (use_model_defaults): a call's generation config,
        where it holds GenerationConfig's global default, takes the model's value instead (its
        generation_config.json, else config.json's token ids)."""
        model = dict(file) if file else {"_from_model_config": True}
        if not file:
            tokens = {k: getattr(self.config, k) for k in ("eos_token_id", "pad_token_id")}
            model.update({k: v for k, v in tokens.items() if v is not None})
        merged = {k: v for k, v in model.items() if k.startswith("_") or v != GLOBAL_GENERATION_DEFAULTS.get(k)}
        for key, value in given.items():
            if key.startswith("_") or key == "transformers_version":
                continue
            if key not in GLOBAL_GENERATION_DEFAULTS or value != GLOBAL_GENERATION_DEFAULTS[key] or key not in merged:
                merged[key] = value
        return merged

    def _with_token_defaults(self, options: dict, file: dict | None = None) -> dict:
        """`options` with eos and pad as transformers' model.generation_config holds them: when a
        generation_config.json was loaded (one not merely copied from config.json), the file's
        alone, config.json's ignored; a missing pad is then the first eos. Without such a file,
        `options` as given (generate falls back to config.json). `file`: the generation config in
        use (default the model's)."""
        file = (getattr(self, "generation_config", None) or {}) if file is None else file
        if not file or file.get("_from_model_config"):
            return options
        options = dict(options)
        if options.get("eos_token_id") is None:
            options["eos_token_id"] = file.get("eos_token_id") or []
        if options.get("pad_token_id") is None:
            eos = np.atleast_1d(np.asarray(options["eos_token_id"], np.int64))
            pad = file.get("pad_token_id")
            options["pad_token_id"] = pad if pad is not None else (int(eos[0]) if eos.size else 0)
        return options

    def _generate(self, input_ids, attention_mask=None, *, params=None, prng_key=None, streamer=None, **options):
        """`generation.generate` with exactly `options` (no generation_config): the pipeline's door."""
        params = self.params if params is None else params
        transformer_params = params["transformer"]
        if "lm_head" in params:  # untied (tie_word_embeddings=False): the head beside the transformer's params
            transformer_params = {**transformer_params, "lm_head": params["lm_head"]}
        return generate(
            transformer_params,
            self.config,
            input_ids,
            attention_mask,
            prng_key=prng_key,
            streamer=streamer,
            dtype=self.dtype,
            **options,
        )


def _file_defaults(file: dict, given: dict) -> dict:
    """The generation_config.json values that default a call's arguments, read as transformers reads
    them: max_length 20 (GenerationConfig's own default) means 20 new tokens, generate's default
    anyway; the sampling options neither count nor are checked when the call decodes greedily."""
    options = {k: file[k] for k in GENERATION_KEYS if file.get(k) is not None}
    if "top_k" in file and file["top_k"] is None:  # a GenerationConfig's top_k=None: no top-k filter
        options["top_k"] = 0
    if options.get("max_length") == 20:
        del options["max_length"]
    if not (given["do_sample"] if given["do_sample"] is not None else options.get("do_sample", False)):
        for name in ("temperature", "top_k", "top_p", "min_p", "typical_p", "epsilon_cutoff", "eta_cutoff"):
            options.pop(name, None)
    return options
