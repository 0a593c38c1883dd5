"""OpenAIGPTTokenizer: GPT-1's BPE on the `tokenizers` library, id for id with transformers 4.56.2.

One vocabulary (`vocab.json`, `merges.txt` with a `#version` header, `</w>` end-of-word suffix, `<unk>`),
two pipelines in front of it:

- default: transformers' `OpenAIGPTTokenizerFast`, as `convert_slow_tokenizer.OpenAIGPTConverter` builds
  it: BertNormalizer(lowercase) + BertPreTokenizer + BPE + BPEDecoder, all in Rust.
- `original=True`: the paper's pipeline, i.e. transformers' slow `OpenAIGPTTokenizer` with spacy and ftfy
  installed: the words come from `text_standardize.OriginalWordSplitter`, their BPE from `tokenizers`.

    tok = OpenAIGPTTokenizer.from_pretrained("openai-community/openai-gpt")   # or a local directory
    tok.add_special_tokens({"pad_token": "<pad>"})
    batch = tok(["Hello world!", "Hi"], padding=True, return_tensors="jax")  # input_ids, attention_mask [B, T]
    pairs = tok(["Premise.", "Context"], ["Hypothesis.", "Question?"], truncation="only_first", max_length=64)
"""

from __future__ import annotations

import itertools
import json
import numbers
import os
import re
import shutil
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
from tokenizers import AddedToken, Tokenizer

from gpt_flax import hub
from gpt_flax.text_standardize import OriginalWordSplitter, lowercase_characters
from gpt_flax.tokenizer_files import (
    ADDED_TOKENS_FILE,
    CONFIG_FILE,
    MERGES_FILE,
    SPECIAL_TOKEN_NAMES,
    SPECIAL_TOKENS_MAP_FILE,
    TOKENIZER_FILE,
    UNK_TOKEN,
    VOCAB_FILE,
    added_token_from_json,
    added_token_to_json,
    build_backend,
    load_backend,
    read_json_object,
    read_merges,
    read_vocab,
    require_file,
)

# transformers' tokenization_utils_base: model_max_length is VERY_LARGE_INTEGER when unset, and anything above
# LARGE_INTEGER means "no maximum".
VERY_LARGE_INTEGER = int(1e30)
LARGE_INTEGER = int(1e20)
PADDING_STRATEGIES = ("longest", "max_length", "do_not_pad")
TRUNCATION_STRATEGIES = ("longest_first", "only_first", "only_second", "do_not_truncate")
# What padding fills each output with (transformers' PreTrainedTokenizerBase._pad); input_ids get pad_token_id.
PAD_VALUES = {"token_type_ids": 0, "attention_mask": 0, "special_tokens_mask": 1, "offset_mapping": (0, 0)}
# The keys `pad` pads (transformers' _pad); others, offset_mapping and length included, pass through.
PADDED_BY_PAD = ("input_ids", "token_type_ids", "attention_mask", "special_tokens_mask")
# The keys of `tok(...)`, in the order transformers' fast tokenizer gives them.
OUTPUT_KEYS = ("input_ids", "token_type_ids", "attention_mask", "special_tokens_mask", "offset_mapping", "length")
# (and, last, overflow_to_sample_mapping)
SIDES = ("right", "left")
# spaCy makes the whitespace run " \n " that text_standardize leaves into the word "\n ", whose slow BPE string
# "\n  </w>" transformers rewrites to "\n</w>" (tokenization_openai.py, OpenAIGPTTokenizer.bpe).
_SPACY_NEWLINE_WORD, _NEWLINE_WORD = "\n ", "\n"


class CharSpan(NamedTuple):
    """Characters [start, end) of a token or word in its text, as transformers' CharSpan."""

    start: int
    end: int


class TokenSpan(NamedTuple):
    """Tokens [start, end) of a word, as transformers' TokenSpan."""

    start: int
    end: int


class BatchEncoding(dict):
    """The dict `tok(...)` returns (`input_ids`, `attention_mask`, ...), its keys also readable as attributes.

    From the default pipeline it also holds each row's `tokenizers.Encoding` (made on first use), and with them
    transformers' fast-tokenizer alignment methods: `tokens(i)`, `word_ids(i)`, `sequence_ids(i)`,
    `token_to_word`, `token_to_chars`, `char_to_token`, `word_to_tokens`, ... With `original=True` (like
    transformers' slow tokenizer) and from `pad`, these raise ValueError.
    """

    def __init__(self, data: Mapping[str, Any] | None = None, encodings: list | Callable[[], list] | None = None):
        super().__init__(data or {})
        self._encodings = encodings  # a list of tokenizers.Encoding, a function making it, or None

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __getitem__(self, key: str | int | slice) -> Any:
        """`batch["input_ids"]`, or `batch[i]` / `batch[i:j]`: rows' tokenizers.Encoding, as in transformers."""
        if isinstance(key, (numbers.Integral, slice)):
            if isinstance(key, slice):
                if self.encodings is None:
                    self._encoding("__getitem__", 0)  # raises: none to slice
                return self.encodings[key]
            return self._encoding("__getitem__", int(key))
        return super().__getitem__(key)

    def __getstate__(self) -> dict:
        try:
            encodings = self.encodings
        except ValueError:  # the tokenizer changed since: the copy has the ids, not their alignment
            encodings = None
        return {"_encodings": encodings}

    def __setstate__(self, state: dict) -> None:
        self._encodings = state["_encodings"]

    @property
    def encodings(self) -> list | None:
        """Each row's `tokenizers.Encoding` (overflow rows included), or None where there are none."""
        if callable(self._encodings):
            self._encodings = self._encodings()
        return self._encodings

    @property
    def is_fast(self) -> bool:
        return self._encodings is not None

    @property
    def n_sequences(self) -> int | None:
        """1 for single texts, 2 for pairs (None without encodings)."""
        encodings = self.encodings
        return encodings[0].n_sequences if encodings else None

    def _encoding(self, method: str, batch_index: int):
        encodings = self.encodings
        if encodings is None:
            raise ValueError(
                f"{method}() needs the fast pipeline's encodings, which this BatchEncoding does not have: it came "
                "from a tokenizer with original=True (like transformers' slow tokenizer) or from pad()"
            )
        if not -len(encodings) <= batch_index < len(encodings):
            raise IndexError(f"batch index {batch_index} is out of range for {len(encodings)} encoded rows")
        return encodings[batch_index]

    def _indexed(self, method: str, batch_or_index: int, index: int | None, count=None):
        """(row's Encoding, index) from transformers' (batch_or_index, index=None) convention; `count` makes a
        negative token index count from the row's end."""
        batch_index, index = (0, batch_or_index) if index is None else (batch_or_index, index)
        encoding = self._encoding(method, batch_index)
        if count is not None and index < 0:
            index += count(encoding)
        return encoding, index

    def tokens(self, batch_index: int = 0) -> list[str]:
        """Row `batch_index`'s token strings (padding as the pad token)."""
        return self._encoding("tokens", batch_index).tokens

    def word_ids(self, batch_index: int = 0) -> list[int | None]:
        """Each token's word index in its text (None for padding); with is_split_into_words, the input word's."""
        return self._encoding("word_ids", batch_index).word_ids

    def words(self, batch_index: int = 0) -> list[int | None]:
        """transformers' older name for `word_ids` (deprecated there, with this warning)."""
        warnings.warn("BatchEncoding.words() is deprecated: use the same word_ids()", FutureWarning, stacklevel=2)
        return self.word_ids(batch_index)

    def sequence_ids(self, batch_index: int = 0) -> list[int | None]:
        """Each token's text: 0 (the first), 1 (text_pair) or None (padding)."""
        return self._encoding("sequence_ids", batch_index).sequence_ids

    def token_to_sequence(self, batch_or_token_index: int, token_index: int | None = None) -> int | None:
        encoding, token_index = self._indexed("token_to_sequence", batch_or_token_index, token_index, len)
        return encoding.token_to_sequence(token_index)

    def token_to_word(self, batch_or_token_index: int, token_index: int | None = None) -> int | None:
        encoding, token_index = self._indexed("token_to_word", batch_or_token_index, token_index, len)
        return encoding.token_to_word(token_index)

    def token_to_chars(self, batch_or_token_index: int, token_index: int | None = None) -> CharSpan | None:
        encoding, token_index = self._indexed("token_to_chars", batch_or_token_index, token_index, len)
        span = encoding.token_to_chars(token_index)
        return None if span is None else CharSpan(*span)

    def word_to_tokens(
        self, batch_or_word_index: int, word_index: int | None = None, sequence_index: int = 0
    ) -> TokenSpan | None:
        encoding, word_index = self._indexed("word_to_tokens", batch_or_word_index, word_index)
        span = encoding.word_to_tokens(word_index, sequence_index)
        return None if span is None else TokenSpan(*span)

    def word_to_chars(
        self, batch_or_word_index: int, word_index: int | None = None, sequence_index: int = 0
    ) -> CharSpan | None:
        encoding, word_index = self._indexed("word_to_chars", batch_or_word_index, word_index)
        span = encoding.word_to_chars(word_index, sequence_index)
        return None if span is None else CharSpan(*span)

    def char_to_token(
        self, batch_or_char_index: int, char_index: int | None = None, sequence_index: int = 0
    ) -> int | None:
        encoding, char_index = self._indexed("char_to_token", batch_or_char_index, char_index)
        return encoding.char_to_token(char_index, sequence_index)

    def char_to_word(
        self, batch_or_char_index: int, char_index: int | None = None, sequence_index: int = 0
    ) -> int | None:
        encoding, char_index = self._indexed("char_to_word", batch_or_char_index, char_index)
        return encoding.char_to_word(char_index, sequence_index)


