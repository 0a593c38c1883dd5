"""torch's zip checkpoint format (`pytorch_model.bin`), read and written without torch.

A `torch.save` file (torch >= 1.6, `torch/serialization.py`) is a zip archive `<name>/data.pkl`,
`<name>/data/<key>` (one raw little-endian storage each), `<name>/byteorder`, `<name>/version`.
`data.pkl` is a protocol-2 pickle of the state dict in which every tensor is
`torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks)` and every
storage a persistent id `("storage", torch.<Type>Storage, key, location, numel)`.

torch's format before 1.6 (still written with `_use_new_zipfile_serialization=False`) is one stream:
pickles of a magic number, a protocol version and system info, then the state dict's pickle (storages
as persistent ids `("storage", torch.<Type>Storage, key, location, numel, view)`), the storage keys'
pickle, and each storage's raw bytes after an int64 item count. `read_torch_bin` reads either.

A pickle can call any importable function, so files from strangers are read by an unpickler whose
`find_class` admits exactly the globals above (mapped to our own functions, never torch's) and
refuses anything else by name before it can be called. Tensors come back lazy (`convert.tensors`).
"""

from __future__ import annotations

import collections
import io
import math
import os
import pickle
import re
import struct
import zipfile
from collections.abc import Callable

import numpy as np

from convert.tensors import FLOAT_DTYPES, Tensor, read_at


class CheckpointError(ValueError):
    """A torch checkpoint that cannot be read; the message names the file."""


class UnsafeCheckpointError(CheckpointError):
    """A pickle asked for a global outside the allowed set; nothing it named was called."""


# torch's typed storage names (torch/storage.py) <-> numpy dtypes.
STORAGE_DTYPES = {
    "DoubleStorage": np.dtype(np.float64),
    "FloatStorage": np.dtype(np.float32),
    "HalfStorage": np.dtype(np.float16),
    "BFloat16Storage": FLOAT_DTYPES["bfloat16"],
    "LongStorage": np.dtype(np.int64),
    "IntStorage": np.dtype(np.int32),
    "ShortStorage": np.dtype(np.int16),
    "CharStorage": np.dtype(np.int8),
    "ByteStorage": np.dtype(np.uint8),
    "BoolStorage": np.dtype(np.bool_),
}
STORAGE_NAMES = {v: k for k, v in STORAGE_DTYPES.items()}
STORAGE_KEY = re.compile(r"^[A-Za-z0-9_]+$")
ALIGNMENT = 64  # torch aligns each storage record's data to 64 bytes (`.storage_alignment`)
FORMAT_VERSION = b"3\n"  # the `version` record torch writes


class _ReadOnly:
    """What a pickle may name is shared by every load: its BUILD opcode must not be able to change it
    (no __dict__, no __setstate__, no attribute assignment), or one file could break the next."""

    __slots__ = ()

    def __setattr__(self, name: str, value) -> None:
        raise AttributeError(f"{type(self).__name__} is read-only")


class _StorageType(_ReadOnly):
    """Stands in for `torch.<Type>Storage` inside the pickle: only its dtype matters."""

    __slots__ = ("dtype", "name")

    def __init__(self, name: str):
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "dtype", STORAGE_DTYPES[name])


class _Function(_ReadOnly):
    """An allowed function, read-only."""

    __slots__ = ("function",)

    def __init__(self, function: Callable):
        object.__setattr__(self, "function", function)

    def __call__(self, *args, **kwargs):
        return self.function(*args, **kwargs)


class _Storage:
    """One `data/<key>` record, read when a tensor on it is read (stored records by plain file reads)."""

    def __init__(self, path: str, record: str, offset: int | None, dtype, numel: int):
        self.path, self.record, self.offset, self.dtype, self.numel = path, record, offset, dtype, numel

    def fill(self, out: np.ndarray) -> None:
        """Read the whole storage into `out` ([numel] items, C-contiguous)."""
        if self.offset is not None:
            return read_at(self.path, self.offset, out)
        with zipfile.ZipFile(self.path) as zf, zf.open(self.record) as f:
            n = f.readinto(out.reshape(-1).view(np.uint8))
        if n != out.nbytes:
            raise CheckpointError(f"{self.path}: storage {self.record} holds {n} bytes, its tensor needs {out.nbytes}")
        return None


