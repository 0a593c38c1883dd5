"""Model outputs: pytree dataclasses with transformers' field names (modeling_outputs, modeling_openai).

Fields that are None are dropped by `to_tuple()`, which gives transformers' `return_dict=False`
order. Outputs index like transformers' ModelOutput: by field name or by position among the
fields that are set, and iterate over those names.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from flax import struct


class ModelOutput:
    """A mapping over the fields that are set, as transformers' ModelOutput (an OrderedDict): `"loss" in out`,
    `out.keys()`, `out.items()`, iteration over the names; `out[0]` by position, `out.to_tuple()`."""

    def to_tuple(self) -> tuple:
        return tuple(getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) is not None)

    def keys(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self) if getattr(self, f.name) is not None]

    def values(self) -> list:
        return list(self.to_tuple())

    def items(self) -> list[tuple[str, Any]]:
        return [(k, getattr(self, k)) for k in self.keys()]

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key) if key in self else default

    def __getitem__(self, key):
        if isinstance(key, str):
            if key not in self:
                raise KeyError(key)
            return getattr(self, key)
        return self.to_tuple()[key]

    def __contains__(self, key) -> bool:
        return key in self.keys()

    def __iter__(self):
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.keys())


@struct.dataclass
class FlaxBaseModelOutput(ModelOutput):
    last_hidden_state: Any = None
    hidden_states: tuple | None = None
    attentions: tuple | None = None


@struct.dataclass
class FlaxCausalLMOutput(ModelOutput):
    loss: Any = None
    logits: Any = None
    hidden_states: tuple | None = None
    attentions: tuple | None = None


@struct.dataclass
class FlaxOpenAIGPTDoubleHeadsModelOutput(ModelOutput):
    loss: Any = None
    mc_loss: Any = None
    logits: Any = None
    mc_logits: Any = None
    hidden_states: tuple | None = None
    attentions: tuple | None = None


@struct.dataclass
class FlaxSequenceClassifierOutput(ModelOutput):
    loss: Any = None
    logits: Any = None
    hidden_states: tuple | None = None
    attentions: tuple | None = None


@struct.dataclass
class GenerateDecoderOnlyOutput(ModelOutput):
    """`generate(..., return_dict_in_generate=True)` for greedy decoding and sampling, as transformers' (numpy
    arrays): `sequences` [B * n, T + N]; with `output_scores`, `scores`, one [B * n, V] float32 per new token:
    the logits after the processors and (sampling) warpers, what the token was chosen from; with `output_logits`,
    `logits`, the model's raw logits per new token."""

    sequences: Any = None
    scores: tuple | None = None
    logits: tuple | None = None
    attentions: tuple | None = None
    hidden_states: tuple | None = None
    past_key_values: Any = None


@struct.dataclass
class GenerateBeamDecoderOnlyOutput(ModelOutput):
    """`generate(..., num_beams > 1, return_dict_in_generate=True)`, as transformers' (numpy arrays): `sequences`
    [B * n, T + N], `beam_indices` [B * n, N] (the beam, b * num_beams + k, each new token came from; -1 past a
    hypothesis' end); with `output_scores` `sequences_scores` [B * n] (length-penalised) and `scores`, one
    [B * num_beams, V] per step (log-probabilities after the processors and warpers); with `output_logits` the
    raw `logits` per step."""

    sequences: Any = None
    sequences_scores: Any = None
    scores: tuple | None = None
    logits: tuple | None = None
    beam_indices: Any = None
    attentions: tuple | None = None
    hidden_states: tuple | None = None
    past_key_values: Any = None