def clean_up_tokenization(text: str) -> str:
    """transformers' `PreTrainedTokenizerBase.clean_up_tokenization`: no space before punctuation, contractions."""
    for old, new in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                     (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):  # fmt: skip
        text = text.replace(old, new)
    return text


class OpenAIGPTTokenizer:
    """GPT-1 tokenizer with transformers' call signature; see the module docstring for the two pipelines.

    Build it with `from_pretrained(dir_or_hub_id)`, or directly from `tokenizer_file` (tokenizer.json) or
    `vocab_file` + `merges_file`. Special tokens given here (`pad_token="<pad>"`, ...) join the vocabulary.
    """

    model_input_names = ("input_ids", "attention_mask")

    def __init__(
        self,
        vocab_file: str | None = None,
        merges_file: str | None = None,
        tokenizer_file: str | None = None,
        *,
        original: bool = False,
        unk_token: str = UNK_TOKEN,
        model_max_length: int | None = None,
        name_or_path: str = "",
        padding_side: str | None = None,
        truncation_side: str | None = None,
        clean_up_tokenization_spaces: bool = False,
        additional_special_tokens: Sequence[str | AddedToken] = (),
        added_tokens_decoder: dict[int, AddedToken] | None = None,
        **special_tokens: str | AddedToken | None,
    ):
        unknown = set(special_tokens) - set(SPECIAL_TOKEN_NAMES)
        if unknown:
            raise TypeError(
                f"OpenAIGPTTokenizer got unexpected arguments {sorted(unknown)}; besides its named options it takes "
                f"the special tokens {SPECIAL_TOKEN_NAMES}"
            )
        if tokenizer_file is not None:
            require_file(tokenizer_file, "tokenizer file")
            self._backend = load_backend(tokenizer_file)
            # A tokenizer.json may carry truncation and padding for every call; transformers takes from them only
            # the defaults below, and sets both per call. So do we: the backend itself neither cuts nor pads.
            cut, pad = self._backend.truncation or {}, self._backend.padding or {}
            truncation_side = truncation_side or cut.get("direction")
            padding_side = padding_side or pad.get("direction")
            if "pad_token" not in special_tokens and pad.get("pad_token") is not None:
                special_tokens["pad_token"] = pad["pad_token"]
            self._backend.no_truncation()
            self._backend.no_padding()
        elif vocab_file is not None and merges_file is not None:
            require_file(vocab_file, "vocabulary file")
            require_file(merges_file, "merges file")
            vocab = read_vocab(vocab_file)
            if _content(unk_token) not in vocab:
                raise ValueError(f"unk_token {_content(unk_token)!r} is not in the vocabulary file {vocab_file}")
            self._backend = build_backend(vocab, read_merges(merges_file, vocab), _content(unk_token))
        else:
            raise ValueError("pass tokenizer_file, or both vocab_file and merges_file (or use from_pretrained)")
        self._original = bool(original)
        self.model_max_length = model_max_length
        self.name_or_path = str(name_or_path)
        self.padding_side = _check_choice("padding_side", padding_side or "right", SIDES)
        self.truncation_side = _check_choice("truncation_side", truncation_side or "right", SIDES)
        self.clean_up_tokenization_spaces = clean_up_tokenization_spaces
        self._special_tokens: dict[str, str | None] = dict.fromkeys(SPECIAL_TOKEN_NAMES)
        self._additional_special_tokens: list[str] = []
        self._added_token_splitter = None
        self._truncating_backend, self._truncating_lock = None, threading.Lock()  # see _encode_aligned
        self._changes = 0  # counts changes of the added tokens and roles (_vocab_changed)
        for token_id, token in sorted((added_tokens_decoder or {}).items()):
            self._restore_added_token(token, token_id)
        special_tokens["unk_token"] = unk_token
        # New special tokens take ids in transformers' role order (bos, eos, unk, sep, pad, cls, mask), not the
        # order the keywords came in, so a model trained with transformers' tokenizer reads the same rows.
        roles = {k: special_tokens[k] for k in SPECIAL_TOKEN_NAMES if special_tokens.get(k) is not None}
        self.add_special_tokens(roles)
        if additional_special_tokens:
            self.add_special_tokens({"additional_special_tokens": list(additional_special_tokens)})
        if original:
            self._word_splitter = OriginalWordSplitter()  # raises ImportError naming spacy/ftfy when missing
            self._word_bpe = Tokenizer(self._backend.model)  # no normalizer, no pre-tokenizer, no added tokens

    @property
    def original(self) -> bool:
        """True: the paper's pipeline (transformers' slow tokenizer with spacy + ftfy); fixed at construction."""
        return self._original

    @property
    def is_fast(self) -> bool:
        """As transformers: True for the default pipeline (the fast tokenizer's), False with `original=True`, which
        like the slow tokenizer has no offset mapping (code checks `is_fast` before asking for offsets)."""
        return not self._original

    @property
    def model_max_length(self) -> int:
        """The longest input the model takes, VERY_LARGE_INTEGER (int(1e30)) when unset, as in transformers, so
        `min(tok.model_max_length, 512)` works. Above LARGE_INTEGER it means no maximum: `truncation=True` and
        `padding="max_length"` then need an explicit max_length (and warn without one)."""
        return self._model_max_length

    @model_max_length.setter
    def model_max_length(self, value: int | None) -> None:
        if value is None:
            value = VERY_LARGE_INTEGER
        if isinstance(value, float) and value.is_integer():
            value = int(value)  # JSON written by other tools may hold 1e+30
        if type(value) is not int or value < 0:
            raise ValueError(f"model_max_length must be a non-negative int (or None: no maximum), got {value!r}")
        self._model_max_length = value

    @property
    def _max_length_limit(self) -> int | None:
        """model_max_length, or None where it means no maximum."""
        return None if self._model_max_length > LARGE_INTEGER else self._model_max_length

    # ---- loading and saving -------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(
        cls,
        path_or_hub_id: str | os.PathLike,
        *,
        original: bool = False,
        revision: str | None = None,
        cache_dir: str | None = None,
        token: str | bool | None = None,
        local_files_only: bool = False,
        **kwargs: Any,
    ) -> OpenAIGPTTokenizer:
        """Load from a directory or Hub repo: tokenizer.json if there, else vocab.json + merges.txt, plus
        tokenizer_config.json / special_tokens_map.json / added_tokens.json when present. `kwargs` override them."""

        def find(filename, required=False):
            return hub.resolve_file(path_or_hub_id, filename, required=required, **hub_options)

        hub_options = {
            "revision": revision,
            "cache_dir": cache_dir,
            "token": token,
            "local_files_only": local_files_only,
        }

        files = {"tokenizer_file": find(TOKENIZER_FILE)}
        if files["tokenizer_file"] is None:
            files = {"vocab_file": find(VOCAB_FILE, required=True), "merges_file": find(MERGES_FILE, required=True)}
        config_path, map_path = find(CONFIG_FILE), find(SPECIAL_TOKENS_MAP_FILE)
        config = read_json_object(config_path) if config_path else {}
        special = {**(read_json_object(map_path) if map_path else {}), **config}
        options = {k: special[k] for k in (*SPECIAL_TOKEN_NAMES, "additional_special_tokens") if k in special}
        for key in ("model_max_length", "padding_side", "truncation_side", "clean_up_tokenization_spaces"):
            if config.get(key) is not None:
                options[key] = config[key]
        # Added tokens at their recorded ids (tokenizer.json holds them too; a slow-tokenizer save does not).
        added = {
            int(i): added_token_from_json(t, config_path) for i, t in config.get("added_tokens_decoder", {}).items()
        }
        added_path = None if files.get("tokenizer_file") else find(ADDED_TOKENS_FILE)
        roles = [options.get(k) for k in SPECIAL_TOKEN_NAMES] + list(options.get("additional_special_tokens", ()))
        for content, token_id in (read_json_object(added_path) if added_path else {}).items():
            is_special = content in roles
            added.setdefault(int(token_id), AddedToken(content, special=is_special, normalized=not is_special))
        options["name_or_path"] = str(path_or_hub_id)  # as transformers, the name as given
        return cls(**files, original=original, added_tokens_decoder=added, **{**options, **kwargs})

    def _vocab_changed(self) -> None:
        """Drop what was built from the added tokens and special-token roles, and count the change."""
        self._added_token_splitter = self._truncating_backend = None
        self._changes += 1

    def _restore_added_token(self, token: AddedToken, token_id: int) -> None:
        """Add (or register, if in the base vocabulary) `token`, checking it gets `token_id`."""
        if not isinstance(token, AddedToken):
            raise TypeError(f"added_tokens_decoder[{token_id}] must be a tokenizers.AddedToken, got {token!r}")
        if token_id not in self._backend.get_added_tokens_decoder():
            (self._backend.add_special_tokens if token.special else self._backend.add_tokens)([token])
        current = self._backend.token_to_id(token.content)
        if current != token_id:
            raise ValueError(
                f"added token {token.content!r} is recorded with id {token_id}, but gets id {current} "
                f"in a vocabulary of {len(self)}"
            )

    def save_pretrained(self, save_directory: str | os.PathLike) -> tuple[str, ...]:
        """Write tokenizer.json, vocab.json, merges.txt, tokenizer_config.json, special_tokens_map.json: the files
        transformers' `AutoTokenizer.from_pretrained` reads (fast or slow) to give the same ids."""
        if os.path.isfile(save_directory):
            raise ValueError(f"save_pretrained needs a directory, {save_directory} is a file")
        os.makedirs(save_directory, exist_ok=True)
        special_map = self.special_tokens_map
        config = {
            "added_tokens_decoder": {
                str(i): added_token_to_json(t) for i, t in sorted(self.added_tokens_decoder.items())
            },
            "clean_up_tokenization_spaces": self.clean_up_tokenization_spaces,
            "padding_side": self.padding_side,
            "truncation_side": self.truncation_side,
            "tokenizer_class": "OpenAIGPTTokenizer",
            **special_map,
        }
        if self._max_length_limit is not None:
            config["model_max_length"] = self._max_length_limit
        # Every file is written beside the others first, then moved into place: a failed write (a
        # full disk) leaves the directory as it was, not a truncated tokenizer.json.
        staging = tempfile.mkdtemp(dir=save_directory, prefix=".tokenizer.tmp-")
        try:
            try:
                self._backend.save(os.path.join(staging, TOKENIZER_FILE))
                self._backend.model.save(staging)
                for name, content in ((CONFIG_FILE, config), (SPECIAL_TOKENS_MAP_FILE, special_map)):
                    with open(os.path.join(staging, name), "w", encoding="utf-8") as f:
                        json.dump(content, f, indent=2, ensure_ascii=False, sort_keys=True)
                        f.write("\n")
            except Exception as e:  # noqa: BLE001 - `tokenizers` raises a bare Exception ("File too large")
                raise OSError(f"cannot write the tokenizer to {save_directory}: {e}") from None
            names = [TOKENIZER_FILE, VOCAB_FILE, MERGES_FILE, CONFIG_FILE, SPECIAL_TOKENS_MAP_FILE]
            for name in names:
                os.replace(os.path.join(staging, name), os.path.join(save_directory, name))
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return tuple(os.path.join(save_directory, name) for name in names)

    # ---- vocabulary ---------------------------------------------------------------------------------------

    @property
    def backend_tokenizer(self) -> Tokenizer:
        """The `tokenizers.Tokenizer` of the default pipeline (transformers' name for it)."""
        return self._backend

    @property
    def vocab_size(self) -> int:
        """The base vocabulary, without added tokens (40478 for openai-gpt)."""
        return self._backend.get_vocab_size(with_added_tokens=False)

    def __len__(self) -> int:
        return self._backend.get_vocab_size(with_added_tokens=True)

    def get_vocab(self) -> dict[str, int]:
        return self._backend.get_vocab(with_added_tokens=True)

    @property
    def added_tokens_decoder(self) -> dict[int, AddedToken]:
        return self._backend.get_added_tokens_decoder()

    @property
    def added_tokens_encoder(self) -> dict[str, int]:
        """{token: id} of the added tokens, by id (special ones included), as transformers."""
        return {t.content: i for i, t in sorted(self.added_tokens_decoder.items())}

    def get_added_vocab(self) -> dict[str, int]:
        return self.added_tokens_encoder

    @property
    def additional_special_tokens(self) -> list[str]:
        return list(self._additional_special_tokens)

    @property
    def additional_special_tokens_ids(self) -> list[int]:
        return self.convert_tokens_to_ids(self.additional_special_tokens)

    def num_special_tokens_to_add(self, pair: bool = False) -> int:
        """How many special tokens encoding adds to a text (or a pair): none, for GPT."""
        return 0

    def build_inputs_with_special_tokens(
        self, token_ids_0: list[int], token_ids_1: list[int] | None = None
    ) -> list[int]:
        """A text's ids (then the pair's): GPT adds no special tokens."""
        return list(token_ids_0) + (list(token_ids_1) if token_ids_1 is not None else [])

    def get_special_tokens_mask(
        self, token_ids_0: list[int], token_ids_1: list[int] | None = None, already_has_special_tokens: bool = False
    ) -> list[int]:
        """1 for a special token, 0 otherwise: of ids already encoded (`already_has_special_tokens`), else of
        the tokens `build_inputs_with_special_tokens` would add (none), as transformers."""
        if already_has_special_tokens:
            if token_ids_1 is not None:
                raise ValueError(
                    "token_ids_1 must be None with already_has_special_tokens=True: pass the encoded pair as one list"
                )
            special = set(self.all_special_ids)
            return [1 if i in special else 0 for i in _as_id_list(token_ids_0, "token_ids_0")]
        return [0] * (len(token_ids_0) + (len(token_ids_1) if token_ids_1 is not None else 0))

    @property
    def special_tokens_map(self) -> dict[str, str | list[str]]:
        """The roles that have a token (`{"unk_token": "<unk>", ...}`), and additional_special_tokens if any."""
        roles: dict[str, str | list[str]] = {k: v for k, v in self._special_tokens.items() if v is not None}
        if self._additional_special_tokens:
            roles["additional_special_tokens"] = list(self._additional_special_tokens)
        return roles

    @property
    def all_special_tokens(self) -> list[str]:
        named = [t for t in self._special_tokens.values() if t is not None]
        return list(dict.fromkeys(named + self._additional_special_tokens))

    @property
    def all_special_ids(self) -> list[int]:
        return self.convert_tokens_to_ids(self.all_special_tokens)

    def add_special_tokens(
        self, special_tokens_dict: dict[str, Any], replace_additional_special_tokens: bool = True
    ) -> int:
        """Give roles to tokens (`{"cls_token": "_classify_", "pad_token": "<pad>"}`, or
        `"additional_special_tokens": [...]`), adding new ones to the vocabulary; returns how many are new.
        They are never split, lowercased or (with `skip_special_tokens`) decoded. Resize the model to `len(tok)`."""
        if not isinstance(special_tokens_dict, dict):
            raise TypeError(
                f"add_special_tokens takes a dict of role -> token, got {type(special_tokens_dict).__name__}"
            )
        to_add = []
        for key, value in special_tokens_dict.items():
            if key == "additional_special_tokens":
                if not isinstance(value, (list, tuple)):
                    raise TypeError(f"additional_special_tokens must be a list of str, got {type(value).__name__}")
                tokens = [_as_special_token(v, key) for v in value]
                contents = [t.content for t in tokens]
                if replace_additional_special_tokens:
                    self._additional_special_tokens = contents
                else:
                    self._additional_special_tokens += [c for c in contents if c not in self._additional_special_tokens]
                to_add += tokens
            elif key in SPECIAL_TOKEN_NAMES:
                token = _as_special_token(value, key)
                self._special_tokens[key] = token.content
                to_add.append(token)
            else:
                raise ValueError(
                    f"{key!r} is not a special token role; use one of {SPECIAL_TOKEN_NAMES} "
                    "or 'additional_special_tokens' (or add_tokens for plain new words)"
                )
        self._vocab_changed()
        return self._backend.add_special_tokens(to_add)

    def add_tokens(
        self, new_tokens: str | AddedToken | Sequence[str | AddedToken], special_tokens: bool = False
    ) -> int:
        """Add words to the vocabulary, kept whole when encoding (e.g. the paper's `_start_`, `_delimiter_`,
        `_classify_`); returns how many are new. Resize the model's embeddings to `len(tok)` afterwards."""
        tokens = [new_tokens] if isinstance(new_tokens, (str, AddedToken)) else list(new_tokens)
        for i, token in enumerate(tokens):
            if not isinstance(token, (str, AddedToken)):
                raise TypeError(f"new_tokens[{i}] must be a str or tokenizers.AddedToken, got {type(token).__name__}")
        tokens = [t for t in tokens if _content(t)]  # transformers skips empty tokens (and counts them as not new)
        self._vocab_changed()
        if special_tokens:
            tokens = [_as_special_token(t, "new_tokens") for t in tokens]
            if self.original:  # the slow tokenizer also lists them as additional special tokens; the fast one does not
                self._additional_special_tokens += [
                    t.content for t in tokens if t.content not in self.all_special_tokens
                ]
            return self._backend.add_special_tokens(tokens)
        if self.original:  # as the slow tokenizer: lowercase normalized new words (do_lower_case), count the new ones
            tokens = [_lowercased(t) for t in tokens]
            new = {_content(t) for t in tokens if self._backend.token_to_id(_content(t)) is None}
            self._backend.add_tokens(tokens)
            return len(new)
        return self._backend.add_tokens(tokens)

    def convert_tokens_to_ids(self, tokens: str | Iterable[str]) -> int | list[int]:
        """Token string(s) to id(s); tokens outside the vocabulary give `unk_token_id`."""
        if isinstance(tokens, str):
            token_id = self._backend.token_to_id(tokens)
            return self.unk_token_id if token_id is None else token_id
        return [self.convert_tokens_to_ids(_check_str(t, f"tokens[{i}]")) for i, t in enumerate(tokens)]

    def convert_tokens_to_string(self, tokens: Sequence[str]) -> str:
        """Token strings -> text, each '</w>' a space (the fast tokenizer's decoder; with `original=True` the slow
        tokenizer's join, which also strips the ends)."""
        tokens = [_check_str(t, f"tokens[{i}]") for i, t in enumerate(tokens)]
        if self.original:
            return "".join(tokens).replace("</w>", " ").strip()
        return self._backend.decoder.decode(tokens)

    def convert_ids_to_tokens(self, ids: int | Iterable[int], skip_special_tokens: bool = False) -> str | list[str]:
        if isinstance(ids, (int, np.integer)):
            return self._backend.id_to_token(int(ids))
        special = set(self.all_special_ids) if skip_special_tokens else set()
        return [self._backend.id_to_token(i) for i in _as_id_list(ids, "ids") if i not in special]

    # ---- encoding -----------------------------------------------------------------------------------------

    def __call__(
        self,
        text: str | Sequence[str] | Sequence[tuple[str, str]],
        text_pair: str | Sequence[str] | None = None,
        *,
        add_special_tokens: bool = True,
        padding: bool | str = False,
        truncation: bool | str | None = None,
        max_length: int | None = None,
        pad_to_multiple_of: int | None = None,
        padding_side: str | None = None,
        return_tensors: str | None = None,
        return_token_type_ids: bool | None = None,
        return_attention_mask: bool | None = None,
        return_special_tokens_mask: bool = False,
        return_offsets_mapping: bool = False,
        return_length: bool = False,
        verbose: bool = True,
        stride: int = 0,
        is_split_into_words: bool = False,
        return_overflowing_tokens: bool = False,
        **unsupported: Any,
    ) -> BatchEncoding:
        """Encode one text or a batch, each optionally with a second text (`tok(a, b)`, `tok(list_a, list_b)` or
        `tok([(a, b), ...])`), as transformers' tokenizers do.

        Returns `input_ids` and `attention_mask` (1 = token, 0 = padding) as lists, or arrays [B, T] with
        `return_tensors="np"` / `"jax"` (a single text then gets B = 1); on request `token_type_ids` (0 for the
        first text, 1 for the second), `special_tokens_mask` (1 on padding only), `offset_mapping` [B, T, 2]
        (default pipeline only; a second text's offsets point into it) and `length` (after padding, as the fast
        tokenizer counts). GPT adds no special tokens, so a pair is the first text's ids then the second's and
        `add_special_tokens` changes nothing (with `original=True`, False together with `return_token_type_ids` is
        refused, as by the slow tokenizer). Padding goes on `padding_side` (default right: GPT's positions are
        absolute) and needs a pad token. A pair is truncated by `truncation`: "only_first", "only_second", or
        "longest_first" (True), which splits max_length as the `tokenizers` Rust truncation does (the fast
        tokenizer's) by default and as the slow tokenizer does with `original=True`; a text too short to cut is a
        ValueError (the slow tokenizer logs an error and leaves the pair uncut).

        Default pipeline, as transformers' fast tokenizer: `is_split_into_words=True` takes each text as a list of
        words (a batch as a list of those); `return_overflowing_tokens=True` with truncation gives every window of
        max_length tokens, each after the first repeating `stride` tokens of the one before, as rows of their own,
        and `overflow_to_sample_mapping` (each row's example). The result's alignment methods (`word_ids(i)`,
        `char_to_token`, ...) come from each row's `tokenizers.Encoding`, made on first use.
        """
        if unsupported:
            raise TypeError(
                f"OpenAIGPTTokenizer got unexpected arguments {sorted(unsupported)}; the options of transformers' "
                "tokenizer call it takes are in its signature"
            )
        if type(stride) is not int or stride < 0:
            raise ValueError(f"stride must be a non-negative int, got {stride!r}")
        firsts, seconds, batched = (_as_word_inputs if is_split_into_words else _as_inputs)(text, text_pair)
        if self.original and return_token_type_ids and not add_special_tokens:
            raise ValueError(  # as the slow tokenizer's prepare_for_model
                "return_token_type_ids=True with add_special_tokens=False is refused with original=True, as by "
                "transformers' slow tokenizer; leave add_special_tokens=True (GPT adds none anyway)"
            )
        if self.original and return_overflowing_tokens:
            raise ValueError(
                "return_overflowing_tokens is not available with original=True (transformers' slow tokenizer returns "
                "its overflow in another form); use the default pipeline for overflowing windows"
            )
        pad_to, max_length, strategy = self._padding_and_truncation(padding, truncation, max_length, pad_to_multiple_of)
        if max_length is not None and stride > max_length and not self.original:  # as the tokenizers library
            raise ValueError(f"stride={stride} is larger than max_length={max_length}: take a smaller stride")
        side = _check_choice("padding_side", self.padding_side if padding_side is None else padding_side, SIDES)
        cut_side = _check_choice("truncation_side", self.truncation_side, SIDES)
        if return_tensors not in (None, "np", "jax"):
            raise ValueError(f"return_tensors={return_tensors!r}: use None (lists), 'np' or 'jax'")
        inputs = [f if s is None else (f, s) for f, s in zip(firsts, seconds)]
        truncating = (max_length, strategy, stride, cut_side)
        asked = {
            "token_type_ids": return_token_type_ids,
            "special_tokens_mask": return_special_tokens_mask,
            "offset_mapping": return_offsets_mapping,
        }
        if self.original or not (is_split_into_words or return_overflowing_tokens):
            columns = self._columns(firsts, seconds, is_split_into_words, truncating, asked)
            rows = None
        else:  # overflow and pre-split words: the encodings' own columns
            rows = self._encode_aligned(inputs, is_split_into_words, truncating)
            if return_overflowing_tokens:
                mapping = [i for i, row in enumerate(rows) for _ in range(1 + len(row.overflowing))]
                rows = [r for row in rows for r in (row, *row.overflowing)]
            columns = {"input_ids": [r.ids for r in rows], "token_type_ids": [r.type_ids for r in rows]}
            columns["special_tokens_mask"] = [r.special_tokens_mask for r in rows]
            columns["offset_mapping"] = [r.offsets for r in rows]
            columns = {key: values for key, values in columns.items() if asked.get(key, True)}
        if verbose and max_length is None and not isinstance(pad_to, int):  # transformers: when no max_length resolved
            self._warn_if_too_long(columns["input_ids"])
        if pad_to is not None:
            length = max(map(len, columns["input_ids"]), default=0) if pad_to == "longest" else pad_to
            if pad_to_multiple_of and length % pad_to_multiple_of:
                length += pad_to_multiple_of - length % pad_to_multiple_of
        else:
            length = None
        with_mask = return_attention_mask is None or return_attention_mask
        pad = (length, side, self.pad_token_id, self.pad_token)
        if self.original:
            encodings = None
        elif rows is not None:
            encodings = _padded(rows, *pad)
        else:  # made when first asked for: the fast path has no alignment bookkeeping
            encodings = self._lazy_encodings(inputs, is_split_into_words, truncating, pad)
        out = self._assemble(columns, length, side, batched or return_overflowing_tokens, return_tensors, with_mask,
                             return_length)  # fmt: skip
        if return_overflowing_tokens:
            out["overflow_to_sample_mapping"] = _to_tensor(mapping, "", return_tensors) if return_tensors else mapping
        return BatchEncoding(out, encodings)

    def _columns(self, firsts, seconds, words: bool, truncating: tuple, asked: dict) -> dict[str, list]:
        """input_ids per example, and the `asked` of token_type_ids, special_tokens_mask and offset_mapping,
        truncated in Python as `tokenizers` (or, with original=True, the slow tokenizer) truncates."""
        max_length, strategy, stride, cut_side = truncating
        texts = firsts + [s for s in seconds if s is not None]
        ids, offsets = self._encode_many(texts, with_offsets=asked["offset_mapping"], words=words)
        encoded = list(zip(ids, offsets or [None] * len(ids)))  # per text: (ids, offsets or None)
        rest = iter(encoded[len(firsts) :])
        examples = [[first] if second is None else [first, next(rest)] for first, second in zip(encoded, seconds)]
        if max_length is not None:
            examples = [_truncate_sequences(e, max_length, strategy, cut_side, self.original, stride) for e in examples]
        columns = {"input_ids": [e[0][0] if len(e) == 1 else e[0][0] + e[1][0] for e in examples]}
        if asked["token_type_ids"]:
            columns["token_type_ids"] = [[0] * len(e[0][0]) + [1] * len(e[1][0] if e[1:] else []) for e in examples]
        if asked["special_tokens_mask"]:
            columns["special_tokens_mask"] = [[0] * len(row) for row in columns["input_ids"]]
        if asked["offset_mapping"]:
            columns["offset_mapping"] = [e[0][1] if len(e) == 1 else e[0][1] + e[1][1] for e in examples]
        return columns

    def _encode_aligned(self, inputs: list, words: bool, truncating: tuple) -> list:
        """tokenizers.Encoding per example (text, pair, or their word lists), truncated by the `tokenizers`
        library itself (overflowing windows of `stride` tokens in `.overflowing`), as transformers' fast
        tokenizer encodes; bad truncations are refused first, with our errors."""
        max_length, strategy, stride, cut_side = truncating
        if max_length is None:
            return self._backend.encode_batch(inputs, is_pretokenized=words)
        uncut = self._backend.encode_batch_fast(inputs, is_pretokenized=words)  # only to check the cut first
        lengths = [  # each text's, before the cut
            [e.sequence_ids.count(0), e.sequence_ids.count(1)] if isinstance(x, tuple) else [len(e.ids)]
            for e, x in zip(uncut, inputs)
        ]
        for n in lengths:
            _truncate_sequences([([0] * k, None) for k in n], max_length, strategy, cut_side, False, stride)
        with self._truncating_lock:
            backend = self._truncating_backend
            if backend is None:
                backend = self._truncating_backend = Tokenizer.from_str(self._backend.to_str())
            backend.enable_truncation(max_length, stride=stride, strategy=strategy, direction=cut_side)
            return backend.encode_batch(inputs, is_pretokenized=words)

    def _lazy_encodings(self, inputs: list, words: bool, truncating: tuple, pad: tuple) -> Callable[[], list]:
        """A function making this call's encodings later (or refusing, if tokens were added since)."""
        changes = self._changes

        def encodings() -> list:
            if self._changes != changes:
                raise ValueError(
                    "the tokenizer's added tokens or special tokens changed since these ids were made: encode the "
                    "texts again for their alignment"
                )
            return _padded(self._encode_aligned(inputs, words, truncating), *pad)

        return encodings

    def encode(self, text: str, text_pair: str | None = None, **kwargs: Any) -> list[int] | Any:
        """The ids of one text, or of a pair (the first text's ids then the second's); `**kwargs` as in `__call__`
        (with `is_split_into_words=True`, a text is a list of words)."""
        if not _one_example(text, kwargs.get("is_split_into_words", False)):
            raise TypeError(f"encode takes one str, got {type(text).__name__}; call the tokenizer on a list instead")
        return self(text, text_pair, **kwargs)["input_ids"]

    def encode_plus(self, text: str, text_pair: str | None = None, **kwargs: Any) -> BatchEncoding:
        """transformers' older name for `tok(text, text_pair, ...)` on one text."""
        if not _one_example(text, kwargs.get("is_split_into_words", False)):
            raise TypeError(f"encode_plus takes one str, got {type(text).__name__}; use batch_encode_plus for a list")
        return self(text, text_pair, **kwargs)

    def batch_encode_plus(
        self, batch_text_or_text_pairs: Sequence[str | tuple[str, str]], **kwargs: Any
    ) -> BatchEncoding:
        """transformers' older name for `tok([...])`: a list of texts or of (text, text_pair) tuples."""
        if not isinstance(batch_text_or_text_pairs, (list, tuple)):
            raise TypeError(
                "batch_encode_plus takes a list of str or of (text, text_pair) tuples, "
                f"got {type(batch_text_or_text_pairs).__name__}"
            )
        return self(list(batch_text_or_text_pairs), **kwargs)

    def pad(
        self,
        encoded_inputs: dict[str, Any] | Sequence[dict[str, Any]],
        padding: bool | str = True,
        max_length: int | None = None,
        pad_to_multiple_of: int | None = None,
        padding_side: str | None = None,
        return_attention_mask: bool | None = None,
        return_tensors: str | None = None,
    ) -> BatchEncoding:
        """Pad encodings made earlier (a collator's job), as transformers' `PreTrainedTokenizerBase.pad`.

        Takes one encoding or a batch as a dict (`tok(...)`'s output) or a list of dicts, with `input_ids` and
        optionally `attention_mask`, `token_type_ids`, `special_tokens_mask` (the keys it pads; others pass as they
        are). Padding options as in `__call__`; never truncates. Arrays in (np or jax) give arrays out unless
        `return_tensors` says otherwise. `return_attention_mask=False` only stops a mask being made: a given one
        is padded with the ids (transformers leaves it shorter than them).
        """
        if isinstance(encoded_inputs, (list, tuple)):
            if not encoded_inputs or not all(isinstance(e, Mapping) for e in encoded_inputs):
                raise ValueError("pad takes a dict of lists, or a non-empty list of dicts (one per example)")
            encoded_inputs = {key: [e[key] for e in encoded_inputs] for key in encoded_inputs[0]}
        if not isinstance(encoded_inputs, Mapping):
            raise TypeError(f"pad takes a dict (e.g. tok(...)'s output) or a list of dicts, got {type(encoded_inputs)}")
        if "input_ids" not in encoded_inputs:
            raise ValueError(f"pad needs input_ids among the keys, got {list(encoded_inputs)}")
        side = _check_choice("padding_side", self.padding_side if padding_side is None else padding_side, SIDES)
        if return_tensors not in (None, "np", "jax"):
            raise ValueError(f"return_tensors={return_tensors!r}: use None (lists), 'np' or 'jax'")
        if return_tensors is None:
            return_tensors = _tensor_type(encoded_inputs["input_ids"])
        columns = {key: _to_lists(value) for key, value in encoded_inputs.items()}
        if len(columns["input_ids"]) == 0:  # transformers: nothing to pad, returned as given
            if return_attention_mask:
                columns["attention_mask"] = []
            return BatchEncoding(columns)
        pad_to, _, _ = self._padding_and_truncation(padding, None, max_length, pad_to_multiple_of)
        batched = isinstance(columns["input_ids"][0], list)
        if not batched:
            columns = {key: [value] for key, value in columns.items()}
        if (return_attention_mask is None or return_attention_mask) and "attention_mask" not in columns:
            columns["attention_mask"] = [[1] * len(row) for row in columns["input_ids"]]
        lengths = [len(row) for row in columns["input_ids"]]
        if pad_to is not None:
            length = max(lengths) if pad_to == "longest" else pad_to
            if pad_to_multiple_of and length % pad_to_multiple_of:
                length += pad_to_multiple_of - length % pad_to_multiple_of
            for key in PADDED_BY_PAD:
                if key in columns:
                    columns[key] = [_pad(row, length, self._pad_value(key), side) for row in columns[key]]
        if not batched:
            columns = {key: value[0] for key, value in columns.items()}
        if return_tensors is None:
            return BatchEncoding(columns)
        return BatchEncoding({key: _to_tensor(value, key, return_tensors) for key, value in columns.items()})

    def tokenize(self, text: str) -> list[str]:
        """Token strings. (With `original=True`, characters outside the vocabulary show as `<unk>` where
        transformers' slow tokenizer shows the character; the ids agree.)"""
        _check_str(text, "text")
        if self.original:
            return [self._backend.id_to_token(i) for i in self._encode_original([text])[0]]
        return self._backend.encode(text).tokens

    def _padding_and_truncation(self, padding, truncation, max_length, pad_to_multiple_of):
        """(pad target: None | "longest" | length, truncation length or None, truncation strategy or None);
        transformers' `_get_padding_truncation_strategies` rules, warnings and errors included."""
        if max_length is not None and (type(max_length) is not int or max_length < 0):
            raise ValueError(f"max_length must be a non-negative int, got {max_length!r}")
        if pad_to_multiple_of is not None and (type(pad_to_multiple_of) is not int or pad_to_multiple_of < 1):
            raise ValueError(f"pad_to_multiple_of must be a positive int, got {pad_to_multiple_of!r}")
        if max_length is not None and padding is False and truncation is None:
            warnings.warn(
                "max_length without truncation: truncating with 'longest_first', as transformers does; pass "
                "truncation=True (or a strategy such as 'only_first' for pairs) to say so",
                stacklevel=3,
            )
            truncation = True  # transformers: a bare max_length turns truncation on
        if padding is True:
            if max_length is not None and truncation in (None, False, "do_not_truncate"):
                warnings.warn(
                    "max_length is ignored when padding=True and there is no truncation; "
                    "use padding='max_length' to pad to it",
                    stacklevel=3,
                )
            padding = "longest"
        elif padding is False:
            padding = "do_not_pad"
        padding = _check_choice("padding", padding, PADDING_STRATEGIES)
        if truncation is True:
            truncation = "longest_first"
        elif truncation in (None, False):
            truncation = "do_not_truncate"
        strategy = _check_choice("truncation", truncation, TRUNCATION_STRATEGIES)
        truncate = strategy != "do_not_truncate"
        if max_length is None and self._max_length_limit is not None and (padding == "max_length" or truncate):
            max_length = self._max_length_limit
        if max_length is None and padding == "max_length":
            warnings.warn("padding='max_length' without max_length, and no model_max_length: no padding", stacklevel=3)
            padding = "do_not_pad"
        if max_length is None and truncate:
            warnings.warn("truncation without max_length, and no model_max_length: no truncation", stacklevel=3)
            truncate = False
        if padding != "do_not_pad" and self.pad_token is None:
            raise ValueError(
                "asked to pad, but this tokenizer has no pad token (GPT has none by default). Set one with "
                "`tok.add_special_tokens({'pad_token': '<pad>'})` and resize the model's embeddings to len(tok), "
                "or reuse a token: `tok.pad_token = tok.unk_token`"
            )
        if truncate and padding != "do_not_pad" and pad_to_multiple_of and max_length % pad_to_multiple_of:
            raise ValueError(
                f"truncation length ({max_length}) is not a multiple of pad_to_multiple_of ({pad_to_multiple_of})"
            )
        pad_to = {"do_not_pad": None, "longest": "longest", "max_length": max_length}[padding]
        return pad_to, (max_length if truncate else None), (strategy if truncate else None)

    def _warn_if_too_long(self, rows: list[list[int]]) -> None:
        """transformers' warning (once per tokenizer) for an untruncated row longer than model_max_length."""
        limit = self._max_length_limit
        longest = max(map(len, rows), default=0)
        if limit is None or longest <= limit or getattr(self, "_warned_too_long", False):
            return
        self._warned_too_long = True
        warnings.warn(
            f"Token indices sequence length is longer than the specified maximum sequence length for this model "
            f"({longest} > {limit}). Running this sequence through the model will result in indexing errors",
            stacklevel=3,
        )

    def _encode_many(self, texts: list, with_offsets: bool, words: bool = False):
        """(ids per text, offsets per text or None), before truncation and padding. With `words` (original=True
        only), each text is a list of words, encoded one by one as the slow tokenizer does."""
        if self.original:
            if with_offsets:
                raise ValueError(
                    "return_offsets_mapping is not available with original=True: ftfy and "
                    "text_standardize rewrite the text, so tokens have no offsets into it"
                )
            if not words:
                return self._encode_original(texts), None
            encoded = iter(self._encode_original([w for ws in texts for w in ws]))
            return [[i for _ in ws for i in next(encoded)] for ws in texts], None
        if len(texts) == 1:
            encodings = [self._backend.encode(texts[0])]
        elif with_offsets:
            encodings = self._backend.encode_batch(texts)  # parallel in Rust
        else:
            encodings = self._backend.encode_batch_fast(texts)  # parallel, and skips the offset bookkeeping
        ids = [e.ids for e in encodings]
        return ids, ([e.offsets for e in encodings] if with_offsets else None)

    def _encode_original(self, texts: list[str]) -> list[list[int]]:
        """transformers' slow `tokenize` with spacy + ftfy: lowercase outside special tokens, split on added
        tokens, then for each piece of text the paper's words and their BPE (one parallel batch for all)."""
        split = self._added_token_splitter or self._build_added_token_splitter()
        pieces = [split(text) for text in texts]  # per text: [(text, None) | (token, id), ...]
        chunks = [piece for text_pieces in pieces for piece, token_id in text_pieces if token_id is None]
        words = [
            [_NEWLINE_WORD if w == _SPACY_NEWLINE_WORD else w for w in ws] for ws in self._word_splitter.many(chunks)
        ]
        encoded = iter(self._word_bpe.encode_batch([ws for ws in words if ws], is_pretokenized=True))
        chunk_ids = iter([next(encoded).ids if ws else [] for ws in words])
        return [
            [i for piece, token_id in text_pieces for i in ([token_id] if token_id is not None else next(chunk_ids))]
            for text_pieces in pieces
        ]

    def _build_added_token_splitter(self):
        """A function text -> [(piece, None) | (added token, id)], as transformers' slow `tokenize` splits."""
        added = self.added_tokens_decoder
        # The slow tokenizer lowercases the text except the special tokens (those holding a role now: a token once
        # special, since replaced, is lowercased like text) and non-special normalized added tokens, in their
        # casing (PreTrainedTokenizer.tokenize, do_lower_case). Its add_tokens lowercases normalized new words
        # (ours too, with original=True), so those match in any casing; one restored from a save keeps its casing
        # and matches only that, as in the slow tokenizer.
        protected = {t.content for t in added.values() if not t.special and t.normalized} | set(self.all_special_tokens)
        by_match = {t.content: (i, t) for i, t in added.items()}
        protect_re, added_re = _alternation(protected), _alternation(by_match)

        def split(text: str) -> list[tuple[str, int | None]]:
            if protect_re is None:
                text = lowercase_characters(text)
            else:
                parts = protect_re.split(text)  # odd indices: special tokens, left as they are
                text = "".join(p if k % 2 else lowercase_characters(p) for k, p in enumerate(parts))
            parts = [p for p in added_re.split(text) if p] if added_re is not None else [text]
            # As the slow tokenize does, in order: lstrip / rstrip eat whitespace beside an added token, and a
            # single_word one touching a word joins that word as text.
            for i, part in enumerate(parts):
                if part not in by_match:
                    continue
                token = by_match[part][1]
                left, right = (parts[i - 1] if i > 0 else None), (parts[i + 1] if i + 1 < len(parts) else None)
                if token.rstrip and right:
                    parts[i + 1] = right.lstrip()
                if token.lstrip and left:
                    parts[i - 1] = left.rstrip()
                if token.single_word and left and left[-1] != " ":
                    parts[i - 1], parts[i] = parts[i - 1] + part, ""
                elif token.single_word and right and right[0] != " ":
                    parts[i + 1], parts[i] = part + parts[i + 1], ""
            return [(p, by_match[p][0] if p in by_match else None) for p in parts if p]

        self._added_token_splitter = split
        return split

    def _assemble(self, columns, length, side, batched, return_tensors, return_attention_mask, return_length):
        """Pad `columns` (rows per output key, input_ids first) to `length` (None: no padding) on `side`, add
        attention_mask and length: lists, or arrays [B, T] ([B, T, 2] for offsets); keys in the fast tokenizer's
        order."""
        if return_tensors is not None:
            arrays = self._as_arrays(columns, length, side, return_attention_mask, return_length)
            if return_tensors == "jax":
                import jax.numpy as jnp

                arrays = {k: jnp.asarray(v) for k, v in arrays.items()}
            return BatchEncoding({k: arrays[k] for k in OUTPUT_KEYS if k in arrays})
        if return_attention_mask:
            columns["attention_mask"] = [[1] * len(row) for row in columns["input_ids"]]
        if length is not None:
            columns = {
                key: [_pad(row, length, self._pad_value(key), side) for row in rows] for key, rows in columns.items()
            }
        if return_length:
            columns["length"] = [len(row) for row in columns["input_ids"]]
        out = {k: columns[k] for k in OUTPUT_KEYS if k in columns}
        # The fast tokenizer unbatches every key but `length`, which stays a list of one.
        return BatchEncoding(out if batched else {k: v if k == "length" else v[0] for k, v in out.items()})

    def _pad_value(self, key: str) -> Any:
        return self.pad_token_id if key == "input_ids" else PAD_VALUES[key]

    def _as_arrays(self, columns, length, side, return_attention_mask, return_length) -> dict[str, np.ndarray]:
        """One scatter per key of all its values into a [B, T] array, not one list per row (the batch fast path)."""
        ids = columns["input_ids"]
        lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
        padded = lengths if length is None else np.maximum(lengths, length)  # padding never shortens a row
        width = int(padded.max(initial=length or 0))
        if int(padded.min(initial=width)) != width:
            raise ValueError(
                f"return_tensors needs equal lengths, got lengths from {padded.min()} to {width}"
                + (f" after padding to {length}" if length is not None else "")
                + ": pass padding=True (and truncation=True for long texts)"
            )
        positions = np.arange(width)
        if side == "right":
            is_token = positions < lengths[:, None]  # [B, T]
        else:
            is_token = positions >= (width - lengths)[:, None]
        count = int(lengths.sum())
        arrays = {}
        for key, rows in columns.items():
            flat = itertools.chain.from_iterable(rows)
            if key == "offset_mapping":
                values = np.fromiter(itertools.chain.from_iterable(flat), np.int64, count=2 * count).reshape(-1, 2)
            else:
                values = np.fromiter(flat, dtype=np.int64, count=count)
            fill = self._pad_value(key) if length is not None else 0
            arrays[key] = np.full((len(ids), width, *values.shape[1:]), fill, dtype=np.int64)
            arrays[key][is_token] = values
        if return_attention_mask:
            arrays["attention_mask"] = is_token.astype(np.int64)
        if return_length:
            arrays["length"] = np.full(len(ids), width, dtype=np.int64)
        return arrays

    # ---- decoding -----------------------------------------------------------------------------------------

    def decode(
        self,
        token_ids: int | Sequence[int] | np.ndarray,
        skip_special_tokens: bool = False,
        clean_up_tokenization_spaces: bool | None = None,
    ) -> str:
        """Ids -> text: tokens joined, each '</w>' a space (lowercased, as GPT sees text)."""
        ids = [int(token_ids)] if _is_int_scalar(token_ids) else _as_id_list(token_ids, "token_ids")
        text = self._backend.decode(ids, skip_special_tokens=skip_special_tokens)
        return self._clean_up(text, clean_up_tokenization_spaces)

    def batch_decode(
        self,
        sequences: Sequence[Sequence[int]] | np.ndarray,
        skip_special_tokens: bool = False,
        clean_up_tokenization_spaces: bool | None = None,
    ) -> list[str]:
        """`decode` for each row of `sequences` [B, T], in parallel."""
        if isinstance(sequences, str) or not hasattr(sequences, "__iter__"):
            raise TypeError(f"sequences must be a list of id lists or a 2-D array, got {type(sequences).__name__}")
        rows = [_as_id_list(row, f"sequences[{i}]") for i, row in enumerate(sequences)]
        texts = self._backend.decode_batch(rows, skip_special_tokens=skip_special_tokens)
        return [self._clean_up(text, clean_up_tokenization_spaces) for text in texts]

    def _clean_up(self, text: str, clean_up: bool | None) -> str:
        clean_up = self.clean_up_tokenization_spaces if clean_up is None else clean_up
        return clean_up_tokenization(text) if clean_up else text

    def __repr__(self) -> str:
        return (
            f"OpenAIGPTTokenizer(vocab_size={self.vocab_size}, len={len(self)}, original={self.original}, "
            f"model_max_length={self.model_max_length}, padding_side={self.padding_side!r}, "
            f"special_tokens={ {k: v for k, v in self._special_tokens.items() if v is not None} })"
        )


