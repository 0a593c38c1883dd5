"""Parity of the four models with transformers 4.56.2: outputs, losses and gradients, every option."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from oracle import n, rel_err, t, torch_model

from convert.mapping import flax_to_hf
from gpt_flax import (
    FlaxOpenAIGPTDoubleHeadsModel,
    FlaxOpenAIGPTForSequenceClassification,
    FlaxOpenAIGPTLMHeadModel,
    FlaxOpenAIGPTModel,
    OpenAIGPTConfig,
)

CLASSES = {
    "base": FlaxOpenAIGPTModel,
    "lm": FlaxOpenAIGPTLMHeadModel,
    "double": FlaxOpenAIGPTDoubleHeadsModel,
    "cls": FlaxOpenAIGPTForSequenceClassification,
}
AFNS = ("gelu", "gelu_new", "relu", "silu", "swish")
# Distinct sizes so a swapped axis breaks a shape: D=24, H=3 (K=8), L=2, V=37, P=11, T=7.
SMALL = {"vocab_size": 37, "n_positions": 11, "n_embd": 24, "n_layer": 2, "n_head": 3, "initializer_range": 0.2}
B, C, T = 2, 3, 7
ATOL = 1e-5


def small_config(**kw) -> OpenAIGPTConfig:
    return OpenAIGPTConfig(**{**SMALL, **kw})


def make_inputs(head: str, config: OpenAIGPTConfig, seed: int = 0, **options):
    """Random inputs for `head`: [B, T] (or [B, C, T] for double heads), right-padded when asked."""
    rs = np.random.RandomState(seed)
    shape = (B, C, T) if head == "double" else (B, T)
    if head == "cls" and config.pad_token_id is None:
        shape = (1, T)
    ids = rs.randint(0, config.vocab_size, shape).astype(np.int32)
    inputs = {"input_ids": ids}
    if options.get("padding"):
        lengths = rs.randint(2, T + 1, shape[:-1])
        lengths.flat[0] = T
        mask = (np.arange(T) < lengths[..., None]).astype(np.float32)
        inputs["attention_mask"] = mask
        if config.pad_token_id is not None:
            inputs["input_ids"] = np.where(mask > 0, ids, config.pad_token_id).astype(np.int32)
    if options.get("token_type_ids"):
        inputs["token_type_ids"] = rs.randint(0, config.vocab_size, shape).astype(np.int32)
    if options.get("position_ids"):
        inputs["position_ids"] = rs.randint(0, config.n_positions, shape).astype(np.int32)
    if options.get("head_mask") == 1:
        inputs["head_mask"] = np.array([1.0, 0.0, 0.5], np.float32)
    elif options.get("head_mask") == 2:
        inputs["head_mask"] = rs.uniform(0, 1, (config.n_layer, config.n_head)).astype(np.float32)
    if options.get("inputs_embeds"):
        inputs["inputs_embeds"] = rs.normal(0, 0.3, shape + (config.n_embd,)).astype(np.float32)
        del inputs["input_ids"]
    if options.get("labels"):
        inputs.update(make_labels(head, config, rs, shape, inputs.get("attention_mask")))
    return inputs


def make_labels(head, config, rs, shape, mask):
    if head in ("lm", "double"):
        labels = rs.randint(0, config.vocab_size, shape).astype(np.int32)
        labels[..., 2] = -100
        if mask is not None:
            labels = np.where(mask > 0, labels, -100).astype(np.int32)
        out = {"labels": labels}
        if head == "double":
            out["mc_labels"] = rs.randint(0, C, (B,)).astype(np.int32)
            out["mc_token_ids"] = rs.randint(0, T, (B, C)).astype(np.int32)
        return out
    if head == "cls":
        return {"labels": cls_labels(config, rs, shape[0])}
    return {}


def cls_labels(config, rs, batch):
    kind = config.problem_type or ("regression" if config.num_labels == 1 else "single_label_classification")
    if kind == "regression":
        return rs.normal(size=(batch,) if config.num_labels == 1 else (batch, config.num_labels)).astype(np.float32)
    if kind == "single_label_classification":
        return rs.randint(0, config.num_labels, (batch,)).astype(np.int32)
    return rs.randint(0, 2, (batch, config.num_labels)).astype(np.float32)


def flax_and_torch(head, config, seed=0):
    model = CLASSES[head](config, seed=seed)
    return model, torch_model(head, model.config, model.params)


def torch_inputs(inputs):
    out = {k: t(v) for k, v in inputs.items()}
    for name in ("attention_mask", "position_ids"):
        x = out.get(name)
        if x is not None and x.dim() == 3:
            # transformers' double-heads model fails on a [B, C, T] mask or positions (a shape
            # error); it needs them for its flattened [B * C, T] batch. Ours take [B, C, T].
            out[name] = x.reshape(-1, x.shape[-1])
    return out


def run_both(model, tm, inputs, **flags):
    ours = model(**inputs, **flags)
    with torch.no_grad():
        theirs = tm(**torch_inputs(inputs), **flags)
    return ours, theirs


def assert_outputs_close(ours, theirs, atol=ATOL, valid=None):
    """Every field transformers returns, ours too (the same names in the same order), within atol (only where
    `valid` if given)."""
    assert list(ours) == list(theirs) == list(ours.keys())
    for name, value in theirs.items():
        mine = getattr(ours, name)
        assert mine is not None, f"{name} missing from our output"
        if isinstance(value, tuple):
            assert len(mine) == len(value), name
            for i, (a, b) in enumerate(zip(mine, value)):
                assert a.shape == tuple(b.shape), (name, i, a.shape, b.shape)
                np.testing.assert_allclose(np.asarray(a), n(b), atol=atol, rtol=0, err_msg=f"{name}[{i}]")
        else:
            assert np.shape(mine) == tuple(value.shape), (name, np.shape(mine), value.shape)
            np.testing.assert_allclose(np.asarray(mine), n(value), atol=atol, rtol=1e-5, err_msg=name)


def loss_of(head, out):
    """A scalar per head to differentiate: the head's losses, or a fixed projection for the base."""
    if head == "base":
        h = out.last_hidden_state
        w = np.random.RandomState(7).normal(size=h.shape).astype(np.float32)
        return (h * (torch.from_numpy(w) if isinstance(h, torch.Tensor) else w)).sum()
    if head == "double":
        return out.loss + out.mc_loss
    return out.loss


