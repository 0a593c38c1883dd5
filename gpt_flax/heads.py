"""The four models' forwards over a param tree: base, LM head, double heads, sequence classification.

Each `forward_*` is a pure function `(params, config, inputs..., *, rng, flags) -> output dataclass`.
Losses follow transformers 4.56.2 (`modeling_openai`, `loss/loss_utils.ForCausalLMLoss`):
cross-entropies ignore label -100 and average over the labels that count.

Axes: B batch, C choices, T length, D width, V vocab, N num_labels.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax

from gpt_flax.config import OpenAIGPTConfig
from gpt_flax.layers import ACT_FNS, dense, dropout, dropout_seeds, init_dense, normal
from gpt_flax.model import init_transformer_params, transformer
from gpt_flax.outputs import (
    FlaxBaseModelOutput,
    FlaxCausalLMOutput,
    FlaxOpenAIGPTDoubleHeadsModelOutput,
    FlaxSequenceClassifierOutput,
)

IGNORE_INDEX = -100  # torch.nn.CrossEntropyLoss's default ignore_index

# transformers' get_activation functions for summary_activation (config.SUMMARY_ACTIVATIONS names them).
SUMMARY_ACTIVATIONS = {
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
    "sigmoid": jax.nn.sigmoid,
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),  # ACT2FN["gelu"] is the exact erf form
    "gelu_new": ACT_FNS["gelu_new"],
    "gelu_pytorch_tanh": ACT_FNS["gelu_new"],
    "silu": ACT_FNS["silu"],
    "swish": ACT_FNS["silu"],
    "linear": lambda x: x,
    "gelu_python": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_accurate": ACT_FNS["gelu_new"],
    "gelu_fast": lambda x: 0.5 * x * (1.0 + jnp.tanh(x * 0.7978845608 * (1.0 + 0.044715 * x * x))),
    "gelu_10": lambda x: jnp.clip(jax.nn.gelu(x, approximate=False), -10.0, 10.0),
    "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),
    "laplace": lambda x: 0.5 * (1.0 + jax.lax.erf((x - 0.707107) / (0.282095 * math.sqrt(2.0)))),
    "mish": lambda x: x * jnp.tanh(jax.nn.softplus(x)),
    "leaky_relu": lambda x: jax.nn.leaky_relu(x, 0.01),
    "relu2": lambda x: jnp.square(jax.nn.relu(x)),
    "relu6": jax.nn.relu6,
}

HEADS = ("base", "lm", "double", "cls")


def summary_out_features(config: OpenAIGPTConfig) -> int:
    """SequenceSummary's projection width: num_labels when projecting to labels, else n_embd."""
    return config.num_labels if config.summary_proj_to_labels and config.num_labels > 0 else config.n_embd


def init_head_params(config: OpenAIGPTConfig, head: str, rng, dtype=jnp.float32) -> dict:
    """Params of the part above the transformer, transformers' init (a tied lm_head has none; an
    untied one, `tie_word_embeddings=False`, is `lm_head/kernel` [D, V])."""
    D, std = config.n_embd, config.initializer_range
    if head in ("lm", "double") and not config.tie_word_embeddings:
        lm_rng, rng = jax.random.split(rng)
        lm_head = {"lm_head": {"kernel": normal(lm_rng, (D, config.vocab_size), std, dtype)}}
        return {**lm_head, **init_head_params(config.replace(tie_word_embeddings=True), head, rng, dtype)}
    if head == "double":
        if not config.summary_use_proj:
            return {"multiple_choice_head": {}}
        shape = (D, summary_out_features(config))
        return {"multiple_choice_head": {"summary": init_dense(rng, shape, std, dtype)}}
    if head == "cls":
        return {"score": {"kernel": normal(rng, (D, config.num_labels), std, dtype)}}
    return {}


def init_params(config: OpenAIGPTConfig, head: str, rng, dtype=jnp.float32) -> dict:
    """The whole param tree of a head model; the base model has no `transformer` prefix."""
    body_rng, head_rng = jax.random.split(rng)
    body = init_transformer_params(config, body_rng, dtype)
    if head == "base":
        return body
    return {"transformer": body, **init_head_params(config, head, head_rng, dtype)}


# -- losses ---------------------------------------------------------------------------------
def cross_entropy(logits, labels):
    """Mean cross-entropy over labels != -100 (nan when none count, as torch)."""
    logits = logits.astype(jnp.float32)
    valid = labels != IGNORE_INDEX
    nll = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.where(valid, labels, 0))
    return jnp.sum(jnp.where(valid, nll, 0.0)) / jnp.sum(valid)