def _special_token_properties(name: str):
    def get_token(self) -> str | None:
        return self._special_tokens[name]

    def set_token(self, value: str | AddedToken | None) -> None:
        """Name a token for the role without adding it to the vocabulary (as transformers does): an absent one
        maps to unk_token_id. Use add_special_tokens to add it."""
        self._special_tokens[name] = None if value is None else _as_special_token(value, name).content
        self._vocab_changed()

    def get_id(self) -> int | None:
        token = self._special_tokens[name]
        return None if token is None else self.convert_tokens_to_ids(token)

    def set_id(self, value: int | None) -> None:
        if value is not None and self._backend.id_to_token(value) is None:
            raise ValueError(f"{name}_id={value} is not an id of this vocabulary (size {len(self)})")
        set_token(self, None if value is None else self._backend.id_to_token(value))

    return property(get_token, set_token), property(get_id, set_id)


for _name in SPECIAL_TOKEN_NAMES:
    _token_property, _id_property = _special_token_properties(_name)
    setattr(OpenAIGPTTokenizer, _name, _token_property)
    setattr(OpenAIGPTTokenizer, _name + "_id", _id_property)
del _name, _token_property, _id_property


def _truncate(row: list, max_length: int, side: str) -> list:
    if len(row) <= max_length:
        return row
    return row[:max_length] if side == "right" else row[len(row) - max_length :]