def assert_grads_close(head, model, tm, inputs, tol=1e-4):
    def f(params):
        return loss_of(head, model(**inputs, params=params))

    grads = flax_to_hf(jax.grad(f)(model.params), model.config, head)
    tm.zero_grad()
    loss_of(head, tm(**torch_inputs(inputs))).backward()
    checked = 0
    for name, p in tm.named_parameters():
        assert name in grads, name
        if p.grad is None:  # unused by this forward (tokens_embed under inputs_embeds)
            assert not np.asarray(grads[name]).any(), name
            checked += 1
            continue
        g, ref = np.asarray(grads[name], np.float64), n(p.grad).astype(np.float64)
        # Relative, with an absolute floor for gradients that are zero in exact arithmetic (e.g. a
        # bias shared by all choices under a softmax over choices).
        diff, scale = np.linalg.norm(g - ref), np.linalg.norm(ref)
        assert diff <= tol * scale + 1e-7, f"gradient of {name}: |g - ref| = {diff:.2e}, |ref| = {scale:.2e}"
        checked += 1
    assert checked == len(grads)


# -- every head and every activation, with every option at once ---------------------------------
# The activation sits in the shared blocks, the same for every head: each head once, each activation once.
HEADS_AND_AFNS = [("base", "gelu"), ("lm", "gelu_new"), ("double", "relu"), ("cls", "silu"), ("lm", "swish")]
assert {a for _, a in HEADS_AND_AFNS} == set(AFNS) and len({h for h, _ in HEADS_AND_AFNS}) == 4


@pytest.mark.parametrize("head, afn", HEADS_AND_AFNS)
def test_parity_all_options(head, afn):
    config = small_config(afn=afn, pad_token_id=0 if head == "cls" else None, num_labels=3)
    model, tm = flax_and_torch(head, config)
    inputs = make_inputs(head, model.config, padding=True, token_type_ids=True, head_mask=2, labels=True)
    ours, theirs = run_both(model, tm, inputs, output_hidden_states=True, output_attentions=True)
    assert_outputs_close(ours, theirs)
    assert_grads_close(head, model, tm, inputs)


# -- one option at a time ----------------------------------------------------------------------
OPTIONS = [
    {},
    {"padding": True},
    {"token_type_ids": True},
    {"position_ids": True},
    {"head_mask": 1},
    {"head_mask": 2},
    {"inputs_embeds": True},
    {"labels": True},
    {"labels": True, "padding": True},
]


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: "-".join(o) or "plain")
@pytest.mark.parametrize("head", ["base", "lm", "double", "cls"])
def test_parity_each_option(head, options):
    if head == "double" and options.get("inputs_embeds"):
        pytest.skip("transformers' double-heads model fails on [B, C, T, D] inputs_embeds: see the next test")
    config = small_config(pad_token_id=5 if head == "cls" else None)
    model, tm = flax_and_torch(head, config, seed=1)
    inputs = make_inputs(head, model.config, seed=3, **options)
    ours, theirs = run_both(model, tm, inputs)
    assert_outputs_close(ours, theirs)
    if options.get("labels") or head == "base":
        assert_grads_close(head, model, tm, inputs)


