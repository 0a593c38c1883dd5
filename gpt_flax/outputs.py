"""Model outputs: pytree dataclasses with transformers' field names (modeling_outputs, modeling_openai).

Fields that are None are dropped by `to_tuple()`, which gives transformers' `return_dict=False`
order. Outputs index like transformers' ModelOutput: by field name or by position among the
fields that are set.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from flax import struct


class ModelOutput:
    def to_tuple(self) -> tuple:
        return tuple(getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) is not None)

    def keys(self):
        return [f.name for f in dataclasses.fields(self) if getattr(self, f.name) is not None]

    def __getitem__(self, key):
        if isinstance(key, str):
            return getattr(self, key)
        return self.to_tuple()[key]

    def __iter__(self):
        return iter(self.to_tuple())


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
