"""OpenAIGPTTokenizer against transformers 4.56.2: the fast tokenizer (default) and the slow one with spacy + ftfy
(original=True), built from the same vocabulary files, on a varied corpus; saving, loading, padding, errors.

    python -m pytest tests/test_tokenizer.py
"""

from __future__ import annotations

import json
import os
import random
import shutil
import warnings

import jax
import numpy as np
import pytest
import transformers
from tokenizers import AddedToken
from transformers.models.openai import tokenization_openai

from gpt_flax import text_standardize as original_pipeline
from gpt_flax.tokenizer import OpenAIGPTTokenizer

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "openai-gpt-tokenizer")
VOCAB, MERGES = os.path.join(FIXTURES, "vocab.json"), os.path.join(FIXTURES, "merges.txt")
TASK_TOKENS = {"bos_token": "_start_", "sep_token": "_delimiter_", "cls_token": "_classify_"}  # the paper's

CORPUS = [
    "",
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "Café naïve résumé façade Ångström Øresund São Paulo",
    "ÉCOLE NORMALE SUPÉRIEURE",
    "Combining: e\u0301 a\u0308 n\u0303",
    "dashes — en – bar ― hyphen-ated --double ~~~tilde",
    "ellipsis… and ... dots.... ´acute´",
    "\"double\" 'single' “curly” ‘curly’ «guillemets» „low“",
    "don't can't won't I'm you're he's we've they'd y'all 'tis rock'n'roll",
    "DON'T SHOUT!!! Why??? ok;;; (nested (parens)) [brackets] {braces} a|b|c back\\slash",
    "1 22 333 3.14159 -42 +7 1,000,000 1e-9 0x1F 50% $9.99 £5 €10 ¥100 12:30pm 2024-01-31",
    "https://www.example.com/path?query=1&x=y#frag mailto:someone@example.org ftp://a.b/c",
    "emoji 😀🎉👍🏽 👨‍👩‍👧 flags 🇫🇷 hearts ❤️ ✨",
    "中文字符测试 日本語のテキスト 한국어 텍스트 ｶﾀｶﾅ ＦＵＬＬＷＩＤＴＨ",
    "Ελληνικά ΟΔΟΣ ΣΟΦΟΣ Русский текст עברית العربية हिन्दी",
    "control\x00chars\x01\x02\x07\x1b[0m tab\there\x0bvt\x0cff\x7fdel \ufffd\u200bzero\u200dwidth\ufeffbom",
    "   leading and trailing spaces   ",
    "runs    of     spaces\t\t\ttabs",
    "line one\nline two\n\n\nline five\r\nwindows\rmac \u2028sep\u2029para \x85nel",
    "\n\n\n",
    " ",
    "a",
    "A.",
    "U.S.A. e.g. i.e. Mr. Dr. St. etc.",
    "mojibake: Ã©tÃ© â€œquotedâ€\x9d cafÃ©",
    "HTML &amp; entities &lt;b&gt; <b>tags</b> <unk> <UNK>",
    "snake_case_name CamelCaseName kebab-case-name __dunder__ #hashtag @mention",
    "ﬁ ligature ﬂ ß ẞ İstanbul ǅ ΐ",
    "math: x² + y³ = z½ ≤ ∞ ∑ √2 ≠ π",
    "_start_ Question? _delimiter_ Answer. _classify_",
    "The\u00a0non\u2009breaking\u3000spaces",
]


def fuzz_texts(count: int, seed: int = 0) -> list[str]:
    """Random strings over characters and fragments that stress the two pipelines' corners."""
    pool = list(
        "abcXYZ éÉèñüßΣσς' \t\n\r\x0b\x0c\u00a0\u2028\u3000\u200b\x00\x01\x85\ufffd—–―…´\"“”‘’-~!;?+,)(\\/*[]{}|_.:"
        "0123456789@#$%^&<>😀中文한日本語ｱﾟ\u0301"
    ) + ["don't", "I'm", "http://x.com/a?b=1", "U.S.", "  ", "\n\n", "Ã©", "'s", "3.14", "1,000", "<unk>", "_classify_"]
    rng = random.Random(seed)
    return ["".join(rng.choice(pool) for _ in range(rng.randint(0, 40))) for _ in range(count)]


def long_text(n_bytes: int = 100_000, seed: int = 1) -> str:
    """About `n_bytes` of UTF-8 built from the corpus, in random order."""
    rng = random.Random(seed)
    pieces, size = [], 0
    while size < n_bytes:
        pieces.append(rng.choice(CORPUS[1:]))
        size += len(pieces[-1].encode("utf-8")) + 1
    return " ".join(pieces)


TEXTS = CORPUS + fuzz_texts(300) + [long_text()]


@pytest.fixture(scope="module")
def hf_fast():
    return transformers.OpenAIGPTTokenizerFast(vocab_file=VOCAB, merges_file=MERGES)


@pytest.fixture(scope="module")
def hf_slow():
    tok = transformers.OpenAIGPTTokenizer(vocab_file=VOCAB, merges_file=MERGES)
    assert tok.fix_text is not None, "transformers' slow tokenizer did not find spacy + ftfy"
    return tok


@pytest.fixture(scope="module")
def ours():
    return OpenAIGPTTokenizer.from_pretrained(FIXTURES)


@pytest.fixture(scope="module")
def ours_original():
    return OpenAIGPTTokenizer.from_pretrained(FIXTURES, original=True)


def hf_ids(hf_tok, texts):
    return [hf_tok.encode(text) for text in texts]


# ---- the default pipeline: transformers' fast tokenizer ------------------------------------------------------


def test_default_matches_fast_ids_offsets_tokens_decode(ours, hf_fast):
    ref = hf_fast(TEXTS, return_offsets_mapping=True)
    got = ours(TEXTS, return_offsets_mapping=True)
    assert set(got) == {"input_ids", "attention_mask", "offset_mapping"}
    for i, text in enumerate(TEXTS):
        assert got["input_ids"][i] == ref["input_ids"][i], repr(text[:80])
        assert [tuple(o) for o in got["offset_mapping"][i]] == [tuple(o) for o in ref["offset_mapping"][i]]
        assert got["attention_mask"][i] == ref["attention_mask"][i]
    assert sum(map(len, got["input_ids"])) > 30_000  # the 100 kB text is in there
    assert ours(TEXTS)["input_ids"] == ref["input_ids"]  # the batch path without offsets
    for text in TEXTS[:40]:
        assert ours.encode(text) == hf_fast.encode(text)
        assert ours.tokenize(text) == hf_fast.tokenize(text)
    ids = ref["input_ids"]
    assert ours.batch_decode(ids) == hf_fast.batch_decode(ids)
    for row in ids[:40] + ids[-1:]:
        for skip in (False, True):
            for clean in (False, True):
                kwargs = {"skip_special_tokens": skip, "clean_up_tokenization_spaces": clean}
                assert ours.decode(row, **kwargs) == hf_fast.decode(row, **kwargs)


def test_vocabulary_api_matches_fast(ours, hf_fast):
    assert len(ours) == len(hf_fast) == 40478
    assert ours.vocab_size == hf_fast.vocab_size
    assert ours.get_vocab() == hf_fast.get_vocab()
    assert (ours.unk_token, ours.unk_token_id) == (hf_fast.unk_token, hf_fast.unk_token_id) == ("<unk>", 0)
    assert ours.pad_token is None and ours.pad_token_id is None and hf_fast.pad_token is None
    tokens = ["hello</w>", "th", "<unk>", "not-a-token", "\n</w>", "café</w>"]
    assert ours.convert_tokens_to_ids(tokens) == hf_fast.convert_tokens_to_ids(tokens)
    assert ours.convert_tokens_to_ids("hello</w>") == hf_fast.convert_tokens_to_ids("hello</w>")
    ids = [0, 3, 40477, 3570, 239]
    assert ours.convert_ids_to_tokens(ids) == hf_fast.convert_ids_to_tokens(ids)
    assert ours.convert_ids_to_tokens(ids, skip_special_tokens=True) == hf_fast.convert_ids_to_tokens(
        ids, skip_special_tokens=True
    )
    assert ours.decode(3570) == hf_fast.decode(3570)
    assert ours.decode(np.array(ids)) == hf_fast.decode(ids)


