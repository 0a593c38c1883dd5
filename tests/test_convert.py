"""Weight conversion (convert/ and `gpt-flax convert`): readers, name table, writers, refusals.

The oracle is transformers 4.56.2: its own save_pretrained writes the inputs (safetensors and .bin,
sharded and not), its own from_pretrained and `load_tf_weights_in_openai_gpt` read the outputs.
Tiny configs with distinct sizes (D=24, H=3, L=2, V=37, P=11, 3 labels), every parameter random
(biases and LayerNorms too), and values compared, never shapes alone.

    pytest tests/test_convert.py
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from safetensors.numpy import load_file

from convert import original, writers
from convert.mapping import ARCHITECTURES, HEADS, ShapeMismatchError
from convert.pipeline import convert
from convert.readers import read_state_dict
from convert.torch_zip import read_torch_bin, read_torch_zip
from convert.verify import sample_inputs
from gpt_flax import modeling
from gpt_flax.cli import main
from gpt_flax.config import OpenAIGPTConfig

torch.set_num_threads(1)
transformers.logging.set_verbosity_error()

TINY = {"vocab_size": 37, "n_positions": 11, "n_embd": 24, "n_layer": 2, "n_head": 3}
SAVE_OPTIONS = {
    "safetensors": {"safe_serialization": True},
    "safetensors-sharded": {"safe_serialization": True, "max_shard_size": "20KB"},
    "bin": {"safe_serialization": False},
    "bin-sharded": {"safe_serialization": False, "max_shard_size": "20KB"},
}
OUTPUTS = {"base": ("last_hidden_state",), "lm": ("logits",), "double": ("logits", "mc_logits"), "cls": ("logits",)}


def hf_class(head):
    return getattr(transformers, ARCHITECTURES[head][0])


def flax_class(head):
    return getattr(modeling, ARCHITECTURES[head][1])


def hf_tiny_config(**overrides):
    return transformers.OpenAIGPTConfig(**TINY, num_labels=3, **overrides)


def randomize(model, seed: int):
    """Every parameter random, so a bias or LayerNorm mapped wrongly changes the outputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return model.eval()


@pytest.fixture(scope="module")
def torch_models():
    return {head: randomize(hf_class(head)(hf_tiny_config()), i) for i, head in enumerate(HEADS)}


def torch_outputs(model, head, config) -> dict:
    ids = sample_inputs(config, head)
    with torch.no_grad():
        out = model(torch.from_numpy(ids))
    return {name: getattr(out, name).numpy() for name in OUTPUTS[head]}


def flax_outputs(model, head) -> dict:
    out = model(sample_inputs(model.config, head))
    return {name: np.asarray(getattr(out, name)) for name in OUTPUTS[head]}


def torch_state(model) -> dict:
    """What transformers writes to safetensors: the state dict without the tied lm_head."""
    return {k: v.numpy() for k, v in model.state_dict().items() if k != "lm_head.weight"}


def save_hf(model, directory, fmt: str) -> str:
    model.save_pretrained(directory, **SAVE_OPTIONS[fmt])
    assert any(f.endswith(".index.json") for f in os.listdir(directory)) == fmt.endswith("-sharded")
    return str(directory)


def saved_without(model, directory, key: str) -> str:
    """`model` saved as transformers' safetensors, less the tensor `key`."""
    from safetensors.numpy import save_file

    src = save_hf(model, directory, "safetensors")
    state = load_file(os.path.join(src, "model.safetensors"))
    del state[key]
    save_file(state, os.path.join(src, "model.safetensors"), metadata={"format": "pt"})
    return src


def loaded_missing(head: str, src: str, key: str):
    """(ours, transformers') `head` models from `src`, each reporting `key` alone as missing."""
    ours, info = flax_class(head).from_pretrained(src, output_loading_info=True)
    theirs, their_info = hf_class(head).from_pretrained(src, output_loading_info=True)
    assert info["missing_keys"] == their_info["missing_keys"] == [key]
    assert info["unexpected_keys"] == their_info["unexpected_keys"] == []
    return ours, theirs


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    rc = main(["convert", *map(str, argv)])
    out, err = capsys.readouterr()
    return rc, out, err


def leftovers(parent) -> list:
    return [n for n in os.listdir(parent) if ".tmp-" in n]


# -- round trips -------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", list(SAVE_OPTIONS))
@pytest.mark.parametrize("head", HEADS)
def test_round_trip_hf_flax_hf_is_bit_exact_and_loads_in_transformers(tmp_path, torch_models, head, fmt):
    model = torch_models[head]
    src = save_hf(model, tmp_path / "src", fmt)
    convert(src, tmp_path / "flax", to="flax")
    report = convert(tmp_path / "flax", tmp_path / "hf", to="hf")
    assert report.missing_keys == [] and report.unused_keys == []
    written, expected = load_file(tmp_path / "hf" / "model.safetensors"), torch_state(model)
    assert set(written) == set(expected)
    for key in expected:
        assert written[key].dtype == expected[key].dtype and np.array_equal(written[key], expected[key]), key
    with open(tmp_path / "hf" / "config.json") as f:
        assert json.load(f)["architectures"] == [ARCHITECTURES[head][0]]
    reloaded = hf_class(head).from_pretrained(tmp_path / "hf").eval()
    config = OpenAIGPTConfig.from_pretrained(tmp_path / "hf")
    for name, value in torch_outputs(model, head, config).items():
        assert np.array_equal(torch_outputs(reloaded, head, config)[name], value), name


@pytest.mark.parametrize("head", HEADS)
def test_converted_flax_model_matches_transformers(tmp_path, torch_models, head):
    src = save_hf(torch_models[head], tmp_path / "src", "safetensors")
    convert(src, tmp_path / "flax")
    ours = flax_class(head).from_pretrained(tmp_path / "flax")
    expected = torch_outputs(torch_models[head], head, ours.config)
    for name, value in flax_outputs(ours, head).items():
        np.testing.assert_allclose(value, expected[name], rtol=1e-5, atol=1e-5, err_msg=name)