def test_double_heads_inputs_embeds_equal_embedded_ids():
    model = FlaxOpenAIGPTDoubleHeadsModel(small_config())
    inputs = make_inputs("double", model.config, labels=True)
    embeds = np.asarray(model.params["transformer"]["tokens_embed"]["embedding"])[inputs["input_ids"]]
    a = model(**inputs)
    b = model(**{**{k: v for k, v in inputs.items() if k != "input_ids"}, "inputs_embeds": embeds})
    for name in ("loss", "mc_loss", "logits", "mc_logits"):
        np.testing.assert_allclose(np.asarray(getattr(a, name)), np.asarray(getattr(b, name)), atol=1e-6)


@pytest.mark.parametrize("summary_type", ["cls_index", "last", "mean"])
def test_double_heads_without_a_choices_axis_matches_transformers(summary_type):
    """transformers' double-heads model also runs [B, T] ids (one mc logit per row, mc_token_ids [B]) and
    [N, T, D] embeddings, the only embeddings shape it takes: ours matches, losses and gradients too."""
    model, tm = flax_and_torch("double", small_config(summary_type=summary_type), seed=2)
    rs = np.random.RandomState(4)
    ids = rs.randint(0, model.config.vocab_size, (B, T)).astype(np.int32)
    inputs = {
        "input_ids": ids,
        "mc_token_ids": rs.randint(0, T, (B,)).astype(np.int32),
        "labels": ids,
        # transformers' loss views [B] mc_logits as one row of B choices: one label
        "mc_labels": np.array([1], np.int32),
    }
    ours, theirs = run_both(model, tm, inputs)
    assert ours.mc_logits.shape == tuple(theirs.mc_logits.shape)
    assert_outputs_close(ours, theirs)
    assert_grads_close("double", model, tm, inputs)
    embeds = rs.normal(0, 0.3, (B, T, model.config.n_embd)).astype(np.float32)
    ours, theirs = run_both(model, tm, {"inputs_embeds": embeds, "mc_token_ids": inputs["mc_token_ids"]})
    assert_outputs_close(ours, theirs)


def test_head_mask_in_transformers_five_axis_form():
    """transformers' get_head_mask passes a 5-axis mask through: [L, 1, H, 1, 1] is [L, H]."""
    model, tm = flax_and_torch("lm", small_config())
    inputs = make_inputs("lm", model.config, head_mask=2, labels=True)
    inputs["head_mask"] = inputs["head_mask"][:, None, :, None, None]
    ours, theirs = run_both(model, tm, inputs)
    assert_outputs_close(ours, theirs)
    per_example = np.ones((model.config.n_layer, B, model.config.n_head, 1, 1), np.float32)
    with pytest.raises(ValueError, match="per example or per position is not supported"):
        model(inputs["input_ids"], head_mask=per_example)


def test_return_dict_false_matches_transformers_tuple():
    config = small_config()
    for head in ("lm", "double"):
        model, tm = flax_and_torch(head, config)
        inputs = make_inputs(head, model.config, labels=True)
        ours, theirs = run_both(model, tm, inputs, return_dict=False, output_hidden_states=True)
        assert isinstance(ours, tuple) and len(ours) == len(theirs)
        for a, b in zip(ours, theirs):
            if isinstance(b, tuple):
                for x, y in zip(a, b):
                    np.testing.assert_allclose(np.asarray(x), n(y), atol=ATOL)
            else:
                np.testing.assert_allclose(np.asarray(a), n(b), atol=ATOL, rtol=1e-5)


def test_outputs_are_mappings_like_transformers():
    """`"loss" in out`, iteration over names, items, values, len and get, as transformers' ModelOutput."""
    model, tm = flax_and_torch("lm", small_config())
    inputs = make_inputs("lm", model.config)
    for with_labels in (False, True):
        given = {**inputs, "labels": inputs["input_ids"]} if with_labels else inputs
        ours, theirs = run_both(model, tm, given)
        assert ("loss" in ours) == ("loss" in theirs) == with_labels
        assert list(ours) == list(theirs) and len(ours) == len(theirs)
        assert [k for k, _ in ours.items()] == list(theirs.keys())
        np.testing.assert_allclose(np.asarray(ours.values()[-1]), n(list(theirs.values())[-1]), atol=ATOL)
        assert (ours.get("loss") is None) == (theirs.get("loss") is None)
    with pytest.raises(KeyError):
        model(**inputs)["loss"]


# -- the multiple-choice summary and the classification losses ----------------------------------
# Every summary_type x projection choice; the activation alternates (tanh where the grid is odd).
SUMMARIES = [
    {"summary_type": s, "summary_use_proj": p, "summary_proj_to_labels": pl, "summary_activation": a}
    for i, (s, (p, pl)) in enumerate(
        (s, pp) for s in ("last", "first", "mean", "cls_index") for pp in ((True, True), (True, False), (False, True))
    )
    for a in (("tanh",) if i % 2 else (None,))
]


