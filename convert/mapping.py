"""The declarative HF <-> Flax name table for OpenAI GPT, and its transforms.

HF state-dict keys (transformers `modeling_openai`) map to paths in our param tree. Per-layer
tensors `h.{i}.<name>` are stacked on a leading [L] axis under `h/<path>`. transformers' `Conv1D`
weights are [in, out] like a Flax kernel (no transpose); its `nn.Linear` heads are [out, in]
(transposed). `lm_head.weight` is tied to `tokens_embed.weight` and not stored here, unless the
config unties it (`tie_word_embeddings=False`): then it is the head's `lm_head/kernel` [D, V].

Run forwards (`hf_to_flax`) to load a checkpoint and backwards (`flax_to_hf`) to save one. Both are
strict: every expected key is accounted for, every shape is checked against the config, and keys
that nothing uses are returned to the caller to report, never silently dropped.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from functools import partial

import numpy as np

from convert.tensors import is_floating

PREFIX = "transformer."

# head -> (transformers class, our class): config.json's `architectures` names the head.
ARCHITECTURES = {
    "base": ("OpenAIGPTModel", "FlaxOpenAIGPTModel"),
    "lm": ("OpenAIGPTLMHeadModel", "FlaxOpenAIGPTLMHeadModel"),
    "double": ("OpenAIGPTDoubleHeadsModel", "FlaxOpenAIGPTDoubleHeadsModel"),
    "cls": ("OpenAIGPTForSequenceClassification", "FlaxOpenAIGPTForSequenceClassification"),
}
HEADS = tuple(ARCHITECTURES)


def _same(x):
    return x


def _transpose(x):
    return np.ascontiguousarray(np.swapaxes(x, -1, -2))


@dataclasses.dataclass(frozen=True)
class Entry:
    hf: str  # HF key without the `transformer.` prefix; "{i}" marks a per-layer key
    flax: tuple  # path in the param tree (head entries start at the top, body entries under transformer)
    shape: Callable  # config -> the HF tensor's shape (per layer for "{i}" keys)
    to_flax: Callable = _same
    to_hf: Callable = _same

    @property
    def per_layer(self) -> bool:
        return "{i}" in self.hf


def _conv(name: str, path: tuple, n_in: int, n_out: int) -> list[Entry]:
    """A Conv1D: weight [in, out] = Flax kernel, bias [out]."""
    return [
        Entry(f"h.{{i}}.{name}.weight", ("h",) + path + ("kernel",), lambda c: (n_in * c.n_embd, n_out * c.n_embd)),
        Entry(f"h.{{i}}.{name}.bias", ("h",) + path + ("bias",), lambda c: (n_out * c.n_embd,)),
    ]


def _ln(name: str) -> list[Entry]:
    return [
        Entry(f"h.{{i}}.{name}.weight", ("h", name, "scale"), lambda c: (c.n_embd,)),
        Entry(f"h.{{i}}.{name}.bias", ("h", name, "bias"), lambda c: (c.n_embd,)),
    ]


BODY_TABLE: tuple[Entry, ...] = tuple(
    [
        Entry("tokens_embed.weight", ("tokens_embed", "embedding"), lambda c: (c.vocab_size, c.n_embd)),
        Entry("positions_embed.weight", ("positions_embed", "embedding"), lambda c: (c.n_positions, c.n_embd)),
    ]
    + _conv("attn.c_attn", ("attn", "c_attn"), 1, 3)
    + _conv("attn.c_proj", ("attn", "c_proj"), 1, 1)
    + _ln("ln_1")
    + _conv("mlp.c_fc", ("mlp", "c_fc"), 1, 4)
    + _conv("mlp.c_proj", ("mlp", "c_proj"), 4, 1)
    + _ln("ln_2")
)


def head_table(config, head: str) -> tuple[Entry, ...]:
    """Entries above the transformer for one head (`nn.Linear`s: [out, in], transposed)."""
    if head in ("lm", "double") and not config.tie_word_embeddings:
        untied = Entry(TIED_KEY, ("lm_head", "kernel"), lambda c: (c.vocab_size, c.n_embd), _transpose, _transpose)
        return (untied,) + head_table(config.replace(tie_word_embeddings=True), head)
    if head == "cls":
        return (Entry("score.weight", ("score", "kernel"), lambda c: (c.num_labels, c.n_embd), _transpose, _transpose),)
    if head == "double" and config.summary_use_proj:
        from gpt_flax.heads import summary_out_features

        n = summary_out_features(config)
        return (
            Entry(
                "multiple_choice_head.summary.weight",
                ("multiple_choice_head", "summary", "kernel"),
                lambda c: (n, c.n_embd),
                _transpose,
                _transpose,
            ),
            Entry("multiple_choice_head.summary.bias", ("multiple_choice_head", "summary", "bias"), lambda c: (n,)),
        )
    return ()


# Keys a checkpoint may carry that hold no parameter: the causal-mask buffer of older checkpoints,
# and the tied LM head (checked against tokens_embed when present).
_BUFFER = re.compile(r"^(transformer\.)?h\.\d+\.attn\.bias$")
TIED_KEY = "lm_head.weight"


@dataclasses.dataclass
class LoadResult:
    params: dict  # the filled part of the tree; missing heads are absent
    missing_keys: list  # HF keys the target needs that the checkpoint lacks
    unexpected_keys: list  # checkpoint keys the target does not use
    tied_lm_head_mismatch: bool = False
    # Stacked entries the checkpoint holds only some layers of: tree path -> the layers it holds.
    # `params` has the stack of those layers alone there; the caller initialises the others.
    partial_layers: dict = dataclasses.field(default_factory=dict)
    # With ignore_mismatched_sizes: (HF key, checkpoint shape, the config's shape), left out of
    # `params` (the caller initialises them) and of both lists above, as transformers reports them.
    mismatched_keys: list = dataclasses.field(default_factory=list)


def _set(tree: dict, path: tuple, value) -> None:
    for name in path[:-1]:
        tree = tree.setdefault(name, {})
    tree[path[-1]] = value


def _get(tree: dict, path: tuple):
    for name in path:
        tree = tree[name]
    return tree


def _cast(x, dtype=None) -> np.ndarray:
    """np.asarray(x) (reads a lazy Tensor), floating values cast to `dtype` (bfloat16 included)."""
    x = np.asarray(x)
    return x.astype(dtype) if dtype is not None and is_floating(x.dtype) and x.dtype != dtype else x


def _stack(arrays: list, to_flax: Callable, dtype=None) -> np.ndarray:
    """The per-layer tensors stacked on a new leading [L] axis (the scanned layout).

    Lazy tensors that need no transform or cast are read straight into their layer's slot, so the
    stack costs no second copy of the checkpoint.
    """
    if to_flax is not _same:
        return np.stack([to_flax(_cast(a, dtype)) for a in arrays])
    first = arrays[0].dtype
    out = np.empty((len(arrays), *arrays[0].shape), dtype if dtype is not None and is_floating(first) else first)
    for i, a in enumerate(arrays):
        if hasattr(a, "read_into") and a.dtype == out.dtype:
            a.read_into(out[i])
        else:
            out[i] = _cast(a, dtype)
    return out


class ShapeMismatchError(ValueError):
    """A checkpoint tensor whose shape is not the one the config gives."""


def _check_shape(key: str, array, expected: tuple) -> None:
    """The shape the config gives, and floating values: every weight of the model is one."""
    if tuple(array.shape) != tuple(expected):
        raise ShapeMismatchError(
            f"checkpoint tensor {key!r} has shape {tuple(array.shape)} but the config expects {tuple(expected)}"
        )
    if not is_floating(array.dtype):
        raise ValueError(
            f"checkpoint tensor {key!r} has dtype {np.dtype(array.dtype).name}; weights are floating point"
        )


def hf_to_flax(state_dict: dict, config, head: str, dtype=None, ignore_mismatched_sizes: bool = False) -> LoadResult:
    """Map an HF state dict (numpy arrays, keys with or without `transformer.`) onto our tree.

    Per-layer tensors are stacked into [L, ...]. `dtype` casts floating tensors (None keeps them).
    A shape that does not fit the config raises ValueError naming the key and both shapes, or, with
    `ignore_mismatched_sizes`, leaves that tensor to be initialised anew (`mismatched_keys`).
    """
    # Accept both layouts, as transformers' from_pretrained does.
    body = {k.removeprefix(PREFIX): k for k in state_dict}
    if "tokens_embed.weight" not in body and TIED_KEY in state_dict and config.tie_word_embeddings:
        # A tied pair saved under one name, the head's (safetensors.torch.save_model keeps that one).
        body["tokens_embed.weight"] = TIED_KEY
    used: set = set()
    missing: list = []
    mismatched: list = []
    params: dict = {}
    partial_layers: dict = {}

    def fits(key: str, expected: tuple, name: str) -> bool:
        """Whether checkpoint tensor `key` has the config's shape; raises unless mismatches are ignored,
        when it is reported under the model's `name` for it, as transformers reports it."""
        array = state_dict[key]
        if ignore_mismatched_sizes and tuple(array.shape) != tuple(expected):
            mismatched.append((name, tuple(array.shape), tuple(expected)))
            used.add(key)
            return False
        _check_shape(key, array, expected)
        return True

    body_root = () if head == "base" else ("transformer",)
    out_prefix = "" if head == "base" else PREFIX
    cast = partial(_cast, dtype=dtype)

    for entry in BODY_TABLE:
        keys = [entry.hf.format(i=i) for i in range(config.n_layer)] if entry.per_layer else [entry.hf]
        missing.extend(out_prefix + k for k in keys if k not in body)
        present = [k for k in keys if k in body and fits(body[k], entry.shape(config), out_prefix + k)]
        if len(present) < len(keys):
            if not (entry.per_layer and present):
                continue
            partial_layers[body_root + entry.flax] = [i for i, k in enumerate(keys) if k in present]
            keys = present  # load the layers that are there, as transformers does
        arrays = [state_dict[body[k]] for k in keys]
        used.update(body[k] for k in keys)
        value = _stack(arrays, entry.to_flax, dtype) if entry.per_layer else entry.to_flax(cast(arrays[0]))
        _set(params, body_root + entry.flax, value)

    for entry in head_table(config, head):  # what the checkpoint lacks the caller initialises, as transformers
        if entry.hf not in state_dict:
            missing.append(entry.hf)
            continue
        if not fits(entry.hf, entry.shape(config), entry.hf):
            continue
        _set(params, entry.flax, entry.to_flax(cast(state_dict[entry.hf])))
        used.add(entry.hf)
    if head == "double":  # summary_use_proj=False: a head with no weights, still a node of the tree
        params.setdefault("multiple_choice_head", {})

    mismatch = False
    if TIED_KEY in state_dict and head in ("lm", "double") and config.tie_word_embeddings:
        used.add(TIED_KEY)
        table = (config.vocab_size, config.n_embd)
        if ignore_mismatched_sizes and tuple(state_dict[TIED_KEY].shape) != table:
            mismatched.append((TIED_KEY, tuple(state_dict[TIED_KEY].shape), table))
        # A .bin stores the tied pair as one storage: the same lazy tensor source, equal unread.
        lm_head, source = state_dict[TIED_KEY], getattr(state_dict.get(body.get("tokens_embed.weight")), "source", None)
        tokens = params.get("transformer", {}).get("tokens_embed", {}).get("embedding")  # as loaded (and cast)
        shared = source is not None and getattr(lm_head, "source", None) == source
        mismatch = not shared and tokens is not None and not np.array_equal(cast(lm_head), tokens)
    unexpected = sorted(k for k in state_dict if k not in used and not _BUFFER.match(k))
    return LoadResult(params, missing, unexpected, mismatch, partial_layers, mismatched)