def test_added_tokens_match_fast(hf_fast):
    ours, ref = OpenAIGPTTokenizer.from_pretrained(FIXTURES), transformers.OpenAIGPTTokenizerFast(VOCAB, MERGES)
    counts = []
    for tok in (ours, ref):
        counts.append(tok.add_special_tokens({**TASK_TOKENS, "pad_token": "<pad>"}))
        counts.append(tok.add_tokens(["gpt-flax", "NewWord", "th"]))  # "th" is in the vocabulary already
        counts.append(tok.add_tokens(["<extra>"], special_tokens=True))
    assert counts[:3] == counts[3:] and counts[0] == 4
    assert len(ours) == len(ref) > 40478 + 6
    for name in ("bos_token", "sep_token", "cls_token", "pad_token"):
        assert (getattr(ours, name), getattr(ours, name + "_id")) == (getattr(ref, name), getattr(ref, name + "_id"))
    texts = TEXTS[:-1] + ["_start_ A gpt-flax NewWord newword the th <pad><extra> _delimiter_ B _CLASSIFY_ _classify_"]
    assert ours(texts)["input_ids"] == ref(texts)["input_ids"]
    for row in ref(texts)["input_ids"][-5:]:
        for skip in (False, True):
            assert ours.decode(row, skip_special_tokens=skip) == ref.decode(row, skip_special_tokens=skip)
    assert ours.get_vocab() == ref.get_vocab()


def test_added_token_objects_as_special_tokens_match_fast():
    ours, ref = OpenAIGPTTokenizer.from_pretrained(FIXTURES), transformers.OpenAIGPTTokenizerFast(VOCAB, MERGES)
    for tok in (ours, ref):
        # an AddedToken whose `normalized` was not set is matched case-sensitively once it is special
        tok.add_special_tokens({"cls_token": AddedToken("_classify_", lstrip=True)})
        tok.add_special_tokens({"additional_special_tokens": [AddedToken("<Norm>", normalized=True)]})
    text = "a _CLASSIFY_ b _classify_ <norm> <Norm>"
    assert ours.encode(text) == ref.encode(text)
    assert ours.encode(text).count(ours.cls_token_id) == 1


# ---- original=True: transformers' slow tokenizer with spacy and ftfy -------------------------------------------


def test_original_matches_slow_ids(ours_original, hf_slow):
    assert ours_original(TEXTS)["input_ids"] == hf_ids(hf_slow, TEXTS)
    for text in CORPUS:
        assert ours_original.encode(text) == hf_slow.encode(text)
    # The two pipelines differ (accents, dashes, contractions), so the test above can tell them apart.
    assert ours_original.encode(CORPUS[9]) != OpenAIGPTTokenizer.from_pretrained(FIXTURES).encode(CORPUS[9])


def test_original_with_added_tokens_matches_slow(hf_slow):
    ours = OpenAIGPTTokenizer.from_pretrained(FIXTURES, original=True)
    ref = transformers.OpenAIGPTTokenizer(vocab_file=VOCAB, merges_file=MERGES)
    for tok in (ours, ref):
        tok.add_special_tokens({**TASK_TOKENS, "pad_token": "<pad>"})
        tok.add_tokens(["gpt-flax", "NewWord"])
        tok.add_tokens([AddedToken("<eat>", lstrip=True, rstrip=True, special=True)], special_tokens=True)
        tok.add_tokens([AddedToken("<sw>", single_word=True, special=True)], special_tokens=True)
        tok.add_tokens([AddedToken("<swl>", single_word=True, lstrip=True, special=True)], special_tokens=True)
        tok.add_tokens([AddedToken("swr", single_word=True, rstrip=True, special=True)], special_tokens=True)
        tok.add_special_tokens({"additional_special_tokens": ["<EXTRA>"]}, replace_additional_special_tokens=False)
    assert len(ours) == len(ref)
    texts = CORPUS + [
        "_start_ Héllo — don't _delimiter_ WORLD… _classify_",
        "_CLASSIFY_ _Start_ gpt-flax GPT-FLAX NewWord newword <pad><pad> <unk> <UNK>",
        "left  <eat>  right\n<eat>\nx ΣΟΦΟΣ<eat>ΟΔΟΣ",
        "a <sw> b a<sw> b a <sw>b <sw><sw> x<sw>y <pad><sw><pad> <sw>",
        "a  <swl> b a<swl>b <swl> x <eat><swl> <swl><eat>y a\t<swl> b\n\n<swl>",
        "swr\tb swr  b xswr\ny <EXTRA> <extra> <Extra>",
    ]
    assert ours(texts)["input_ids"] == hf_ids(ref, texts)


def test_original_a_replaced_special_token_is_text_again_like_slow(hf_slow):
    """A token added as special keeps its id, but once replaced as an additional special token it is
    no longer protected from lowercasing, so the slow tokenizer reads its text as words."""
    ours = OpenAIGPTTokenizer.from_pretrained(FIXTURES, original=True)
    ref = transformers.OpenAIGPTTokenizer(vocab_file=VOCAB, merges_file=MERGES)
    for tok in (ours, ref):
        tok.add_special_tokens({"additional_special_tokens": ["_Aa_"]})
        tok.add_special_tokens({"additional_special_tokens": ["_Bb_"]})  # replaces the list
    texts = ["_Aa_ and _Bb_", "x_Aa_y _aa_ _BB_"]
    assert ours(texts)["input_ids"] == hf_ids(ref, texts)
    assert ours.encode("_Aa_") != [ours.convert_tokens_to_ids("_Aa_")]


def test_unknown_options_are_named(ours):
    with pytest.raises(TypeError, match=r"unexpected arguments \['split_special_tokens'\]"):
        ours(["a b"], split_special_tokens=True)
    ours("word " * 600, verbose=False)  # no length warning asked for


def test_pad_keeps_offsets_of_different_lengths_as_transformers():
    ours = OpenAIGPTTokenizer.from_pretrained(FIXTURES)
    hf_fast = transformers.OpenAIGPTTokenizerFast(vocab_file=VOCAB, merges_file=MERGES)
    ours.pad_token = hf_fast.pad_token = "<unk>"
    texts = ["a b c", "d"]
    padded = ours.pad(dict(ours(texts, return_offsets_mapping=True)), return_tensors="np")
    theirs = hf_fast.pad(dict(hf_fast(texts, return_offsets_mapping=True)), return_tensors="np")
    np.testing.assert_array_equal(padded["input_ids"], theirs["input_ids"])
    assert padded["offset_mapping"].dtype == object
    for a, b in zip(padded["offset_mapping"], theirs["offset_mapping"]):
        np.testing.assert_array_equal(a, b)


def test_original_add_tokens_lowercases_like_slow():
    ours = OpenAIGPTTokenizer.from_pretrained(FIXTURES, original=True)
    ref = transformers.OpenAIGPTTokenizer(vocab_file=VOCAB, merges_file=MERGES)
    counts = [tok.add_tokens(["Word", "_Start_", "word"]) for tok in (ours, ref)]  # "word" is in the vocabulary
    assert counts[0] == counts[1] == 1 and len(ours) == len(ref)
    text = "Word _START_ hello WORD"
    assert ours.encode(text) == ref.encode(text)


def test_text_standardize_is_transformers(hf_slow):
    for text in CORPUS + fuzz_texts(100, seed=2):
        assert original_pipeline.text_standardize(text) == tokenization_openai.text_standardize(text)


def test_original_needs_spacy_and_ftfy(monkeypatch):
    monkeypatch.setattr(original_pipeline, "_importable", lambda name: name != "spacy")
    with pytest.raises(ImportError, match=r"spacy.*gpt-flax\[original\]"):
        OpenAIGPTTokenizer.from_pretrained(FIXTURES, original=True)


def test_original_has_no_offsets(ours_original):
    with pytest.raises(ValueError, match="offsets"):
        ours_original("text", return_offsets_mapping=True)


