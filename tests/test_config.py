"""OpenAIGPTConfig: transformers' fields and defaults, config.json in both directions, validation."""

from __future__ import annotations

import dataclasses
import json

import jax
import numpy as np
import pytest
import transformers

from gpt_flax import OpenAIGPTConfig

HF_FIELDS = [
    "vocab_size", "n_positions", "n_embd", "n_layer", "n_head", "afn", "resid_pdrop", "embd_pdrop",
    "attn_pdrop", "layer_norm_epsilon", "initializer_range", "summary_type", "summary_use_proj",
    "summary_activation", "summary_proj_to_labels", "summary_first_dropout", "num_labels", "id2label",
    "pad_token_id", "problem_type",
]


def test_defaults_match_transformers():
    ours, theirs = OpenAIGPTConfig(), transformers.OpenAIGPTConfig()
    for name in HF_FIELDS:
        assert getattr(ours, name) == getattr(theirs, name), name
    assert ours.head_dim == 64 and ours.hidden_size == 768 and ours.num_hidden_layers == 12


def test_reads_transformers_config_json(tmp_path):
    hf = transformers.OpenAIGPTConfig(
        n_embd=96, n_head=4, n_layer=3, afn="relu", summary_type="mean", num_labels=5, pad_token_id=3,
        problem_type="multi_label_classification",
    )
    hf.save_pretrained(tmp_path)
    ours = OpenAIGPTConfig.from_pretrained(tmp_path)
    for name in HF_FIELDS:
        assert getattr(ours, name) == getattr(hf, name), name
    assert ours.to_dict()["model_type"] == "openai-gpt"


def test_writes_config_json_transformers_reads(tmp_path):
    ours = OpenAIGPTConfig(n_embd=48, n_head=6, n_layer=1, afn="silu", num_labels=3, pad_token_id=0)
    ours.save_pretrained(tmp_path)
    hf = transformers.AutoConfig.from_pretrained(tmp_path)
    assert isinstance(hf, transformers.OpenAIGPTConfig)
    for name in HF_FIELDS:
        assert getattr(ours, name) == getattr(hf, name), name
    assert OpenAIGPTConfig.from_pretrained(tmp_path) == ours


def test_dict_round_trip_keeps_unknown_keys():
    d = {**OpenAIGPTConfig(n_layer=2).to_dict(), "architectures": ["OpenAIGPTLMHeadModel"], "n_ctx": 512}
    config = OpenAIGPTConfig.from_dict(d)
    assert config.n_layer == 2 and config.extra["n_ctx"] == 512
    assert config.to_dict()["architectures"] == ["OpenAIGPTLMHeadModel"]


def test_num_labels_and_id2label_agree():
    assert OpenAIGPTConfig(num_labels=3).id2label == {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"}
    config = OpenAIGPTConfig(id2label={"0": "neg", "1": "pos", "2": "neutral"})
    assert config.num_labels == 3 and config.label2id == {"neg": 0, "pos": 1, "neutral": 2}
    assert config.replace(num_labels=1).id2label == {0: "LABEL_0"}


def test_hashable_and_static_under_jit():
    config = OpenAIGPTConfig(n_layer=2, id2label={0: "a", 1: "b"})
    assert hash(config) == hash(OpenAIGPTConfig(n_layer=2, id2label={0: "a", 1: "b"}))
    assert jax.jit(lambda c, x: x * c.n_layer, static_argnums=0)(config, 2.0) == 4.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.n_layer = 3


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"n_embd": 100, "n_head": 12}, "divisible"),
        ({"afn": "gelu_exact"}, "afn"),
        ({"summary_type": "attn"}, "attn"),
        ({"summary_type": "max"}, "summary_type"),
        ({"summary_activation": "softmax"}, "summary_activation"),
        ({"n_layer": 0}, "n_layer"),
        ({"attn_pdrop": 1.0}, "attn_pdrop"),
        ({"problem_type": "ranking"}, "problem_type"),
        ({"num_labels": 0}, "num_labels"),
        ({"attention_impl": "flash"}, "attention_impl"),
        ({"resid_pdrop": "x"}, r"resid_pdrop must be a number in \[0, 1\), got 'x'"),
        ({"embd_pdrop": None}, "embd_pdrop must be a number"),
        ({"layer_norm_epsilon": None}, "layer_norm_epsilon must be a positive number, got None"),
        ({"initializer_range": -0.02}, "initializer_range must be a number >= 0"),
        ({"id2label": {"a": "x"}}, "id2label must map integer ids"),
        ({"pad_token_id": "x"}, "pad_token_id must be an integer token id"),
        ({"eos_token_id": [0, 1.5]}, "eos_token_id must be an integer token id"),
        ({"summary_use_proj": "yes"}, "summary_use_proj must be true or false"),
        ({"summary_proj_to_labels": 2}, "summary_proj_to_labels must be true or false"),
    ],
)
def test_rejects_impossible_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        OpenAIGPTConfig(**kwargs)


