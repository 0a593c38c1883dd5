"""OpenAIGPTConfig: transformers' config fields and defaults, validated, with config.json I/O.

Mirrors `transformers.OpenAIGPTConfig` (configuration_openai.py, 4.56.2) plus the
`PretrainedConfig` fields the heads read (num_labels / id2label, pad_token_id, problem_type).
One frozen dataclass, hashable, so it can be a static argument under `jax.jit`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import numbers
import os
from typing import Any

logger = logging.getLogger("gpt_flax")

CONFIG_NAME = "config.json"
MODEL_TYPE = "openai-gpt"

# transformers' ACT_FNS for this model: "gelu" is the tanh approximation (gelu_new).
ACTIVATIONS = ("gelu", "gelu_new", "relu", "silu", "swish")
SUMMARY_TYPES = ("last", "first", "mean", "cls_index")
PROBLEM_TYPES = ("regression", "single_label_classification", "multi_label_classification")
# transformers' get_activation names a SequenceSummary may use ("gelu" there is the exact erf form);
# all of ACT2FN but "prelu" and "xielu", which carry learned parameters.
SUMMARY_ACTIVATIONS = (
    "tanh", "relu", "sigmoid", "gelu", "gelu_new", "gelu_pytorch_tanh", "silu", "swish", "linear", "gelu_python",
    "gelu_accurate", "gelu_fast", "gelu_10", "quick_gelu", "laplace", "mish", "leaky_relu", "relu2", "relu6",
)  # fmt: skip
ATTENTION_IMPLS = ("auto", "xla", "pallas", "cudnn")
# config.json keys that describe a checkpoint, not the model: configs differing only in them are
# equal (and share compilations), as a model and the same model saved and loaded back.
METADATA_KEYS = frozenset(("architectures", "dtype", "torch_dtype", "transformers_version", "_name_or_path"))


# transformers' attribute_map for this model: the generic names of four fields.
ALIASES = {"hidden_size": "n_embd", "max_position_embeddings": "n_positions", "num_attention_heads": "n_head",
           "num_hidden_layers": "n_layer"}  # fmt: skip
# transformers' PretrainedConfig attributes this class does not model: accepted as keyword arguments
# (into `extra`, and so config.json), as transformers' from_pretrained accepts any config attribute.
PRETRAINED_CONFIG_KEYS = frozenset((
    "add_cross_attention", "architectures", "bad_words_ids", "begin_suppress_tokens", "chunk_size_feed_forward",
    "cross_attention_hidden_size", "decoder_start_token_id", "diversity_penalty", "do_sample", "dtype", "torch_dtype",
    "early_stopping", "encoder_no_repeat_ngram_size", "exponential_decay_length_penalty", "finetuning_task",
    "forced_bos_token_id", "forced_eos_token_id", "is_decoder", "is_encoder_decoder", "length_penalty", "max_length",
    "min_length", "no_repeat_ngram_size", "num_beam_groups", "num_beams", "num_return_sequences", "output_scores",
    "prefix", "pruned_heads", "remove_invalid_values", "repetition_penalty", "return_dict_in_generate",
    "sep_token_id", "suppress_tokens", "task_specific_params", "temperature", "tf_legacy_loss",
    "tie_encoder_decoder", "tokenizer_class", "top_k", "top_p", "torchscript", "transformers_version", "typical_p",
    "use_bfloat16", "_name_or_path",
))  # fmt: skip


FLOAT_FIELDS = (
    "resid_pdrop", "embd_pdrop", "attn_pdrop", "summary_first_dropout", "summary_last_dropout", "layer_norm_epsilon",
    "initializer_range",
)  # fmt: skip


BOOL_FIELDS = (
    "summary_use_proj", "summary_proj_to_labels", "output_attentions", "output_hidden_states", "return_dict",
    "tie_word_embeddings",
)  # fmt: skip


def read_json_object(path: str | os.PathLike) -> dict:
    """A JSON file holding one object (config.json, generation_config.json); ValueError naming the
    file if it is not one."""
    try:
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid UTF-8 JSON: {e}") from None
    if not isinstance(d, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(d).__name__}")  # noqa: TRY004 (bad file content)
    return d


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_token_id(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


@dataclasses.dataclass(frozen=True)
class OpenAIGPTConfig:
    vocab_size: int = 40478
    n_positions: int = 512
    n_embd: int = 768
    n_layer: int = 12
    n_head: int = 12
    afn: str = "gelu"
    resid_pdrop: float = 0.1
    embd_pdrop: float = 0.1
    attn_pdrop: float = 0.1
    layer_norm_epsilon: float = 1e-5
    initializer_range: float = 0.02
    summary_type: str = "cls_index"
    summary_use_proj: bool = True
    summary_activation: str | None = None
    summary_proj_to_labels: bool = True
    summary_first_dropout: float = 0.1
    summary_last_dropout: float = 0.0
    num_labels: int | None = None  # None: len(id2label), else 2; a different count resets id2label
    id2label: dict | None = None
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    problem_type: str | None = None
    attention_impl: str = "auto"
    # PretrainedConfig's defaults for what a forward returns, used when a call passes None.
    output_attentions: bool = False
    output_hidden_states: bool = False
    return_dict: bool = True
    # The LM head is the token table transposed, or (False) a separate lm_head.
    tie_word_embeddings: bool = True
    # Keys of a config.json that this class does not model (architectures, ...), written back as read.
    extra: dict | None = None

    def __post_init__(self):
        # transformers' PretrainedConfig: num_labels and id2label describe the same thing.
        id2label = None
        if self.id2label is not None:
            try:
                id2label = {int(k): str(v) for k, v in dict(self.id2label).items()}
            except (TypeError, ValueError):
                raise ValueError(
                    f"OpenAIGPTConfig.id2label must map integer ids to label names, got {self.id2label!r}"
                ) from None
        num_labels = self.num_labels
        if num_labels is not None and (
            not isinstance(num_labels, int) or isinstance(num_labels, bool) or num_labels < 1
        ):
            raise ValueError(f"num_labels must be a positive integer, got {num_labels!r}")
        if id2label is not None and id2label:
            if num_labels is not None and num_labels != len(id2label):  # PretrainedConfig: id2label wins
                logger.warning(
                    "You passed num_labels=%d which is incompatible to the id2label map of length %d.",
                    num_labels, len(id2label),
                )  # fmt: skip
            num_labels = len(id2label)
        if num_labels is None:
            num_labels = 2
        if id2label is None or len(id2label) != num_labels:
            id2label = {i: f"LABEL_{i}" for i in range(num_labels)}
        object.__setattr__(self, "num_labels", num_labels)
        object.__setattr__(self, "id2label", id2label)
        if self.extra is None:
            object.__setattr__(self, "extra", {})
        for name in ("pad_token_id", "bos_token_id", "eos_token_id"):  # numpy ints as Python's (config.json)
            value = getattr(self, name)
            if _is_token_id(value):
                object.__setattr__(self, name, int(value))
            elif isinstance(value, (list, tuple)) and all(_is_token_id(v) for v in value):
                object.__setattr__(self, name, [int(v) for v in value])
        for name in BOOL_FIELDS:  # transformers takes 0 / 1 as well
            if getattr(self, name) in (0, 1) and not isinstance(getattr(self, name), float):
                object.__setattr__(self, name, bool(getattr(self, name)))
        for name in FLOAT_FIELDS:
            if _is_number(getattr(self, name)):
                object.__setattr__(self, name, float(getattr(self, name)))
        self.validate()

    def validate(self):
        for name in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"OpenAIGPTConfig.{name} must be a positive integer, got {value!r}")
        if self.n_embd % self.n_head:
            raise ValueError(
                f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head}): heads are n_embd / n_head wide"
            )
        if not isinstance(self.afn, str) or self.afn not in ACTIVATIONS:
            raise ValueError(f"unknown afn {self.afn!r}; expected one of {ACTIVATIONS}")
        if self.summary_type == "attn":
            raise ValueError("summary_type 'attn' is not implemented (nor is it in transformers)")
        if self.summary_type not in SUMMARY_TYPES:
            raise ValueError(f"unknown summary_type {self.summary_type!r}; expected one of {SUMMARY_TYPES}")
        if self.summary_activation and self.summary_activation not in SUMMARY_ACTIVATIONS:
            raise ValueError(
                f"unknown summary_activation {self.summary_activation!r}; expected None or one of {SUMMARY_ACTIVATIONS}"
            )
        for name in ("resid_pdrop", "embd_pdrop", "attn_pdrop", "summary_first_dropout", "summary_last_dropout"):
            value = getattr(self, name)
            if not _is_number(value) or not 0.0 <= value < 1.0:
                raise ValueError(f"OpenAIGPTConfig.{name} must be a number in [0, 1), got {value!r}")
        if not _is_number(self.layer_norm_epsilon) or not 0.0 < self.layer_norm_epsilon < float("inf"):
            raise ValueError(
                f"OpenAIGPTConfig.layer_norm_epsilon must be a positive number, got {self.layer_norm_epsilon!r}"
            )
        if not _is_number(self.initializer_range) or not 0.0 <= self.initializer_range < float("inf"):
            raise ValueError(f"OpenAIGPTConfig.initializer_range must be a number >= 0, got {self.initializer_range!r}")
        for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
            value = getattr(self, name)
            ok = value is None or _is_token_id(value)
            if name == "eos_token_id" and isinstance(value, (list, tuple)):  # transformers allows several
                ok = all(_is_token_id(v) for v in value)
            if not ok:
                raise ValueError(f"OpenAIGPTConfig.{name} must be an integer token id or None, got {value!r}")
        for name in BOOL_FIELDS:
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"OpenAIGPTConfig.{name} must be true or false, got {getattr(self, name)!r}")  # noqa: TRY004
        if self.problem_type is not None and self.problem_type not in PROBLEM_TYPES:
            raise ValueError(f"unknown problem_type {self.problem_type!r}; expected one of {PROBLEM_TYPES}")
        if self.attention_impl not in ATTENTION_IMPLS:
            raise ValueError(f"unknown attention_impl {self.attention_impl!r}; expected one of {ATTENTION_IMPLS}")

    # -- derived values ---------------------------------------------------------------------
    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def label2id(self) -> dict:
        return {v: k for k, v in self.id2label.items()}

    @property
    def use_return_dict(self) -> bool:
        return self.return_dict

    # transformers' attribute_map aliases
    @property
    def hidden_size(self) -> int:
        return self.n_embd

    @property
    def max_position_embeddings(self) -> int:
        return self.n_positions

    @property
    def num_attention_heads(self) -> int:
        return self.n_head

    @property
    def num_hidden_layers(self) -> int:
        return self.n_layer

    # -- hashing: dict fields are compared by value so the config can be static under jit ------
    def _key(self):
        d = dataclasses.asdict(self)
        d["extra"] = {k: v for k, v in d["extra"].items() if k not in METADATA_KEYS}
        return json.dumps(d, sort_keys=True, default=str)

    def __hash__(self):
        return hash(self._key())

    def __eq__(self, other):
        return isinstance(other, OpenAIGPTConfig) and self._key() == other._key()

    def replace(self, **changes) -> OpenAIGPTConfig:
        """A copy with `changes`, taken as transformers takes config keyword arguments: any attribute
        of its PretrainedConfig or of this config.json (kept in `extra`); anything else is a
        TypeError. label2id renames the labels (id2label follows); it cannot change their count.
        transformers' generic names (hidden_size, num_hidden_layers, ...) set their fields."""
        changes = {ALIASES.get(k, k): v for k, v in changes.items()}
        if "label2id" in changes:
            label2id = changes.pop("label2id")
            if "id2label" not in changes and label2id is not None:
                id2label = {int(v): str(k) for k, v in dict(label2id).items()}
                count = changes.get("num_labels") or self.num_labels
                if len(id2label) != count:
                    raise ValueError(
                        f"label2id names {len(id2label)} labels but the config has num_labels={count}: "
                        "pass id2label or num_labels to change the number of labels"
                    )
                changes["id2label"] = id2label
        if "id2label" in changes and "num_labels" not in changes:
            changes["num_labels"] = None  # follow the new id2label
        if "num_labels" in changes and "id2label" not in changes and changes["num_labels"] != self.num_labels:
            changes["id2label"] = None  # transformers' num_labels setter: a new count, new LABEL_i names
        names = {f.name for f in dataclasses.fields(self)} - {"extra"}
        extra = {k: changes.pop(k) for k in list(changes) if k not in names and k != "extra"}
        unknown = sorted(k for k in extra if k not in PRETRAINED_CONFIG_KEYS and k not in self.extra)
        if unknown:
            raise TypeError(f"OpenAIGPTConfig has no attribute {unknown[0]!r} (nor does transformers' config)")
        if extra:
            changes["extra"] = {**(changes.get("extra", self.extra) or {}), **extra}
        return dataclasses.replace(self, **changes)

    # -- config.json I/O --------------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: dict[str, Any], **overrides) -> OpenAIGPTConfig:
        d = {**d, **overrides}
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        kwargs = {k: v for k, v in d.items() if k in names}
        extra = dict(d.get("extra") or {})
        extra.update({k: v for k, v in d.items() if k not in names and k not in ("extra", "label2id", "model_type")})
        return cls(**kwargs, extra=extra)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        extra = d.pop("extra")
        del d["num_labels"]  # transformers derives it from id2label
        d["id2label"] = {str(k): v for k, v in self.id2label.items()}
        d["label2id"] = {v: k for k, v in self.id2label.items()}
        d["model_type"] = MODEL_TYPE
        for k, v in extra.items():
            d.setdefault(k, v)
        return d

    @classmethod
    def from_json_file(cls, path: str | os.PathLike) -> OpenAIGPTConfig:
        return cls.from_dict(read_json_object(path))

    @classmethod
    def from_pretrained(
        cls,
        path_or_hub_id: str | os.PathLike,
        *,
        revision: str | None = None,
        cache_dir: str | None = None,
        token: str | bool | None = None,
        local_files_only: bool = False,
        subfolder: str = "",
        **overrides,
    ) -> OpenAIGPTConfig:
        """Read `config.json` from a local directory (or file), or from the Hub by id (huggingface_hub's
        options; `subfolder`: a folder of the directory or repo)."""
        from gpt_flax.hub import resolve_file

        if os.path.isfile(path_or_hub_id) and not subfolder:
            return cls.from_json_file(path_or_hub_id).replace(**overrides)
        hub = {"revision": revision, "cache_dir": cache_dir, "token": token, "local_files_only": local_files_only}
        config = cls.from_json_file(resolve_file(path_or_hub_id, CONFIG_NAME, subfolder=subfolder, **hub))
        return config.replace(**overrides) if overrides else config

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def save_pretrained(self, directory: str | os.PathLike, architectures: list[str] | None = None) -> str:
        os.makedirs(directory, exist_ok=True)
        d = self.to_dict()
        if architectures is not None:
            d["architectures"] = list(architectures)
        path = os.path.join(directory, CONFIG_NAME)
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(d, f, indent=2, sort_keys=True)
            f.write("\n")
        os.replace(tmp, path)
        return path
