"""Bad input fails before any work, with a ValueError that names the problem."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import transformers

from gpt_flax import (
    FlaxOpenAIGPTDoubleHeadsModel,
    FlaxOpenAIGPTForSequenceClassification,
    FlaxOpenAIGPTLMHeadModel,
    FlaxOpenAIGPTModel,
    OpenAIGPTConfig,
)

CONFIG = OpenAIGPTConfig(vocab_size=37, n_positions=11, n_embd=24, n_layer=2, n_head=3)


@pytest.fixture(scope="module")
def lm():
    return FlaxOpenAIGPTLMHeadModel(CONFIG)


@pytest.fixture(scope="module")
def double():
    return FlaxOpenAIGPTDoubleHeadsModel(CONFIG)


IDS = np.array([[1, 2, 3, 4]], np.int32)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"input_ids": np.array([[1, 37, 2]])}, r"input_ids holds 37 at index \(0, 1\), outside \[0, 37\)"),
        ({"input_ids": np.array([[1, -1]])}, r"input_ids holds -1"),
        ({"input_ids": np.zeros((1, 12), np.int32)}, "sequence length 12 exceeds n_positions=11"),
        ({}, "neither was given"),
        ({"input_ids": IDS, "inputs_embeds": np.zeros((1, 4, 24), np.float32)}, "both were given"),
        ({"input_ids": np.array(3)}, r"input_ids must be \[\.\.\., seq_len\], got shape \(\)"),  # any [..., T]
        ({"inputs_embeds": np.zeros(24, np.float32)}, r"inputs_embeds must be \[\.\.\., seq_len, n_embd=24\]"),
        ({"input_ids": np.array([[1.0, 2.0]])}, "input_ids must hold integers"),
        ({"inputs_embeds": np.zeros((1, 4, 23), np.float32)}, "n_embd=24"),
        ({"input_ids": IDS, "attention_mask": np.ones((1, 5))}, r"attention_mask has shape \(1, 5\)"),
        ({"input_ids": IDS, "token_type_ids": np.array([[0, 0, 40, 0]])}, "token_type_ids holds 40"),
        ({"input_ids": IDS, "position_ids": np.array([[0, 1, 2, 11]])}, r"position_ids holds 11 .* \[0, 11\)"),
        ({"input_ids": IDS, "head_mask": np.ones(4)}, r"head_mask must be \[n_head=3\]"),
        ({"input_ids": IDS, "labels": np.array([[1, 2, 3, 37]])}, r"labels holds 37 at index \(0, 3\)"),
        ({"input_ids": IDS, "labels": np.array([[1, 2, 3]])}, r"labels has shape \(1, 3\)"),
        (
            {"input_ids": np.zeros((2, 4), np.int32), "position_ids": np.zeros((3, 4), np.int32)},
            "position_ids has shape",
        ),
        ({"input_ids": IDS, "token_type_ids": np.zeros((1, 1, 4), np.int32)}, "token_type_ids has shape"),
    ],
)
def test_lm_rejects(lm, kwargs, message):
    with pytest.raises(ValueError, match=message):
        lm(**kwargs)


def test_labels_minus_100_are_accepted(lm):
    assert np.isfinite(float(lm(IDS, labels=np.array([[-100, 2, -100, 4]])).loss))


def test_double_heads_rejects(double):
    ids = np.zeros((2, 3, 5), np.int32)
    with pytest.raises(ValueError, match=r"mc_token_ids holds 5 .* outside \[0, 5\)"):
        double(ids, mc_token_ids=np.array([[0, 1, 5], [4, 4, 4]]))
    with pytest.raises(ValueError, match=r"mc_token_ids must be \[batch, choices\]"):
        double(ids, mc_token_ids=np.array([0, 1]))
    with pytest.raises(ValueError, match=r"mc_labels holds 3"):
        double(ids, mc_labels=np.array([0, 3]))
    for rank in (1, 4):  # [B, C, T], or [B, T] as transformers also runs
        with pytest.raises(ValueError, match=r"\[batch, choices, seq_len\] or \[batch, seq_len\]"):
            double(np.zeros((2, 1, 3, 5)[-rank:], np.int32))


def test_sequence_classification_needs_pad_token_for_batches():
    model = FlaxOpenAIGPTForSequenceClassification(CONFIG)
    with pytest.raises(ValueError, match="pad_token_id"):
        model(np.zeros((2, 4), np.int32))
    assert model(np.zeros((1, 4), np.int32)).logits.shape == (1, 2)
    with pytest.raises(ValueError, match=r"labels holds 2"):
        model(np.zeros((1, 4), np.int32), labels=np.array([2]))


def test_classification_labels_shape_and_kind_per_problem_type():
    ids = np.zeros((2, 4), np.int32)
    cases = [
        (
            {},
            np.zeros((2, 2), np.float32),
            r"multi_label_classification with num_labels=3 needs labels of shape \(2, 3\)",
        ),
        ({"problem_type": "single_label_classification"}, np.zeros(2, np.float32), "needs integer class labels"),
        ({"problem_type": "single_label_classification", "num_labels": 1}, np.array([3, 0]), r"labels holds 3"),
        ({"problem_type": "regression"}, np.zeros(2, np.float32), r"regression with num_labels=3 needs labels"),
        (
            {"num_labels": 1},
            np.zeros((2, 2), np.float32),
            r"regression with num_labels=1 needs labels of shape \(2,\) or \(2, 1\)",
        ),
    ]
    for overrides, labels, message in cases:
        model = FlaxOpenAIGPTForSequenceClassification(
            CONFIG.replace(pad_token_id=0, num_labels=3).replace(**overrides)
        )
        with pytest.raises(ValueError, match=message):
            model(ids, labels=labels)


def test_shapes_transformers_takes_are_taken():
    """[B, 1] class labels, [T] token types and positions, a [B * C, T] double-heads mask: as transformers."""
    from test_modeling import flax_and_torch, run_both

    config = CONFIG.replace(pad_token_id=0, num_labels=3)
    rs = np.random.RandomState(0)
    ids = rs.randint(1, 37, (2, 4)).astype(np.int32)
    model, tm = flax_and_torch("cls", config)
    ours, theirs = run_both(
        model, tm, {"input_ids": ids, "labels": np.array([[2], [0]]), "token_type_ids": np.array([0, 3, 3, 1])}
    )
    np.testing.assert_allclose(float(ours.loss), float(theirs.loss), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(ours.logits), theirs.logits.numpy(), atol=1e-5)
    model, tm = flax_and_torch("double", config)
    ids = rs.randint(1, 37, (2, 3, 4)).astype(np.int32)
    mask = np.ones((6, 4), np.int32)
    mask[1, 3:] = 0
    inputs = {
        "input_ids": ids,
        "attention_mask": mask,
        "position_ids": np.array([0, 1, 2, 3]),
        "mc_token_ids": np.full((2, 3), 2),
    }
    ours, theirs = run_both(model, tm, inputs)
    np.testing.assert_allclose(np.asarray(ours.mc_logits), theirs.mc_logits.numpy(), atol=1e-5)
    np.testing.assert_allclose(np.asarray(ours.logits), theirs.logits.numpy(), atol=1e-5)


def test_the_pure_function_checks_shapes_too(lm):
    """model.module.apply is the function users jit: static checks run there, values when concrete."""
    apply = lambda ids: lm.module.apply({"params": lm.params}, ids).logits
    with pytest.raises(ValueError, match="exceeds n_positions=11"):
        jax.jit(apply)(jnp.zeros((1, 12), jnp.int32))
    with pytest.raises(ValueError, match=r"input_ids must be \[\.\.\., seq_len\]"):
        apply(np.int32(4))
    with pytest.raises(ValueError, match="input_ids holds 37"):
        apply(np.array([[1, 37]], np.int32))
    np.testing.assert_allclose(np.asarray(apply(IDS)), np.asarray(lm(IDS).logits), atol=1e-6)


def test_train_needs_a_dropout_key(lm):
    with pytest.raises(ValueError, match="dropout_rng"):
        lm(IDS, train=True)


def test_non_array_input(lm):
    with pytest.raises((TypeError, ValueError)):
        lm(input_ids="hello")


def test_value_checks_skip_traced_values_but_shapes_still_fail(lm):
    """Inside a user's jit, ids are tracers: range checks wait, shape checks still run."""
    out = jax.jit(lambda ids: lm(ids).logits)(jnp.asarray(IDS))
    assert out.shape == (1, 4, 37)
    with pytest.raises(ValueError, match="exceeds n_positions"):
        jax.jit(lambda ids: lm(ids).logits)(jnp.zeros((1, 12), jnp.int32))