def _rebuild_tensor(storage, offset, size, stride, requires_grad=False, hooks=None, metadata=None) -> Tensor:
    """Our `_rebuild_tensor_v2`: a lazy view `size`/`stride` (in items) into `storage` from `offset`."""
    if not isinstance(storage, _Storage):
        raise CheckpointError("malformed torch checkpoint: a tensor's storage is not a storage record")
    size, stride = tuple(int(n) for n in size), tuple(int(n) for n in stride)
    if len(size) != len(stride) or min(size + stride + (offset,), default=0) < 0:
        raise CheckpointError(f"malformed torch checkpoint: tensor size {size}, stride {stride}, offset {offset}")
    last = offset + sum((n - 1) * s for n, s in zip(size, stride)) if math.prod(size) else offset - 1
    if last >= storage.numel:
        raise CheckpointError(
            f"malformed torch checkpoint: a tensor reaches item {last} of a {storage.numel}-item storage"
        )

    def fill(out):
        if offset == 0 and out.size == storage.numel and stride == _contiguous(size):
            return storage.fill(out)  # the usual case: the tensor is its whole storage, read in place
        items = np.empty(storage.numel, storage.dtype)
        storage.fill(items)
        out[...] = np.lib.stride_tricks.as_strided(items[offset:], size, [s * items.itemsize for s in stride])
        return None

    return Tensor(size, storage.dtype, fill, f"{storage.path}:{storage.record}@{offset}{list(size)}{list(stride)}")


def _rebuild_parameter(data, requires_grad=False, hooks=None):
    return data


def _contiguous(size: tuple) -> tuple:
    strides, step = [], 1
    for n in reversed(size):
        strides.append(step)
        step *= n
    return tuple(reversed(strides))


ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _Function(_rebuild_tensor),
    ("torch._utils", "_rebuild_parameter"): _Function(_rebuild_parameter),
    **{("torch", name): _StorageType(name) for name in STORAGE_DTYPES},
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, path: str, prefix: str, records: dict):
        super().__init__(file)
        self.path, self.prefix, self.records = path, prefix, records
        self.storages: dict = {}

    def find_class(self, module: str, name: str):
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafeCheckpointError(
                f"refused {self.path}: its pickle calls {module}.{name}, which is not a tensor, storage or "
                "OrderedDict (nothing was executed)"
            ) from None

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], _StorageType)):
            raise UnsafeCheckpointError(f"refused {self.path}: unknown persistent id {pid!r:.80}")
        _, kind, key, _location, numel = pid
        if self.records is None:  # the legacy stream: where the storage's bytes are is known after the pickle
            if not isinstance(key, str) or not isinstance(numel, int):
                raise CheckpointError(f"{self.path}: malformed storage id {pid!r:.80}")
            return self.storages.setdefault(key, _Storage(self.path, key, None, kind.dtype, numel))
        record = f"{self.prefix}data/{key}"
        if not isinstance(key, str) or not STORAGE_KEY.match(key) or record not in self.records:
            raise CheckpointError(f"{self.path}: storage {key!r} has no data record")
        offset, size = self.records[record]
        if size != int(numel) * kind.dtype.itemsize:
            raise CheckpointError(f"{self.path}: storage {key!r} holds {size} bytes, not {numel} x {kind.dtype}")
        if key not in self.storages:
            self.storages[key] = _Storage(self.path, record, offset, kind.dtype, int(numel))
        return self.storages[key]


