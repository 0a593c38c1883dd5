"""Tokenizer throughput: our OpenAIGPTTokenizer against transformers' OpenAIGPTTokenizerFast, same files, one run.

    python benchmarks/tokenize.py                          # 10k generated sentences, the test vocabulary
    python benchmarks/tokenize.py --text-file corpus.txt   # or one sentence per line of a file
    python benchmarks/tokenize.py --original 1000          # also: original=True against the slow tokenizer

Both sides run the same batch calls (lists out; one call per text for the first 1000; then padded "np"
arrays, which needs a pad token: `<pad>` is added to both). Each row: one warm-up call per side, then the sides alternate `--repeats` times; the
medians give texts/s and the ratio ours / transformers (> 1: we are faster). The ids are checked equal
first. The sentences are generated from the vocabulary's words, deterministic in `--seed`.
"""

from __future__ import annotations

import os
import sys

# This file's name shadows the standard library's `tokenize` (which `inspect` imports) when run as a script:
# take its folder off the import path before anything else is imported, and put the repository on it.
HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path[:] = [REPO] + [p for p in sys.path if os.path.abspath(p or os.curdir) != HERE]

import argparse
import json
import random
import statistics
import time

from gpt_flax.tokenizer import OpenAIGPTTokenizer

DEFAULT_TOKENIZER = os.path.join(REPO, "tests", "fixtures", "openai-gpt-tokenizer")
COMMON_WORDS = 6000  # sample words among the vocabulary's first ids (its earliest, most frequent merges)
PUNCTUATION = [",", ",", ";", ":", " -", " —", "!", "?"]


def generated_sentences(tokenizer_dir: str, count: int, seed: int) -> list[str]:
    """`count` English-like sentences: 4-40 common words, capitals, punctuation, numbers, quotes, contractions."""
    with open(os.path.join(tokenizer_dir, "vocab.json"), encoding="utf-8") as f:
        vocab = json.load(f)
    words = [w[:-4] for w, i in sorted(vocab.items(), key=lambda kv: kv[1]) if w.endswith("</w>") and w[:-4].isalpha()]
    words = words[:COMMON_WORDS]
    rng = random.Random(seed)
    sentences = []
    for _ in range(count):
        out = []
        for k in range(rng.randint(4, 40)):
            word = rng.choice(words)
            roll = rng.random()
            if roll < 0.03:
                word = str(rng.randint(0, 10_000))
            elif roll < 0.05:
                word += rng.choice(["'s", "n't", "'re", "'ll"])
            elif roll < 0.07:
                word = f'"{word}"'
            if k == 0 or roll > 0.97:
                word = word.capitalize()
            out.append(word + (rng.choice(PUNCTUATION) if rng.random() < 0.08 else ""))
        sentences.append(" ".join(out) + rng.choice([".", ".", ".", "!", "?"]))
    return sentences


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def compare(name: str, ours, theirs, repeats: int, n_texts: int) -> dict:
    """Median texts/s of each side; warm-up first, then the sides alternate so load hits both alike."""
    ours(), theirs()
    times = {"ours": [], "transformers": []}
    for _ in range(repeats):
        times["ours"].append(timed(ours))
        times["transformers"].append(timed(theirs))
    rate = {side: n_texts / statistics.median(t) for side, t in times.items()}
    return {"row": name, "ours": rate["ours"], "transformers": rate["transformers"],
            "ratio": rate["ours"] / rate["transformers"]}  # fmt: skip


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizer", default=DEFAULT_TOKENIZER, help="directory with vocab.json + merges.txt")
    parser.add_argument("--num-sentences", type=int, default=10_000, help="generated sentences to encode")
    parser.add_argument("--text-file", help="encode the lines of this file instead of generated sentences")
    parser.add_argument("--repeats", type=int, default=7, help="timed calls per side and row (median reported)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated sentences")
    parser.add_argument("--original", type=int, default=0, metavar="N",
                        help="also time original=True against transformers' slow tokenizer on N sentences")  # fmt: skip
    args = parser.parse_args(argv)

    import transformers  # imported here: the library itself never needs it

    if args.text_file:
        with open(args.text_file, encoding="utf-8") as f:
            texts = [line.rstrip("\n") for line in f if line.strip()]
    else:
        texts = generated_sentences(args.tokenizer, args.num_sentences, args.seed)
    vocab, merges = (os.path.join(args.tokenizer, name) for name in ("vocab.json", "merges.txt"))
    ours = OpenAIGPTTokenizer.from_pretrained(args.tokenizer)
    theirs = transformers.OpenAIGPTTokenizerFast(vocab_file=vocab, merges_file=merges)
    if ours(texts)["input_ids"] != theirs(texts)["input_ids"]:
        sys.exit("ids differ between the two tokenizers: not benchmarking")
    rows = [compare("batch -> lists", lambda: ours(texts), lambda: theirs(texts), args.repeats, len(texts))]
    singles = texts[:1000]  # one call per text: the per-call overhead a loop or a data pipeline pays
    ours_one, theirs_one = (lambda: [ours(t) for t in singles]), (lambda: [theirs(t) for t in singles])
    rows.append(compare("one text per call", ours_one, theirs_one, args.repeats, len(singles)))
    for tok in (ours, theirs):
        tok.add_special_tokens({"pad_token": "<pad>"})
    padded = {"padding": True, "return_tensors": "np"}
    ours_padded, theirs_padded = (lambda: ours(texts, **padded)), (lambda: theirs(texts, **padded))
    rows.append(compare("batch -> padded np", ours_padded, theirs_padded, args.repeats, len(texts)))
    if args.original:
        subset = texts[: args.original]
        ours_original = OpenAIGPTTokenizer.from_pretrained(args.tokenizer, original=True)
        slow = transformers.OpenAIGPTTokenizer(vocab_file=vocab, merges_file=merges)
        if ours_original(subset)["input_ids"] != slow(subset)["input_ids"]:
            sys.exit("original=True ids differ from transformers' slow tokenizer: not benchmarking")
        repeats = max(1, args.repeats // 3)
        ours_call, slow_call = (lambda: ours_original(subset)), (lambda: slow(subset))
        rows.append(compare("original=True vs slow", ours_call, slow_call, repeats, len(subset)))

    words = sum(len(t.split()) for t in texts)
    print(f"{len(texts)} texts, {words / len(texts):.1f} words each; {os.cpu_count()} CPUs; median of {args.repeats}")
    print(f"{'row':<24}{'ours texts/s':>14}{'transformers texts/s':>22}{'ratio':>8}")
    for row in rows:
        print(f"{row['row']:<24}{row['ours']:>14,.0f}{row['transformers']:>22,.0f}{row['ratio']:>8.2f}")


if __name__ == "__main__":
    main()