# ---- saving and loading, both ways ---------------------------------------------------------------------------


def with_task_tokens(tok):
    tok.add_special_tokens({**TASK_TOKENS, "pad_token": "<pad>"})
    tok.add_tokens(["gpt-flax"])
    return tok


@pytest.mark.parametrize("original", [False, True])
def test_save_pretrained_loads_in_transformers(tmp_path, original):
    ours = with_task_tokens(OpenAIGPTTokenizer.from_pretrained(FIXTURES, original=original, model_max_length=512))
    written = ours.save_pretrained(tmp_path)
    assert sorted(os.listdir(tmp_path)) == sorted(os.path.basename(p) for p in written)  # no staging left
    ref = transformers.AutoTokenizer.from_pretrained(tmp_path, use_fast=not original)
    assert isinstance(ref, transformers.OpenAIGPTTokenizer if original else transformers.OpenAIGPTTokenizerFast)
    texts = TEXTS[:-1] + ["_start_ x gpt-flax _delimiter_ y _classify_"]
    assert ours(texts)["input_ids"] == hf_ids(ref, texts)
    assert len(ref) == len(ours) and ref.model_max_length == 512
    assert (ref.pad_token, ref.pad_token_id, ref.cls_token_id) == (ours.pad_token, ours.pad_token_id, ours.cls_token_id)
    again = OpenAIGPTTokenizer.from_pretrained(tmp_path, original=original)
    assert again(texts)["input_ids"] == ours(texts)["input_ids"]
    assert (again.pad_token_id, again.model_max_length, len(again)) == (ours.pad_token_id, 512, len(ours))


@pytest.mark.parametrize("use_fast", [True, False])
def test_loads_transformers_save(tmp_path, use_fast):
    """A transformers save: tokenizer.json (fast), or vocab.json + merges.txt + added tokens in the config (slow)."""
    ref = with_task_tokens(transformers.AutoTokenizer.from_pretrained(FIXTURES, use_fast=use_fast))
    ref.save_pretrained(tmp_path)
    assert os.path.exists(tmp_path / "tokenizer.json") == use_fast
    ours = OpenAIGPTTokenizer.from_pretrained(tmp_path, original=not use_fast)
    texts = TEXTS[:-1] + ["_start_ x gpt-flax _delimiter_ y _classify_"]
    assert ours(texts)["input_ids"] == hf_ids(ref, texts)
    assert (len(ours), ours.pad_token_id, ours.sep_token_id) == (len(ref), ref.pad_token_id, ref.sep_token_id)
    if not use_fast:  # an older slow save: the added tokens only in added_tokens.json
        config = json.loads((tmp_path / "tokenizer_config.json").read_text())
        del config["added_tokens_decoder"]
        (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
        legacy = OpenAIGPTTokenizer.from_pretrained(tmp_path, original=True)
        assert legacy(texts)["input_ids"] == hf_ids(ref, texts)
        assert legacy.added_tokens_decoder == ours.added_tokens_decoder


def test_vocab_and_merges_load_like_tokenizer_json(tmp_path, ours):
    ours.save_pretrained(tmp_path)
    from_json = OpenAIGPTTokenizer(tokenizer_file=str(tmp_path / "tokenizer.json"))
    from_files = OpenAIGPTTokenizer(vocab_file=str(tmp_path / "vocab.json"), merges_file=str(tmp_path / "merges.txt"))
    assert from_json(TEXTS)["input_ids"] == from_files(TEXTS)["input_ids"] == ours(TEXTS)["input_ids"]


# ---- padding, truncation, tensors ----------------------------------------------------------------------------

BATCH = ["Hello, world!", "", "A much longer sentence, with commas; and more words than the others."]
CALLS = [
    {},
    {"padding": True},
    {"padding": "longest", "padding_side": "left"},
    {"padding": "max_length", "max_length": 20},
    {"padding": "max_length", "max_length": 5},  # no truncation: the long text stays longer
    {"padding": "max_length", "max_length": 4, "truncation": True},
    {"padding": True, "truncation": True, "max_length": 5},
    {"padding": True, "pad_to_multiple_of": 8},
    {"padding": "max_length", "max_length": 13, "pad_to_multiple_of": 8},
    {"max_length": 3},  # transformers: a bare max_length truncates
    {"truncation": True, "max_length": 0},
    {"truncation": "longest_first", "max_length": 6, "padding": True, "padding_side": "left"},
    {"truncation": "only_first", "max_length": 2},
    {"truncation": True},  # no max_length and no model_max_length: nothing happens
    {"padding": "max_length"},
    {"padding": "do_not_pad", "truncation": "do_not_truncate", "max_length": 2},
]


@pytest.fixture(scope="module")
def padded_pair():
    ours = OpenAIGPTTokenizer.from_pretrained(FIXTURES)
    ref = transformers.OpenAIGPTTokenizerFast(VOCAB, MERGES)
    for tok in (ours, ref):
        tok.add_special_tokens({"pad_token": "<pad>"})
    return ours, ref


@pytest.mark.filterwarnings("ignore:.*no model_max_length:UserWarning")  # as transformers warns, see below
@pytest.mark.parametrize("kwargs", CALLS, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()) or "none")
@pytest.mark.parametrize("truncation_side", ["right", "left"])
def test_padding_and_truncation_match_fast(padded_pair, kwargs, truncation_side):
    ours, ref = padded_pair
    ours.truncation_side = ref.truncation_side = truncation_side
    for text in (BATCH, BATCH[2], BATCH[1]):
        got = ours(text, return_offsets_mapping=True, **kwargs)
        want = ref(text, return_offsets_mapping=True, **kwargs)
        assert set(got) == set(want)
        for key in want:
            assert np.array_equal(np.array(got[key], dtype=object), np.array(want[key], dtype=object)), key
        lengths = {len(ids) for ids in (want["input_ids"] if isinstance(text, list) else [want["input_ids"]])}
        if len(lengths) == 1:
            got_np, want_np = ours(text, return_tensors="np", **kwargs), ref(text, return_tensors="np", **kwargs)
            for key in want_np:
                assert np.array_equal(got_np[key], want_np[key]) and got_np[key].dtype == np.int64, key
                assert want_np[key].dtype == np.int64 or want_np[key].size == 0  # transformers: float64 when empty
        else:  # transformers makes a ragged object array here; a model cannot take that, so we refuse
            with pytest.raises(ValueError, match="equal lengths"):
                ours(text, return_tensors="np", **kwargs)


def test_model_max_length_truncates_and_pads(padded_pair):
    ours = OpenAIGPTTokenizer.from_pretrained(FIXTURES, pad_token="<pad>", model_max_length=6)
    ref = transformers.OpenAIGPTTokenizerFast(VOCAB, MERGES, pad_token="<pad>", model_max_length=6)
    for kwargs in ({"truncation": True}, {"padding": "max_length"}, {"padding": "max_length", "truncation": True}):
        assert ours(BATCH, **kwargs)["input_ids"] == ref(BATCH, **kwargs)["input_ids"]
    unlimited, _ = padded_pair
    with pytest.warns(UserWarning, match="no model_max_length: no truncation"):
        unlimited(BATCH, truncation=True)
    with pytest.warns(UserWarning, match="no model_max_length: no padding"):
        unlimited(BATCH, padding="max_length")


def test_tensors_np_and_jax(padded_pair):
    ours, _ = padded_pair
    as_np = ours(BATCH, padding=True, return_tensors="np")
    as_jax = ours(BATCH, padding=True, return_tensors="jax")
    assert isinstance(as_jax.input_ids, jax.Array) and as_jax.input_ids.shape == as_np.input_ids.shape
    assert np.array_equal(np.asarray(as_jax["input_ids"]), as_np["input_ids"])
    assert np.array_equal(np.asarray(as_jax["attention_mask"]), as_np["attention_mask"])
    assert ours("one text", return_tensors="jax")["input_ids"].shape[0] == 1
    assert ours([], return_tensors="np")["input_ids"].shape == (0, 0)
    assert ours.batch_decode(as_jax["input_ids"], skip_special_tokens=True) == ours.batch_decode(
        as_np["input_ids"].tolist(), skip_special_tokens=True
    )