def _pad(row: list, length: int, value: Any, side: str) -> list:
    if len(row) >= length:
        return row
    padding = [value] * (length - len(row))
    return row + padding if side == "right" else padding + row


def _alternation(strings: Iterable[str]) -> re.Pattern | None:
    """A capturing regex matching any of `strings`, longest first (transformers' Trie.split: longest match)."""
    strings = sorted({s for s in strings if s}, key=len, reverse=True)
    return re.compile("(" + "|".join(map(re.escape, strings)) + ")") if strings else None


def _truncate_sequences(seqs: list, max_length: int, strategy: str, side: str, original: bool, stride: int = 0) -> list:
    cut = _cut_sequences(seqs, max_length, strategy, side, original)
    for (ids, _), (kept, _) in zip(seqs, cut):
        if not original and 0 < len(kept) < len(ids) and stride >= len(kept):  # tokenizers would panic
            raise ValueError(
                f"stride={stride} must be less than the {len(kept)} tokens a text is cut to (max_length={max_length}"
                + (", shared by a pair" if len(seqs) == 2 else "")
                + "): take a smaller stride or a larger max_length"
            )
    return cut


def _cut_sequences(seqs: list, max_length: int, strategy: str, side: str, original: bool) -> list:
    """Cut one text or a pair, `seqs` = [(ids, offsets or None), ...], to `max_length` tokens together.

    Default: the fast tokenizer's, i.e. `tokenizers`' Rust `truncate_encodings` (utils/truncation.rs): max_length 0
    empties both; longest_first keeps the shorter text whole if the longer can take the whole cut, else gives the
    shorter max_length // 2 (the first, if equal) and the longer the rest, so two 3-token texts cut to 5 keep 2 + 3.
    original=True: the slow tokenizer's `truncate_sequences` (tokenization_utils_base.py): max_length 0 cuts
    nothing; longest_first removes from the longer text until they are equal, then from both, the odd token from
    the second, so the same pair keeps 3 + 2. In both, "only_first" / "only_second" must leave the text they cut at
    least one token; where transformers fails (fast) or logs an error and cuts nothing (slow), we raise."""
    if max_length == 0 and not original:
        return [_cut(seq, 0, side) for seq in seqs]
    lengths = [len(ids) for ids, _ in seqs]
    to_remove = sum(lengths) - max_length
    if to_remove <= 0 or max_length == 0:
        return seqs
    if strategy == "longest_first" and len(seqs) == 1:
        return [_cut(seqs[0], max_length, side)]
    if strategy == "longest_first":
        n1, n2 = lengths
        if original:
            first_remove = min(abs(n2 - n1), to_remove)
            half = (to_remove - first_remove) // 2
            rest = to_remove - first_remove - half
            keep = (n1 - first_remove - half, n2 - rest) if n1 > n2 else (n1 - half, n2 - first_remove - rest)
        else:
            short, long = min(n1, n2), max(n1, n2)
            long = short if short > max_length else max(short, max_length - short)
            if short + long > max_length:
                short, long = max_length // 2, max_length // 2 + max_length % 2
            keep = (long, short) if n1 > n2 else (short, long)
        return [_cut(seq, k, side) for seq, k in zip(seqs, keep)]
    which = 0 if strategy == "only_first" else 1
    name = ("first", "second")[which]
    if which >= len(seqs):
        raise ValueError(
            f"truncation='only_second' needs a text pair, but got one text of {lengths[0]} tokens "
            f"(max_length={max_length}); use truncation='only_first' or 'longest_first'"
        )
    if lengths[which] <= to_remove:
        raise ValueError(
            f"truncation={strategy!r} must remove {to_remove} tokens to reach max_length={max_length}, but the {name} "
            f"text has only {lengths[which]}; use truncation='longest_first' or "
            f"'{'only_second' if which == 0 else 'only_first'}', or a larger max_length"
        )
    seqs = list(seqs)
    seqs[which] = _cut(seqs[which], lengths[which] - to_remove, side)
    return seqs