@pytest.mark.parametrize("summary", SUMMARIES, ids=lambda s: "-".join(str(v) for v in s.values()))
def test_double_heads_summary_options(summary):
    config = small_config(**summary, summary_last_dropout=0.0)
    model, tm = flax_and_torch("double", config)
    inputs = make_inputs("double", model.config, labels=True)
    if summary["summary_proj_to_labels"] and summary["summary_use_proj"]:
        ours, theirs = run_both(model, tm, inputs)
        assert_outputs_close(ours, theirs)
        assert_grads_close("double", model, tm, inputs)
    else:  # mc_logits are [B, C, D]: transformers' mc_loss is undefined there; compare the logits
        inputs.pop("mc_labels")
        ours, theirs = run_both(model, tm, inputs)
        assert_outputs_close(ours, theirs)


@pytest.mark.parametrize("summary", [{"summary_use_proj": False}, {"summary_proj_to_labels": False}])
def test_double_heads_one_choice_without_projection_loss_runs_over_the_summary_width(summary):
    """mc_logits [B, 1, D]: transformers' mc_loss takes D classes (mc_logits.view(-1, D)); so does ours."""
    config = small_config(**summary, summary_type="cls_index", summary_last_dropout=0.0)
    model, tm = flax_and_torch("double", config)
    inputs = make_inputs("double", model.config, labels=True)
    inputs = {k: v[:, :1] if k in ("input_ids", "labels", "mc_token_ids") else v for k, v in inputs.items()}
    inputs["mc_labels"] = np.array([config.n_embd - 1, 3], np.int32)  # [B]: classes of the summary's width
    ours, theirs = run_both(model, tm, inputs)
    assert ours.mc_logits.shape == (B, 1, config.n_embd)
    assert_outputs_close(ours, theirs)
    assert_grads_close("double", model, tm, inputs)
    with pytest.raises(ValueError, match=r"mc_labels must hold 6 labels, got shape \(2,\): mc_logits have shape"):
        model(make_inputs("double", model.config)["input_ids"][:, :3], mc_labels=np.zeros(2, np.int32))
    # Several choices: mc_logits [B, C, D] -> B * C rows, and transformers' loss takes a label per row.
    inputs = make_inputs("double", model.config, labels=True)
    inputs["mc_labels"] = np.random.default_rng(0).integers(0, config.n_embd, inputs["input_ids"].shape[:2])
    ours, theirs = run_both(model, tm, inputs)
    assert_outputs_close(ours, theirs)
    assert_grads_close("double", model, tm, inputs)