def read_torch_zip(path: str) -> dict[str, Tensor]:
    """{name: Tensor} of a `torch.save`d state dict, through the restricted unpickler."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            pickles = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
            if len(pickles) != 1:
                raise CheckpointError(f"{path} is not a torch zip checkpoint (no <name>/data.pkl)")
            prefix = pickles[0][: -len("data.pkl")]
            if prefix + "byteorder" in names and zf.read(prefix + "byteorder") != b"little":
                raise CheckpointError(f"{path} stores big-endian tensors, which are not supported")
            data = zf.read(pickles[0])
            records = {
                i.filename: (_data_offset(zf, i), i.file_size)
                for i in zf.infolist()
                if i.filename.startswith(prefix + "data/")
            }
    except zipfile.BadZipFile as e:
        raise CheckpointError(f"{path} is not a readable torch zip checkpoint ({e}); it may be truncated") from None
    try:
        state = _RestrictedUnpickler(io.BytesIO(data), path, prefix, records).load()
    except CheckpointError as e:
        if path in str(e):
            raise
        raise CheckpointError(f"{path}: {e}") from None
    except Exception as e:  # noqa: BLE001 - whatever a malformed pickle makes the unpickler raise
        raise CheckpointError(f"{path}: malformed pickle in data.pkl ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in state.items()):
        raise CheckpointError(f"{path} does not hold a flat state dict of tensors (a dict of name -> tensor)")
    return dict(state)


def _data_offset(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> int | None:
    """Where a stored (uncompressed) record's bytes start: after its local header, name and extra field."""
    if info.compress_type != zipfile.ZIP_STORED:
        return None
    zf.fp.seek(info.header_offset)
    header = zf.fp.read(30)
    if len(header) != 30 or header[:4] != b"PK\x03\x04":
        raise zipfile.BadZipFile(f"bad local header for {info.filename}")
    name_len, extra_len = struct.unpack("<HH", header[26:30])
    return info.header_offset + 30 + name_len + extra_len


LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch/serialization.py MAGIC_NUMBER


class _LegacyUnpickler(_RestrictedUnpickler):
    def persistent_load(self, pid):
        if isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage":
            if pid[5] is not None:
                raise CheckpointError(
                    f"{self.path}: storage views of torch < 1.0 are not supported; re-save it with torch.save"
                )
            pid = pid[:5]
        return super().persistent_load(pid)


def _plain_pickle(f, path: str):
    """One of the legacy stream's header pickles: plain data, no globals."""
    return _RestrictedUnpickler(f, path, "", None).load()


def read_torch_legacy(path: str) -> dict[str, Tensor]:
    """{name: Tensor} of a state dict in torch's pre-1.6 stream format, through the restricted unpickler."""
    try:
        with open(path, "rb") as f:
            if _plain_pickle(f, path) != LEGACY_MAGIC:
                raise CheckpointError(
                    f"{path} is not a torch checkpoint (neither a zip archive nor torch's older format)"
                )
            _plain_pickle(f, path)  # protocol version
            info = _plain_pickle(f, path)
            if isinstance(info, dict) and not info.get("little_endian", True):
                raise CheckpointError(f"{path} stores big-endian tensors, which are not supported")
            unpickler = _LegacyUnpickler(f, path, "", None)
            state = unpickler.load()
            keys = _plain_pickle(f, path)
            if not isinstance(keys, list) or set(keys) != set(unpickler.storages):
                raise CheckpointError(f"{path}: the storage list does not match the tensors' storages")
            for key in keys:
                storage = unpickler.storages[key]
                count = f.read(8)
                if len(count) != 8 or struct.unpack("<q", count)[0] != storage.numel:
                    raise CheckpointError(f"{path}: storage {key!r} is truncated or not {storage.numel} items")
                storage.offset = f.tell()
                f.seek(storage.numel * storage.dtype.itemsize, io.SEEK_CUR)
            if f.tell() > os.fstat(f.fileno()).st_size:
                raise CheckpointError(f"{path} is truncated: its storages end past the end of the file")
    except CheckpointError as e:
        if path in str(e):
            raise
        raise CheckpointError(f"{path}: {e}") from None
    except OSError:  # the file could not be read (permissions, ...): not a malformed checkpoint
        raise
    except Exception as e:  # noqa: BLE001 - whatever a malformed pickle makes the unpickler raise
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in state.items()):
        raise CheckpointError(f"{path} does not hold a flat state dict of tensors (a dict of name -> tensor)")
    return dict(state)


