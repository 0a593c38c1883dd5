"""The numerical oracle: transformers 4.56.2's PyTorch models on the same weights as ours."""

from __future__ import annotations

import numpy as np
import torch
import transformers

from convert.mapping import flax_to_hf

torch.set_num_threads(2)

HF_CLASSES = {
    "base": transformers.OpenAIGPTModel,
    "lm": transformers.OpenAIGPTLMHeadModel,
    "double": transformers.OpenAIGPTDoubleHeadsModel,
    "cls": transformers.OpenAIGPTForSequenceClassification,
}


def hf_config(config) -> transformers.OpenAIGPTConfig:
    d = {k: v for k, v in config.to_dict().items() if k not in ("attention_impl",)}
    d["id2label"] = {int(k): v for k, v in d["id2label"].items()}
    # transformers 4.56.2's ACT_FNS lacks "gelu_new" (a KeyError) although its docs list it; its
    # "gelu" is the same tanh approximation, so that is the oracle for our "gelu_new".
    if d["afn"] == "gelu_new":
        d["afn"] = "gelu"
    return transformers.OpenAIGPTConfig(**d)


def torch_model(head: str, config, params) -> torch.nn.Module:
    """The transformers model of `head`, holding exactly our params (strict key check)."""
    model = HF_CLASSES[head](hf_config(config)).eval()
    state = {k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in flax_to_hf(params, config, head).items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected, unexpected
    assert set(missing) <= {"lm_head.weight"}, missing  # tied to tokens_embed
    return model


def t(x):
    """numpy/JAX -> torch, keeping integer and float kinds."""
    if x is None:
        return None
    x = np.asarray(x)
    return torch.from_numpy(x.astype(np.int64) if np.issubdtype(x.dtype, np.integer) else x.astype(np.float32))


def n(x):
    return x.detach().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))