def test_every_summary_activation_is_transformers_get_activation():
    from transformers.activations import get_activation

    from gpt_flax.config import SUMMARY_ACTIVATIONS as NAMES
    from gpt_flax.heads import SUMMARY_ACTIVATIONS

    x = np.linspace(-12.0, 12.0, 4001, dtype=np.float32)
    for name in NAMES:
        expected = get_activation(name)(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(
            np.asarray(SUMMARY_ACTIVATIONS[name](jnp.asarray(x))), expected, atol=3e-6, err_msg=name
        )
    # and one of them through the whole double-heads model, gradients included
    config = small_config(summary_activation="quick_gelu", summary_last_dropout=0.0)
    model, tm = flax_and_torch("double", config)
    inputs = make_inputs("double", model.config, labels=True)
    assert_outputs_close(*run_both(model, tm, inputs))
    assert_grads_close("double", model, tm, inputs)


def test_double_heads_default_mc_token_ids_is_last_token():
    model, tm = flax_and_torch("double", small_config())
    inputs = make_inputs("double", model.config)
    ours, theirs = run_both(model, tm, inputs)
    assert ours.mc_logits.shape == (B, C)
    assert_outputs_close(ours, theirs)


@pytest.mark.parametrize(
    "num_labels,problem_type",
    [
        (1, None),
        (3, None),
        (1, "regression"),
        (3, "regression"),
        (3, "single_label_classification"),
        (4, "multi_label_classification"),
        (3, "multi_label_classification"),
    ],
)
def test_sequence_classification_losses(num_labels, problem_type):
    config = small_config(pad_token_id=0, num_labels=num_labels, problem_type=problem_type)
    model, tm = flax_and_torch("cls", config)
    inputs = make_inputs("cls", model.config, padding=True, labels=True)
    ours, theirs = run_both(model, tm, inputs)
    assert_outputs_close(ours, theirs)
    assert_grads_close("cls", model, tm, inputs)


def test_sequence_classification_left_padding_pools_rightmost_non_pad():
    config = small_config(pad_token_id=0)
    model, tm = flax_and_torch("cls", config)
    ids = np.array([[0, 0, 4, 5, 6, 7, 8], [3, 4, 5, 6, 0, 0, 0]], np.int32)
    ours, theirs = run_both(model, tm, {"input_ids": ids})
    assert_outputs_close(ours, theirs)


def test_sequence_classification_inputs_embeds_uses_last_position():
    config = small_config(pad_token_id=0)
    model, tm = flax_and_torch("cls", config)
    inputs = make_inputs("cls", model.config, inputs_embeds=True)
    ours, theirs = run_both(model, tm, inputs)
    assert_outputs_close(ours, theirs)


def test_lm_loss_ignores_minus_100():
    model, tm = flax_and_torch("lm", small_config())
    inputs = make_inputs("lm", model.config, labels=True)
    inputs["labels"][:, 4:] = -100
    ours, theirs = run_both(model, tm, inputs)
    np.testing.assert_allclose(float(ours.loss), float(theirs.loss), rtol=1e-5)


# -- full size ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def full_size_lm():
    """One 12 x 768 LM-head model, from which every head's full-size model takes its body."""
    config = OpenAIGPTConfig(pad_token_id=0)
    return FlaxOpenAIGPTLMHeadModel(config, seed=0)


@pytest.mark.parametrize("head", ["base", "lm", "double", "cls"])
def test_full_size_logits(head, full_size_lm):
    body = full_size_lm.params["transformer"]
    model = CLASSES[head](full_size_lm.config, seed=1)
    model.params = body if head == "base" else {**model.params, "transformer": body}
    tm = torch_model(head, model.config, model.params)
    rs = np.random.RandomState(0)
    shape = (1, 2, 16) if head == "double" else (2, 16)
    ids = rs.randint(1, model.config.vocab_size, shape).astype(np.int32)
    ours, theirs = run_both(model, tm, {"input_ids": ids})
    name = "last_hidden_state" if head == "base" else "logits"
    np.testing.assert_allclose(np.asarray(getattr(ours, name)), n(getattr(theirs, name)), atol=1e-4, rtol=0)
    if head == "double":
        np.testing.assert_allclose(np.asarray(ours.mc_logits), n(theirs.mc_logits), atol=1e-4, rtol=0)


# -- training mode, dtype, compilation -----------------------------------------------------------
def test_dropout_changes_outputs_reproducibly():
    model = FlaxOpenAIGPTLMHeadModel(small_config())
    ids = make_inputs("lm", model.config)["input_ids"]
    k1, k2 = jax.random.key(1), jax.random.key(2)
    a = model(ids, train=True, dropout_rng=k1).logits
    b = model(ids, train=True, dropout_rng=k1).logits
    c = model(ids, train=True, dropout_rng=k2).logits
    d = model(ids).logits
    e = model(ids).logits
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert np.abs(np.asarray(a) - np.asarray(c)).max() > 1e-3
    assert np.abs(np.asarray(a) - np.asarray(d)).max() > 1e-3
    np.testing.assert_array_equal(np.asarray(d), np.asarray(e))


def test_dropout_rates_zero_equals_eval():
    config = small_config(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, summary_first_dropout=0.0)
    model = FlaxOpenAIGPTDoubleHeadsModel(config)
    ids = make_inputs("double", model.config)["input_ids"]
    a = model(ids, train=True, dropout_rng=jax.random.key(0))
    b = model(ids)
    np.testing.assert_allclose(np.asarray(a.logits), np.asarray(b.logits), atol=1e-6)
    np.testing.assert_allclose(np.asarray(a.mc_logits), np.asarray(b.mc_logits), atol=1e-6)


def test_attention_dropout_rate_is_respected():
    """With only attention dropout on, the dropped fraction of attention entries is near attn_pdrop."""
    from gpt_flax.attention import dropout_keep_mask

    keep = np.asarray(dropout_keep_mask(jnp.uint32(123), 4, 3, 64, 64, 0.1))
    assert abs(1.0 - keep.mean() - 0.1) < 0.01
    other = np.asarray(dropout_keep_mask(jnp.uint32(124), 4, 3, 64, 64, 0.1))
    assert (keep != other).mean() > 0.1


def test_bfloat16_compute_close_to_float32():
    config = small_config()
    f32 = FlaxOpenAIGPTLMHeadModel(config, seed=3)
    bf16 = FlaxOpenAIGPTLMHeadModel(config, seed=3, dtype=jnp.bfloat16)
    ids = make_inputs("lm", config)["input_ids"]
    a, b = f32(ids).logits, bf16(ids).logits
    assert b.dtype == jnp.bfloat16 and bf16.params["transformer"]["h"]["ln_1"]["scale"].dtype == jnp.float32
    assert rel_err(np.asarray(b, np.float32), np.asarray(a)) < 2e-2


def test_bfloat16_full_size_logits(full_size_lm):
    bf16 = FlaxOpenAIGPTLMHeadModel(full_size_lm.config, dtype=jnp.bfloat16, _do_init=False)
    bf16.params = full_size_lm.params
    ids = np.random.RandomState(0).randint(0, 40478, (1, 32)).astype(np.int32)
    a, b = full_size_lm(ids).logits, bf16(ids).logits
    assert rel_err(np.asarray(b, np.float32), np.asarray(a)) < 2e-2


def test_same_shapes_do_not_recompile():
    from gpt_flax.modeling import _forward

    model = FlaxOpenAIGPTLMHeadModel(small_config(n_layer=3))
    rs = np.random.RandomState(0)
    before = _forward._cache_size()
    for _ in range(3):
        model(rs.randint(0, 37, (2, 5)).astype(np.int32))
    assert _forward._cache_size() == before + 1
    twin = FlaxOpenAIGPTLMHeadModel(small_config(n_layer=3), seed=1)  # same config: same compilation
    twin(rs.randint(0, 37, (2, 5)).astype(np.int32))
    assert _forward._cache_size() == before + 1
    model(rs.randint(0, 37, (2, 6)).astype(np.int32))
    assert _forward._cache_size() == before + 2


def test_usable_inside_user_jit_and_grad():
    model = FlaxOpenAIGPTLMHeadModel(small_config())
    ids = jnp.asarray(make_inputs("lm", model.config)["input_ids"])

    @jax.jit
    def step(params, key):
        def loss(p):
            return model(ids, labels=ids, params=p, train=True, dropout_rng=key).loss

        return jax.value_and_grad(loss)(params)

    value, grads = step(model.params, jax.random.key(0))
    value2, _ = step(model.params, jax.random.key(0))
    assert np.isfinite(float(value)) and float(value) == float(value2)
    assert jax.tree_util.tree_structure(grads) == jax.tree_util.tree_structure(model.params)


def test_module_apply_is_the_pure_forward():
    model = FlaxOpenAIGPTDoubleHeadsModel(small_config())
    inputs = make_inputs("double", model.config, labels=True)
    direct = model(**inputs)
    pure = jax.jit(model.module.apply)({"params": model.params}, **{k: jnp.asarray(v) for k, v in inputs.items()})
    np.testing.assert_array_equal(np.asarray(direct.mc_logits), np.asarray(pure.mc_logits))
    assert float(direct.loss) == float(pure.loss)
    # module.init builds a tree of the same structure and shapes as the model's params
    init = model.module.init(jax.random.key(0), jnp.asarray(inputs["input_ids"]))["params"]
    assert jax.tree_util.tree_map(jnp.shape, init) == jax.tree_util.tree_map(jnp.shape, model.params)


def test_gradient_checkpointing_same_gradients():
    config = small_config()
    plain = FlaxOpenAIGPTLMHeadModel(config)
    remat = FlaxOpenAIGPTLMHeadModel(config, gradient_checkpointing=True)
    ids = make_inputs("lm", config)["input_ids"]

    def grads(m):
        return jax.grad(lambda p: m(ids, labels=ids, params=p).loss)(plain.params)

    for a, b in zip(jax.tree_util.tree_leaves(grads(plain)), jax.tree_util.tree_leaves(grads(remat))):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)


