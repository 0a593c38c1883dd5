"""Lazy tensors: a checkpoint's arrays, described up front (shape, dtype) and read when asked.

Readers return `{key: Tensor}`; `np.asarray(t)` reads that tensor's bytes with plain file reads into
a fresh array. Nothing is memory-mapped whole, so converting a checkpoint holds about one copy of it
in memory, not the file's pages plus the converted tree.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import ml_dtypes
import numpy as np

# safetensors' dtype names (safetensors `Dtype`), little-endian. bfloat16 comes from ml_dtypes (JAX's).
SAFETENSORS_DTYPES = {
    "F64": np.dtype(np.float64),
    "F32": np.dtype(np.float32),
    "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "I64": np.dtype(np.int64),
    "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16),
    "I8": np.dtype(np.int8),
    "U8": np.dtype(np.uint8),
    "BOOL": np.dtype(np.bool_),
}
SAFETENSORS_NAMES = {v: k for k, v in SAFETENSORS_DTYPES.items()}

# The --dtype choices: floating tensors are cast to these, integer ones are left alone.
FLOAT_DTYPES = {
    "float32": np.dtype(np.float32),
    "bfloat16": np.dtype(ml_dtypes.bfloat16),
    "float16": np.dtype(np.float16),
}


def is_floating(dtype) -> bool:
    dtype = np.dtype(dtype)
    return np.issubdtype(dtype, np.floating) or dtype == FLOAT_DTYPES["bfloat16"]


class Tensor:
    """A tensor whose bytes are read on demand: `np.asarray(t)` into a fresh array, or
    `t.read_into(out)` straight into a slice of a bigger one (a layer of a stacked [L, ...] array).

    `fill(out)` does the reading: it writes the tensor into `out`, a C-contiguous array of its
    shape and dtype. `source` says where the bytes live (file, record, view): two tensors with the
    same source hold the same values (a .bin's tied lm_head and token table share one storage).
    """

    __slots__ = ("_fill", "dtype", "shape", "source")

    def __init__(self, shape: tuple, dtype, fill: Callable[[np.ndarray], None], source: str = ""):
        self.shape = tuple(int(n) for n in shape)
        self.dtype = np.dtype(dtype)
        self._fill = fill
        self.source = source

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    def read_into(self, out: np.ndarray) -> None:
        if out.shape != self.shape or out.dtype != self.dtype or not out.flags.c_contiguous:
            raise ValueError(f"{self.source}: cannot read {self.dtype}{list(self.shape)} into {out.dtype}{list(out.shape)}")
        self._fill(out)

    def __array__(self, dtype=None, copy=None):
        out = np.empty(self.shape, self.dtype)
        self._fill(out)
        return out if dtype is None else out.astype(dtype)

    def with_hook(self, on_read: Callable[[int], None]) -> Tensor:
        """The same tensor, calling `on_read(nbytes)` after each read (progress bars)."""

        def fill(out):
            self._fill(out)
            on_read(self.nbytes)

        return Tensor(self.shape, self.dtype, fill, self.source)

    def __repr__(self) -> str:
        return f"Tensor({self.dtype}{list(self.shape)} from {self.source})"


def read_at(path: str, offset: int, out: np.ndarray) -> None:
    """Fill `out` (C-contiguous) with its size in bytes from byte `offset` of `path`."""
    with open(path, "rb") as f:
        f.seek(offset)
        n = f.readinto(out.reshape(-1).view(np.uint8))
    if n != out.nbytes:
        raise ValueError(f"{path} is truncated: wanted {out.nbytes} bytes at offset {offset}, got {n}")
