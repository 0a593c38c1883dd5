"""`gpt-flax init-random` and the command line's error handling (in-process, no subprocess)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import transformers

from gpt_flax import FlaxOpenAIGPTDoubleHeadsModel, FlaxOpenAIGPTLMHeadModel, OpenAIGPTTokenizer
from gpt_flax.cli import main

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "openai-gpt-tokenizer")
TINY = ["--n-layer", "1", "--n-embd", "8", "--n-head", "2"]  # a model that writes and loads in well under a second


def test_init_random_writes_a_model_transformers_and_we_load(tmp_path, capsys):
    out = tmp_path / "demo"
    args = ["init-random", str(out), "--tokenizer", FIXTURES, "--n-layer", "1", "--n-embd", "32", "--n-head", "2"]
    assert main(args) == 0
    assert "wrote a random FlaxOpenAIGPTLMHeadModel" in capsys.readouterr().out
    ours = FlaxOpenAIGPTLMHeadModel.from_pretrained(out)
    theirs = transformers.OpenAIGPTLMHeadModel.from_pretrained(out).eval()
    ids = OpenAIGPTTokenizer.from_pretrained(out)("hello world, this is a test", return_tensors="np")["input_ids"]
    with torch.no_grad():
        expected = theirs(torch.from_numpy(ids.astype(np.int64))).logits.numpy()
    np.testing.assert_allclose(np.asarray(ours(ids).logits), expected, atol=1e-5)
    assert main(["generate", "hello world", "--model", str(out), "--max-new-tokens", "3", "--compile-cache", ""]) == 0
    assert capsys.readouterr().out.startswith("hello world")


def test_init_random_other_head_and_flax_format(tmp_path):
    out = tmp_path / "double"
    assert main(["init-random", str(out), "--head", "double", "--format", "flax", "--vocab-size", "50",
                 "--n-layer", "1", "--n-embd", "16", "--n-head", "2", "--n-positions", "8"]) == 0
    model = FlaxOpenAIGPTDoubleHeadsModel.from_pretrained(out)
    assert model.config.vocab_size == 50 and model.params["multiple_choice_head"]["summary"]["kernel"].shape == (16, 1)


def test_user_errors_are_one_line_and_non_zero(tmp_path, capsys):
    assert main(["init-random", str(tmp_path / "x"), "--n-embd", "30", "--n-head", "4"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("gpt-flax init-random: error:") and "divisible" in err and "\n" not in err
    assert main(["generate", "hi", "--model", str(tmp_path / "missing"), "--compile-cache", ""]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for name in ("convert", "generate", "init-random"):
        assert name in text


def test_init_random_refuses_a_non_empty_directory_and_sampling_flags_conflict(tmp_path, capsys):
    (tmp_path / "old.txt").write_text("keep me")
    assert main(["init-random", str(tmp_path), "--n-embd", "16", "--n-head", "2", "--n-layer", "1"]) == 1
    assert capsys.readouterr().err == (
        f"gpt-flax init-random: error: {tmp_path} exists and is not empty; pass --overwrite to replace its checkpoint\n"
    )
    assert main(["init-random", str(tmp_path), "--n-embd", "16", "--n-head", "2", "--n-layer", "1", "--overwrite"]) == 0
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["generate", "hi", "--model", str(tmp_path), "--do-sample", "--greedy"])
    assert "not allowed with" in capsys.readouterr().err
    assert main(["generate", "hi", "--model", str(tmp_path), "--compile-cache", ""]) == 1
    assert "--tokenizer" in capsys.readouterr().err


def test_usage_errors_are_one_line(capsys):
    for argv, message in (
        (["generate"], "the following arguments are required: PROMPT, --model"),
        (["generate", "hi", "--model", "m", "--max-new-tokens", "abc"], "invalid int value: 'abc'"),
        ([], "the following arguments are required: COMMAND"),
        # A subcommand's misspelled option is the subcommand's error, as all its others are.
        (["generate", "hi", "--model", "m", "--max-lenght", "10"],
         "gpt-flax generate: error: unrecognized arguments: --max-lenght 10"),
        (["--bogus", "generate", "hi", "--model", "m"], "gpt-flax: error: unrecognized arguments: --bogus"),
    ):  # fmt: skip
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err and "--help" in err, err


def test_init_random_writes_nothing_when_the_tokenizer_cannot_be_written(tmp_path):
    """A file-size limit (as a full disk) hit while writing tokenizer.json, after the model's files:
    one line naming the directory, and no directory at all, not a model with half a tokenizer."""
    out = tmp_path / "demo"

    # `ulimit -f` in KiB: the model's 1.3 MiB fits, the tokenizer's 3 MiB tokenizer.json does not.
    args = ["init-random", str(out), "--tokenizer", FIXTURES, "--n-layer", "1", "--n-embd", "8", "--n-head", "2"]
    result = subprocess.run(
        ["bash", "-c", 'ulimit -f 1950 && exec "$@"', "bash", sys.executable, "-m", "gpt_flax", *args],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    expected = f"gpt-flax init-random: error: cannot write the tokenizer to {out}: File too large (os error 27)"
    assert result.stderr.strip() == expected
    assert os.listdir(tmp_path) == []


def test_generate_into_a_closed_pipe_stops_quietly(tmp_path):
    """`gpt-flax generate ... --stream | head -c 5`: the reader goes away; no traceback. Without
    --stream the text waits in stdout's buffer (PYTHONUNBUFFERED unset) until the flush at the end."""
    model = tmp_path / "demo"
    args = ["init-random", str(model), "--tokenizer", FIXTURES, "--n-layer", "1", "--n-embd", "8", "--n-head", "2"]
    assert main(args) == 0
    for stream in (["--stream"], []):
        process = subprocess.Popen(
            [sys.executable, "-m", "gpt_flax", "generate", "hello world", "--model", str(model), "--max-new-tokens", "8",
             "--compile-cache", "", *stream],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env={k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"},
        )  # fmt: skip
        process.stdout.close()  # the reader is gone before the first word
        err = process.stderr.read().decode()
        assert process.wait(timeout=300) == 141 and err == "", err


@pytest.mark.parametrize("target", ["empty", "missing"])
def test_a_symlinked_destination_is_written_through(tmp_path, capsys, target):
    """Output directories are often links into scratch space: the checkpoint lands in the link's
    target (an empty directory, or one the link names but that does not exist yet), the link stays."""
    scratch = tmp_path / "scratch" / "run1"
    if target == "empty":
        scratch.mkdir(parents=True)
    link = tmp_path / "out"
    link.symlink_to(scratch, target_is_directory=True)
    assert main(["init-random", str(link), "--tokenizer", FIXTURES, "--n-layer", "1", "--n-embd", "8", "--n-head", "2"]) == 0
    assert link.is_symlink() and (scratch / "config.json").is_file() and (scratch / "tokenizer.json").is_file()
    assert FlaxOpenAIGPTLMHeadModel.from_pretrained(link).config.n_embd == 8
    model = FlaxOpenAIGPTLMHeadModel.from_pretrained(link)
    model.save_pretrained(tmp_path / "again")
    (tmp_path / "again-link").symlink_to(tmp_path / "again")
    model.save_pretrained(tmp_path / "again-link", format="hf")  # save_pretrained replaces a checkpoint
    assert (tmp_path / "again" / "model.safetensors").is_file() and (tmp_path / "again-link").is_symlink()
    assert not [n for n in os.listdir(tmp_path) if ".tmp-" in n] and not os.listdir(tmp_path / "scratch")[1:]


def test_a_destination_under_a_file_names_the_file(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    args = ["init-random", str(tmp_path / "afile" / "out"), "--tokenizer", FIXTURES, "--n-layer", "1", "--n-embd", "8"]
    assert main([*args, "--n-head", "2"]) == 1
    assert capsys.readouterr().err.strip() == (
        f"gpt-flax init-random: error: cannot write the checkpoint to {tmp_path / 'afile' / 'out'}: "
        f"{tmp_path / 'afile'} is a file, not a directory"
    )


def test_sigterm_while_writing_leaves_nothing_behind(tmp_path):
    """A scheduler's SIGTERM in the middle of a write: exit 143 with one line, no staging directory."""
    out = tmp_path / "demo"
    script = f"""
import sys, time
from convert import writers
real = writers.write_safetensors
def slow(*args, **kwargs):
    written = real(*args, **kwargs)
    print("writing", flush=True)
    time.sleep(120)
    return written
writers.write_safetensors = slow
from gpt_flax.cli import main
sys.exit(main(["init-random", {str(out)!r}, "--tokenizer", {FIXTURES!r}, "--n-layer", "1", "--n-embd", "8", "--n-head", "2"]))
"""
    process = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert process.stdout.readline().strip() == "writing"
    process.terminate()
    assert process.wait(timeout=60) == 143
    assert process.stderr.read().strip() == "gpt-flax: terminated"
    assert os.listdir(tmp_path) == []


def test_an_unusable_compile_cache_is_one_warning_line(tmp_path, capsys):
    model = tmp_path / "demo"
    assert main(["init-random", str(model), "--tokenizer", FIXTURES, "--n-layer", "1", "--n-embd", "8", "--n-head", "2"]) == 0
    (tmp_path / "afile").write_text("x")
    capsys.readouterr()
    cache = tmp_path / "afile" / "cache"
    args = ["generate", "hi", "--model", str(model), "--max-new-tokens", "2", "--compile-cache", str(cache)]
    assert main(args) == 0
    out, err = capsys.readouterr()
    assert out.startswith("hi")
    assert err == f"gpt-flax generate: warning: no compile cache ({cache}: Not a directory); compiling afresh\n"


def test_overwrite_is_named_as_each_caller_passes_it(tmp_path, capsys):
    from convert.pipeline import convert

    src, dst = tmp_path / "src", tmp_path / "dst"
    assert main(["init-random", str(src), "--vocab-size", "37", *TINY]) == 0
    dst.mkdir()
    (dst / "keep.txt").write_text("x")
    capsys.readouterr()
    assert main(["convert", str(src), str(dst), "--quiet"]) == 1
    assert capsys.readouterr().err == (
        f"gpt-flax convert: error: {dst} exists and is not empty; pass --overwrite to replace its checkpoint\n"
    )
    with pytest.raises(FileExistsError, match=r"is not empty; pass overwrite=True to replace its checkpoint$"):
        convert(str(src), str(dst))


def test_convert_refuses_to_write_over_its_own_source(tmp_path, capsys, monkeypatch):
    """DST naming SRC's directory (as given, with a trailing slash, `./`, through a link), with or
    without --overwrite: one line naming DST, and SRC untouched (it used to lose model.safetensors)."""
    from convert.pipeline import convert

    src = tmp_path / "src"
    assert main(["init-random", str(src), "--vocab-size", "37", *TINY]) == 0
    before = {name: (src / name).read_bytes() for name in os.listdir(src)}
    (tmp_path / "link").symlink_to(src, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    for dst in (str(src), f"{src}/", "./src", "link", "src/../src"):
        for overwrite in (["--overwrite"], []):
            assert main(["convert", "src", dst, "--quiet", *overwrite]) == 1
            assert capsys.readouterr().err == (
                f"gpt-flax convert: error: cannot write into {dst}: it is the source checkpoint's directory; "
                "choose another destination\n"
            )
    with pytest.raises(ValueError, match="source checkpoint's directory"):
        convert(str(src), "link", overwrite=True)
    assert {name: (src / name).read_bytes() for name in os.listdir(src)} == before
    # A DST that holds SRC is not SRC: --overwrite replaces DST's own checkpoint files, not a subdirectory's.
    assert main(["convert", "src", ".", "--quiet", "--overwrite"]) == 0
    assert {name: (src / name).read_bytes() for name in os.listdir(src)} == before


def test_convert_names_a_missing_config_file(tmp_path, capsys):
    src = tmp_path / "src"
    assert main(["init-random", str(src), "--vocab-size", "37", *TINY]) == 0
    capsys.readouterr()
    for config, why in (("nope.json", "no such file"), (str(tmp_path), "a directory, not a config.json file")):
        assert main(["convert", str(src), str(tmp_path / "d"), "--config", config]) == 1
        assert capsys.readouterr().err == f"gpt-flax convert: error: --config {config}: {why}\n"
    assert not (tmp_path / "d").exists()


def test_init_random_vocab_size_must_be_the_tokenizers(tmp_path, capsys):
    """--vocab-size with --tokenizer was silently dropped: a size other than the tokenizer's is now
    refused (nothing written), and the tokenizer's own size accepted."""
    out = tmp_path / "demo"
    args = ["init-random", str(out), "--tokenizer", FIXTURES, "--n-layer", "1", "--n-embd", "8", "--n-head", "2"]
    assert main([*args, "--vocab-size", "100"]) == 1
    assert capsys.readouterr().err == (
        "gpt-flax init-random: error: --vocab-size 100 does not match the tokenizer's 40478 tokens; "
        "drop --vocab-size (it follows --tokenizer) or --tokenizer\n"
    )
    assert not out.exists()
    assert main([*args, "--vocab-size", "40478"]) == 0
    assert FlaxOpenAIGPTLMHeadModel.from_pretrained(out).config.vocab_size == 40478


def test_stream_refuses_bad_options_before_any_output(tmp_path, capsys):
    """--stream with an option generate refuses: stdout stays empty (not the prompt and then an error)."""
    model = tmp_path / "demo"
    args = ["init-random", str(model), "--tokenizer", FIXTURES, "--n-layer", "1", "--n-embd", "8", "--n-head", "2"]
    assert main(args) == 0
    capsys.readouterr()
    generate = ["generate", "hi there", "--model", str(model), "--compile-cache", ""]
    for bad in (["--temperature", "0"], ["--max-length", "1"], ["--max-length", "600"], ["--top-p", "2"],
                ["--num-beams", "2"], ["--num-return-sequences", "2"]):  # fmt: skip
        assert main([*generate, "--stream", *bad]) == 1
        out, err = capsys.readouterr()
        assert out == "" and err.startswith("gpt-flax generate: error:") and err.count("\n") == 1, (bad, out, err)
    assert main([*generate, "--stream", "--max-new-tokens", "2", "--seed", "0"]) == 0
    streamed = capsys.readouterr().out
    assert main([*generate, "--max-new-tokens", "2", "--seed", "0"]) == 0
    assert streamed == capsys.readouterr().out and streamed.startswith("hi there")
