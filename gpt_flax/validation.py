"""Host-side input checks for the four models: every check that can run before any work is done.

JAX clamps out-of-range gather indices silently, so ids, positions and labels are checked here, on
concrete values; inside a user's `jax.jit` the values are tracers and only the shape checks run.
Each failure is a ValueError (TypeError for non-arrays) that names the input and the bad value.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from gpt_flax.config import OpenAIGPTConfig


def _is_concrete(x) -> bool:
    return x is not None and not isinstance(x, jax.core.Tracer)


def check_finite(name: str, x) -> None:
    """A concrete float array must hold no NaN or inf (the first one is named with its index)."""
    if not _is_concrete(x) or not jnp.issubdtype(x.dtype, jnp.inexact):
        return
    values = np.asarray(x)
    bad = np.argwhere(~np.isfinite(values))
    if bad.size:
        where = tuple(int(i) for i in bad[0])
        raise ValueError(f"{name} holds {values[where]} at index {where}: a training step would turn every weight NaN")


def as_array(name: str, x):
    if x is None or isinstance(x, (jax.Array, np.ndarray)):
        return x
    try:
        return np.asarray(x)
    except (TypeError, ValueError):
        ragged = ragged_rows(x)
        if ragged:
            raise ValueError(f"{name} is a nested list whose rows differ in length ({ragged}): pad them") from None
        raise TypeError(f"{name} must be an array (numpy, JAX or a nested list), got {type(x).__name__}") from None


def ragged_rows(x, path: tuple = ()) -> str | None:
    """'row 0 has 3, row 1 has 1' (at any depth: 'row [1][0] has 3, row [1][1] has 2') when a nested list's
    rows differ in length, else None."""
    if not isinstance(x, (list, tuple)) or not all(isinstance(r, (list, tuple)) for r in x):
        return None
    lengths = [len(r) for r in x]
    odd = next((i for i, n in enumerate(lengths) if n != lengths[0]), None)
    if odd is not None:
        row = (lambda i: "".join(f"[{k}]" for k in (*path, i))) if path else str
        return f"row {row(0)} has {lengths[0]}, row {row(odd)} has {lengths[odd]}"
    return next(filter(None, (ragged_rows(sub, (*path, i)) for i, sub in enumerate(x))), None)


def _check_range(name: str, x, low: int, high: int, allowed=(), from_column: int = 0) -> None:
    """Values of a concrete integer array must lie in [low, high) (or be one of `allowed`); columns
    of the last axis before `from_column` are not checked."""
    if not _is_concrete(x):
        return
    values = np.asarray(x)
    bad = (values < low) | (values >= high)
    for a in allowed:
        bad &= values != a
    if from_column:
        bad[..., :from_column] = False
    if bad.any():
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"{name} holds {values[index]} at index {index}, outside [{low}, {high})"
            + (f" (and not one of {list(allowed)})" if allowed else "")
        )


def _check_int(name: str, x) -> None:
    if x is not None and not jnp.issubdtype(x.dtype, jnp.integer):
        raise ValueError(f"{name} must hold integers, got dtype {x.dtype}")


def validate_inputs(config: OpenAIGPTConfig, head: str, a: dict) -> None:
    """Every check that can run before any work is done; value checks only on concrete arrays."""
    ids, embeds = a["input_ids"], a["inputs_embeds"]
    if (ids is None) == (embeds is None):
        raise ValueError(
            "pass exactly one of input_ids and inputs_embeds"
            + (" (both were given)" if ids is not None else " (neither was given)")
        )
    # transformers' base and LM models view any [..., T] as [-1, T] (and give [..., T, D] back); the
    # double-heads model takes [B, C, T] (or [B, T]: one sequence, one mc logit per row), the classifier [B, T].
    ranks = {"double": (2, 3), "cls": (2,)}.get(head)
    dims = {"double": "[batch, choices, seq_len]", "cls": "[batch, seq_len]"}.get(head, "[..., seq_len]")
    if ids is not None:
        if ids.ndim not in ranks if ranks else ids.ndim < 1:
            also = " or [batch, seq_len]" if head == "double" else ""
            raise ValueError(f"input_ids must be {dims}{also}, got shape {tuple(ids.shape)}")
        _check_int("input_ids", ids)
        _check_range("input_ids", ids, 0, config.vocab_size)
        shape = tuple(ids.shape)
    else:
        if (embeds.ndim - 1 not in ranks if ranks else embeds.ndim < 2) or embeds.shape[-1] != config.n_embd:
            also = f" or [batch, seq_len, n_embd={config.n_embd}]" if head == "double" else ""
            raise ValueError(
                f"inputs_embeds must be {dims[:-1]}, n_embd={config.n_embd}]{also}, got shape {tuple(embeds.shape)}"
            )
        shape = tuple(embeds.shape[:-1])
    rank = len(shape)
    seq_len = shape[-1]
    if seq_len > config.n_positions:
        raise ValueError(
            f"sequence length {seq_len} exceeds n_positions={config.n_positions} (GPT's positions are absolute)"
        )
    if seq_len < 1:
        raise ValueError("sequences must hold at least one token")
    rows = int(np.prod(shape[:-1]))  # the sequences the transformer runs ([B * C] for double heads)
    mask = a["attention_mask"]
    # transformers views the mask as [rows, 1, 1, T] and adds it to the scores: one row for every
    # sequence alike broadcasts, and the double-heads model also takes it flattened.
    if mask is not None and tuple(mask.shape) not in (shape, (rows, seq_len), (1, seq_len)):
        raise ValueError(
            f"attention_mask has shape {tuple(mask.shape)} but the inputs have shape {shape} "
            f"(a mask of shape (1, {seq_len}) applies to every sequence)"
        )
    # transformers views token types and positions as [-1, T] and adds them: one row or one per sequence.
    for name, high in (("token_type_ids", config.vocab_size), ("position_ids", config.n_positions)):
        x = a[name]
        if x is None:
            continue
        _check_int(name, x)
        if x.ndim < 1 or x.ndim > rank or x.shape[-1] != seq_len or int(np.prod(x.shape[:-1])) not in (1, rows):
            raise ValueError(
                f"{name} has shape {tuple(x.shape)}; expected {shape}, or [{seq_len}] for every sequence alike"
            )
        _check_range(name, x, 0, high)
    hm = a["head_mask"]
    L, H = config.n_layer, config.n_head
    if hm is not None and tuple(hm.shape) not in ((H,), (L, H), (L, 1, H, 1, 1)):
        per_example = hm.ndim == 5 and hm.shape[0] == L and hm.shape[2] == H
        raise ValueError(
            f"head_mask must be [n_head={H}], [n_layer={L}, n_head={H}] or transformers' [{L}, 1, {H}, 1, 1], "
            f"got shape {tuple(hm.shape)}"
            + (" (a mask per example or per position is not supported)" if per_example else "")
        )
    labels = a.get("labels")
    if labels is not None and head in ("lm", "double"):
        # The loss flattens labels [..., 1:] as transformers': labels on the rows, [B * C, T], work too.
        if tuple(labels.shape) not in (shape, (rows, seq_len)):
            raise ValueError(f"labels has shape {tuple(labels.shape)} but the inputs have shape {shape}")
        _check_int("labels", labels)
        # labels[..., 0] is never a target (position t predicts labels[t + 1]): transformers ignores it.
        _check_range("labels", labels, 0, config.vocab_size, allowed=(-100,), from_column=1)
    if head == "double":
        _validate_double(config, shape, a)
    if head == "cls":
        _validate_cls(config, shape, a)


def _validate_double(config, shape, a) -> None:
    mc_ids, mc_labels = a.get("mc_token_ids"), a.get("mc_labels")
    if mc_ids is not None and config.summary_type == "cls_index":  # the other summaries ignore it, as transformers'
        if tuple(mc_ids.shape) != shape[:-1]:
            what = "[batch, choices]" if len(shape) == 3 else "[batch]"
            raise ValueError(f"mc_token_ids must be {what} = {shape[:-1]}, got shape {tuple(mc_ids.shape)}")
        _check_int("mc_token_ids", mc_ids)
        _check_range("mc_token_ids", mc_ids, 0, shape[-1])
    if mc_labels is not None:
        _check_int("mc_labels", mc_labels)
        # transformers' loss is cross_entropy(mc_logits.view(-1, last axis), mc_labels.view(-1)). mc_logits run over
        # choices for cls_index ([B, C]), transformers' other summaries leave [B, T] (see heads); without a
        # projection to one value per choice they keep a last axis of the summary's width.
        lead = shape[:-1] if config.summary_type == "cls_index" else (shape[0], *shape[2:])
        width = _summary_width(config)
        logits_shape = lead if width == 1 else (*lead, width)
        rows = math.prod(logits_shape[:-1])
        # transformers' loss views mc_labels as [-1]: any shape of that many labels.
        if mc_labels.size != rows and rows == shape[0]:
            raise ValueError(f"mc_labels must be [batch] = {shape[:1]}, got shape {tuple(mc_labels.shape)}")
        if mc_labels.size != rows:
            raise ValueError(
                f"mc_labels must hold {rows} labels, got shape {tuple(mc_labels.shape)}: mc_logits have shape "
                f"{logits_shape} (no projection to one logit per choice), and transformers' loss takes one label "
                "per row of their last axis"
            )
        _check_range("mc_labels", mc_labels, 0, logits_shape[-1], allowed=(-100,))


def _summary_width(config) -> int:
    """The last axis of transformers' OpenAIGPTSequenceSummary: num_labels when projecting to labels, else n_embd."""
    if config.summary_use_proj and config.summary_proj_to_labels and config.num_labels > 0:
        return config.num_labels
    return config.n_embd