def test_checkpoint_shapes_that_do_not_fit_the_config(tmp_path):
    hf = transformers.OpenAIGPTLMHeadModel(
        transformers.OpenAIGPTConfig(vocab_size=37, n_positions=11, n_embd=24, n_layer=2, n_head=3)
    )
    hf.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"tokens_embed.weight.*\(37, 24\).*\(40, 24\)"):
        FlaxOpenAIGPTLMHeadModel.from_pretrained(tmp_path, vocab_size=40)


def test_base_model_from_head_checkpoint_reports_unused_keys(tmp_path):
    hf = transformers.OpenAIGPTDoubleHeadsModel(
        transformers.OpenAIGPTConfig(vocab_size=37, n_positions=11, n_embd=24, n_layer=2, n_head=3)
    )
    hf.save_pretrained(tmp_path)
    model, info = FlaxOpenAIGPTModel.from_pretrained(tmp_path, output_loading_info=True)
    assert info["missing_keys"] == []
    assert set(info["unexpected_keys"]) == {"multiple_choice_head.summary.weight", "multiple_choice_head.summary.bias"}
    np.testing.assert_array_equal(
        np.asarray(model.params["positions_embed"]["embedding"]), hf.transformer.positions_embed.weight.detach().numpy()
    )
    hf.save_pretrained(tmp_path / "bin", safe_serialization=False)  # a .bin keeps the tied lm_head.weight
    _, info = FlaxOpenAIGPTModel.from_pretrained(tmp_path / "bin", output_loading_info=True)
    _, their_info = transformers.OpenAIGPTModel.from_pretrained(tmp_path / "bin", output_loading_info=True)
    assert sorted(info["unexpected_keys"]) == sorted(their_info["unexpected_keys"])
    assert "lm_head.weight" in info["unexpected_keys"]