def test_padding_without_pad_token_says_how_to_add_one(ours):
    with pytest.raises(ValueError, match=r"no pad token.*add_special_tokens\(\{'pad_token'"):
        ours(BATCH, padding=True)
    with pytest.raises(ValueError, match="equal lengths"):
        ours(BATCH, return_tensors="np")


def test_pad_token_setter_like_transformers(hf_fast):
    ours = OpenAIGPTTokenizer.from_pretrained(FIXTURES)
    ref = transformers.OpenAIGPTTokenizerFast(VOCAB, MERGES)
    ours.pad_token = ref.pad_token = ours.unk_token
    assert ours(BATCH, padding=True)["input_ids"] == ref(BATCH, padding=True)["input_ids"]
    ours.pad_token_id = ref.pad_token_id = 3
    assert (ours.pad_token, ours.pad_token_id) == (ref.pad_token, ref.pad_token_id)
    assert len(ours) == len(ref) == 40478


# ---- bad input -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [123, None, b"bytes", {"a": 1}])
def test_non_string_input_is_a_type_error(ours, bad):
    with pytest.raises(TypeError, match=type(bad).__name__):
        ours(bad)
    with pytest.raises(TypeError, match=r"text\[1\]"):
        ours(["fine", bad])
    with pytest.raises(TypeError, match="encode"):
        ours.encode(bad)


def test_bad_arguments(ours):
    with pytest.raises(TypeError, match="token_ids"):
        ours.decode("not ids")
    with pytest.raises(ValueError, match="return_tensors"):
        ours("x", return_tensors="pt")
    with pytest.raises(ValueError, match="padding_side"):
        ours("x", padding_side="middle")
    with pytest.raises(ValueError, match="not a special token role"):
        ours.add_special_tokens({"start_token": "_start_"})


def copy_fixture(tmp_path, *names):
    for name in names:
        shutil.copy(os.path.join(FIXTURES, name), tmp_path / name)


def test_missing_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="vocab.json"):
        OpenAIGPTTokenizer.from_pretrained(tmp_path)
    copy_fixture(tmp_path, "vocab.json")
    with pytest.raises(FileNotFoundError, match="merges.txt"):
        OpenAIGPTTokenizer.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="nowhere.json"):
        OpenAIGPTTokenizer(vocab_file=str(tmp_path / "nowhere.json"), merges_file=MERGES)
    with pytest.raises(ValueError, match="directory"):
        OpenAIGPTTokenizer.from_pretrained(VOCAB)


@pytest.mark.parametrize(
    "name, content, match",
    [
        ("vocab.json", '{"a": 1,', r"vocab\.json.*JSON"),
        ("vocab.json", '["a", "b"]', r"vocab\.json.*object"),
        ("vocab.json", b"\xff\xfe{}", r"vocab\.json.*UTF-8"),
        ("merges.txt", "t h\n", r"merges\.txt.*#version"),
        ("merges.txt", "#version: 0.2\nt h\nthree tokens here\n", r"merges\.txt, line 3"),
        ("merges.txt", "#version: 0.2\nt h\nq\u2603 z\n", r"merges\.txt, line 3.*not in the vocabulary"),
    ],
)
def test_corrupt_vocabulary_files_are_named(tmp_path, name, content, match):
    copy_fixture(tmp_path, "vocab.json", "merges.txt")
    with open(tmp_path / name, "wb") as f:
        f.write(content if isinstance(content, bytes) else content.encode("utf-8"))
    with pytest.raises(ValueError, match=match):
        OpenAIGPTTokenizer.from_pretrained(tmp_path)


def test_corrupt_tokenizer_json_and_config_are_named(tmp_path, ours):
    ours.save_pretrained(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"tokenizer_config\.json"):
        OpenAIGPTTokenizer.from_pretrained(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text("{}")
    (tmp_path / "tokenizer.json").write_text('{"version": "1.0", "model": ')
    with pytest.raises(ValueError, match=r"tokenizer\.json"):
        OpenAIGPTTokenizer.from_pretrained(tmp_path)
    config = {"added_tokens_decoder": {"40490": {"content": "_start_", "special": True}}}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    os.remove(tmp_path / "tokenizer.json")
    with pytest.raises(ValueError, match=r"'_start_' is recorded with id 40490"):
        OpenAIGPTTokenizer.from_pretrained(tmp_path)


def test_offline_hub_id_is_one_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OSError, match="pass a local model directory") as info:
        OpenAIGPTTokenizer.from_pretrained("someone/not-cached-here")
    assert "\n" not in str(info.value)


# ---- text pairs ----------------------------------------------------------------------------------------------

PAIR_TEXTS = [
    "",
    "a",
    "one two three",
    "four five six",
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
]
PAIRS = [(a, b) for a in PAIR_TEXTS for b in PAIR_TEXTS]
STRATEGIES = ["longest_first", "only_first", "only_second", True]


def outcome(call):
    """The call's input_ids, or "error" where it raised (transformers' fast tokenizer raises a bare Exception)."""
    try:
        return call()["input_ids"]
    except Exception:  # noqa: BLE001 - the fast tokenizer's Rust errors are plain Exceptions
        return "error"


def test_pairs_match_fast(padded_pair):
    ours, ref = padded_pair
    firsts, seconds = [a for a, _ in PAIRS], [b for _, b in PAIRS]
    options = {"return_token_type_ids": True, "return_offsets_mapping": True, "return_special_tokens_mask": True}
    for kwargs in ({}, {"padding": True, "return_length": True}, {"padding": "max_length", "max_length": 20}):
        want = ref(firsts, seconds, **options, **kwargs)
        assert ours(firsts, seconds, **options, **kwargs) == dict(want)
        assert ours(PAIRS, **options, **kwargs) == dict(want)  # a list of (text, text_pair) tuples
        assert ours.batch_encode_plus(PAIRS, **options, **kwargs) == dict(
            ref.batch_encode_plus(PAIRS, **options, **kwargs)
        )
    for a, b in PAIRS[:12]:
        assert ours(a, b, **options) == dict(ref(a, b, **options))
        assert ours(a, text_pair=b)["input_ids"] == ref(a, text_pair=b)["input_ids"]
        assert ours.encode(a, b) == ref.encode(a, b) == ours.encode(a) + ours.encode(b)
        assert ours.encode_plus(a, b, return_token_type_ids=True) == dict(
            ref.encode_plus(a, b, return_token_type_ids=True)
        )
    mixed = ["one text", ("a", "pair"), ""]
    assert ours(mixed, return_token_type_ids=True) == dict(ref(mixed, return_token_type_ids=True))
    kwargs = {"padding": True, "return_tensors": "np", "return_token_type_ids": True}
    got, want = ours(PAIRS[8:10], **kwargs), ref(PAIRS[8:10], **kwargs)
    assert set(got) == set(want) and all(np.array_equal(got[k], want[k]) for k in want)


@pytest.mark.parametrize("truncation_side", ["right", "left"])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_pair_truncation_matches_fast(padded_pair, strategy, truncation_side):
    """The fast tokenizer's split (the Rust truncation), e.g. two 3-token texts cut to 5 keep 2 + 3."""
    ours, ref = padded_pair
    ours.truncation_side = ref.truncation_side = truncation_side
    for max_length in range(14):
        for a, b in PAIRS:
            kwargs = {"truncation": strategy, "max_length": max_length, "return_offsets_mapping": True}
            want = outcome(lambda: ref(a, b, **kwargs))  # noqa: B023 - called at once
            if want == "error":
                with pytest.raises(ValueError, match=r"only_(first|second)"):
                    ours(a, b, **kwargs)
            else:
                got = ours(a, b, **kwargs)
                assert got == dict(ref(a, b, **kwargs)), (a, b, max_length)
        for a in PAIR_TEXTS:  # one text: only_second has nothing to cut
            want = outcome(lambda: ref(a, truncation=strategy, max_length=max_length))  # noqa: B023
            got = outcome(lambda: ours(a, truncation=strategy, max_length=max_length))  # noqa: B023
            assert got == want, (a, max_length)
    if strategy in ("longest_first", True) and truncation_side == "right":
        first, second = "one two three", "four five six"
        a, b = ours.encode(first), ours.encode(second)
        cut = {"truncation": strategy, "max_length": 5}
        assert (
            len(a) == len(b) == 3 and ours.encode(first, second, **cut) == ref.encode(first, second, **cut) == a[:2] + b
        )