def test_numpy_values_are_stored_as_python_ones_json_can_write():
    config = OpenAIGPTConfig(pad_token_id=np.int64(3), eos_token_id=[np.int64(1), 2], resid_pdrop=np.float32(0.25))
    assert json.loads(json.dumps(config.to_dict()))["pad_token_id"] == 3 and config.resid_pdrop == 0.25
    assert json.loads(json.dumps(config.to_dict()))["eos_token_id"] == [1, 2]
    assert OpenAIGPTConfig(summary_use_proj=0).summary_use_proj is False  # transformers takes 0 / 1 too
    assert OpenAIGPTConfig(initializer_range=0).initializer_range == 0.0


def test_bad_config_file(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid UTF-8 JSON"):
        OpenAIGPTConfig.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps([1, 2]))
    with pytest.raises(ValueError, match="JSON object"):
        OpenAIGPTConfig.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="no such directory"):
        OpenAIGPTConfig.from_pretrained(tmp_path / "missing")
    (tmp_path / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="config.json"):
        OpenAIGPTConfig.from_pretrained(tmp_path)


def test_keyword_arguments_as_transformers_takes_them():
    """replace / from_pretrained overrides take this config's fields, transformers' PretrainedConfig
    attributes and config.json's own keys (into extra); a misspelt one is a TypeError, as there."""
    config = OpenAIGPTConfig.from_dict({"n_ctx": 512})
    changed = config.replace(output_attentions=True, torchscript=True, n_ctx=256, return_dict=False)
    assert changed.output_attentions and not changed.use_return_dict
    assert changed.extra == {"n_ctx": 256, "torchscript": True}
    with pytest.raises(TypeError, match="no attribute 'num_label'"):
        config.replace(num_label=3)
    assert config.replace(label2id={"neg": 0, "pos": 1}).id2label == {0: "neg", 1: "pos"}
    with pytest.raises(ValueError, match="label2id names 3 labels but the config has num_labels=2"):
        config.replace(label2id={"a": 0, "b": 1, "c": 2})
    assert config.replace(extra=None, prefix="x").extra == {"prefix": "x"}
    aliased = config.replace(num_hidden_layers=1, hidden_size=48, num_attention_heads=4, max_position_embeddings=9)
    assert (aliased.n_layer, aliased.n_embd, aliased.n_head, aliased.n_positions) == (1, 48, 4, 9)


def test_a_config_json_whose_id2label_and_num_labels_disagree_reads_as_transformers(tmp_path, caplog):
    """PretrainedConfig: id2label wins over num_labels (with a warning); a num_labels override resets it."""
    import json

    import transformers

    d = {"id2label": {"0": "a", "1": "b", "2": "c"}, "num_labels": 2, "n_embd": 24, "n_head": 3, "n_layer": 1}
    with open(tmp_path / "config.json", "w") as f:
        json.dump(d, f)
    theirs = transformers.OpenAIGPTConfig.from_pretrained(tmp_path)
    with caplog.at_level("WARNING", logger="gpt_flax"):
        ours = OpenAIGPTConfig.from_pretrained(tmp_path)
    assert (ours.num_labels, ours.id2label) == (theirs.num_labels, theirs.id2label) == (3, {0: "a", 1: "b", 2: "c"})
    assert "num_labels=2 which is incompatible to the id2label map of length 3" in caplog.text
    theirs = transformers.OpenAIGPTConfig.from_pretrained(tmp_path, num_labels=2)
    ours = OpenAIGPTConfig.from_pretrained(tmp_path, num_labels=2)
    assert (ours.num_labels, ours.id2label) == (theirs.num_labels, theirs.id2label) == (2, {0: "LABEL_0", 1: "LABEL_1"})
    assert ours.replace(num_labels=2) == ours  # the same count keeps the names
