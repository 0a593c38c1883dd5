"""The paper's pre-BPE text pipeline (ftfy, OpenAI's text standardisation, spaCy), for `original=True`.

This is what the released GPT weights were trained with, and what transformers' slow
`OpenAIGPTTokenizer._tokenize` runs when spacy and ftfy are installed
(transformers/models/openai/tokenization_openai.py): `ftfy.fix_text`, `text_standardize`, the blank
spaCy English tokenizer, then each token lowercased. Only the word splitting lives here; the BPE on
the words runs in `tokenizers` (see `gpt_flax.tokenizer`). spacy and ftfy are the optional extra
`gpt-flax[original]`, imported only when this pipeline is built.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# transformers' text_standardize, from OpenAI's finetune-transformer-lm text_utils.py.
_PUNCTUATION_RUN = re.compile(r"""(-+|~+|!+|"+|;+|\?+|\++|,+|\)+|\(+|\\+|\/+|\*+|\[+|\]+|}+|{+|\|+|_+)""")
_NEWLINE_RUN = re.compile(r"\s*\n\s*")
_NON_NEWLINE_SPACE_RUN = re.compile(r"[^\S\n]+")
_CHARACTER_FIXES = (("—", "-"), ("–", "-"), ("―", "-"), ("…", "..."), ("´", "'"))

# The only context-sensitive lowercasing Python does (Unicode SpecialCasing Final_Sigma).
_CAPITAL_SIGMA = "Σ"


def text_standardize(text: str) -> str:
    """Dashes to '-', '…' to '...', spaces around punctuation runs, one ' \\n ' per newline run, one space per
    other whitespace run, stripped. Fixes issues spaCy had on BooksCorpus (OpenAI's comment)."""
    for old, new in _CHARACTER_FIXES:
        text = text.replace(old, new)
    text = _PUNCTUATION_RUN.sub(r" \1 ", text)
    text = _NEWLINE_RUN.sub(" \n ", text)
    text = _NON_NEWLINE_SPACE_RUN.sub(" ", text)
    return text.strip()


def lowercase_characters(text: str) -> str:
    """Lowercase one character at a time, as transformers' slow `PreTrainedTokenizer.tokenize` does (its regex
    `(.+?)` lowercases each character alone), so a final 'Σ' becomes 'σ', not the word-final 'ς' of `str.lower`."""
    if _CAPITAL_SIGMA not in text:
        return text.lower()
    return "".join(char.lower() for char in text)


class OriginalWordSplitter:
    """ftfy + `text_standardize` + spaCy's blank English tokenizer + lowercase: text -> the words BPE sees."""

    def __init__(self):
        missing = [name for name in ("ftfy", "spacy") if not _importable(name)]
        if missing:
            raise ImportError(
                f"OpenAIGPTTokenizer(original=True) needs spacy and ftfy; missing: {', '.join(missing)}. "
                "Install them with `pip install 'gpt-flax[original]'` (or `pip install spacy ftfy`), "
                "or use the default original=False (transformers' fast tokenizer pipeline)."
            )
        import ftfy
        from spacy.lang.en import English

        self._fix_text = ftfy.fix_text
        self._spacy_tokenizer = English().tokenizer  # blank model: rules only, nothing to download

    def __call__(self, text: str) -> list[str]:
        """Words of one already-lowercased chunk of text (no added tokens inside)."""
        return [token.text.lower() for token in self._spacy_tokenizer(self._standardized(text))]

    def many(self, texts: Iterable[str]) -> list[list[str]]:
        docs = self._spacy_tokenizer.pipe(self._standardized(text) for text in texts)
        return [[token.text.lower() for token in doc] for doc in docs]

    def _standardized(self, text: str) -> str:
        return text_standardize(self._fix_text(text))


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None