def test_pair_truncation_errors_are_clear(padded_pair):
    ours, _ = padded_pair
    with pytest.raises(ValueError, match=r"only_second.*remove 3 tokens.*max_length=3.*second text has only 3"):
        ours("one two three", "four five six", truncation="only_second", max_length=3)
    with pytest.raises(ValueError, match=r"only_second.*needs a text pair"):
        ours("one two three", truncation="only_second", max_length=2)
    with pytest.raises(ValueError, match=r"only_first.*first text has only 0"):
        ours(["x", ""], ["y", "four five six"], truncation="only_first", max_length=2)
    with pytest.raises(ValueError, match="text has 2 texts but text_pair has 1"):
        ours(["a", "b"], ["c"])
    with pytest.raises(TypeError, match="text_pair must be a str"):
        ours("a", ["b"])
    with pytest.raises(TypeError, match=r"text\[1\] must be a str or a \(text, text_pair\) pair, got 3"):
        ours(["a", ("b", "c", "d")])
    with pytest.raises(TypeError, match=r"text_pair\[0\] must be a str"):
        ours(["a"], [None])


@pytest.mark.parametrize("truncation_side", ["right", "left"])
def test_pair_truncation_original_matches_slow(truncation_side):
    """The slow tokenizer's split: two 3-token texts cut to 5 keep 3 + 2; max_length=0 cuts nothing. Where it logs
    an error and leaves the pair uncut (a text too short for only_first / only_second), we raise."""
    ours = OpenAIGPTTokenizer.from_pretrained(FIXTURES, original=True, truncation_side=truncation_side)
    ref = transformers.OpenAIGPTTokenizer(vocab_file=VOCAB, merges_file=MERGES, truncation_side=truncation_side)
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity(transformers.logging.CRITICAL)  # the slow tokenizer's logged errors
    try:
        pairs = PAIRS[::3] + [("don't — Café", "ÉCOLE naïve")]
        for strategy in STRATEGIES:
            for max_length in range(0, 13, 2 if strategy is True else 1):
                for a, b in pairs:
                    want = ref(a, b, truncation=strategy, max_length=max_length, return_token_type_ids=True)
                    if max_length and len(want["input_ids"]) > max_length:
                        with pytest.raises(ValueError, match=r"only_(first|second)"):
                            ours(a, b, truncation=strategy, max_length=max_length)
                    else:
                        got = ours(a, b, truncation=strategy, max_length=max_length, return_token_type_ids=True)
                        assert got == dict(want), (a, b, strategy, max_length)
                want = ref(pairs[-1][0], truncation=strategy, max_length=max_length)["input_ids"]
                if strategy != "only_second" or len(want) <= max_length or not max_length:
                    assert ours.encode(pairs[-1][0], truncation=strategy, max_length=max_length) == want
    finally:
        transformers.logging.set_verbosity(verbosity)
    if truncation_side == "right":
        first, second = "one two three", "four five six"
        a, b = ours.encode(first), ours.encode(second)
        cut = {"truncation": True, "max_length": 5}
        assert (
            len(a) == len(b) == 3 and ours.encode(first, second, **cut) == ref.encode(first, second, **cut) == a + b[:2]
        )
    a, b = pairs[-1]
    kwargs = {"add_special_tokens": False, "return_token_type_ids": True}
    for call in (lambda tok: tok(a, b, **kwargs), lambda tok: tok([a], [b], **kwargs)):
        with pytest.raises(ValueError, match="token_type_ids.*add_special_tokens"):
            call(ref)
        with pytest.raises(ValueError, match="return_token_type_ids=True with add_special_tokens=False"):
            call(ours)
    assert ours([a], [b], return_token_type_ids=True) == dict(ref([a], [b], return_token_type_ids=True))


# ---- the rest of transformers' API ----------------------------------------------------------------------------


def test_model_max_length_like_transformers(hf_fast, padded_pair):
    ours = OpenAIGPTTokenizer.from_pretrained(FIXTURES)
    assert ours.model_max_length == hf_fast.model_max_length == int(1e30)
    assert min(ours.model_max_length, 512) == 512
    assert OpenAIGPTTokenizer.from_pretrained(FIXTURES, model_max_length=7).model_max_length == 7
    ours.model_max_length = None
    assert ours.model_max_length == int(1e30)
    with pytest.raises(ValueError, match="model_max_length.*'long'"):
        ours.model_max_length = "long"
    with pytest.warns(UserWarning, match="no model_max_length: no truncation"):
        assert ours(BATCH, truncation=True)["input_ids"] == hf_fast(BATCH, truncation=True)["input_ids"]


def test_return_options_match_fast(padded_pair):
    ours, ref = padded_pair
    texts = BATCH + ["x <pad> y"]
    options = {"return_token_type_ids": True, "return_special_tokens_mask": True, "return_length": True}
    for kwargs in ({}, {"padding": True}, {"padding": "max_length", "max_length": 9, "truncation": True},
                   {"padding": True, "padding_side": "left", "return_offsets_mapping": True},
                   {"return_attention_mask": False}):  # fmt: skip
        for text in (texts, texts[0], texts[1]):
            got, want = ours(text, **options, **kwargs), ref(text, **options, **kwargs)
            assert got == dict(want) and list(got) == list(want)
        kwargs = {**options, **kwargs, "padding": kwargs.get("padding", True)}
        got, want = ours(texts, return_tensors="np", **kwargs), ref(texts, return_tensors="np", **kwargs)
        assert set(got) == set(want) and all(np.array_equal(got[k], want[k]) for k in want)
    assert ours.encode_plus(texts[0]) == dict(ref.encode_plus(texts[0]))
    assert ours.batch_encode_plus(texts, padding=True) == dict(ref.batch_encode_plus(texts, padding=True))


PAD_INPUTS = [
    {"input_ids": [[1, 2, 3], [4]]},
    {"input_ids": [1, 2, 3]},
    {
        "input_ids": [[1, 2, 3], [4]],
        "attention_mask": [[1, 1, 1], [1]],
        "token_type_ids": [[0, 0, 1], [0]],
        "special_tokens_mask": [[0, 0, 0], [0]],
        "length": [3, 1],
    },
    {"input_ids": [1, 2], "attention_mask": [0, 1]},
    {"input_ids": [[]]},
    {"input_ids": []},
]
PAD_CALLS = [
    {},
    {"padding": False},
    {"padding": "longest", "pad_to_multiple_of": 4},
    {"padding": "max_length", "max_length": 5, "padding_side": "left"},
    {"padding": "max_length", "max_length": 2},  # never truncates
    {"return_attention_mask": False},
]


@pytest.mark.parametrize("kwargs", PAD_CALLS, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()) or "none")
def test_pad_matches_fast(padded_pair, kwargs):
    ours, ref = padded_pair

    def want(inputs):
        padded = dict(ref.pad(inputs, **kwargs))
        if "attention_mask" in padded and kwargs.get("return_attention_mask") is False:
            # transformers leaves a given mask unpadded then, shorter than input_ids; we pad it
            padded["attention_mask"] = ours.pad(inputs)["attention_mask"]
        return padded

    for inputs in PAD_INPUTS:
        assert ours.pad(dict(inputs), **kwargs) == want(dict(inputs)), inputs
    examples = [{"input_ids": [5, 6, 7]}, {"input_ids": [8]}]
    assert ours.pad(examples, **kwargs) == want(examples)
    assert ours.pad(ours(BATCH), **kwargs) == want(ref(BATCH))