def flax_to_hf(params: dict, config, head: str, dtype=None) -> dict:
    """Our tree -> an HF state dict (numpy), the table run backwards. Base keys get `transformer.`
    on head models; the tied `lm_head.weight` is left out, as transformers' save_pretrained does."""
    body = params if head == "base" else params["transformer"]
    prefix = "" if head == "base" else PREFIX
    out: dict = {}
    cast = partial(_cast, dtype=dtype)

    for entry in BODY_TABLE:
        value = np.asarray(_get(body, entry.flax))
        if entry.per_layer:
            for i in range(config.n_layer):
                key = prefix + entry.hf.format(i=i)
                out[key] = cast(entry.to_hf(value[i]))
                _check_shape(key, out[key], entry.shape(config))
        else:
            out[prefix + entry.hf] = cast(entry.to_hf(value))
            _check_shape(prefix + entry.hf, out[prefix + entry.hf], entry.shape(config))
    for entry in head_table(config, head):
        out[entry.hf] = cast(entry.to_hf(np.asarray(_get(params, entry.flax))))
        _check_shape(entry.hf, out[entry.hf], entry.shape(config))
    return out


def expected_hf_keys(config, head: str, tied_lm_head: bool = False) -> list:
    prefix = "" if head == "base" else PREFIX
    keys = []
    for entry in BODY_TABLE:
        names = [entry.hf.format(i=i) for i in range(config.n_layer)] if entry.per_layer else [entry.hf]
        keys.extend(prefix + n for n in names)
    keys.extend(e.hf for e in head_table(config, head))
    if tied_lm_head and head in ("lm", "double") and config.tie_word_embeddings:
        keys.append(TIED_KEY)
    return keys


def head_from_architectures(architectures) -> str | None:
    """The head a config.json's `architectures` names (transformers' or ours), if exactly one."""
    heads = {h for h, names in ARCHITECTURES.items() for a in architectures or () if a in names}
    return heads.pop() if len(heads) == 1 else None


def flax_paths(config, head: str) -> list[tuple]:
    """Every path of the param tree, as `hf_to_flax` fills it (body under `transformer` on head models)."""
    root = () if head == "base" else ("transformer",)
    return [root + e.flax for e in BODY_TABLE] + [e.flax for e in head_table(config, head)]


def infer_head(state_dict: dict) -> str | None:
    """The head a checkpoint was saved from, judged by its head keys (None: base or unknown)."""
    if any(k.startswith("multiple_choice_head.") for k in state_dict):
        return "double"
    if "score.weight" in state_dict:
        return "cls"
    if TIED_KEY in state_dict or any(k.startswith(PREFIX) for k in state_dict):
        return "lm"
    return None