def _cut(seq: tuple, keep: int, side: str) -> tuple:
    ids, offsets = seq
    return _truncate(ids, keep, side), (offsets if offsets is None else _truncate(offsets, keep, side))


def _as_inputs(text: Any, text_pair: Any) -> tuple[list[str], list[str | None], bool]:
    """(first texts, second text or None for each, batched) from the forms transformers' `__call__` takes: a text,
    a text and text_pair, a list, two lists of equal length, or a list of str and (text, text_pair) tuples."""
    if isinstance(text, str):
        if text_pair is not None and not isinstance(text_pair, str):
            raise TypeError(f"text_pair must be a str when text is one, got {type(text_pair).__name__}")
        return [text], [text_pair or None], False  # an empty text_pair is none, as transformers' _encode_plus has it
    if not isinstance(text, (list, tuple)):
        raise TypeError(f"text must be a str or a list of str, got {type(text).__name__}")
    if text_pair is not None:
        if not isinstance(text_pair, (list, tuple)):
            raise TypeError(f"text_pair must be a list of str when text is a list, got {type(text_pair).__name__}")
        if len(text_pair) != len(text):
            raise ValueError(f"text has {len(text)} texts but text_pair has {len(text_pair)}; they pair one to one")
        firsts = [_check_str(t, f"text[{i}]") for i, t in enumerate(text)]
        return firsts, [_check_str(t, f"text_pair[{i}]") for i, t in enumerate(text_pair)], True
    firsts, seconds = [], []
    for i, item in enumerate(text):
        if isinstance(item, (list, tuple)):
            if len(item) != 2:
                raise TypeError(f"text[{i}] must be a str or a (text, text_pair) pair, got {len(item)} items")
            firsts.append(_check_str(item[0], f"text[{i}][0]"))
            seconds.append(_check_str(item[1], f"text[{i}][1]"))
        else:
            firsts.append(_check_str(item, f"text[{i}]"))
            seconds.append(None)
    return firsts, seconds, True