def test_layers_are_one_scanned_block():
    model = FlaxOpenAIGPTModel(small_config(n_layer=4))
    text = (
        jax.jit(lambda p, x: model.module.apply({"params": p}, x))
        .lower(model.params, jnp.zeros((1, 5), jnp.int32))
        .as_text()
    )
    assert "while" in text  # lax.scan lowers to one loop over stacked layers
    assert model.params["h"]["attn"]["c_attn"]["kernel"].shape == (4, 24, 72)


def test_init_matches_transformers_statistics():
    config = OpenAIGPTConfig(**{**SMALL, "n_embd": 96, "n_head": 4, "initializer_range": 0.02})
    params = FlaxOpenAIGPTDoubleHeadsModel(config).params
    h = params["transformer"]["h"]
    assert abs(float(jnp.std(h["mlp"]["c_fc"]["kernel"])) - 0.02) < 0.002
    assert float(jnp.abs(h["mlp"]["c_fc"]["bias"]).max()) == 0.0
    assert float(jnp.abs(h["ln_1"]["scale"] - 1).max()) == 0.0
    assert float(jnp.abs(params["multiple_choice_head"]["summary"]["bias"]).max()) == 0.0


# -- resize_token_embeddings -------------------------------------------------------------------
@pytest.mark.parametrize("head", ["base", "lm", "double", "cls"])
def test_resize_token_embeddings_keeps_old_ids(head):
    config = small_config(pad_token_id=0 if head == "cls" else None)
    model = CLASSES[head](config, seed=2)
    inputs = make_inputs(head, model.config)
    before = model(**inputs)
    old = np.asarray((model.params if head == "base" else model.params["transformer"])["tokens_embed"]["embedding"])
    model.resize_token_embeddings(41)
    after = model(**inputs)
    table = np.asarray((model.params if head == "base" else model.params["transformer"])["tokens_embed"]["embedding"])
    assert model.config.vocab_size == 41 and table.shape == (41, 24)
    np.testing.assert_array_equal(table[:37], old)
    # transformers 4.56's mean resizing: new rows ~ N(mean, 1e-9 * covariance) of the old rows
    np.testing.assert_allclose(table[37:], np.broadcast_to(old.mean(0), (4, 24)), atol=1e-3)
    assert np.abs(table[37:] - old.mean(0)).max() > 0  # sampled: 37 random rows give a positive-definite covariance
    name = {"base": "last_hidden_state", "cls": "logits"}.get(head)
    if name:
        np.testing.assert_array_equal(np.asarray(getattr(after, name)), np.asarray(getattr(before, name)))
    else:  # the tied LM head grows a column per new token; the old columns are unchanged
        assert after.logits.shape[-1] == 41
        np.testing.assert_array_equal(np.asarray(after.logits)[..., :37], np.asarray(before.logits))
        new_ids = np.full_like(inputs["input_ids"], 40)
        assert np.isfinite(np.asarray(model(new_ids).logits)).all()