def test_bin_writer_loads_in_torch_and_transformers(tmp_path, torch_models):
    model = torch_models["double"]
    convert(save_hf(model, tmp_path / "src", "bin-sharded"), tmp_path / "hf", to="hf", bin=True)
    loaded = torch.load(tmp_path / "hf" / "pytorch_model.bin", weights_only=True)
    expected = torch_state(model)
    assert set(loaded) == set(expected)
    assert all(np.array_equal(loaded[k].numpy(), v) for k, v in expected.items())
    os.remove(tmp_path / "hf" / "model.safetensors")  # make transformers read the .bin
    reloaded = hf_class("double").from_pretrained(tmp_path / "hf").eval()
    config = OpenAIGPTConfig.from_pretrained(tmp_path / "hf")
    assert np.array_equal(torch_outputs(reloaded, "double", config)["mc_logits"], torch_outputs(model, "double", config)["mc_logits"])


def test_torch_zip_reader_is_bit_exact_on_views_shared_storage_and_dtypes(tmp_path):
    base = torch.randn(4, 6)
    state = {
        "f32": base,
        "transposed": base.t(),  # non-contiguous
        "row": base[2],  # offset into a shared storage
        "bf16": torch.randn(5).to(torch.bfloat16),
        "f16": torch.randn(2, 3).to(torch.float16),
        "i64": torch.arange(7),
        "param": torch.nn.Parameter(torch.randn(3)),
    }
    torch.save(state, tmp_path / "x.bin")
    read = read_torch_zip(str(tmp_path / "x.bin"))
    for key, value in state.items():
        value = value.detach()
        expected = value.view(torch.int16).numpy() if value.dtype == torch.bfloat16 else value.numpy()
        got = np.asarray(read[key])
        assert np.array_equal(got.view(np.int16) if value.dtype == torch.bfloat16 else got, expected), key


@pytest.mark.parametrize("head", ["lm", "cls"])
def test_a_pre_1_6_torch_bin_is_read(tmp_path, torch_models, head):
    """torch's stream format (before 1.6, and `_use_new_zipfile_serialization=False`), with a bfloat16
    tensor and a strided view sharing a storage: read without torch, as torch.load reads it."""
    model = torch_models[head]
    src = tmp_path / "src"
    model.config.save_pretrained(src)
    torch.save(model.state_dict(), src / "pytorch_model.bin", _use_new_zipfile_serialization=False)
    ours = flax_class(head).from_pretrained(src)
    expected = torch_outputs(model, head, ours.config)
    for name, value in flax_outputs(ours, head).items():
        np.testing.assert_allclose(value, expected[name], atol=1e-5)
    assert convert(src, tmp_path / "dst").source_format == "bin"

    base = torch.randn(6, 4)
    odd = {"bf": torch.randn(4, 2).to(torch.bfloat16), "view": base[1:5, ::2], "base": base, "i": torch.arange(7)}
    torch.save(odd, tmp_path / "odd.bin", _use_new_zipfile_serialization=False)
    read = read_torch_bin(str(tmp_path / "odd.bin"))
    for key, value in odd.items():
        got, want = np.asarray(read[key]), value
        if want.dtype == torch.bfloat16:
            got, want = got.view(np.int16), want.view(torch.int16)
        assert np.array_equal(got, want.numpy()), key
    data = (tmp_path / "odd.bin").read_bytes()
    (tmp_path / "cut.bin").write_bytes(data[:-10])
    with pytest.raises(ValueError, match="truncated"):
        read_torch_bin(str(tmp_path / "cut.bin"))


# -- heads, dtypes ----------------------------------------------------------------------------
def test_loading_one_head_into_another_lists_new_and_unused_keys(tmp_path, torch_models):
    lm = save_hf(torch_models["lm"], tmp_path / "lm", "bin")  # the .bin keeps lm_head.weight
    report = convert(lm, tmp_path / "cls", head="cls")
    assert report.missing_keys == ["score.weight"] and report.unused_keys == ["lm_head.weight"]
    cls = flax_class("cls").from_pretrained(tmp_path / "cls")
    assert np.array_equal(cls.params["transformer"]["h"]["attn"]["c_proj"]["kernel"][1], torch_state(torch_models["lm"])["transformer.h.1.attn.c_proj.weight"])
    score = np.asarray(cls.params["score"]["kernel"])
    assert score.shape == (24, 3) and 0 < score.std() < 0.1  # normal(0, initializer_range), newly drawn

    double = save_hf(torch_models["double"], tmp_path / "double", "safetensors")
    report = convert(double, tmp_path / "base", head="base", to="hf")
    assert report.missing_keys == []
    assert report.unused_keys == ["multiple_choice_head.summary.bias", "multiple_choice_head.summary.weight"]
    written = load_file(tmp_path / "base" / "model.safetensors")
    expected = torch_state(torch_models["double"])
    assert set(written) == {k.removeprefix("transformer.") for k in expected if k.startswith("transformer.")}
    assert all(np.array_equal(v, expected["transformer." + k]) for k, v in written.items())
    base = hf_class("base").from_pretrained(tmp_path / "base").eval()  # an unprefixed checkpoint
    assert np.array_equal(base.h[0].mlp.c_fc.weight.detach().numpy(), expected["transformer.h.0.mlp.c_fc.weight"])


def test_layers_the_checkpoint_holds_are_loaded_when_others_are_missing(tmp_path, torch_models):
    """As transformers: a stacked tensor missing in some layers keeps the layers that are there."""
    expected = torch_state(torch_models["lm"])
    src = saved_without(torch_models["lm"], tmp_path / "src", "transformer.h.1.mlp.c_fc.weight")
    ours, _ = loaded_missing("lm", src, "transformer.h.1.mlp.c_fc.weight")
    kernel = np.asarray(ours.params["transformer"]["h"]["mlp"]["c_fc"]["kernel"])
    assert np.array_equal(kernel[0], expected["transformer.h.0.mlp.c_fc.weight"])
    assert not np.allclose(kernel[1], expected["transformer.h.1.mlp.c_fc.weight"]) and 0 < kernel[1].std() < 0.1

    deeper = flax_class("lm").from_pretrained(src, n_layer=3)  # a config with a layer more than the checkpoint
    attn = np.asarray(deeper.params["transformer"]["h"]["attn"]["c_attn"]["kernel"])
    assert attn.shape[0] == 3 and np.array_equal(attn[1], expected["transformer.h.1.attn.c_attn.weight"])