def _one_example(text: Any, words: bool) -> bool:
    """One text: a str, or with `words` a list of words (not a batch of those)."""
    if isinstance(text, str):
        return True
    return bool(words) and isinstance(text, (list, tuple)) and not (text and isinstance(text[0], (list, tuple)))


def _as_word_inputs(text: Any, text_pair: Any) -> tuple[list[list[str]], list[list[str] | None], bool]:
    """As `_as_inputs`, for is_split_into_words=True: an example is a list of words, a batch a list of those (or
    of (words, pair words) tuples), and text_pair the same shape, as transformers tells them apart."""

    def words(value: Any, what: str) -> list[str]:
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"{what} must be a list of words (str) with is_split_into_words=True, got "
                            f"{type(value).__name__}")  # fmt: skip
        return [_check_str(word, f"{what}[{i}]") for i, word in enumerate(value)]

    if not (isinstance(text, (list, tuple)) and text and isinstance(text[0], (list, tuple))):
        second = None if not text_pair else words(text_pair, "text_pair")  # empty: none, as for a text
        return [words(text, "text")], [second], False
    if text_pair is None:
        firsts, seconds = [], []
        for i, item in enumerate(text):
            is_pair = isinstance(item, tuple) and len(item) == 2 and all(isinstance(x, (list, tuple)) for x in item)
            firsts.append(words(item[0] if is_pair else item, f"text[{i}]" + ("[0]" if is_pair else "")))
            seconds.append(words(item[1], f"text[{i}][1]") if is_pair else None)
        return firsts, seconds, True
    if not isinstance(text_pair, (list, tuple)) or len(text_pair) != len(text):
        raise ValueError(
            f"text is a batch of {len(text)} word lists, so text_pair must be one too, got "
            + (f"{len(text_pair)}" if isinstance(text_pair, (list, tuple)) else type(text_pair).__name__)
        )
    firsts = [words(t, f"text[{i}]") for i, t in enumerate(text)]
    return firsts, [words(t, f"text_pair[{i}]") for i, t in enumerate(text_pair)], True