def causal_lm_loss(logits, labels):
    """Next-token loss: position t predicts labels[t + 1]. The labels are shifted (padded with -100
    at the end, as transformers' ForCausalLMLoss does) rather than the logits sliced, which would
    copy the [B, T - 1, V] logits forward and backward."""
    pad = jnp.full(labels.shape[:-1] + (1,), IGNORE_INDEX, labels.dtype)
    shifted = jnp.concatenate([labels[..., 1:], pad], axis=-1)
    return cross_entropy(logits.reshape(-1, logits.shape[-1]), shifted.reshape(-1))


def classification_loss(config: OpenAIGPTConfig, pooled_logits, labels):
    """OpenAIGPTForSequenceClassification's loss; problem_type inferred when unset (not stored)."""
    problem_type = config.problem_type
    if problem_type is None:
        if config.num_labels == 1:
            problem_type = "regression"
        elif jnp.issubdtype(labels.dtype, jnp.integer):
            problem_type = "single_label_classification"
        else:
            problem_type = "multi_label_classification"
    logits = pooled_logits.astype(jnp.float32)
    if problem_type == "regression":
        labels = labels.astype(jnp.float32)
        if config.num_labels == 1:
            return jnp.mean(jnp.square(logits.reshape(-1) - labels.reshape(-1)))
        return jnp.mean(jnp.square(logits - labels))
    if problem_type == "single_label_classification":
        return cross_entropy(logits.reshape(-1, config.num_labels), labels.reshape(-1))
    return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, labels.astype(jnp.float32)))


# -- head pieces ----------------------------------------------------------------------------
def lm_logits(transformer_params, hidden, lm_head=None):
    """LM head: [..., D] @ tokens_embed^T -> [..., V] (no bias), or @ `lm_head["kernel"]` [D, V] when
    the head is untied."""
    flat = hidden.reshape(-1, hidden.shape[-1])  # one contracting axis: see layers.dense
    if lm_head is not None:
        kernel = lm_head["kernel"].astype(hidden.dtype)
        return jnp.einsum("nd,dv->nv", flat, kernel).reshape(hidden.shape[:-1] + kernel.shape[1:])
    table = transformer_params["tokens_embed"]["embedding"].astype(hidden.dtype)
    return jnp.einsum("nd,vd->nv", flat, table).reshape(hidden.shape[:-1] + table.shape[:1])


def sequence_summary(p, config: OpenAIGPTConfig, hidden, cls_index=None, rng=None):
    """transformers `OpenAIGPTSequenceSummary`: hidden [B, C, T, D] -> [B, C, N] (or [B, C, D]) for cls_index."""
    kind = config.summary_type
    # transformers indexes axis 1 for "last", "first" and "mean" (`hidden_states[:, -1]`, `.mean(dim=1)`):
    # on the double-heads model's [B, C, T, D] that is the choices axis, giving [B, T, ...]. Matched as is.
    if kind == "last":
        out = hidden[:, -1]
    elif kind == "first":
        out = hidden[:, 0]
    elif kind == "mean":
        out = hidden.mean(axis=1)
    else:  # cls_index; default: the last token
        if cls_index is None:
            cls_index = jnp.full(hidden.shape[:-2], hidden.shape[-2] - 1, jnp.int32)
        out = jnp.take_along_axis(hidden, cls_index[..., None, None], axis=-2)[..., 0, :]
    first_seed, last_seed = dropout_seeds(rng, (2,)) if rng is not None else (None, None)
    out = dropout(first_seed, out, config.summary_first_dropout)
    if config.summary_use_proj:
        out = dense(p["summary"], out)
    if config.summary_activation:
        out = SUMMARY_ACTIVATIONS[config.summary_activation](out)
    return dropout(last_seed, out, config.summary_last_dropout)


def last_non_pad_index(config: OpenAIGPTConfig, input_ids, seq_len: int):
    """Rightmost token that is not pad_token_id (so left and right padding both work); else T - 1."""
    if config.pad_token_id is None or input_ids is None:
        return jnp.full((input_ids.shape[0] if input_ids is not None else 1,), seq_len - 1)
    non_pad = (input_ids != config.pad_token_id).astype(jnp.int32)
    return jnp.argmax(jnp.arange(seq_len, dtype=jnp.int32) * non_pad, axis=-1)


