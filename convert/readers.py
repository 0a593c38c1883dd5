"""Checkpoint readers: files -> {HF key: numpy array}. None of them needs torch or JAX."""

from __future__ import annotations

import os
from typing import Optional

import numpy as np

from gpt_flax.hub import resolve_file

SAFETENSORS_NAME = "model.safetensors"


def read_safetensors(path: str) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"{path} is not a readable safetensors file: {e}") from None


def read_state_dict(
    path_or_hub_id: str | os.PathLike, *, revision: Optional[str] = None, cache_dir: Optional[str] = None
) -> dict[str, np.ndarray]:
    """The state dict of a transformers checkpoint directory or Hub repo."""
    path = resolve_file(path_or_hub_id, SAFETENSORS_NAME, required=False, revision=revision, cache_dir=cache_dir)
    if path is None:
        raise FileNotFoundError(f"no weights found in {path_or_hub_id} (looked for {SAFETENSORS_NAME})")
    return read_safetensors(path)