def _padded(encodings: list, length: int | None, side: str, pad_id: int | None, pad_token: str | None) -> list:
    """tokenizers.Encodings padded in place to `length` (None: as they are), as `tok(...)` padded the ids."""
    if length is not None:
        for encoding in encodings:
            encoding.pad(length, direction=side, pad_id=pad_id, pad_type_id=0, pad_token=pad_token)
    return encodings


def _tensor_type(input_ids: Any) -> str | None:
    """The return_tensors that `pad` infers from its input, as transformers does: arrays in, arrays out."""
    first = input_ids
    while isinstance(first, (list, tuple)) and first:
        first = next((row for row in first if not isinstance(row, (list, tuple)) or row), first[0])
    if isinstance(first, (np.ndarray, np.generic)):
        return "np"
    return "jax" if type(first).__module__.startswith("jax") else None


def _to_lists(value: Any) -> Any:
    """Arrays (np, jax), and lists of them, as nested lists of Python numbers."""
    if isinstance(value, (list, tuple)):
        return type(value)(_to_lists(v) for v in value)  # offsets stay (start, end) tuples
    return np.asarray(value).tolist() if hasattr(value, "__array__") else value


def _to_tensor(rows: Any, key: str, return_tensors: str) -> Any:
    try:
        array = np.asarray(rows, dtype=np.int64)
    except ValueError:
        if key not in PADDED_BY_PAD and return_tensors == "np":  # `pad` leaves offsets as they are: transformers
            ragged = np.empty(len(rows), dtype=object)  # then gives one array per row, in an object array
            ragged[:] = [np.asarray(r, dtype=np.int64) for r in rows]
            return ragged
        advice = "pad them (padding=True)" if key in PADDED_BY_PAD else "use return_tensors='np' or None"
        raise ValueError(f"return_tensors needs equal lengths, but the rows of {key!r} differ: {advice}") from None
    if return_tensors == "jax":
        import jax.numpy as jnp

        return jnp.asarray(array)
    return array