def test_more_shapes_and_values_transformers_takes_are_taken():
    """One mask row for every sequence (broadcast), a label in column 0 that no position predicts
    (out of the vocabulary: transformers' shifted loss never reads it), mc_labels of any shape with a
    label per row, flattened [B * C, T] double-heads labels, and mc_token_ids that a summary other
    than cls_index ignores: each as transformers computes it."""
    from test_modeling import assert_outputs_close, flax_and_torch, run_both

    rs = np.random.RandomState(1)
    ids = rs.randint(0, 37, (2, 5)).astype(np.int32)
    labels = rs.randint(0, 37, (2, 5))
    labels[:, 0] = [37, -5]
    model, tm = flax_and_torch("lm", CONFIG)
    ours, theirs = run_both(
        model, tm, {"input_ids": ids, "attention_mask": np.array([[1, 1, 0, 1, 1]]), "labels": labels}
    )
    assert_outputs_close(ours, theirs)
    with pytest.raises(ValueError, match=r"attention_mask has shape \(2, 4\)"):
        model(ids, attention_mask=np.ones((2, 4)))

    for summary_type in ("cls_index", "mean"):
        config = CONFIG.replace(summary_type=summary_type)
        model, tm = flax_and_torch("double", config)
        ids = rs.randint(0, 37, (2, 3, 5)).astype(np.int32)
        mc_token_ids = np.array([[4, 2, 0], [1, 3, 4]]) if summary_type == "cls_index" else np.full((2, 3), 99)
        inputs = {
            "input_ids": ids,
            "attention_mask": np.array([[1, 1, 1, 0, 1]]),
            "labels": rs.randint(0, 37, (6, 5)),
            "mc_labels": np.array([[2], [0]]),
            "mc_token_ids": mc_token_ids,
        }
        ours, theirs = run_both(model, tm, inputs)
        assert_outputs_close(ours, theirs)
        np.testing.assert_allclose(float(ours.mc_loss), float(theirs.mc_loss), rtol=1e-5)
    model, tm = flax_and_torch("double", CONFIG)
    ours, theirs = run_both(model, tm, {"input_ids": ids[:1], "mc_labels": np.array(1)})  # B = 1, shape ()
    np.testing.assert_allclose(float(ours.mc_loss), float(theirs.mc_loss), rtol=1e-5)
    with pytest.raises(ValueError, match=r"mc_labels must be \[batch\] = \(2,\), got shape \(2, 2\)"):
        model(ids, mc_labels=np.zeros((2, 2), np.int32))