def test_a_head_the_checkpoint_holds_in_part_keeps_what_it_holds(tmp_path, torch_models):
    """As transformers: a double-heads checkpoint without the summary's bias loads the summary's
    weight and initialises only the bias (zeros), in from_pretrained and in `convert`."""
    expected = torch_state(torch_models["double"])
    src = saved_without(torch_models["double"], tmp_path / "src", "multiple_choice_head.summary.bias")
    ours, theirs = loaded_missing("double", src, "multiple_choice_head.summary.bias")
    summary = ours.params["multiple_choice_head"]["summary"]
    assert np.array_equal(np.asarray(summary["kernel"]).T, expected["multiple_choice_head.summary.weight"])
    assert not np.any(np.asarray(summary["bias"]))
    np.testing.assert_allclose(
        flax_outputs(ours, "double")["mc_logits"], torch_outputs(theirs, "double", ours.config)["mc_logits"], atol=1e-5
    )

    report = convert(src, tmp_path / "dst", head="double")
    assert report.missing_keys == ["multiple_choice_head.summary.bias"]
    converted = load_file(os.path.join(tmp_path / "dst", "flax_model.safetensors"))
    assert np.array_equal(converted["multiple_choice_head/summary/kernel"].T, expected["multiple_choice_head.summary.weight"])


@pytest.mark.parametrize(
    ("head", "source", "fmt", "change", "key"),
    [
        ("cls", "cls", "safetensors", {"num_labels": 5}, "score.weight"),
        ("lm", "lm", "safetensors", {"vocab_size": 40}, "transformer.tokens_embed.weight"),
        ("lm", "lm", "bin", {"vocab_size": 40}, "transformer.tokens_embed.weight"),  # + the tied lm_head.weight
        ("base", "lm", "safetensors", {"n_positions": 9}, "positions_embed.weight"),  # the model's name for it
    ],
)
def test_ignore_mismatched_sizes_initialises_anew_as_transformers(tmp_path, torch_models, head, source, fmt, change, key):
    """A classifier re-headed for 5 labels, an LM for a larger vocabulary, a base model with fewer
    positions: the tensors whose shape changed are newly drawn and reported as transformers reports
    them; everything else loads. Without the flag, a clear error that names it."""
    src = save_hf(torch_models[source], tmp_path / "src", fmt)
    ours, info = flax_class(head).from_pretrained(src, **change, ignore_mismatched_sizes=True, output_loading_info=True)
    theirs, their_info = hf_class(head).from_pretrained(
        src, **change, ignore_mismatched_sizes=True, output_loading_info=True
    )
    assert key in info["mismatched_keys"]
    for kind in ("mismatched_keys", "missing_keys", "unexpected_keys"):
        assert info[kind] == their_info[kind], kind
    expected = torch_state(torch_models[source])
    body = ours.params.get("transformer", ours.params)
    assert np.array_equal(body["h"]["mlp"]["c_fc"]["kernel"][1], expected["transformer.h.1.mlp.c_fc.weight"])
    state = {k.removeprefix("transformer."): v for k, v in theirs.state_dict().items()} if head == "base" else theirs.state_dict()
    new = {
        "score.weight": lambda: ours.params["score"]["kernel"].T,
        "transformer.tokens_embed.weight": lambda: body["tokens_embed"]["embedding"],
        "positions_embed.weight": lambda: body["positions_embed"]["embedding"],
    }[key]()
    assert new.shape == tuple(state[key].shape)
    assert 0 < np.asarray(new).std() < 0.1  # normal(0, initializer_range), newly drawn
    with pytest.raises(ValueError, match=r"has shape .* ignore_mismatched_sizes=True"):
        flax_class(head).from_pretrained(src, **change)


def test_pytorch_only_from_pretrained_options_are_named(tmp_path, torch_models):
    src = save_hf(torch_models["lm"], tmp_path / "src", "safetensors")
    with pytest.raises(TypeError, match=r"torch_dtype=.*param_dtype="):
        flax_class("lm").from_pretrained(src, torch_dtype="bfloat16")
    with pytest.raises(TypeError, match="no attribute 'not_an_option'"):
        flax_class("lm").from_pretrained(src, not_an_option=1)


def test_transformers_saving_over_our_checkpoint_is_what_loads(tmp_path, torch_models, caplog):
    """transformers' save_pretrained into a directory of ours leaves our flax_model.safetensors beside its
    model.safetensors; config.json, written last, names transformers' class, so its weights load (with a
    warning that both are there)."""
    first = save_hf(torch_models["lm"], tmp_path / "first", "safetensors")
    flax_class("lm").from_pretrained(first).save_pretrained(tmp_path / "d")  # our format
    other = randomize(hf_class("lm")(hf_tiny_config()), 99)
    other.save_pretrained(tmp_path / "d")
    assert {"flax_model.safetensors", "model.safetensors"} <= set(os.listdir(tmp_path / "d"))
    with caplog.at_level("WARNING", logger="gpt_flax"):
        model = flax_class("lm").from_pretrained(tmp_path / "d")
    assert "holds both flax_model.safetensors and model.safetensors; reading model.safetensors" in caplog.text
    np.testing.assert_allclose(
        flax_outputs(model, "lm")["logits"], torch_outputs(other, "lm", model.config)["logits"], atol=1e-5
    )


def test_a_tied_pair_saved_under_the_head_name_alone_loads(tmp_path, torch_models):
    """safetensors.torch.save_model keeps one name of the tied pair, lm_head.weight: it is the token table
    (transformers 4.56 fails on such a file; we load it, and convert it)."""
    from safetensors.torch import save_model

    model = torch_models["lm"]
    src = tmp_path / "src"
    model.config.save_pretrained(src)
    save_model(model, str(src / "model.safetensors"))
    assert "transformer.tokens_embed.weight" not in load_file(src / "model.safetensors")
    ours, info = flax_class("lm").from_pretrained(src, output_loading_info=True)
    assert info == {"missing_keys": [], "unexpected_keys": [], "mismatched_keys": []}
    np.testing.assert_allclose(
        flax_outputs(ours, "lm")["logits"], torch_outputs(model, "lm", ours.config)["logits"], atol=1e-5
    )
    report = convert(src, tmp_path / "dst", to="hf")
    assert report.missing_keys == [] and report.unused_keys == []
    assert np.array_equal(
        load_file(tmp_path / "dst" / "model.safetensors")["transformer.tokens_embed.weight"],
        torch_state(model)["transformer.tokens_embed.weight"],
    )


