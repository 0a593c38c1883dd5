"""OpenAI's original GPT release (openai/finetune-transformer-lm, `model/`), read without TF or torch.

`params_shapes.json` lists the arrays' shapes; `params_0.npy` .. `params_9.npy` are one flat float32
array cut in 10 parts: concatenate, split at the cumulative sizes, reshape (the repo's `train.py`,
and transformers' `load_tf_weights_in_openai_gpt`). Order: positions [P, D], tokens [V, D], then per
layer c_attn w [1, D, 3D], b; c_proj w [1, D, D], b; ln_1 g, b; c_fc w [1, D, 4D], b;
c_proj w [1, 4D, D], b; ln_2 g, b. The leading 1 of the conv weights is dropped, leaving Conv1D's
[in, out]. transformers' loader also wants `parameters_names.json` (the TF variable names, which
the release itself lacks); when present it must name exactly this order.
"""

from __future__ import annotations

import json
import math
import os
from functools import partial

import numpy as np

from convert.tensors import Tensor, read_at

SHAPES_NAME = "params_shapes.json"
NAMES_NAME = "parameters_names.json"
N_PARTS = 10
PART_NAME = "params_{}.npy"

NPY_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}

# (HF key under h.{i}., TF variable under model/h{i}/), in the release's per-layer order.
LAYER_ORDER = (
    ("attn.c_attn.weight", "attn/c_attn/w"),
    ("attn.c_attn.bias", "attn/c_attn/b"),
    ("attn.c_proj.weight", "attn/c_proj/w"),
    ("attn.c_proj.bias", "attn/c_proj/b"),
    ("ln_1.weight", "ln_1/g"),
    ("ln_1.bias", "ln_1/b"),
    ("mlp.c_fc.weight", "mlp/c_fc/w"),
    ("mlp.c_fc.bias", "mlp/c_fc/b"),
    ("mlp.c_proj.weight", "mlp/c_proj/w"),
    ("mlp.c_proj.bias", "mlp/c_proj/b"),
    ("ln_2.weight", "ln_2/g"),
    ("ln_2.bias", "ln_2/b"),
)
# The published model (Radford et al. 2018, section 4.1): 12 layers, 768 wide, 12 heads. n_head
# cannot be read off the arrays, so only this size converts without a config.json.
PUBLISHED = {"n_layer": 12, "n_embd": 768, "n_head": 12}


def is_original(directory: str) -> bool:
    return os.path.isfile(os.path.join(directory, SHAPES_NAME))


def read_shapes(directory: str) -> list[tuple]:
    path = os.path.join(directory, SHAPES_NAME)
    try:
        with open(path, encoding="utf-8") as f:
            shapes = [tuple(int(n) for n in s) for s in json.load(f)]
    except (json.JSONDecodeError, TypeError, ValueError) as e:
        raise ValueError(f"{path} is not a JSON list of shapes ({e})") from None
    if len(shapes) < 2 or (len(shapes) - 2) % len(LAYER_ORDER) or any(min(s, default=1) < 1 for s in shapes):
        raise ValueError(
            f"{path} lists {len(shapes)} shapes; the release has 2 embeddings + {len(LAYER_ORDER)} per layer"
        )
    return shapes


def hf_keys(n_layer: int) -> list[str]:
    return ["positions_embed.weight", "tokens_embed.weight"] + [
        f"h.{i}.{key}" for i in range(n_layer) for key, _ in LAYER_ORDER
    ]


def tf_names(n_layer: int) -> list[str]:
    """What transformers' loader expects in parameters_names.json (it pops the first, the embedding)."""
    return ["model/we:0"] + [f"model/h{i}/{name}:0" for i in range(n_layer) for _, name in LAYER_ORDER]


def config_fields(shapes: list[tuple]) -> dict:
    """The config fields the shapes fix: vocab_size, n_positions, n_embd, n_layer (not n_head)."""
    (n_positions, n_embd), (vocab_size, _) = shapes[0], shapes[1]
    n_layer = (len(shapes) - 2) // len(LAYER_ORDER)
    return {"vocab_size": vocab_size, "n_positions": n_positions, "n_embd": n_embd, "n_layer": n_layer}


def _parts(directory: str) -> list[tuple[str, int, int]]:
    """(path, data offset, items) of each npy part; their header says 1-D little-endian float32."""
    parts = []
    for n in range(N_PARTS):
        path = os.path.join(directory, PART_NAME.format(n))
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path} is missing: the release is {N_PARTS} parts, params_0.npy .. params_9.npy")
        with open(path, "rb") as f:
            try:
                version = np.lib.format.read_magic(f)
                read_header = NPY_HEADER_READERS.get(version)
                if read_header is None:
                    raise ValueError(f"npy format version {version} is not supported")
                shape, _, dtype = read_header(f)
            except ValueError as e:
                raise ValueError(f"{path} is not an npy file ({e})") from None
            offset = f.tell()
        if dtype != np.dtype("<f4") or len(shape) != 1:
            raise ValueError(f"{path} holds {dtype}{list(shape)}; the release's parts are 1-D float32")
        if os.path.getsize(path) != offset + shape[0] * dtype.itemsize:
            raise ValueError(f"{path} is truncated: its header promises {shape[0]} float32 values")
        parts.append((path, offset, shape[0]))
    return parts


def _fill_flat(parts, start: int, out: np.ndarray) -> None:
    """Fill `out` with items [start, start + out.size) of the concatenated parts."""
    flat, stop, base = out.reshape(-1), start + out.size, 0
    for path, offset, items in parts:
        lo, hi = max(start, base), min(stop, base + items)
        if lo < hi:
            read_at(path, offset + (lo - base) * 4, flat[lo - start : hi - start])
        base += items


def read_original(directory: str) -> dict[str, Tensor]:
    """{HF key (no `transformer.` prefix): Tensor} of an original release directory."""
    shapes = read_shapes(directory)
    n_layer = config_fields(shapes)["n_layer"]
    names_path = os.path.join(directory, NAMES_NAME)
    if os.path.isfile(names_path):
        with open(names_path, encoding="utf-8") as f:
            if json.load(f) != tf_names(n_layer):
                raise ValueError(f"{names_path} does not name the release's arrays in the release's order")
    parts = _parts(directory)
    total = sum(items for _, _, items in parts)
    needed = sum(math.prod(s) for s in shapes)
    if total != needed:
        raise ValueError(f"{directory}: the npy parts hold {total} values but {SHAPES_NAME} needs {needed}")
    tensors, start = {}, 0
    for key, shape in zip(hf_keys(n_layer), shapes):
        stop = start + math.prod(shape)
        if key.endswith(".weight") and len(shape) == 3:
            if shape[0] != 1:
                raise ValueError(f"{SHAPES_NAME}: {key} has shape {list(shape)}; conv weights are [1, in, out]")
            shape = shape[1:]  # [1, in, out] -> Conv1D's [in, out]

        tensors[key] = Tensor(shape, np.float32, partial(_fill_flat, parts, start), f"{directory}:{key}")
        start = stop
    return tensors
