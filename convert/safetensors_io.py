"""The safetensors format, read lazily and written as a stream, without the whole file in memory.

Layout (huggingface/safetensors, "Format"): 8 bytes little-endian header length N, N bytes of JSON
`{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}`, then the
data; offsets are relative to the data start and tile it exactly. The `safetensors` package reads
a file whole (numpy) or maps it; here each tensor is read on its own, and the header is checked
against the file's size first, so a truncated file is refused before anything is read.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from functools import partial

import numpy as np

from convert.tensors import SAFETENSORS_DTYPES, SAFETENSORS_NAMES, Tensor, read_at

HEADER_LIMIT = 100 * 1024 * 1024  # the safetensors package's own cap on the JSON header
HEADER_ALIGN = 8  # the header is padded with spaces so the data starts 8-byte aligned
WRITE_CHUNK = 64 * 1024 * 1024


def open_safetensors(path: str) -> tuple[dict[str, Tensor], dict]:
    """({name: Tensor}, metadata) of a safetensors file; ValueError if it is malformed or truncated."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        prefix = f.read(8)
        n = int.from_bytes(prefix, "little") if len(prefix) == 8 else -1
        if n < 2 or n > HEADER_LIMIT or 8 + n > size:
            raise ValueError(f"{path} is not a safetensors file, or it is truncated (header does not fit its {size} bytes)")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{path} is not a safetensors file: its header is not JSON ({e})") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path} is not a safetensors file: its header is not a JSON object")  # noqa: TRY004 (a bad file, not a bad call)
    metadata = header.pop("__metadata__", None) or {}
    data_start, data_len = 8 + n, size - 8 - n
    tensors, end_max = {}, 0
    for name, info in header.items():
        try:
            dtype = SAFETENSORS_DTYPES[info["dtype"]]
            shape = tuple(int(d) for d in info["shape"])
            begin, end = (int(x) for x in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{path}: tensor {name!r} has a malformed header entry {info!r}") from None
        if min(shape, default=0) < 0 or end - begin != math.prod(shape) * dtype.itemsize or begin < 0:
            raise ValueError(f"{path}: tensor {name!r} spans bytes [{begin}, {end}), which does not fit {dtype}{list(shape)}")
        end_max = max(end_max, end)
        tensors[name] = Tensor(shape, dtype, partial(read_at, path, data_start + begin), f"{path}:{name}")
    if end_max != data_len:
        raise ValueError(
            f"{path} is truncated or corrupt: its header describes {end_max} bytes of data but the file holds {data_len}"
        )
    return tensors, metadata


def read_safetensors(path: str) -> dict[str, Tensor]:
    return open_safetensors(path)[0]


def write_safetensors(
    path: str,
    tensors: dict[str, np.ndarray],
    metadata: dict | None = None,
    on_write: Callable[[int], None] | None = None,
) -> int:
    """Write `tensors` (in order) to `path`, streaming each array's bytes; returns the file's size."""
    header, offset = {}, 0
    for name, array in tensors.items():
        if array.dtype not in SAFETENSORS_NAMES:
            raise ValueError(f"cannot write {name!r}: dtype {array.dtype} has no safetensors name")
        header[name] = {"dtype": SAFETENSORS_NAMES[array.dtype], "shape": list(array.shape), "data_offsets": [offset, offset + array.nbytes]}
        offset += array.nbytes
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % HEADER_ALIGN)
    with open(path, "wb") as f:
        f.write(len(blob).to_bytes(8, "little"))
        f.write(blob)
        for array in tensors.values():
            flat = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
            for start in range(0, flat.size, WRITE_CHUNK):
                f.write(flat[start : start + WRITE_CHUNK])
                if on_write:
                    on_write(min(WRITE_CHUNK, flat.size - start))
        f.flush()
        os.fsync(f.fileno())
        return f.tell()