def test_a_hub_repo_with_both_formats_fetches_the_current_one(tmp_path, torch_models, monkeypatch):
    """The Hub path applies the local rule: config.json (fetched first) names transformers' class, so
    model.safetensors is downloaded and read, not the stale flax_model.safetensors."""
    import huggingface_hub

    repo = tmp_path / "repo"
    flax_class("lm").from_pretrained(save_hf(torch_models["lm"], tmp_path / "first", "safetensors")).save_pretrained(repo)
    other = randomize(hf_class("lm")(hf_tiny_config()), 98)
    other.save_pretrained(repo)
    fetched = []

    def snapshot_download(repo_id, allow_patterns=None, **kwargs):
        fetched.extend(allow_patterns)
        return str(repo)

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "list_repo_files", lambda repo_id, revision=None, token=None: os.listdir(repo))
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda repo_id, name, **kwargs: str(repo / name))
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    model = flax_class("lm").from_pretrained("someone/both-formats")
    assert "model.safetensors" in fetched and "flax_model.safetensors" not in fetched
    np.testing.assert_allclose(
        flax_outputs(model, "lm")["logits"], torch_outputs(other, "lm", model.config)["logits"], atol=1e-5
    )


def test_untied_lm_head_in_a_bin_is_reported(tmp_path, torch_models):
    src = save_hf(torch_models["lm"], tmp_path / "src", "bin")
    state = torch.load(os.path.join(src, "pytorch_model.bin"), weights_only=True)
    state["lm_head.weight"] = state["lm_head.weight"].clone() + 1  # no longer the token table
    torch.save(state, os.path.join(src, "pytorch_model.bin"))
    report = convert(src, tmp_path / "dst")
    assert report.tied_lm_head_mismatch and report.unused_keys == []
    assert any("differs from tokens_embed" in line for line in report.summary())


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_dtype_control(tmp_path, torch_models, dtype):
    model = torch_models["lm"]
    src = save_hf(model, tmp_path / "src", "safetensors")
    convert(src, tmp_path / "flax", dtype=dtype)
    convert(tmp_path / "flax", tmp_path / "hf", to="hf")
    written = load_file(tmp_path / "hf" / "model.safetensors")
    for key, value in torch_state(model).items():
        expected = torch.from_numpy(value).to(getattr(torch, dtype)).view(torch.int16).numpy()
        assert np.array_equal(written[key].view(np.int16), expected), key
    with open(tmp_path / "hf" / "config.json") as f:
        assert json.load(f)["dtype"] == dtype
    assert hf_class("lm").from_pretrained(tmp_path / "hf", torch_dtype="auto").dtype == getattr(torch, dtype)
    convert(tmp_path / "flax", tmp_path / "f32", to="hf", dtype="float32")  # and back up, exactly
    assert all(v.dtype == np.float32 for v in load_file(tmp_path / "f32" / "model.safetensors").values())


# -- OpenAI's original release ------------------------------------------------------------------
def write_release(directory, n_layer=2, D=24, V=37, P=11, seed=0) -> None:
    """Random arrays in the release's layout: shapes list + one flat float32 array in 10 npy parts."""
    shapes = [[P, D], [V, D]]
    for _ in range(n_layer):
        shapes += [[1, D, 3 * D], [3 * D], [1, D, D], [D], [D], [D], [1, D, 4 * D], [4 * D], [1, 4 * D, D], [D], [D], [D]]
    flat = np.random.default_rng(seed).normal(0, 0.3, sum(int(np.prod(s)) for s in shapes)).astype(np.float32)
    os.makedirs(directory)
    for i, part in enumerate(np.array_split(flat, original.N_PARTS)):
        np.save(os.path.join(directory, original.PART_NAME.format(i)), part)
    with open(os.path.join(directory, original.SHAPES_NAME), "w") as f:
        json.dump(shapes, f)
    with open(os.path.join(directory, original.NAMES_NAME), "w") as f:  # transformers' loader needs it
        json.dump(original.tf_names(n_layer), f)


def test_original_release_matches_load_tf_weights_in_openai_gpt(tmp_path):
    release = tmp_path / "release"
    write_release(release)
    config = hf_tiny_config()
    config.save_pretrained(release)
    theirs = hf_class("lm")(config).eval()
    transformers.models.openai.modeling_openai.load_tf_weights_in_openai_gpt(theirs.transformer, config, str(release))

    report = convert(release, tmp_path / "hf", to="hf")
    assert (report.source_format, report.head, report.missing_keys) == ("original", "lm", [])
    written, expected = load_file(tmp_path / "hf" / "model.safetensors"), torch_state(theirs)
    assert set(written) == set(expected) and all(np.array_equal(written[k], v) for k, v in expected.items())

    ours = flax_class("lm").from_pretrained(release)
    expected = torch_outputs(theirs, "lm", ours.config)["logits"]
    np.testing.assert_allclose(flax_outputs(ours, "lm")["logits"], expected, rtol=1e-5, atol=1e-5)


def test_original_release_without_config_needs_one_unless_published_size(tmp_path, capsys):
    release = tmp_path / "release"
    write_release(release)
    rc, _, err = run_cli(capsys, release, tmp_path / "out")
    assert rc == 1 and "n_head" in err and len(err.strip().splitlines()) == 1
    assert not os.path.exists(tmp_path / "out")
    config = tmp_path / "config.json"
    OpenAIGPTConfig(**TINY).save_pretrained(tmp_path)
    rc, out, _ = run_cli(capsys, release, tmp_path / "out", "--config", config)
    assert rc == 0 and "parameters: " in out
    # OpenAI's published params_shapes.json (MIT, beside its BPE files in the fixtures)
    with open(os.path.join(os.path.dirname(__file__), "fixtures", "openai-gpt-tokenizer", "params_shapes.json")) as f:
        published = [tuple(s) for s in json.load(f)]
    assert original.config_fields(published) == {"vocab_size": 40478, "n_positions": 512, "n_embd": 768, "n_layer": 12}


# -- refusals ---------------------------------------------------------------------------------
class _Evil:
    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return self.func, (self.arg,)


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize("call", ["os.system", "builtins.eval"])
def test_malicious_bin_is_refused_before_anything_runs(tmp_path, capsys, torch_models, call, legacy):
    src = save_hf(torch_models["lm"], tmp_path / "src", "bin")
    marker = tmp_path / "pwned"
    payload = (
        _Evil(os.system, f"touch {marker}") if call == "os.system" else _Evil(eval, f"open({str(marker)!r}, 'w')")
    )
    state = torch.load(os.path.join(src, "pytorch_model.bin"), weights_only=True)
    torch.save({**state, "zz.evil": payload}, os.path.join(src, "pytorch_model.bin"), _use_new_zipfile_serialization=not legacy)
    rc, _, err = run_cli(capsys, src, tmp_path / "dst")
    assert rc == 1 and "refused" in err and len(err.strip().splitlines()) == 1, err
    assert ("system" in err) if call == "os.system" else (".eval," in err), err  # pickle protocol 2 names it __builtin__.eval
    assert not marker.exists() and not (tmp_path / "dst").exists() and not leftovers(tmp_path)


