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
"""

from __future__ import annotations

import itertools
import json
import os
import re
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

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

# transformers' tokenization_utils_base: a model_max_length above LARGE_INTEGER means "no maximum".
LARGE_INTEGER = int(1e20)
PADDING_STRATEGIES = ("longest", "max_length", "do_not_pad")
TRUNCATION_STRATEGIES = ("longest_first", "only_first", "do_not_truncate")
SIDES = ("right", "left")
# spaCy makes the whitespace run " \n " that text_standardize leaves into the word "\n ", whose slow BPE string
# "\n  </w>" transformers rewrites to "\n</w>" (tokenization_openai.py, OpenAIGPTTokenizer.bpe).
_SPACY_NEWLINE_WORD, _NEWLINE_WORD = "\n ", "\n"


class BatchEncoding(dict):
    """The dict `tok(...)` returns (`input_ids`, `attention_mask`, ...), its keys also readable as attributes."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


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
        padding_side: str = "right",
        truncation_side: str = "right",
        clean_up_tokenization_spaces: bool = False,
        additional_special_tokens: Sequence[str | AddedToken] = (),
        added_tokens_decoder: dict[int, AddedToken] | None = None,
        **special_tokens: str | AddedToken | None,
    ):
        unknown = set(special_tokens) - set(SPECIAL_TOKEN_NAMES)
        if unknown:
            raise TypeError(f"unexpected arguments {sorted(unknown)}; special tokens are {SPECIAL_TOKEN_NAMES}")
        if tokenizer_file is not None:
            require_file(tokenizer_file, "tokenizer file")
            self._backend = load_backend(tokenizer_file)
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
        self.model_max_length = (
            None if model_max_length is None or model_max_length > LARGE_INTEGER else model_max_length
        )
        self.padding_side = _check_choice("padding_side", padding_side, SIDES)
        self.truncation_side = _check_choice("truncation_side", truncation_side, SIDES)
        self.clean_up_tokenization_spaces = clean_up_tokenization_spaces
        self._special_tokens: dict[str, str | None] = dict.fromkeys(SPECIAL_TOKEN_NAMES)
        self._additional_special_tokens: list[str] = []
        self._added_token_splitter = None
        for token_id, token in sorted((added_tokens_decoder or {}).items()):
            self._restore_added_token(token, token_id)
        self.add_special_tokens({"unk_token": unk_token, **{k: v for k, v in special_tokens.items() if v is not None}})
        if additional_special_tokens:
            self.add_special_tokens({"additional_special_tokens": list(additional_special_tokens)})
        if original:
            self._word_splitter = OriginalWordSplitter()  # raises ImportError naming spacy/ftfy when missing
            self._word_bpe = Tokenizer(self._backend.model)  # no normalizer, no pre-tokenizer, no added tokens

    @property
    def original(self) -> bool:
        """True: the paper's pipeline (transformers' slow tokenizer with spacy + ftfy); fixed at construction."""
        return self._original

    # ---- loading and saving -------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(
        cls,
        path_or_hub_id: str | os.PathLike,
        *,
        original: bool = False,
        revision: str | None = None,
        cache_dir: str | None = None,
        **kwargs: Any,
    ) -> OpenAIGPTTokenizer:
        """Load from a directory or Hub repo: tokenizer.json if there, else vocab.json + merges.txt, plus
        tokenizer_config.json / special_tokens_map.json / added_tokens.json when present. `kwargs` override them."""

        def find(filename, required=False):
            return hub.resolve_file(path_or_hub_id, filename, required=required, revision=revision, cache_dir=cache_dir)

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
        return cls(**files, original=original, added_tokens_decoder=added, **{**options, **kwargs})

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
        tokenizer_path = os.path.join(save_directory, TOKENIZER_FILE)
        self._backend.save(tokenizer_path)
        vocab_path, merges_path = self._backend.model.save(str(save_directory))
        special_map = {k: v for k, v in self._special_tokens.items() if v is not None}
        if self._additional_special_tokens:
            special_map["additional_special_tokens"] = list(self._additional_special_tokens)
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
        if self.model_max_length is not None:
            config["model_max_length"] = self.model_max_length
        paths = [tokenizer_path, vocab_path, merges_path]
        for name, content in ((CONFIG_FILE, config), (SPECIAL_TOKENS_MAP_FILE, special_map)):
            paths.append(os.path.join(save_directory, name))
            with open(paths[-1], "w", encoding="utf-8") as f:
                json.dump(content, f, indent=2, ensure_ascii=False, sort_keys=True)
                f.write("\n")
        return tuple(paths)

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
    def additional_special_tokens(self) -> list[str]:
        return list(self._additional_special_tokens)

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
        self._added_token_splitter = None
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
        self._added_token_splitter = None
        if special_tokens:
            tokens = [_as_special_token(t, "new_tokens") for t in tokens]
            self._additional_special_tokens += [t.content for t in tokens if t.content not in self.all_special_tokens]
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

    def convert_ids_to_tokens(self, ids: int | Iterable[int], skip_special_tokens: bool = False) -> str | list[str]:
        if isinstance(ids, (int, np.integer)):
            return self._backend.id_to_token(int(ids))
        special = set(self.all_special_ids) if skip_special_tokens else set()
        return [self._backend.id_to_token(i) for i in _as_id_list(ids, "ids") if i not in special]

    # ---- encoding -----------------------------------------------------------------------------------------

    def __call__(
        self,
        text: str | Sequence[str],
        *,
        add_special_tokens: bool = True,
        padding: bool | str = False,
        truncation: bool | str | None = None,
        max_length: int | None = None,
        pad_to_multiple_of: int | None = None,
        padding_side: str | None = None,
        return_tensors: str | None = None,
        return_attention_mask: bool = True,
        return_offsets_mapping: bool = False,
    ) -> BatchEncoding:
        """Encode one text or a batch, as transformers' tokenizers do.

        Returns `input_ids` and `attention_mask` (1 = token, 0 = padding) as lists, or arrays [B, T] with
        `return_tensors="np"` / `"jax"` (a single text then gets B = 1); `offset_mapping` [B, T, 2] on request
        (default pipeline only). Padding goes on `padding_side` (default right: GPT's positions are absolute)
        and needs a pad token. GPT adds no special tokens, so `add_special_tokens` changes nothing.
        """
        texts, batched = _as_texts(text)
        pad_to, max_length = self._padding_and_truncation(padding, truncation, max_length, pad_to_multiple_of)
        side = _check_choice("padding_side", self.padding_side if padding_side is None else padding_side, SIDES)
        cut_side = _check_choice("truncation_side", self.truncation_side, SIDES)
        if return_tensors not in (None, "np", "jax"):
            raise ValueError(f"return_tensors={return_tensors!r}: use None (lists), 'np' or 'jax'")
        ids, offsets = self._encode_many(texts, with_offsets=return_offsets_mapping)
        if max_length is not None:
            ids = [_truncate(row, max_length, cut_side) for row in ids]
            offsets = offsets and [_truncate(row, max_length, cut_side) for row in offsets]
        if pad_to is not None:
            length = max((len(row) for row in ids), default=0) if pad_to == "longest" else pad_to
            if pad_to_multiple_of and length % pad_to_multiple_of:
                length += pad_to_multiple_of - length % pad_to_multiple_of
        else:
            length = None
        return self._assemble(ids, offsets, length, side, batched, return_tensors, return_attention_mask)

    def encode(self, text: str, **kwargs: Any) -> list[int] | Any:
        """The ids of one text (`**kwargs` as in `__call__`)."""
        if not isinstance(text, str):
            raise TypeError(f"encode takes one str, got {type(text).__name__}; call the tokenizer on a list instead")
        return self(text, **kwargs)["input_ids"]

    def tokenize(self, text: str) -> list[str]:
        """Token strings. (With `original=True`, characters outside the vocabulary show as `<unk>` where
        transformers' slow tokenizer shows the character; the ids agree.)"""
        _check_str(text, "text")
        if self.original:
            return [self._backend.id_to_token(i) for i in self._encode_original([text])[0]]
        return self._backend.encode(text).tokens

    def _padding_and_truncation(self, padding, truncation, max_length, pad_to_multiple_of):
        """(pad target: None | "longest" | length, truncation length or None); transformers'
        `_get_padding_truncation_strategies` rules, warnings and errors included."""
        if max_length is not None and (type(max_length) is not int or max_length < 0):
            raise ValueError(f"max_length must be a non-negative int, got {max_length!r}")
        if pad_to_multiple_of is not None and (type(pad_to_multiple_of) is not int or pad_to_multiple_of < 1):
            raise ValueError(f"pad_to_multiple_of must be a positive int, got {pad_to_multiple_of!r}")
        if max_length is not None and padding is False and truncation is None:
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
        truncate = truncation not in (None, False) and (
            truncation is True or _check_choice("truncation", truncation, TRUNCATION_STRATEGIES) != "do_not_truncate"
        )
        if max_length is None and self.model_max_length is not None and (padding == "max_length" or truncate):
            max_length = self.model_max_length
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
        return pad_to, (max_length if truncate else None)

    def _encode_many(self, texts: list[str], with_offsets: bool):
        """(ids per text, offsets per text or None), before truncation and padding."""
        if self.original:
            if with_offsets:
                raise ValueError(
                    "return_offsets_mapping is not available with original=True: ftfy and "
                    "text_standardize rewrite the text, so tokens have no offsets into it"
                )
            return self._encode_original(texts), None
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
        protected = {t.content for t in added.values() if t.special} | set(self.all_special_tokens)
        # The slow tokenizer lowercases non-special normalized added tokens when adding them (do_lower_case).
        by_match = {
            (t.content.lower() if t.normalized and not t.special else t.content): (i, t) for i, t in added.items()
        }
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

    def _assemble(self, ids, offsets, length, side, batched, return_tensors, return_attention_mask) -> BatchEncoding:
        """Pad to `length` (None: no padding) on `side`; lists, or arrays [B, T] ([B, T, 2] for offsets)."""
        if return_tensors is not None:
            arrays = self._as_arrays(ids, offsets, length, side, return_attention_mask)
            if return_tensors == "jax":
                import jax.numpy as jnp

                arrays = {k: jnp.asarray(v) for k, v in arrays.items()}
            return BatchEncoding(arrays)
        masks = [[1] * len(row) for row in ids] if return_attention_mask else None
        if length is not None:
            pad_id = self.pad_token_id
            ids = [_pad(row, length, pad_id, side) for row in ids]
            masks = masks and [_pad(row, length, 0, side) for row in masks]
            offsets = offsets and [_pad(row, length, (0, 0), side) for row in offsets]
        out = {"input_ids": ids, "attention_mask": masks, "offset_mapping": offsets}
        out = {k: v for k, v in out.items() if v is not None}
        return BatchEncoding(out if batched else {k: v[0] for k, v in out.items()})

    def _as_arrays(self, ids, offsets, length, side, return_attention_mask) -> dict[str, np.ndarray]:
        """One scatter of all the ids into a [B, T] array, not one list per row (the batch fast path)."""
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
        flat = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int64, count=int(lengths.sum()))
        input_ids = np.full((len(ids), width), self.pad_token_id if length is not None else 0, dtype=np.int64)
        input_ids[is_token] = flat
        arrays = {"input_ids": input_ids}
        if return_attention_mask:
            arrays["attention_mask"] = is_token.astype(np.int64)
        if offsets is not None:
            arrays["offset_mapping"] = np.zeros((len(ids), width, 2), dtype=np.int64)
            arrays["offset_mapping"][is_token] = np.asarray([o for row in offsets for o in row], np.int64).reshape(
                -1, 2
            )
        return arrays

    # ---- decoding -----------------------------------------------------------------------------------------

    def decode(
        self,
        token_ids: int | Sequence[int] | np.ndarray,
        skip_special_tokens: bool = False,
        clean_up_tokenization_spaces: bool | None = None,
    ) -> str:
        """Ids -> text: tokens joined, each '</w>' a space (lowercased, as GPT sees text)."""
        ids = [int(token_ids)] if isinstance(token_ids, (int, np.integer)) else _as_id_list(token_ids, "token_ids")
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
        self._added_token_splitter = None

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


def _as_texts(text: Any) -> tuple[list[str], bool]:
    if isinstance(text, str):
        return [text], False
    if isinstance(text, (list, tuple)):
        return [_check_str(t, f"text[{i}]") for i, t in enumerate(text)], True
    raise TypeError(f"text must be a str or a list of str, got {type(text).__name__}")


def _check_str(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, got {type(value).__name__}")
    return value


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