def _check_str(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, got {type(value).__name__}")
    return value


def _is_int_scalar(value: Any) -> bool:
    """A Python or numpy int, or a 0-d integer array or tensor (`tok.decode(next_token[0])`)."""
    if isinstance(value, (int, np.integer)):
        return True
    return hasattr(value, "shape") and len(value.shape) == 0 and np.issubdtype(np.asarray(value).dtype, np.integer)


def _as_id_list(ids: Any, what: str) -> list[int]:
    if isinstance(ids, str) or not hasattr(ids, "__iter__"):
        raise TypeError(f"{what} must be a sequence of int ids, got {type(ids).__name__}")
    array = np.asarray(ids)
    if array.ndim != 1 or (array.size and not np.issubdtype(array.dtype, np.integer)):
        raise TypeError(f"{what} must be a 1-D sequence of int ids, got shape {array.shape} of {array.dtype}")
    return array.astype(np.int64).tolist()


def _content(token: str | AddedToken) -> str:
    return token.content if isinstance(token, AddedToken) else token


def _lowercased(token: str | AddedToken) -> str | AddedToken:
    if isinstance(token, str):
        return lowercase_characters(token)
    if not token.normalized:
        return token
    content = lowercase_characters(token.content)
    return AddedToken(content, single_word=token.single_word, lstrip=token.lstrip, rstrip=token.rstrip, normalized=True)


def _as_special_token(value: Any, role: str) -> AddedToken:
    """transformers' default for a str special token: kept whole, not normalized, nothing stripped.

    An AddedToken goes to the backend as given: adding it as special makes it special, and it stays
    unnormalized unless its `normalized` was set (its `normalized` reads True until then, so a copy
    would turn it on)."""
    if isinstance(value, AddedToken):
        return value
    if isinstance(value, str) and value:
        return AddedToken(value, normalized=False, special=True)
    raise TypeError(f"{role} must be a non-empty str or tokenizers.AddedToken, got {value!r}")


def _check_choice(what: str, value: Any, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"{what}={value!r}; choose one of {list(choices)}")
    return value