# -- the four forwards ----------------------------------------------------------------------
def _body(params, config, inputs, *, rng, output_attentions, output_hidden_states, dtype, remat):
    return transformer(
        params,
        config,
        **inputs,
        rng=rng,
        output_attentions=output_attentions,
        output_hidden_states=output_hidden_states,
        dtype=dtype,
        remat=remat,
    )


def _flat_inputs(inputs: dict) -> tuple[tuple, dict]:
    """Inputs [..., T] (embeddings [..., T, D]) -> (their leading shape, the inputs on [rows, T]), as
    transformers' `input_ids.view(-1, T)`; the transformer runs on rows. Masks come in full shape."""
    ref = inputs["input_ids"] if inputs["input_ids"] is not None else inputs["inputs_embeds"][..., 0]
    flat = {}
    for name, value in inputs.items():
        if value is None or name == "head_mask":
            flat[name] = value
        elif name == "inputs_embeds":
            flat[name] = value.reshape((-1,) + value.shape[-2:])
        else:
            flat[name] = value.reshape((-1, value.shape[-1])) if value.ndim != 2 else value
    return ref.shape[:-1], flat


def _unflat_hidden(out, lead: tuple):
    """The final hidden state back in the inputs' leading shape [..., T, D], and the hidden-states
    tuple with it last: transformers reshapes only the final one (the others stay [rows, T, D])."""
    hidden = out.last_hidden_state.reshape(lead + out.last_hidden_state.shape[-2:])
    hidden_states = out.hidden_states[:-1] + (hidden,) if out.hidden_states is not None else None
    return hidden, hidden_states


def forward_base(params, config, inputs, *, rng=None, flags) -> FlaxBaseModelOutput:
    lead, flat = _flat_inputs(inputs)
    out = _body(params, config, flat, rng=rng, **flags)
    return FlaxBaseModelOutput(*_unflat_hidden(out, lead), out.attentions)


def forward_lm(params, config, inputs, labels=None, *, rng=None, flags) -> FlaxCausalLMOutput:
    lead, flat = _flat_inputs(inputs)
    out = _body(params["transformer"], config, flat, rng=rng, **flags)
    hidden, hidden_states = _unflat_hidden(out, lead)
    logits = lm_logits(params["transformer"], hidden, params.get("lm_head"))
    loss = causal_lm_loss(logits, labels) if labels is not None else None
    return FlaxCausalLMOutput(loss, logits, hidden_states, out.attentions)


def forward_double(
    params, config, inputs, labels=None, mc_token_ids=None, mc_labels=None, *, rng=None, flags
) -> FlaxOpenAIGPTDoubleHeadsModelOutput:
    """inputs are [B, C, T] (or [B, C, T, D] embeddings); the transformer runs on [B * C, T]."""
    lead, flat = _flat_inputs(inputs)
    body_rng, head_rng = jax.random.split(rng) if rng is not None else (None, None)
    out = _body(params["transformer"], config, flat, rng=body_rng, **flags)
    hidden, hidden_states = _unflat_hidden(out, lead)  # [B, C, T, D]
    logits = lm_logits(params["transformer"], hidden, params.get("lm_head"))
    mc_logits = sequence_summary(params["multiple_choice_head"], config, hidden, mc_token_ids, head_rng)
    if mc_logits.shape[-1] == 1:
        mc_logits = mc_logits[..., 0]  # [B, C]
    mc_loss = None
    if mc_labels is not None:
        mc_loss = cross_entropy(mc_logits.reshape(-1, mc_logits.shape[-1]), mc_labels.reshape(-1))
    loss = causal_lm_loss(logits, labels) if labels is not None else None
    return FlaxOpenAIGPTDoubleHeadsModelOutput(loss, mc_loss, logits, mc_logits, hidden_states, out.attentions)


def forward_cls(params, config, inputs, labels=None, *, rng=None, flags) -> FlaxSequenceClassifierOutput:
    out = _body(params["transformer"], config, inputs, rng=rng, **flags)
    logits = dense(params["score"], out.last_hidden_state)  # [B, T, N]
    B, T = logits.shape[:2]
    index = last_non_pad_index(config, inputs["input_ids"], T)
    pooled = logits[jnp.arange(B), jnp.broadcast_to(index, (B,))]  # [B, N]
    loss = classification_loss(config, pooled, labels) if labels is not None else None
    return FlaxSequenceClassifierOutput(loss, pooled, out.hidden_states, out.attentions)


FORWARDS = {"base": forward_base, "lm": forward_lm, "double": forward_double, "cls": forward_cls}