def test_pad_tensors_like_fast(padded_pair):
    ours, ref = padded_pair
    for inputs, kwargs in [
        ({"input_ids": [[1, 2, 3], [4]]}, {"return_tensors": "np"}),
        ({"input_ids": np.array([[1, 2, 3], [4, 5, 6]])}, {}),  # arrays in: arrays out
        ({"input_ids": [np.array([1, 2]), np.array([3])]}, {}),
        ({"input_ids": [[1, 2, 3], [4]]}, {"return_tensors": "np", "padding_side": "left"}),
    ]:
        got, want = ours.pad(inputs, **kwargs), ref.pad(inputs, **kwargs)
        assert set(got) == set(want) and all(np.array_equal(got[k], want[k]) for k in want)
        assert all(isinstance(v, np.ndarray) for v in got.values())
    as_jax = ours.pad({"input_ids": [[1, 2, 3], [4]]}, return_tensors="jax")
    assert isinstance(as_jax["input_ids"], jax.Array) and as_jax["input_ids"].shape == (2, 3)
    assert isinstance(ours.pad({"input_ids": jax.numpy.ones((2, 3), int)})["attention_mask"], jax.Array)
    with pytest.raises(ValueError, match="equal lengths.*'input_ids'"):
        ours.pad({"input_ids": [[1, 2, 3], [4]]}, padding=False, return_tensors="np")
    with pytest.raises(ValueError, match=r"needs input_ids.*\['attention_mask'\]"):
        ours.pad({"attention_mask": [[1]]})
    with pytest.raises(ValueError, match="no pad token"):
        OpenAIGPTTokenizer.from_pretrained(FIXTURES).pad({"input_ids": [[1, 2], [3]]})


def test_small_api_matches_fast(hf_fast, ours, ours_original, hf_slow):
    tokens = hf_fast.tokenize("Hello, wonderful world!") + ["\n</w>", "x"]
    assert ours.convert_tokens_to_string(tokens) == hf_fast.convert_tokens_to_string(tokens)
    assert ours_original.convert_tokens_to_string(tokens) == hf_slow.convert_tokens_to_string(tokens)
    assert (ours.is_fast, ours_original.is_fast) == (hf_fast.is_fast, hf_slow.is_fast) == (True, False)
    assert ours.name_or_path == transformers.AutoTokenizer.from_pretrained(FIXTURES).name_or_path == FIXTURES
    assert OpenAIGPTTokenizer(VOCAB, MERGES).name_or_path == hf_fast.name_or_path == ""
    a, b = OpenAIGPTTokenizer.from_pretrained(FIXTURES), transformers.OpenAIGPTTokenizerFast(VOCAB, MERGES)
    assert a.special_tokens_map == b.special_tokens_map == {"unk_token": "<unk>"}
    for tok in (a, b):
        tok.add_special_tokens({**TASK_TOKENS, "pad_token": "<pad>", "additional_special_tokens": ["<x>", "<y>"]})
    assert a.special_tokens_map == b.special_tokens_map and list(a.special_tokens_map) == list(b.special_tokens_map)


def test_add_empty_token_adds_nothing(hf_fast, hf_slow):
    for original, ref in ((False, transformers.OpenAIGPTTokenizerFast), (True, transformers.OpenAIGPTTokenizer)):
        ours, ref = OpenAIGPTTokenizer.from_pretrained(FIXTURES, original=original), ref(VOCAB, MERGES)
        for tok in (ours, ref):
            assert tok.add_tokens([""]) == tok.add_tokens("") == tok.add_tokens([""], special_tokens=True) == 0
            assert tok.add_tokens(["", "NewWord"]) == 1
        assert len(ours) == len(ref) == 40479 and ours.encode("a NewWord") == ref.encode("a NewWord")


def test_original_loads_fast_saved_added_token_in_its_casing(tmp_path):
    """A fast tokenizer's "Brown" stays "Brown" in the slow one (no lowercasing on load) and matches only so."""
    saver = transformers.OpenAIGPTTokenizerFast(VOCAB, MERGES)
    saver.add_tokens(["Brown", "lower"])
    saver.save_pretrained(tmp_path)
    ours = OpenAIGPTTokenizer.from_pretrained(tmp_path, original=True)
    ref = transformers.OpenAIGPTTokenizer.from_pretrained(tmp_path)
    text = "Brown brown BROWN the Brown fox, lower LOWER Lower"
    assert ours.encode(text) == ref.encode(text)
    assert ours.encode(text).count(ours.convert_tokens_to_ids("Brown")) == 2
    ours.add_tokens(["Fox"])
    ref.add_tokens(["Fox"])  # added here, so lowercased: matched in any casing
    assert ours.encode(text + " Fox fox FOX") == ref.encode(text + " Fox fox FOX")


@pytest.mark.parametrize(
    "special", [{"pad_token": "<pad>", "bos_token": "<s>"}, {"pad_token": "<pad>", **TASK_TOKENS, "mask_token": "<m>"}]
)
def test_special_tokens_given_to_the_constructor_take_transformers_ids(tmp_path, special):
    """New special tokens are numbered in transformers' role order, whatever order the keywords come in."""
    text = " ".join(special.values())
    shutil.copy(VOCAB, tmp_path / "vocab.json")
    shutil.copy(MERGES, tmp_path / "merges.txt")
    pairs = [
        (OpenAIGPTTokenizer(VOCAB, MERGES, **special), transformers.OpenAIGPTTokenizerFast(VOCAB, MERGES, **special)),
        (
            OpenAIGPTTokenizer.from_pretrained(tmp_path, **special),
            transformers.OpenAIGPTTokenizerFast.from_pretrained(tmp_path, **special),
        ),
    ]
    for ours, ref in pairs:
        assert ours.encode(text) == ref.encode(text)
        assert {k: getattr(ours, k + "_id") for k in special} == {k: getattr(ref, k + "_id") for k in special}
    original = OpenAIGPTTokenizer(VOCAB, MERGES, original=True, **special)
    assert original.encode(text) == transformers.OpenAIGPTTokenizer(VOCAB, MERGES, **special).encode(text)


def test_decode_takes_a_single_id_in_any_form(ours, hf_fast):
    import torch

    for token_id in (3570, np.int64(3570), np.array(3570), jax.numpy.array(3570), torch.tensor(3570)):
        assert ours.decode(token_id) == hf_fast.decode(token_id) == "hello"
    with pytest.raises(TypeError, match="int ids"):
        ours.decode(np.array(1.5))


def test_add_tokens_as_special_lists_them_as_each_pipeline_does(hf_fast, hf_slow):
    """The fast tokenizer keeps such tokens out of additional_special_tokens (so skip_special_tokens keeps them
    in convert_ids_to_tokens); the slow one lists them."""
    pairs = [
        (OpenAIGPTTokenizer(VOCAB, MERGES), transformers.OpenAIGPTTokenizerFast(VOCAB, MERGES)),
        (OpenAIGPTTokenizer(VOCAB, MERGES, original=True), transformers.OpenAIGPTTokenizer(VOCAB, MERGES)),
    ]
    for ours, ref in pairs:
        for tok in (ours, ref):
            tok.add_tokens(["<S1>"], special_tokens=True)
        ids = ref.encode("a <S1> b")
        assert ours.encode("a <S1> b") == ids
        assert ours.special_tokens_map == ref.special_tokens_map
        for skip in (False, True):
            assert ours.convert_ids_to_tokens(ids, skip_special_tokens=skip) == ref.convert_ids_to_tokens(
                ids, skip_special_tokens=skip
            )


def test_warns_as_transformers_about_length(caplog):
    ours = OpenAIGPTTokenizer(VOCAB, MERGES, model_max_length=8)
    ref = transformers.OpenAIGPTTokenizerFast(VOCAB, MERGES, model_max_length=8)
    long = "one two three four five six seven eight nine ten eleven"
    with pytest.warns(UserWarning, match=r"longer than the specified maximum sequence length .*\(11 > 8\)"):
        assert ours.encode(long) == ref.encode(long)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per tokenizer, as transformers
        ours.encode(long)
        ours.encode(long, truncation=True)
    with pytest.warns(UserWarning, match="max_length without truncation"):
        assert ours("a b c d", max_length=3)["input_ids"] == ref("a b c d", max_length=3)["input_ids"]
    padded = OpenAIGPTTokenizer(VOCAB, MERGES, model_max_length=8, pad_token="<unk>")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a resolved max_length (padding to it) silences it, as in transformers
        padded(long, padding="max_length")
        padded(long, padding="max_length", max_length=20)