def _legacy_stream(main_pickle: bytes) -> bytes:
    """torch's pre-1.6 stream around a hand-written main pickle: magic, version, system info, the pickle, no storages."""
    import io
    import pickle

    out = io.BytesIO()
    for header in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}):
        pickle.dump(header, out, protocol=2)
    out.write(main_pickle)
    pickle.dump([], out, protocol=2)
    return out.getvalue()


@pytest.mark.parametrize(
    "main_pickle",
    [
        b"ctorch\nFloatStorage\n}X\x05\x00\x00\x00dtypeX\x07\x00\x00\x00float16sb0}.",  # BUILD on a storage type
        b"ctorch._utils\n_rebuild_tensor_v2\n(N}X\x0c\x00\x00\x00__defaults__(K\x01tstb0}.",  # on a function
    ],
    ids=["storage-type", "function"],
)
def test_a_pickle_cannot_change_what_later_loads_use(tmp_path, main_pickle):
    """The globals a checkpoint may name are shared by every load: a BUILD that would rewrite one is
    refused, and the next, honest file still reads."""
    (tmp_path / "poison.bin").write_bytes(_legacy_stream(main_pickle))
    with pytest.raises(ValueError, match="not a readable torch checkpoint"):
        read_torch_bin(str(tmp_path / "poison.bin"))
    torch.save({"a": torch.arange(3.0)}, tmp_path / "honest.bin")
    assert np.array_equal(np.asarray(read_torch_bin(str(tmp_path / "honest.bin"))["a"]), [0.0, 1.0, 2.0])


def _truncate(src):
    path = os.path.join(src, "model.safetensors")
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) - 100)


def _misfit_config(src):
    with open(os.path.join(src, "config.json")) as f:
        d = json.load(f)
    d["vocab_size"] = 40
    with open(os.path.join(src, "config.json"), "w") as f:
        json.dump(d, f)


def _fewer_layers(src):
    with open(os.path.join(src, "config.json")) as f:
        d = json.load(f)
    d["n_layer"] = 1
    with open(os.path.join(src, "config.json"), "w") as f:
        json.dump(d, f)


def _unknown_layer_tensor(src):
    from safetensors.numpy import save_file

    path = os.path.join(src, "model.safetensors")
    save_file({**load_file(path), "transformer.h.0.attn.masked_bias": np.zeros(1, np.float32)}, path)


def _no_config(src):
    os.remove(os.path.join(src, "config.json"))


def _no_weights(src):
    os.remove(os.path.join(src, "model.safetensors"))


def _index_disagrees(src):
    path = os.path.join(src, "model.safetensors.index.json")
    with open(path) as f:
        index = json.load(f)
    del index["weight_map"]["transformer.h.1.ln_2.bias"]
    with open(path, "w") as f:
        json.dump(index, f)


@pytest.mark.parametrize(
    "damage, fmt, message",
    [
        (_truncate, "safetensors", "truncated"),
        (_misfit_config, "safetensors", "config expects (40, 24)"),
        (_fewer_layers, "safetensors", "layers past its n_layer=1"),
        (_unknown_layer_tensor, "safetensors", "names the model does not have"),
        (_no_config, "safetensors", "has no config.json"),
        (_no_weights, "safetensors", "no weights in"),
        (_index_disagrees, "safetensors-sharded", "disagree"),
    ],
)
def test_bad_sources_are_refused_with_one_line_and_nothing_written(tmp_path, capsys, torch_models, damage, fmt, message):
    src = save_hf(torch_models["lm"], tmp_path / "src", fmt)
    damage(src)
    rc, _, err = run_cli(capsys, src, tmp_path / "dst")
    assert rc == 1 and message in err, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("gpt-flax convert: error: ")
    assert not (tmp_path / "dst").exists() and not leftovers(tmp_path)


def test_hub_id_offline_without_cache_says_pass_a_directory(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rc, _, err = run_cli(capsys, "openai-community/openai-gpt", tmp_path / "dst", "--cache-dir", tmp_path / "cache")
    assert rc == 1 and "HF_HUB_OFFLINE" in err and "local model directory" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "dst").exists()


def test_hub_id_offline_reads_the_cached_snapshot(tmp_path, torch_models, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    repo = tmp_path / "cache" / "models--someone--tiny-gpt"
    save_hf(torch_models["lm"], repo / "snapshots" / "0123abcd", "safetensors")
    os.makedirs(repo / "refs")
    (repo / "refs" / "main").write_text("0123abcd")
    report = convert("someone/tiny-gpt", tmp_path / "dst", cache_dir=str(tmp_path / "cache"))
    assert report.source_format == "safetensors"
    assert set(read_state_dict(tmp_path / "dst")) == set(torch_state(torch_models["lm"]))


def _cached_repo(tmp_path, model) -> str:
    """A Hub cache holding someone/tiny-gpt (weights, config, tokenizer files) at refs/main; its cache_dir."""
    repo = tmp_path / "cache" / "models--someone--tiny-gpt"
    snapshot = repo / "snapshots" / "0123abcd"
    save_hf(model, snapshot, "safetensors")
    fixtures = os.path.join(os.path.dirname(__file__), "fixtures", "openai-gpt-tokenizer")
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(os.path.join(fixtures, name), snapshot / name)
    os.makedirs(repo / "refs")
    (repo / "refs" / "main").write_text("0123abcd")
    return str(tmp_path / "cache")


def test_local_files_only_and_token_reach_the_hub_calls(tmp_path, torch_models, monkeypatch):
    """local_files_only reads the cache without asking the Hub; a token goes with every Hub request
    (model, tokenizer, config and pipeline)."""
    import huggingface_hub

    from gpt_flax import OpenAIGPTConfig, OpenAIGPTTokenizer, pipeline

    cache = _cached_repo(tmp_path, torch_models["lm"])
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    tokens = []

    def list_repo_files(repo_id, revision=None, token=None):
        tokens.append(token)
        raise OSError("no network here")

    monkeypatch.setattr(huggingface_hub, "list_repo_files", list_repo_files)
    load = {"cache_dir": cache, "local_files_only": True}
    assert flax_class("lm").from_pretrained("someone/tiny-gpt", **load).config.n_embd == 24
    assert OpenAIGPTTokenizer.from_pretrained("someone/tiny-gpt", **load).encode("hello") == [3570]
    assert OpenAIGPTConfig.from_pretrained("someone/tiny-gpt", **load).n_layer == 2
    assert tokens == []  # the Hub was never asked
    with pytest.raises(OSError, match="local_files_only is set.*no cached"):
        flax_class("lm").from_pretrained("someone/elsewhere", **load)

    flax_class("lm").from_pretrained("someone/tiny-gpt", cache_dir=cache, token="hf_secret")
    OpenAIGPTTokenizer.from_pretrained("someone/tiny-gpt", cache_dir=cache, token="hf_secret")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", cache)  # the pipeline takes no cache_dir
    pipeline("text-generation", model="someone/tiny-gpt", token="hf_secret")
    assert tokens and set(tokens) == {"hf_secret"}


@pytest.mark.parametrize("status", [500, 503, 429])
def test_a_failing_hub_falls_back_to_the_cache(tmp_path, torch_models, monkeypatch, status):
    """The Hub answering 5xx or 429: the cached copy, as huggingface_hub and transformers do."""
    import huggingface_hub
    import requests
    from huggingface_hub.errors import HfHubHTTPError

    cache = _cached_repo(tmp_path, torch_models["lm"])
    response = requests.Response()
    response.status_code = status

    def failing(*args, **kwargs):
        raise HfHubHTTPError(f"{status} Server Error", response=response)

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "list_repo_files", failing)
    assert flax_class("lm").from_pretrained("someone/tiny-gpt", cache_dir=cache).config.n_layer == 2


