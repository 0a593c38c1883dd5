"""The files of a GPT tokenizer: reading vocab.json / merges.txt / tokenizer.json / the transformers configs
strictly (every error names the file), and building the `tokenizers` pipeline transformers builds from them."""

from __future__ import annotations

import json
import os
from typing import Any

from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers

from gpt_flax import config

VOCAB_FILE = "vocab.json"
MERGES_FILE = "merges.txt"
TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_MAP_FILE = "special_tokens_map.json"
ADDED_TOKENS_FILE = "added_tokens.json"  # written by old transformers slow tokenizers

UNK_TOKEN = "<unk>"
END_OF_WORD_SUFFIX = "</w>"
MERGES_HEADER = "#version"
# The special-token roles transformers knows (PreTrainedTokenizerBase.SPECIAL_TOKENS_ATTRIBUTES).
SPECIAL_TOKEN_NAMES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")


def read_vocab(path: str) -> dict[str, int]:
    """vocab.json: a JSON object token -> id."""
    try:
        with open(path, encoding="utf-8") as f:
            vocab = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"vocabulary file {path} is not valid UTF-8 JSON: {e}") from None
    if not isinstance(vocab, dict) or not all(isinstance(k, str) and type(v) is int for k, v in vocab.items()):
        raise ValueError(f"vocabulary file {path} must be a JSON object mapping token strings to integer ids")
    if len(set(vocab.values())) != len(vocab):
        raise ValueError(f"vocabulary file {path} gives the same id to several tokens")
    return vocab


def read_merges(path: str, vocab: dict[str, int]) -> list[tuple[str, str]]:
    """merges.txt: a `#version` header, then one merge "left right" per line, in rank order."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().split("\n")
    except UnicodeDecodeError as e:
        raise ValueError(f"merges file {path} is not valid UTF-8: {e}") from None
    if not lines[0].startswith(MERGES_HEADER):
        raise ValueError(f"merges file {path} must start with a '{MERGES_HEADER}' line, found {lines[0][:40]!r}")
    merges = []
    for line_number, line in enumerate(lines[1:], start=2):
        if not line:
            continue
        pair = line.split()
        if len(pair) != 2:
            raise ValueError(f"merges file {path}, line {line_number}: expected two tokens, found {line!r}")
        for token in (pair[0], pair[1], pair[0] + pair[1]):
            if token not in vocab:
                raise ValueError(f"merges file {path}, line {line_number}: {token!r} is not in the vocabulary")
        merges.append((pair[0], pair[1]))
    return merges


def build_backend(vocab: dict[str, int], merges: list[tuple[str, str]], unk_token: str = UNK_TOKEN) -> Tokenizer:
    """The fast pipeline, as transformers' `OpenAIGPTConverter.converted` builds it from the same two files."""
    backend = Tokenizer(
        models.BPE(
            vocab=vocab, merges=merges, unk_token=unk_token, end_of_word_suffix=END_OF_WORD_SUFFIX, fuse_unk=False
        )
    )
    backend.add_special_tokens([unk_token])
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.BPEDecoder(suffix=END_OF_WORD_SUFFIX)
    return backend


def load_backend(path: str) -> Tokenizer:
    """A tokenizer.json, checked to hold a BPE model."""
    try:
        backend = Tokenizer.from_file(path)
    except Exception as e:  # noqa: BLE001 -- tokenizers raises a bare Exception for bad JSON or schema
        raise ValueError(f"tokenizer file {path} could not be read by the tokenizers library: {e}") from None
    if not isinstance(backend.model, models.BPE):
        raise ValueError(  # noqa: TRY004 -- a file with the wrong content: ValueError, like a corrupt one
            f"tokenizer file {path} holds a {type(backend.model).__name__} model; GPT needs BPE"
        )
    return backend


def added_token_from_json(entry: Any, source: str) -> AddedToken:
    """An `added_tokens_decoder` entry of tokenizer_config.json (a dict of AddedToken fields) as an AddedToken."""
    if isinstance(entry, str):
        return AddedToken(entry, special=True, normalized=False)
    if not isinstance(entry, dict) or not isinstance(entry.get("content"), str):
        raise ValueError(f"{source}: added_tokens_decoder entries must be objects with a 'content' string")  # noqa: TRY004
    flags = ("single_word", "lstrip", "rstrip", "normalized", "special")
    return AddedToken(entry["content"], **{k: bool(entry[k]) for k in flags if k in entry})


def added_token_to_json(token: AddedToken) -> dict[str, Any]:
    """The `added_tokens_decoder` entry transformers writes for `token`."""
    return {
        "content": token.content,
        "lstrip": token.lstrip,
        "normalized": token.normalized,
        "rstrip": token.rstrip,
        "single_word": token.single_word,
        "special": token.special,
    }


def read_json_object(path: str) -> dict:
    """A JSON object file (tokenizer_config.json, ...), special tokens given as strings."""
    content = config.read_json_object(path)
    if isinstance(content.get("additional_special_tokens"), list):
        content["additional_special_tokens"] = [content_of_entry(v) for v in content["additional_special_tokens"]]
    return {k: (content_of_entry(v) if k in SPECIAL_TOKEN_NAMES else v) for k, v in content.items()}


def content_of_entry(value: Any) -> Any:
    """Special tokens are saved as a string or as an AddedToken dict {"content": ...}."""
    return value.get("content") if isinstance(value, dict) else value


def require_file(path: str | os.PathLike, what: str) -> None:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} {path} not found")