def test_resize_token_embeddings_shrinks_and_rejects_bad_sizes():
    model = FlaxOpenAIGPTLMHeadModel(small_config())
    model.resize_token_embeddings(30, mean_resizing=False)
    assert model.params["transformer"]["tokens_embed"]["embedding"].shape == (30, 24)
    with pytest.raises(ValueError, match="input_ids holds 31"):
        model(np.array([[1, 31]], np.int32))
    with pytest.raises(ValueError, match="new_num_tokens"):
        model.resize_token_embeddings(0)
    model.resize_token_embeddings(np.int64(28))  # e.g. len(tokenizer) read back from numpy
    assert model.config.vocab_size == 28 and isinstance(model.config.vocab_size, int)


def test_flax_pretrained_model_helpers_as_transformers():
    """to_bf16 / to_fp16 / to_fp32 (with and without a mask) against transformers' own cast; init_weights with
    params; can_generate; params_shape_tree and required_params."""
    from flax import traverse_util
    from transformers.modeling_flax_utils import FlaxPreTrainedModel

    model = FlaxOpenAIGPTLMHeadModel(small_config())
    mask = traverse_util.path_aware_map(lambda path, _: path[-1] not in ("scale", "bias"), model.params)
    for ours, dtype in ((model.to_bf16, jnp.bfloat16), (model.to_fp16, jnp.float16), (model.to_fp32, jnp.float32)):
        for m in (None, mask):
            source = (
                FlaxPreTrainedModel._cast_floating_to(None, model.params, jnp.bfloat16)
                if dtype == jnp.float32
                else model.params
            )
            got = ours(source, m)
            want = FlaxPreTrainedModel._cast_floating_to(None, source, dtype, m)  # uses no state of the model
            same = jax.tree_util.tree_map(lambda a, b: a.dtype == b.dtype and bool((a == b).all()), got, want)
            assert jax.tree_util.tree_all(same)
    half = model.to_bf16(model.params)
    assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(half)} == {jnp.dtype(jnp.bfloat16)}
    back = model.to_fp32(half)
    assert jax.tree_util.tree_all(jax.tree_util.tree_map(lambda a: a.dtype == jnp.float32, back))
    with pytest.raises(ValueError, match="mask must be a tree of bools with the params' structure"):
        model.to_bf16(model.params, {"transformer": True})

    kept = {"transformer": {"tokens_embed": model.params["transformer"]["tokens_embed"]}}
    filled = model.init_weights(jax.random.key(7), (1, 1), params=kept)
    assert filled["transformer"]["tokens_embed"]["embedding"] is kept["transformer"]["tokens_embed"]["embedding"]
    fresh = model.init_weights(jax.random.key(7))
    assert np.array_equal(
        filled["transformer"]["h"]["mlp"]["c_fc"]["kernel"], fresh["transformer"]["h"]["mlp"]["c_fc"]["kernel"]
    )
    assert not np.array_equal(
        fresh["transformer"]["tokens_embed"]["embedding"], kept["transformer"]["tokens_embed"]["embedding"]
    )

    assert [CLASSES[h].can_generate() for h in ("base", "lm", "double", "cls")] == [False, True, True, False]
    shapes = model.params_shape_tree
    assert jax.tree_util.tree_structure(shapes) == jax.tree_util.tree_structure(model.params)
    assert all(
        s.shape == p.shape and s.dtype == p.dtype
        for s, p in zip(jax.tree_util.tree_leaves(shapes), jax.tree_util.tree_leaves(model.params))
    )
    assert ("transformer", "tokens_embed", "embedding") in model.required_params and model.framework == "flax"