def test_hub_id_without_network_falls_back_to_the_cache(tmp_path, torch_models, monkeypatch):
    """No HF_HUB_OFFLINE, but the Hub cannot be reached: the cached snapshot is read, as transformers does
    (model, tokenizer and convert); a repo not in the cache is one clear line."""
    import huggingface_hub
    import requests

    from gpt_flax import OpenAIGPTTokenizer

    def unreachable(*args, **kwargs):
        raise requests.ConnectionError("Failed to resolve 'huggingface.co'")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "list_repo_files", unreachable)
    cache = _cached_repo(tmp_path, torch_models["lm"])

    model = flax_class("lm").from_pretrained("someone/tiny-gpt", cache_dir=cache)
    np.testing.assert_allclose(
        flax_outputs(model, "lm")["logits"], torch_outputs(torch_models["lm"], "lm", model.config)["logits"], atol=1e-5
    )
    assert OpenAIGPTTokenizer.from_pretrained("someone/tiny-gpt", cache_dir=cache).encode("hello") == [3570]
    assert convert("someone/tiny-gpt", tmp_path / "dst", cache_dir=cache).source_format == "safetensors"
    with pytest.raises(OSError, match="cannot be reached .* no cached copy: pass a local model directory"):
        flax_class("lm").from_pretrained("someone/elsewhere", cache_dir=cache)


# -- atomic writes, save_pretrained, the command line ----------------------------------------------
def test_a_crash_while_writing_leaves_no_checkpoint_and_keeps_the_old_one(tmp_path, torch_models, monkeypatch):
    src = save_hf(torch_models["cls"], tmp_path / "src", "safetensors")
    real = writers.write_safetensors

    def crash(path, tensors, *args, **kwargs):
        real(path, dict(list(tensors.items())[:3]), *args, **kwargs)
        raise OSError("disk full")

    monkeypatch.setattr(writers, "write_safetensors", crash)
    with pytest.raises(OSError, match="disk full"):
        convert(src, tmp_path / "new")
    assert not (tmp_path / "new").exists() and not leftovers(tmp_path)

    monkeypatch.setattr(writers, "write_safetensors", real)
    convert(src, tmp_path / "old")
    (tmp_path / "old" / "tokenizer.json").write_text("{}")
    before = read_state_dict(tmp_path / "old")
    monkeypatch.setattr(writers, "write_safetensors", crash)
    with pytest.raises(OSError, match="disk full"):
        convert(src, tmp_path / "old", head="lm", overwrite=True)
    after = read_state_dict(tmp_path / "old")
    assert set(after) == set(before) and all(np.array_equal(np.asarray(after[k]), np.asarray(before[k])) for k in before)
    assert not leftovers(tmp_path)

    monkeypatch.setattr(writers, "write_safetensors", real)
    with pytest.raises(FileExistsError, match="overwrite"):
        convert(src, tmp_path / "old", to="hf")
    convert(src, tmp_path / "old", to="hf", overwrite=True)
    assert sorted(os.listdir(tmp_path / "old")) == ["config.json", "model.safetensors", "tokenizer.json"]


def test_save_pretrained_both_formats(tmp_path):
    config = OpenAIGPTConfig(**TINY)
    model = flax_class("double")(config, seed=3)
    model.save_pretrained(tmp_path / "flax")
    again = flax_class("double").from_pretrained(tmp_path / "flax")
    flat = lambda tree: {"/".join(map(str, p)): np.asarray(v) for p, v in _leaves(tree)}
    a, b = flat(model.params), flat(again.params)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)

    model.save_pretrained(tmp_path / "hf", format="hf")
    theirs = hf_class("double").from_pretrained(tmp_path / "hf").eval()
    ours = flax_outputs(model, "double")
    for name, value in torch_outputs(theirs, "double", model.config).items():
        np.testing.assert_allclose(ours[name], value, rtol=1e-5, atol=1e-5, err_msg=name)
    with pytest.raises(ValueError, match="format"):
        model.save_pretrained(tmp_path / "x", format="onnx")


def _leaves(tree, path=()):
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from _leaves(v, path + (k,))
    else:
        yield path, tree