def _validate_cls(config, shape, a) -> None:
    if config.pad_token_id is None and shape[0] != 1:
        raise ValueError(
            f"batch size is {shape[0]} but config.pad_token_id is None: sequence classification needs a "
            "pad_token_id to find each row's last token (or use batch size 1)"
        )
    labels = a.get("labels")
    if labels is None:
        return
    batch, n = shape[0], config.num_labels
    integer = jnp.issubdtype(labels.dtype, jnp.integer)
    problem = config.problem_type
    if problem is None:  # as transformers infers it (heads.classification_loss)
        problem = "regression" if n == 1 else "single_label_classification" if integer else "multi_label_classification"
    if problem == "single_label_classification":
        if not integer:
            raise ValueError(f"single_label_classification needs integer class labels, got dtype {labels.dtype}")
        if labels.size != batch or labels.ndim > 2:  # transformers takes labels.view(-1)
            raise ValueError(f"labels must be [batch] = {shape[:1]}, got shape {tuple(labels.shape)}")
        _check_range("labels", labels, 0, n, allowed=(-100,))
        return
    # regression with num_labels=1 squeezes both sides; otherwise labels are [batch, num_labels]
    expected = ((batch,), (batch, 1)) if problem == "regression" and n == 1 else ((batch, n),)
    if tuple(labels.shape) not in expected:
        raise ValueError(
            f"{problem} with num_labels={n} needs labels of shape {' or '.join(map(str, expected))}, "
            f"got {tuple(labels.shape)}"
        )