def test_output_flags_left_none_take_the_configs_as_in_transformers(tmp_path):
    """output_attentions / output_hidden_states / return_dict from from_pretrained's keywords or from
    config.json are what a call leaving them None returns, in the class and in module.apply; a
    flag the call passes wins."""
    from transformers import OpenAIGPTLMHeadModel

    model = CLASSES["lm"](small_config())
    model.save_pretrained(tmp_path, format="hf")
    inputs = make_inputs("lm", model.config, labels=True)
    flags = {"output_attentions": True, "output_hidden_states": True}
    ours = CLASSES["lm"].from_pretrained(tmp_path, **flags)
    theirs = OpenAIGPTLMHeadModel.from_pretrained(tmp_path, **flags).eval()
    a, b = run_both(ours, theirs, inputs)
    assert b.attentions is not None and b.hidden_states is not None
    assert_outputs_close(a, b)
    assert ours(**inputs, output_attentions=False).attentions is None
    assert ours.module.apply({"params": ours.params}, **inputs).hidden_states is not None

    ours.config.replace(return_dict=False).save_pretrained(tmp_path)  # the flags in config.json
    ours, theirs = CLASSES["lm"].from_pretrained(tmp_path), OpenAIGPTLMHeadModel.from_pretrained(tmp_path).eval()
    a, b = run_both(ours, theirs, inputs)
    assert isinstance(a, tuple) and isinstance(b, tuple) and len(a) == len(b) == 4  # loss, logits, hidden, attentions
    np.testing.assert_allclose(np.asarray(a[1]), n(b[1]), atol=ATOL)
    assert len(a[3]) == len(b[3]) == model.config.n_layer
    assert not isinstance(ours(**inputs, return_dict=True), tuple)


@pytest.mark.parametrize("head", ["lm", "double"])
def test_an_untied_lm_head_matches_transformers(head, tmp_path):
    """tie_word_embeddings=False: a separate lm_head [V, D] in transformers, `lm_head/kernel` [D, V]
    here; outputs, losses and gradients (its own included), greedy generation, the checkpoint both
    ways, and resizing."""
    from transformers import OpenAIGPTLMHeadModel

    config = small_config(tie_word_embeddings=False)
    model, tm = flax_and_torch(head, config)
    assert model.params["lm_head"]["kernel"].shape == (config.n_embd, config.vocab_size)
    assert not torch.equal(tm.lm_head.weight, tm.transformer.tokens_embed.weight)
    inputs = make_inputs(head, model.config, labels=True)
    assert_outputs_close(*run_both(model, tm, inputs))
    assert_grads_close(head, model, tm, inputs)
    if head == "double":
        return
    ids = np.asarray([[3, 1, 4, 1]])
    with torch.no_grad():
        expected = tm.generate(torch.from_numpy(ids), max_new_tokens=6, do_sample=False, pad_token_id=0).numpy()
    np.testing.assert_array_equal(model.generate(ids, max_new_tokens=6), expected)
    from gpt_flax.generation import generate

    with pytest.raises(ValueError, match="unties the LM head"):  # the transformer's params alone
        generate(model.params["transformer"], model.config, ids, max_new_tokens=6)
    model.save_pretrained(tmp_path, format="hf")
    theirs, info = OpenAIGPTLMHeadModel.from_pretrained(tmp_path, output_loading_info=True)
    assert info["missing_keys"] == [] and info["unexpected_keys"] == []
    assert torch.equal(theirs.lm_head.weight, tm.lm_head.weight)
    reloaded = CLASSES[head].from_pretrained(tmp_path)
    np.testing.assert_array_equal(reloaded.params["lm_head"]["kernel"], model.params["lm_head"]["kernel"])
    old = np.asarray(model.params["lm_head"]["kernel"])
    model.resize_token_embeddings(config.vocab_size + 3)
    assert model.params["lm_head"]["kernel"].shape == (config.n_embd, config.vocab_size + 3)
    np.testing.assert_array_equal(model.params["lm_head"]["kernel"][:, : config.vocab_size], old)
    assert model(ids).logits.shape == (1, 4, config.vocab_size + 3)


@pytest.mark.parametrize("head", ["base", "lm"])
def test_any_leading_shape_is_viewed_as_rows_as_in_transformers(head):
    """transformers' base and LM models take input_ids [T] or [B, C, T] (viewed as [-1, T]): the
    final hidden state and the logits come back in the inputs' shape, the other hidden states and
    the attentions per row; masks [1, T] or [rows, T]."""
    config = small_config()
    model, tm = flax_and_torch(head, config)
    rs = np.random.RandomState(3)
    ids_3d = rs.randint(0, config.vocab_size, (2, 3, 5))
    mask_rows = np.ones((6, 5), np.float32)
    mask_rows[1, :2] = 0.0
    cases = [
        {"input_ids": ids_3d[0, 0], "attention_mask": np.asarray([[0, 1, 1, 1, 1]], np.float32)},
        {"input_ids": ids_3d, "attention_mask": mask_rows, "token_type_ids": ids_3d[0, 0]},
    ]
    for inputs in cases:
        if head == "lm":  # labels on the rows [B * C, T] for [B, C, T] inputs, as transformers' view(-1)
            inputs["labels"] = inputs["input_ids"].reshape(-1, inputs["input_ids"].shape[-1])
        flags = {"output_hidden_states": True, "output_attentions": True}
        ours = model(**inputs, **flags)
        with torch.no_grad():
            theirs = tm(**{k: t(v) for k, v in inputs.items()}, **flags)
        assert_outputs_close(ours, theirs)
    with pytest.raises(ValueError, match=r"input_ids must be \[\.\.\., seq_len\], got shape \(\)"):
        model(np.int32(3))