def test_cli_summary_and_verify(tmp_path, capsys, torch_models):
    src = save_hf(torch_models["lm"], tmp_path / "src", "safetensors")
    rc, out, _ = run_cli(capsys, src, tmp_path / "dst", "--head", "double", "--to", "hf", "--verify", "--quiet")
    assert rc == 0, out
    # 3 files: the config, the weights and the source's generation_config.json
    assert "parameters: " in out and "multiple_choice_head.summary.weight" in out and "bytes in 3 files" in out
    line = next(x for x in out.splitlines() if x.startswith("verify: max abs difference"))
    assert float(line.split("mc_logits ")[1].split()[0]) < 1e-5
    with open(os.path.join(src, "config.json")) as f:  # outputs as tuples by default: verify compares fields
        config = json.load(f)
    with open(os.path.join(src, "config.json"), "w") as f:
        json.dump({**config, "return_dict": False}, f)
    rc, out, _ = run_cli(capsys, src, tmp_path / "dst2", "--verify", "--quiet")
    assert rc == 0 and "verify: max abs difference logits" in out, out
    sharded = save_hf(torch_models["lm"], tmp_path / "sharded", "safetensors-sharded")
    rc, out, err = run_cli(capsys, sharded, tmp_path / "dst3", "--verify", "--quiet")
    assert rc == 0 and "verify: max abs difference" in out and "Loading checkpoint shards" not in err, err
    help_text = subprocess.run(
        [sys.executable, "-m", "gpt_flax", "convert", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert all(flag in help_text for flag in ("--head", "--to", "--dtype", "--verify"))


def test_no_torch_import_in_the_library():
    code = "import sys, convert.pipeline, convert.readers, convert.writers; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


@pytest.mark.parametrize("dst, message", [("", "empty path"), ("/proc/gpt-flax-out", "cannot write the checkpoint to /proc/")])
def test_unwritable_destinations_are_named(tmp_path, capsys, torch_models, dst, message):
    src = save_hf(torch_models["lm"], tmp_path / "src", "safetensors")
    rc, _, err = run_cli(capsys, src, dst)
    assert rc == 1 and message in err and ".tmp-" not in err, err
    assert len(err.strip().splitlines()) == 1


def test_double_heads_without_projection_round_trips_and_configs_stay_equal(tmp_path):
    config = OpenAIGPTConfig(**TINY, summary_use_proj=False)
    model = flax_class("double")(config)
    ids = np.ones((1, 2, 5), np.int32)
    for fmt in ("flax", "hf"):
        model.save_pretrained(tmp_path / fmt, format=fmt)
        loaded = flax_class("double").from_pretrained(tmp_path / fmt)
        np.testing.assert_array_equal(np.asarray(loaded(ids).mc_logits), np.asarray(model(ids).mc_logits))
        # what save_pretrained adds (architectures, dtype) describes the file, not the model: the
        # configs are equal, so the two models share their compiled forward
        assert loaded.config == model.config and hash(loaded.config) == hash(model.config)


def test_convert_keeps_the_tokenizer_files(tmp_path, torch_models, capsys):
    src = save_hf(torch_models["lm"], tmp_path / "src", "safetensors")
    fixtures = os.path.join(os.path.dirname(__file__), "fixtures", "openai-gpt-tokenizer")
    for name in ("vocab.json", "merges.txt"):
        with open(os.path.join(fixtures, name), "rb") as f, open(os.path.join(src, name), "wb") as g:
            g.write(f.read())
    report = convert(src, tmp_path / "dst")
    assert {"vocab.json", "merges.txt", "generation_config.json"} <= set(report.files)
    from gpt_flax import OpenAIGPTTokenizer

    assert OpenAIGPTTokenizer.from_pretrained(tmp_path / "dst").encode("hello world") == [3570, 1276]
    # the tiny model's 37 ids do not cover the real tokenizer's: generate says so
    assert main(["generate", "hello", "--model", str(tmp_path / "dst"), "--greedy", "--compile-cache", ""]) == 1
    assert "vocab_size=37" in capsys.readouterr().err


def test_an_integer_weight_is_refused_naming_it(tmp_path):
    """transformers copies a checkpoint's tensors into float parameters; an int32 weight is a broken
    checkpoint here (it would load as int32 and fail in jax.grad), refused before anything is written."""
    from safetensors.numpy import save_file

    config = OpenAIGPTConfig(vocab_size=50, n_positions=16, n_embd=16, n_layer=1, n_head=2)
    src = tmp_path / "src"
    modeling.FlaxOpenAIGPTLMHeadModel(config).save_pretrained(src, format="hf")
    state = load_file(src / "model.safetensors")
    state["transformer.tokens_embed.weight"] = state["transformer.tokens_embed.weight"].astype(np.int32)
    save_file(state, src / "model.safetensors", metadata={"format": "pt"})
    message = "'transformer.tokens_embed.weight' has dtype int32; weights are floating point"
    with pytest.raises(ValueError, match=message):
        modeling.FlaxOpenAIGPTLMHeadModel.from_pretrained(src)
    with pytest.raises(ValueError, match=message):
        convert(str(src), str(tmp_path / "dst"))
    assert not (tmp_path / "dst").exists()


def test_verify_a_flax_head_checkpoint_converted_to_the_base_model(tmp_path, capsys, torch_models):
    """The Flax source's keys carry `transformer.`; the base model on the torch side has none, and used
    to keep its random weights, so --verify reported a difference the converted model did not have."""
    src = save_hf(torch_models["cls"], tmp_path / "src", "safetensors")
    rc, out, _ = run_cli(capsys, src, tmp_path / "flax", "--quiet")
    assert rc == 0, out
    rc, out, err = run_cli(capsys, tmp_path / "flax", tmp_path / "base", "--head", "base", "--verify", "--quiet")
    assert rc == 0, err
    line = next(x for x in out.splitlines() if x.startswith("verify: max abs difference"))
    assert float(line.split("last_hidden_state ")[1].split()[0]) < 1e-5


def test_gelu_new_is_written_and_verified_for_transformers_as_gelu(tmp_path, capsys):
    """afn "gelu_new" is GPT's tanh gelu, which transformers' OpenAI GPT calls "gelu" only."""
    config = OpenAIGPTConfig(vocab_size=37, n_positions=11, n_embd=24, n_layer=2, n_head=3, afn="gelu_new")
    model = modeling.FlaxOpenAIGPTLMHeadModel(config, seed=0)
    model.save_pretrained(tmp_path / "hf", format="hf")
    theirs = transformers.OpenAIGPTLMHeadModel.from_pretrained(tmp_path / "hf").eval()
    ids = np.arange(14).reshape(2, 7)
    with torch.no_grad():
        expected = theirs(torch.tensor(ids)).logits.numpy()
    np.testing.assert_allclose(np.asarray(model(ids).logits), expected, rtol=1e-4, atol=1e-5)
    model.save_pretrained(tmp_path / "flax")
    rc, out, err = run_cli(capsys, tmp_path / "flax", tmp_path / "out", "--verify", "--quiet")
    assert rc == 0 and "verify: max abs difference logits" in out, err


def test_from_pt_is_accepted_as_by_transformers_flax_models(tmp_path, torch_models):
    src = save_hf(torch_models["lm"], tmp_path / "src", "bin")
    model = modeling.FlaxOpenAIGPTLMHeadModel.from_pretrained(src, from_pt=True)
    for name, value in torch_outputs(torch_models["lm"], "lm", model.config).items():
        np.testing.assert_allclose(flax_outputs(model, "lm")[name], value, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "content", [b"garbage\n", b"\x80\x02K\x05.", b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01J\xff.\x00"]
)
def test_a_corrupt_pytorch_model_bin_is_an_error_naming_the_file(tmp_path, capsys, content):
    directory = tmp_path / "src"
    directory.mkdir()
    OpenAIGPTConfig(vocab_size=37, n_positions=11, n_embd=24, n_layer=2, n_head=3).save_pretrained(directory)
    (directory / "pytorch_model.bin").write_bytes(content)
    rc, _, err = run_cli(capsys, directory, tmp_path / "out", "--quiet")
    assert rc == 1 and len(err.strip().splitlines()) == 1, err
    assert "pytorch_model.bin" in err and not (tmp_path / "out").exists()


def test_subfolder_config_and_do_init_as_transformers(tmp_path, torch_models, monkeypatch, caplog):
    """from_pretrained's transformers options: `subfolder` (local and a cached Hub repo), `config=` as a
    directory, a config.json or transformers' config, `_do_init=False`; loading-only options are named."""
    torch_lm = torch_models["lm"]
    save_hf(torch_lm, tmp_path / "root" / "model", "safetensors")
    ours = flax_class("lm").from_pretrained(tmp_path / "root", subfolder="model")
    theirs = hf_class("lm").from_pretrained(tmp_path / "root", subfolder="model").eval()
    for name, value in torch_outputs(theirs, "lm", ours.config).items():
        np.testing.assert_allclose(flax_outputs(ours, "lm")[name], value, rtol=1e-5, atol=1e-5)
    assert OpenAIGPTConfig.from_pretrained(tmp_path / "root", subfolder="model").n_embd == 24
    with pytest.raises(FileNotFoundError, match="no subfolder 'other'"):
        flax_class("lm").from_pretrained(tmp_path / "root", subfolder="other")

    model, params = flax_class("lm").from_pretrained(tmp_path / "root" / "model", _do_init=False)
    assert jax.tree.all(jax.tree.map(np.array_equal, params, ours.params)) and model.config == ours.config

    # A directory without config.json: the config from a directory, a file or transformers' config object.
    bare = tmp_path / "bare"
    save_hf(torch_lm, bare, "safetensors")
    os.remove(bare / "config.json")
    config_dir = tmp_path / "root" / "model"
    for config in (config_dir, config_dir / "config.json", str(config_dir), torch_lm.config):
        assert flax_class("lm").from_pretrained(bare, config=config).config.n_layer == 2
    with pytest.raises(TypeError, match="config must be .* got int"):
        flax_class("lm").from_pretrained(bare, config=3)
    for option, hint in (("force_download", "snapshot_download"), ("variant", "variant")):
        with pytest.raises(TypeError, match=f"{option}=.*{hint}"):
            flax_class("lm").from_pretrained(tmp_path / "root", subfolder="model", **{option: True})

    # A Hub repo's subfolder, read from the cache (offline).
    snapshot = tmp_path / "cache" / "models--someone--tiny-gpt" / "snapshots" / "0123abcd"
    save_hf(torch_lm, snapshot / "model", "safetensors")
    os.makedirs(snapshot.parent.parent / "refs")
    (snapshot.parent.parent / "refs" / "main").write_text("0123abcd")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub = {"cache_dir": str(tmp_path / "cache"), "subfolder": "model"}
    from_hub = flax_class("lm").from_pretrained("someone/tiny-gpt", **hub)
    assert jax.tree.all(jax.tree.map(np.array_equal, from_hub.params, ours.params))

    # Unused head weights of another head's checkpoint: transformers logs them at INFO, not WARNING.
    save_hf(torch_models["double"], tmp_path / "double", "safetensors")
    with caplog.at_level("INFO", logger="gpt_flax"):
        flax_class("lm").from_pretrained(tmp_path / "double")
    unused = [r for r in caplog.records if "were not used" in r.getMessage()]
    assert unused and all(r.levelname == "INFO" for r in unused)


def test_save_pretrained_takes_params_as_transformers_flax_models(tmp_path):
    """`save_pretrained(directory, params)`, a training loop's params; what it does not take is named,
    and params that do not fit the config are refused with nothing written, in either format."""
    model = flax_class("lm")(OpenAIGPTConfig(**TINY), seed=3)
    doubled = jax.tree.map(lambda x: x * 2, model.params)
    model.save_pretrained(tmp_path / "a", doubled)
    model.save_pretrained(tmp_path / "b", params=doubled, format="hf", safe_serialization=True)
    for saved in ("a", "b"):
        again = flax_class("lm").from_pretrained(tmp_path / saved)
        assert jax.tree.all(jax.tree.map(np.array_equal, again.params, doubled))
    for kwargs, message in (
        ({"params": "hf"}, "format='hf'"),
        ({"push_to_hub": True}, "push_to_hub=True: upload"),
        ({"max_shard_size": "1GB"}, "max_shard_size='1GB'"),
        ({"safe_serialization": False}, "safe_serialization=False"),
        ({"format": model.params}, "got a dict"),
    ):
        with pytest.raises((TypeError, ValueError), match=message):
            model.save_pretrained(tmp_path / "c", **kwargs)
    wide = jax.tree.map(lambda x: x, model.params)
    wide["transformer"]["tokens_embed"]["embedding"] = np.zeros((38, 24), np.float32)
    for fmt in ("flax", "hf"):
        with pytest.raises(ShapeMismatchError, match=r"tokens_embed.weight.*\(38, 24\).*\(37, 24\)"):
            model.save_pretrained(tmp_path / "c", wide, format=fmt)
    del wide["transformer"]["tokens_embed"]
    with pytest.raises(KeyError, match="no 'tokens_embed'"):
        model.save_pretrained(tmp_path / "c", wide)
    assert not os.path.exists(tmp_path / "c")
