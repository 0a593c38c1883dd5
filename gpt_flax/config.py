"""OpenAIGPTConfig: transformers' config fields and defaults, validated, with config.json I/O.

Mirrors `transformers.OpenAIGPTConfig` (configuration_openai.py, 4.56.2) plus the
`PretrainedConfig` fields the heads read (num_labels / id2label, pad_token_id, problem_type).
One frozen dataclass, hashable, so it can be a static argument under `jax.jit`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Optional

CONFIG_NAME = "config.json"
MODEL_TYPE = "openai-gpt"

# transformers' ACT_FNS for this model: "gelu" is the tanh approximation (gelu_new).
ACTIVATIONS = ("gelu", "gelu_new", "relu", "silu", "swish")
SUMMARY_TYPES = ("last", "first", "mean", "cls_index")
PROBLEM_TYPES = ("regression", "single_label_classification", "multi_label_classification")
ATTENTION_IMPLS = ("auto", "xla", "pallas", "cudnn")


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
    summary_activation: Optional[str] = None
    summary_proj_to_labels: bool = True
    summary_first_dropout: float = 0.1
    summary_last_dropout: float = 0.0
    id2label: Optional[dict] = None
    pad_token_id: Optional[int] = None
    bos_token_id: Optional[int] = None
    eos_token_id: Optional[int] = None
    problem_type: Optional[str] = None
    attention_impl: str = "auto"
    # Keys of a config.json that this class does not model (architectures, ...), written back as read.
    extra: Optional[dict] = None

    def __post_init__(self):
        if self.id2label is None:
            object.__setattr__(self, "id2label", {0: "LABEL_0", 1: "LABEL_1"})
        else:
            object.__setattr__(self, "id2label", {int(k): str(v) for k, v in self.id2label.items()})
        if self.extra is None:
            object.__setattr__(self, "extra", {})
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
        for name in ("resid_pdrop", "embd_pdrop", "attn_pdrop", "summary_first_dropout", "summary_last_dropout"):
            value = getattr(self, name)
            if not 0.0 <= float(value) < 1.0:
                raise ValueError(f"OpenAIGPTConfig.{name} must be in [0, 1), got {value!r}")
        if self.layer_norm_epsilon <= 0:
            raise ValueError(f"layer_norm_epsilon must be positive, got {self.layer_norm_epsilon!r}")
        if self.problem_type is not None and self.problem_type not in PROBLEM_TYPES:
            raise ValueError(f"unknown problem_type {self.problem_type!r}; expected one of {PROBLEM_TYPES}")
        if self.attention_impl not in ATTENTION_IMPLS:
            raise ValueError(f"unknown attention_impl {self.attention_impl!r}; expected one of {ATTENTION_IMPLS}")
        if self.num_labels < 1:
            raise ValueError("id2label must name at least one label")

    # -- derived values ---------------------------------------------------------------------
    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def num_labels(self) -> int:
        return len(self.id2label)

    @property
    def label2id(self) -> dict:
        return {v: k for k, v in self.id2label.items()}

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
        return json.dumps(dataclasses.asdict(self), sort_keys=True, default=str)

    def __hash__(self):
        return hash(self._key())

    def __eq__(self, other):
        return isinstance(other, OpenAIGPTConfig) and self._key() == other._key()

    def replace(self, **changes) -> "OpenAIGPTConfig":
        if "num_labels" in changes:
            n = changes.pop("num_labels")
            changes.setdefault("id2label", {i: f"LABEL_{i}" for i in range(n)})
        return dataclasses.replace(self, **changes)

    # -- config.json I/O --------------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: dict[str, Any], **overrides) -> "OpenAIGPTConfig":
        d = {**d, **overrides}
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        kwargs = {k: v for k, v in d.items() if k in names}
        extra = dict(d.get("extra") or {})
        extra.update({k: v for k, v in d.items() if k not in names and k not in ("extra", "label2id", "num_labels")})
        if "num_labels" in d and "id2label" not in d:
            kwargs["id2label"] = {i: f"LABEL_{i}" for i in range(int(d["num_labels"]))}
        elif "num_labels" in d and int(d["num_labels"]) != len(d["id2label"]):
            n = int(d["num_labels"])
            kwargs["id2label"] = {i: f"LABEL_{i}" for i in range(n)}
        return cls(**kwargs, extra=extra)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        extra = d.pop("extra")
        d["id2label"] = {str(k): v for k, v in self.id2label.items()}
        d["label2id"] = {v: k for k, v in self.id2label.items()}
        d["model_type"] = MODEL_TYPE
        for k, v in extra.items():
            d.setdefault(k, v)
        return d

    @classmethod
    def from_json_file(cls, path: str | os.PathLike) -> "OpenAIGPTConfig":
        try:
            with open(path, encoding="utf-8") as f:
                d = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON: {e}") from None
        if not isinstance(d, dict):
            raise ValueError(f"{path} does not hold a JSON object")
        return cls.from_dict(d)

    @classmethod
    def from_pretrained(cls, path_or_hub_id: str | os.PathLike, **overrides) -> "OpenAIGPTConfig":
        """Read `config.json` from a local directory (or file), or from the Hub by id."""
        from gpt_flax.hub import resolve_file

        config = cls.from_json_file(resolve_file(path_or_hub_id, CONFIG_NAME))
        return config.replace(**overrides) if overrides else config

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def save_pretrained(self, directory: str | os.PathLike, architectures: Optional[list[str]] = None) -> str:
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