def test_special_token_helpers_match_fast():
    ours, ref = OpenAIGPTTokenizer(VOCAB, MERGES), transformers.OpenAIGPTTokenizerFast(VOCAB, MERGES)
    for tok in (ours, ref):
        tok.add_special_tokens({**TASK_TOKENS, "pad_token": "<pad>", "additional_special_tokens": ["<x>"]})
        tok.add_tokens(["newword"])
    ids = ref.encode("_start_ a newword <x> b <pad>")
    assert ours.added_tokens_encoder == ref.added_tokens_encoder
    assert ours.get_added_vocab() == ref.get_added_vocab()
    assert ours.additional_special_tokens_ids == ref.additional_special_tokens_ids
    assert ours.num_special_tokens_to_add() == ref.num_special_tokens_to_add() == 0
    assert ours.num_special_tokens_to_add(pair=True) == ref.num_special_tokens_to_add(pair=True)
    assert ours.build_inputs_with_special_tokens(ids, ids[:2]) == ref.build_inputs_with_special_tokens(ids, ids[:2])
    slow = transformers.OpenAIGPTTokenizer(VOCAB, MERGES)  # the fast one refuses already_has_special_tokens=False
    for args in ((ids,), (ids, ids[:2])):
        assert ours.get_special_tokens_mask(*args) == slow.get_special_tokens_mask(*args)
    assert ours.get_special_tokens_mask(ids, already_has_special_tokens=True) == ref.get_special_tokens_mask(
        ids, already_has_special_tokens=True
    )
    with pytest.raises(ValueError, match="token_ids_1 must be None"):
        ours.get_special_tokens_mask(ids, ids, already_has_special_tokens=True)


# ---- transformers' fast-tokenizer alignment: encodings, overflowing windows, pre-split words ------------------

ALIGN_TEXTS = ["Hello world, it's me!", "Café au lait... naïve? 😀 中文", "", "  spaced   out  ", "don't stop"]


def assert_same_encoding(got, want):
    """Every key, and every alignment method of every row, as transformers' BatchEncoding gives them."""
    assert list(got) == list(want)
    for key in want:
        assert np.array_equal(np.array(got[key], dtype=object), np.array(want[key], dtype=object)), key
    assert got.is_fast and got.n_sequences == want.n_sequences and len(got.encodings) == len(want.encodings)
    for i, encoding in enumerate(want.encodings):
        assert got[i].ids == encoding.ids
        for method in ("tokens", "word_ids", "sequence_ids"):
            assert getattr(got, method)(i) == getattr(want, method)(i), (method, i)
        for t in range(len(encoding.ids)):  # (transformers fails on a negative index; ours counts from the end)
            for method in ("token_to_chars", "token_to_word", "token_to_sequence"):
                assert getattr(got, method)(i, t) == getattr(want, method)(i, t), (method, i, t)
                assert getattr(got, method)(i, t - len(encoding.ids)) == getattr(want, method)(i, t), (method, i, t)
        words = max((w for w in encoding.word_ids if w is not None), default=-1) + 1
        chars = max((end for _, end in encoding.offsets), default=0) + 1
        for sequence in range(encoding.n_sequences):
            for w in range(words + 1):
                assert got.word_to_tokens(i, w, sequence) == want.word_to_tokens(i, w, sequence), (i, w, sequence)
                if want.word_to_tokens(i, w, sequence) is not None:  # transformers' word_to_chars fails on None
                    assert got.word_to_chars(i, w, sequence) == want.word_to_chars(i, w, sequence)
            for c in range(chars):
                assert got.char_to_token(i, c, sequence) == want.char_to_token(i, c, sequence), (i, c, sequence)
                assert got.char_to_word(i, c, sequence) == want.char_to_word(i, c, sequence), (i, c, sequence)


ALIGN_CALLS = [
    {},
    {"padding": True, "return_offsets_mapping": True, "return_special_tokens_mask": True},
    {"padding": True, "padding_side": "left", "return_token_type_ids": True, "return_length": True},
    {"padding": "max_length", "max_length": 9, "truncation": True, "return_tensors": "np"},
    {"truncation": "longest_first", "max_length": 6, "padding": True, "pad_to_multiple_of": 3},
]


@pytest.mark.parametrize("kwargs", ALIGN_CALLS, ids=lambda kw: ",".join(kw) or "none")
def test_alignment_methods_match_fast(padded_pair, kwargs):
    ours, ref = padded_pair
    for side in ("right", "left"):
        ours.truncation_side = ref.truncation_side = side
        assert_same_encoding(ours(ALIGN_TEXTS, **kwargs), ref(ALIGN_TEXTS, **kwargs))
        assert_same_encoding(ours(ALIGN_TEXTS[0], **kwargs), ref(ALIGN_TEXTS[0], **kwargs))
        firsts, seconds = ALIGN_TEXTS, ALIGN_TEXTS[::-1]
        assert_same_encoding(ours(firsts, seconds, **kwargs), ref(firsts, seconds, **kwargs))
        assert_same_encoding(ours(firsts[0], seconds[1], **kwargs), ref(firsts[0], seconds[1], **kwargs))
    ours.truncation_side = ref.truncation_side = "right"


OVERFLOW_CALLS = [
    {"max_length": 4, "stride": 0},
    {"max_length": 4, "stride": 1, "padding": True, "return_offsets_mapping": True},
    {"max_length": 5, "stride": 2, "padding": "max_length", "return_tensors": "np", "return_length": True},
    {"max_length": 7, "stride": 3, "return_special_tokens_mask": True, "padding": True, "padding_side": "left"},
    {"max_length": 100, "stride": 3},  # nothing overflows: each example one row, still mapped
]


@pytest.mark.parametrize("kwargs", OVERFLOW_CALLS, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()))
@pytest.mark.parametrize("truncation_side", ["right", "left"])
def test_overflowing_windows_match_fast(padded_pair, kwargs, truncation_side):
    ours, ref = padded_pair
    ours.truncation_side = ref.truncation_side = truncation_side
    texts = ["one two three four five six seven eight nine ten eleven", "a b", "Hello, world! It's me again."]
    call = {"truncation": True, "return_overflowing_tokens": True, **kwargs}
    try:
        for text in (texts, texts[0]):
            assert_same_encoding(ours(text, **call), ref(text, **call))
        firsts, seconds = texts, ["x y z w v u t s", "q", "p o n m l k"]
        for strategy in ("only_first", "only_second", "longest_first"):
            pair_call = {**call, "truncation": strategy, "return_token_type_ids": True}
            try:
                want = ref(firsts, seconds, **pair_call)
            except BaseException as e:  # a Rust error, or a panic (pyo3's PanicException)
                if isinstance(e, KeyboardInterrupt):
                    raise
                with pytest.raises(ValueError, match="must remove|stride"):  # a text too short for the cut
                    ours(firsts, seconds, **pair_call)
            else:
                assert_same_encoding(ours(firsts, seconds, **pair_call), want)
    finally:
        ours.truncation_side = ref.truncation_side = "right"


def test_overflow_with_jax_tensors_and_mapping(padded_pair):
    ours, ref = padded_pair
    call = {"max_length": 3, "stride": 1, "truncation": True, "return_overflowing_tokens": True, "padding": True}
    got, want = ours(ALIGN_TEXTS, return_tensors="jax", **call), ref(ALIGN_TEXTS, return_tensors="np", **call)
    assert list(got) == list(want) == ["input_ids", "attention_mask", "overflow_to_sample_mapping"]
    for key in want:
        assert isinstance(got[key], jax.Array) and np.array_equal(np.asarray(got[key]), want[key]), key