def read_torch_bin(path: str) -> dict[str, Tensor]:
    """A `pytorch_model.bin` in either of torch's formats: the zip archive (torch >= 1.6) or the older stream."""
    with open(path, "rb") as f:
        zipped = f.read(4) == b"PK\x03\x04"
    return read_torch_zip(path) if zipped else read_torch_legacy(path)


# -- writing -------------------------------------------------------------------------------
def _unicode(s: str) -> bytes:
    raw = s.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw  # BINUNICODE


def _int(n: int) -> bytes:
    if 0 <= n < 2**31:
        return b"J" + struct.pack("<i", n)  # BININT
    raw = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw  # LONG1


def _tuple(items) -> bytes:
    return b"(" + b"".join(_int(n) for n in items) + b"t"  # MARK ... TUPLE


_ORDERED_DICT = b"ccollections\nOrderedDict\n)R"  # GLOBAL, EMPTY_TUPLE, REDUCE


def _state_dict_pickle(tensors: dict[str, np.ndarray]) -> bytes:
    """The protocol-2 pickle torch writes for a state dict of contiguous tensors, storage i = tensor i."""
    out = [b"\x80\x02", _ORDERED_DICT, b"("]  # PROTO 2, the dict, MARK for SETITEMS
    for i, (name, array) in enumerate(tensors.items()):
        storage = b"(" + _unicode("storage") + b"ctorch\n" + STORAGE_NAMES[array.dtype].encode() + b"\n"
        storage += _unicode(str(i)) + _unicode("cpu") + _int(array.size) + b"tQ"  # TUPLE, BINPERSID
        out += [_unicode(name), b"ctorch._utils\n_rebuild_tensor_v2\n(", storage, _int(0)]
        out += [_tuple(array.shape), _tuple(_contiguous(array.shape)), b"\x89", _ORDERED_DICT, b"tR"]
    out.append(b"u.")  # SETITEMS, STOP
    return b"".join(out)


def write_torch_zip(
    path: str, tensors: dict[str, np.ndarray], on_write: Callable[[int], None] | None = None, chunk: int = 64 << 20
) -> None:
    """Write a state dict as torch.save does, loadable by `torch.load(weights_only=True)`."""
    for name, array in tensors.items():
        if array.dtype not in STORAGE_NAMES:
            raise CheckpointError(f"cannot write {name!r}: dtype {array.dtype} has no torch storage type")
    prefix = "pytorch_model/"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(_info(zf, prefix + "data.pkl", 0), _state_dict_pickle(tensors))
        zf.writestr(_info(zf, prefix + "byteorder", 0), b"little")
        for i, array in enumerate(tensors.values()):
            flat = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
            with zf.open(_info(zf, f"{prefix}data/{i}", flat.size), "w") as f:
                for start in range(0, flat.size, chunk):
                    f.write(flat[start : start + chunk])
                    if on_write:
                        on_write(min(chunk, flat.size - start))
        zf.writestr(_info(zf, prefix + "version", 0), FORMAT_VERSION)
        zf.fp.flush()


def _info(zf: zipfile.ZipFile, name: str, size: int) -> zipfile.ZipInfo:
    """A stored entry whose data starts on an ALIGNMENT boundary (padding in the extra field, as torch)."""
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type, info.file_size = zipfile.ZIP_STORED, size
    start = zf.fp.tell() + 30 + len(name.encode()) + 4  # local header, name, extra field header
    if size * 1.05 > zipfile.ZIP64_LIMIT:
        start += 20  # zipfile prepends a zip64 extra field for large entries
    pad = -start % ALIGNMENT
    info.extra = struct.pack("<HH", 0x4246, pad) + b"\0" * pad  # "FB", torch's padding record id
    return info