def test_stride_that_tokenizers_cannot_take_is_a_clear_error(padded_pair):
    ours, _ = padded_pair
    text = "one two three four five six"
    for overflow in (False, True):  # transformers' fast tokenizer panics in Rust in both
        with pytest.raises(ValueError, match=r"stride=3 must be less than the 3 tokens a text is cut to"):
            ours(text, max_length=3, truncation=True, stride=3, return_overflowing_tokens=overflow)
        with pytest.raises(ValueError, match=r"stride=2 must be less than the 2 tokens .*shared by a pair"):
            ours(text, "a b c d", max_length=4, truncation=True, stride=2, return_overflowing_tokens=overflow)
    assert ours(text, max_length=3, truncation=True, stride=2)["input_ids"] == ours.encode(text)[:3]
    _, ref = padded_pair
    for max_length, stride in ((3, 9), (0, 1)):  # above max_length, even with nothing to cut: refused, as there
        with pytest.raises(ValueError, match=f"stride={stride} is larger than max_length={max_length}"):
            ours("a b", max_length=max_length, truncation=True, stride=stride)
        with pytest.raises(ValueError, match="stride"):
            ref("a b", max_length=max_length, truncation=True, stride=stride)
    assert ours("a b", stride=9)["input_ids"] == ours.encode("a b")  # stride unused: no truncation
    for bad in (-1, 1.5, None):
        with pytest.raises(ValueError, match="stride must be a non-negative int"):
            ours(text, stride=bad)


WORDS = [["Hello", "world's", "end"], ["Café", "", " ", "naïve", "😀", "a b"], [], ["don't", "U.S.A."]]


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"return_offsets_mapping": True, "padding": True}, {"truncation": True, "max_length": 3, "padding": True}],
    ids=["plain", "offsets", "truncated"],
)
def test_split_into_words_matches_fast(padded_pair, kwargs):
    ours, ref = padded_pair
    call = {"is_split_into_words": True, "return_token_type_ids": True, **kwargs}
    assert_same_encoding(ours(WORDS, **call), ref(WORDS, **call))
    assert_same_encoding(ours(WORDS[1], **call), ref(WORDS[1], **call))
    assert_same_encoding(ours(WORDS, WORDS[::-1], **call), ref(WORDS, WORDS[::-1], **call))
    assert_same_encoding(ours(WORDS[0], WORDS[3], **call), ref(WORDS[0], WORDS[3], **call))
    over = {**call, "truncation": True, "max_length": 3, "stride": 1, "return_overflowing_tokens": True}
    assert_same_encoding(ours(WORDS, **over), ref(WORDS, **over))


def test_split_into_words_original_matches_slow(ours_original, hf_slow):
    words = [["Hello", "world's", "end", "..."], ["Café", "naïve", "a b", "“quoted”"], ["don't"]]
    for call in ({}, {"truncation": True, "max_length": 3}):
        got, want = (
            ours_original(words, is_split_into_words=True, **call),
            hf_slow(words, is_split_into_words=True, **call),
        )
        assert got["input_ids"] == want["input_ids"]
    pair = ours_original(words[0], words[1], is_split_into_words=True, return_token_type_ids=True)
    assert pair == dict(hf_slow(words[0], words[1], is_split_into_words=True, return_token_type_ids=True))


def test_split_into_words_in_encode_and_pairs_in_a_batch_as_fast(padded_pair):
    ours, ref = padded_pair
    words = ["Hello", "world's"]
    assert ours.encode(words, is_split_into_words=True) == ref.encode(words, is_split_into_words=True)
    got, want = ours.encode_plus(words, is_split_into_words=True), ref.encode_plus(words, is_split_into_words=True)
    assert got == dict(want) and got.word_ids() == want.word_ids() == [0, 1, 1, 1]
    pairs = [(words, ["x"]), (["a", "b"], ["c d"])]
    want = ref.batch_encode_plus(pairs, is_split_into_words=True, return_token_type_ids=True)  # (its __call__ refuses)
    for call in (ours, ours.batch_encode_plus):
        assert_same_encoding(call(pairs, is_split_into_words=True, return_token_type_ids=True), want)
    for first, second in (("a b", ""), (words, [])):  # an empty second text of one example is none, as there
        got = ours(first, second, is_split_into_words=not isinstance(first, str))
        assert got.n_sequences == ref(first, second, is_split_into_words=not isinstance(first, str)).n_sequences == 1


def test_batch_encoding_indexes_rows_as_transformers(padded_pair):
    ours, ref = padded_pair
    got, want = ours(ALIGN_TEXTS), ref(ALIGN_TEXTS)
    assert [e.ids for e in got[1:3]] == [e.ids for e in want[1:3]]
    assert got[np.int64(1)].ids == want[1].ids and got[-1].ids == want[-1].ids


def test_split_into_words_bad_input_is_named(ours):
    with pytest.raises(TypeError, match=r"text\[1\]\[0\] must be a str"):
        ours([["a"], [3]], is_split_into_words=True)
    with pytest.raises(TypeError, match="text must be a list of words"):
        ours("a b", is_split_into_words=True)
    with pytest.raises(ValueError, match="text_pair must be one too"):
        ours([["a"], ["b"]], [["c"]], is_split_into_words=True)


def test_encodings_need_the_default_pipeline_and_the_same_vocabulary(ours_original):
    import pickle

    with pytest.raises(ValueError, match=r"word_ids\(\) needs the fast pipeline's encodings.*original=True"):
        ours_original("a b").word_ids()
    with pytest.raises(ValueError, match="return_overflowing_tokens is not available with original=True"):
        ours_original("a b", return_overflowing_tokens=True)
    tok = OpenAIGPTTokenizer.from_pretrained(FIXTURES)
    tok.pad_token = "<unk>"
    with pytest.raises(ValueError, match=r"tokens\(\) needs the fast pipeline's encodings.*pad\(\)"):
        tok.pad([{"input_ids": [1, 2]}, {"input_ids": [3]}]).tokens()
    batch = tok(["_new_ word", "x"])
    tok.add_tokens(["_new_"])
    with pytest.raises(ValueError, match="added tokens or special tokens changed since these ids were made"):
        batch.word_ids()
    assert pickle.loads(pickle.dumps(batch)) == batch  # the ids, without their alignment
    batch = tok(["hello</w> world"])
    tok.add_tokens(["hello</w>"])  # in the vocabulary already: the length stays, the split changes
    with pytest.raises(ValueError, match="changed since these ids were made"):
        batch.tokens(0)
    with pytest.raises(IndexError, match="batch index 2 is out of range for 2"):
        tok(["a", "b"]).word_ids(2)


def test_batch_encoding_pickles_and_copies_with_its_encodings(ours):
    import copy
    import pickle

    batch = ours(["Hello world", "x"], return_offsets_mapping=True)
    for clone in (pickle.loads(pickle.dumps(batch)), copy.deepcopy(batch), copy.copy(batch)):
        assert clone == batch and clone.word_ids(0) == batch.word_ids(0) == [0, 1]
        assert clone.input_ids == batch["input_ids"]
    with pytest.warns(FutureWarning, match="word_ids"):
        assert batch.words(1) == [0]


def test_tokenizer_json_truncation_and_padding_settings_as_transformers(tmp_path):
    ref = transformers.OpenAIGPTTokenizerFast(VOCAB, MERGES, pad_token="<pad>")
    ref.backend_tokenizer.enable_truncation(3, direction="left")
    ref.backend_tokenizer.enable_padding(length=6, pad_id=ref.pad_token_id, pad_token="<pad>", direction="left")
    ref.backend_tokenizer.save(str(tmp_path / "tokenizer.json"))  # a tokenizers user's file: no tokenizer_config
    ours, ref = (
        OpenAIGPTTokenizer.from_pretrained(tmp_path),
        transformers.OpenAIGPTTokenizerFast.from_pretrained(tmp_path),
    )
    assert (ours.padding_side, ours.truncation_side, ours.pad_token) == ("left", "left", "<pad>")
    assert (ref.padding_side, ref.truncation_side, ref.pad_token) == ("left", "left", "<pad>")
    texts = ["one two three four five", "a b"]
    for call in (
        {},
        {"padding": True},
        {"max_length": 2, "truncation": True},
        {"padding": "max_length", "max_length": 7},
    ):
        assert ours(texts, **call) == dict(ref(texts, **call)), call
