"""The CPU decode step's kernels (float32 XLA FFI custom calls): a matmul over packed weights, and
one query's attention over the live part of a KV cache.

    if cpu_decode.available():
        w = cpu_decode.pack(kernel)                              # [K, N], once, outside the decode loop
        y = cpu_decode.matmul(x, w)                              # [M, K] -> [M, N]
        o = cpu_decode.cached_attention(q, k_t, v, start, slot)  # over slots start[b]..slot only

At batch 8 XLA:CPU's dot re-packs every weight on every decode step, which ran the step at 2.4x
the memory-bandwidth floor, and XLA's attention reads the whole cache array; these read weights
packed once and only the live cache slots (cpu_decode.cc says how, benchmarks/RESULTS.md what it
measured). The kernels are C++, built on first use with the host's compiler ($CXX, else `c++`) for
this CPU (-march=native) and cached in $GPT_FLAX_CACHE_DIR (default ~/.cache/gpt_flax), its sha256
digest beside it: a cached library cut short, not matching its digest or lacking the kernels is
built once more before anything loads it. Without a compiler, or with GPT_FLAX_CPU_KERNELS=0,
`available()` is False (`unavailable_reason()` says why) and callers use XLA: slower, the same
results.

Axes: M rows, K input features, N output features, P column tiles of TILE_COLS, L layers;
B batch, H heads, K head dim, S cache slots for attention.
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import hashlib
import logging
import operator
import os
import platform
import shlex
import shutil
import struct
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import jaxlib
import numpy as np

from gpt_flax.cache import CACHE_ENV, cache_root

logger = logging.getLogger("gpt_flax")

TILE_COLS = 48  # output columns per packed tile (kTileCols in cpu_decode.cc)
TARGETS = {  # FFI target name -> the handler symbol in cpu_decode.cc
    "gpt_flax_packed_matmul": "GptFlaxPackedMatmul",
    "gpt_flax_pack": "GptFlaxPack",
    "gpt_flax_cached_attention": "GptFlaxCachedAttention",
}
SOURCE = Path(__file__).with_name("cpu_decode.cc")
DISABLE_ENV = "GPT_FLAX_CPU_KERNELS"  # "0" turns the kernel off
COMPILE_TIMEOUT_S = 300
FLAGS = ("-O3", "-std=c++17", "-march=native", "-shared", "-fPIC", "-w")


class KernelUnavailable(RuntimeError):
    """The CPU kernel could not be built or loaded; the message says why."""


@functools.partial(jax.tree_util.register_dataclass, data_fields=["tiles"], meta_fields=["features"])
@dataclasses.dataclass(frozen=True)
class PackedWeight:
    """A [K, N] weight as column tiles: tiles[p, k, j] = weight[k, p * TILE_COLS + j], zero past N."""

    tiles: jax.Array  # [P, K, TILE_COLS] float32
    features: int  # N

    @property
    def shape(self) -> tuple:
        return (self.tiles.shape[1], self.features)


def pack(weight, *, layer: int | None = None, transposed: bool = False) -> PackedWeight:
    """weight [K, N] -> PackedWeight (float32); [L, K, N] with `layer` packs that layer in place of
    slicing it out first (`layer` a Python int: the kernel takes it as an attribute); transposed=True
    takes [N, K] ([L, N, K]), as an embedding table."""
    w = jnp.asarray(weight).astype(jnp.float32)
    if w.ndim != (2 if layer is None else 3):
        raise ValueError(f"pack takes a [K, N] weight, or [L, K, N] with layer=, got shape {w.shape} and {layer=}")
    if layer is not None:
        layer = _layer_index(layer, len(w))
    _require()
    stack = w[None] if layer is None else w
    n, k = (stack.shape[1], stack.shape[2]) if transposed else (stack.shape[2], stack.shape[1])
    out = jax.ShapeDtypeStruct((-(-n // TILE_COLS), k, TILE_COLS), jnp.float32)
    tiles = jax.ffi.ffi_call("gpt_flax_pack", out)(stack, layer=np.int64(layer or 0), transposed=bool(transposed))
    return PackedWeight(tiles, n)


def _layer_index(layer, n_layer: int) -> int:
    if isinstance(layer, jax.core.Tracer):
        raise TypeError(
            f"pack's layer= must be a Python int, not a traced value ({layer}): the kernel takes it as an "
            "attribute, so pack each layer in a Python loop (as generation.pack_layers does)"
        )
    try:
        index = operator.index(layer)
    except TypeError:
        raise TypeError(f"pack's layer= must be a Python int, got {type(layer).__name__} {layer!r}") from None
    if not 0 <= index < n_layer:
        raise ValueError(f"pack's layer={index} is out of range for a stack of {n_layer} layers")
    return index


def matmul(x, weight: PackedWeight):
    """x [M, K] float32 @ the packed [K, N] weight -> [M, N] float32."""
    if x.ndim != 2 or x.shape[1] != weight.shape[0]:
        raise ValueError(f"matmul of x {x.shape} and a packed weight {weight.shape}: need x [M, {weight.shape[0]}]")
    _require()
    out = jax.ShapeDtypeStruct((x.shape[0], weight.features), jnp.float32)
    return jax.ffi.ffi_call("gpt_flax_packed_matmul", out)(x.astype(jnp.float32), weight.tiles)


def cached_attention(q, k_t, v, start, slot):
    """One query per row over cache slots start[b]..slot (float32).

    q [B, H, K], k_t [B, H, K, S] (keys transposed), v [B, H, S, K], start int32 [B], slot int32 []
    -> [B, H, K]: softmax(q . k / sqrt(K)) @ v over the slots row b can see, as transformers'
    attention weights the masked ones by zero. Every start[b] must be in 0..slot, and slot < S: checked
    here where they are concrete, by the kernel where traced.
    """
    q, k_t, v, start, slot = (jnp.asarray(a) for a in (q, k_t, v, start, slot))
    _check_attention_operands(q, k_t, v, start, slot)
    _require()
    out = jax.ShapeDtypeStruct(q.shape, jnp.float32)
    return jax.ffi.ffi_call("gpt_flax_cached_attention", out)(
        q.astype(jnp.float32),
        k_t.astype(jnp.float32),
        v.astype(jnp.float32),
        start.astype(jnp.int32),
        slot.astype(jnp.int32),
    )


def _check_attention_operands(q, k_t, v, start, slot) -> None:
    if q.ndim != 3 or k_t.ndim != 4:
        raise ValueError(
            f"cached_attention takes q [B, H, K] and k_t [B, H, K, S], got q {q.shape} and k_t {k_t.shape}"
        )
    (B, H, K), S = q.shape, k_t.shape[3]
    needed = {"k_t": (k_t, (B, H, K, S)), "v": (v, (B, H, S, K)), "start": (start, (B,)), "slot": (slot, ())}
    for name, (a, shape) in needed.items():
        if a.shape != shape:
            raise ValueError(
                f"cached_attention of q {q.shape} [B, H, K] over {S} slots needs {name} {shape}, got {a.shape}"
            )
    for name, a, kind, what in [
        *((n, a, jnp.floating, "a float") for n, a in (("q", q), ("k_t", k_t), ("v", v))),
        *((n, a, jnp.integer, "an integer") for n, a in (("start", start), ("slot", slot))),
    ]:
        if not jnp.issubdtype(a.dtype, kind):
            raise TypeError(f"cached_attention's {name} must be {what} array, got {a.dtype}")
    if not isinstance(slot, jax.core.Tracer) and not 0 <= int(slot) < S:
        raise ValueError(f"cached_attention's slot={int(slot)} is outside the cache's {S} slots")
    if not isinstance(start, jax.core.Tracer):
        rows = np.asarray(start)
        if (rows < 0).any():
            raise ValueError(f"cached_attention's start has a negative entry ({rows.tolist()}): each is a slot, >= 0")
        if not isinstance(slot, jax.core.Tracer) and (rows > int(slot)).any():
            raise ValueError(
                f"cached_attention's start {rows.tolist()} has a row that starts after slot={int(slot)}: "
                "every start[b] must be <= slot"
            )


def available() -> bool:
    """Whether the kernel is built and registered (built on the first call, then cached)."""
    return _load() is None


def unavailable_reason() -> str | None:
    """Why `available()` is False, or None when it is True."""
    return _load()


def _require() -> None:
    if _checking_thread == threading.get_ident():  # the self-check's own calls, inside `_load`
        return
    reason = _load()  # other threads wait here, on the lock, until the self-check has its answer
    if reason is not None:
        raise KernelUnavailable(f"the CPU decode kernels are unavailable: {reason}")


def _load() -> str | None:
    """Build (or find in the cache), load, register and check the kernels, once per process (one
    thread builds while the others wait); None when they work, else the reason."""
    with _lock:
        if not _status:
            _status.append(_try_load())
        return _status[0]


def _reset() -> None:
    """Forget `_load`'s answer, so that the next use looks again (for tests)."""
    with _lock:
        _status.clear()


_lock = threading.RLock()
_status: list = []  # [None or the reason], once `_load` has looked
_registered: list = []  # the library whose handlers XLA holds, once registered
_checking_thread: int | None = None  # the thread running `_self_check`, before `_load` has its answer


def _try_load() -> str | None:
    if os.environ.get(DISABLE_ENV, "1").strip().lower() in ("0", "false", "off", "no"):
        return f"turned off by {DISABLE_ENV}={os.environ[DISABLE_ENV]}"
    try:
        library = _open()
        if not _registered:  # XLA takes one handler per name and process: the first library loaded
            for target, symbol in TARGETS.items():
                jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(library, symbol)), platform="cpu")
            _registered.append(library)
        _self_check()
    except Exception as e:  # noqa: BLE001 - whatever goes wrong, decoding falls back to XLA and says why
        reason = str(e) if isinstance(e, KernelUnavailable) else f"{type(e).__name__}: {e}"
        logger.warning("the CPU decode kernels are unavailable (%s): decoding uses XLA, slower at batch > 1", reason)
        return reason
    return None


def _open() -> ctypes.CDLL:
    """The kernels' library, checked and loaded: from the cache, else compiled. A cached library that
    fails a check is removed and built once more; a fresh build that fails is removed and the kernels
    fall back (the same compiler would build the same again)."""
    command, target = _target()
    if target.exists():
        try:
            return _checked_dlopen(target)
        except OSError as e:
            logger.warning("the cached CPU decode kernels are unusable (%s): building them again", e)
            _discard(target, f"the cached library is unusable ({e})")
    _compile(command, target)
    try:
        return _checked_dlopen(target)
    except OSError as e:
        why = f"the library {os.path.basename(command[0])} built is unusable ({e})"
        _discard(target, why)
        raise KernelUnavailable(why) from None


def _checked_dlopen(path: Path) -> ctypes.CDLL:
    """dlopen the library once it is whole and matches the digest recorded when it was built, then
    check it has the kernels' symbols; OSError saying why not. The checks come before dlopen, where
    no exception can be caught: the loader maps segments past a short file's end and the process
    dies of SIGBUS when it touches them, and damaged code dies of SIGILL when it runs."""
    data = path.read_bytes()
    if not _whole_elf(data):
        raise OSError(f"{path} is cut short")
    try:
        recorded = _digest_path(path).read_text().strip()
    except FileNotFoundError:
        raise OSError(f"{path} has no digest beside it") from None
    if hashlib.sha256(data).hexdigest() != recorded:
        raise OSError(f"{path} does not match its digest (damaged, or another file copied there)")
    library = ctypes.CDLL(str(path))
    missing = [symbol for symbol in TARGETS.values() if not hasattr(library, symbol)]
    if missing:
        raise OSError(f"{path} lacks the kernels' symbols ({', '.join(missing)})")
    return library


def _digest_path(library: Path) -> Path:
    return library.with_name(library.name + ".sha256")


def _discard(library: Path, why: str) -> None:
    """Remove a bad library and its digest from the cache, so that no later process loads it."""
    try:
        for path in (library, _digest_path(library)):
            path.unlink(missing_ok=True)
    except OSError as e:
        raise KernelUnavailable(
            f"{why}, and the cache dir {library.parent} is not writable to replace it ({e.strerror}): "
            f"set {CACHE_ENV} to a writable directory"
        ) from None


def _whole_elf(data: bytes) -> bool:
    """Whether `data` is an ELF shared object as long as its headers say: every loaded segment and
    the section header table (written last) lie within it."""
    try:
        return _elf_extent(data) <= len(data)
    except struct.error:  # a header that points past the file's end
        return False


def _elf_extent(data: bytes) -> int:
    """How long the ELF image in `data` says it is; 2**63 for what is not an ELF image."""
    if len(data) < 64 or data[:4] != b"\x7fELF" or data[4] not in (1, 2) or data[5] not in (1, 2):
        return 2**63
    wide, order = data[4] == 2, "<" if data[5] == 1 else ">"
    if wide:
        phoff, shoff = struct.unpack_from(order + "QQ", data, 32)
        phentsize, phnum, shentsize, shnum = struct.unpack_from(order + "HHHH", data, 54)
    else:
        phoff, shoff = struct.unpack_from(order + "II", data, 28)
        phentsize, phnum, shentsize, shnum = struct.unpack_from(order + "HHHH", data, 42)
    ends = [phoff + phentsize * phnum, shoff + shentsize * shnum]
    for i in range(phnum):
        at = phoff + i * phentsize
        if at + phentsize > len(data):
            return 2**63
        if wide:
            kind, _, offset, _, _, size = struct.unpack_from(order + "IIQQQQ", data, at)
        else:
            kind, offset, _, _, size = struct.unpack_from(order + "IIIII", data, at)
        if kind == 1:  # PT_LOAD
            ends.append(offset + size)
    return max(ends)


def _target() -> tuple[list[str], Path]:
    """The compiler's command and the cached library's path for this source, jaxlib and machine."""
    command = shlex.split(os.environ.get("CXX") or "c++")  # e.g. "ccache g++"
    compiler = shutil.which(command[0]) if command else None
    if compiler is None:
        raise KernelUnavailable(f"no C++ compiler: {os.environ.get('CXX') or 'c++'!r} is not on PATH (set CXX)")
    command[0] = compiler
    include = jax.ffi.include_dir()
    key = hashlib.sha256()
    for part in (SOURCE.read_bytes(), " ".join(command + list(FLAGS)).encode(), include.encode(), _machine()):
        key.update(part)
    return command, cache_root() / f"cpu_decode-jaxlib{jaxlib.__version__}-{key.hexdigest()[:16]}.so"


def _compile(command: list[str], target: Path) -> None:
    """Compile the kernels into `target`, its sha256 digest beside it (`_checked_dlopen` checks it)."""
    cache, compiler = target.parent, os.path.basename(command[0])
    try:
        cache.mkdir(parents=True, exist_ok=True)
        fd, partial = tempfile.mkstemp(dir=cache, prefix=target.stem, suffix=".partial")
        os.close(fd)
    except OSError as e:
        raise KernelUnavailable(f"cannot write the kernel cache {cache} ({e.strerror}; set {CACHE_ENV})") from None
    digest = f"{partial}.sha256"
    started = time.perf_counter()
    try:
        command = [*command, *FLAGS, f"-I{jax.ffi.include_dir()}", str(SOURCE), "-o", partial]
        result = subprocess.run(command, check=False, capture_output=True, text=True, timeout=COMPILE_TIMEOUT_S)
        if result.returncode != 0:
            first = next((line for line in result.stderr.splitlines() if "error" in line), result.stderr.strip()[:300])
            raise KernelUnavailable(f"{compiler} failed: {first}")
        os.chmod(partial, 0o755)  # mkstemp's 0600 would keep other users of a shared cache out
        with open(partial, "rb") as f:  # on disk before its name is: a crash must not leave a short library
            os.fsync(f.fileno())
            Path(digest).write_text(hashlib.sha256(f.read()).hexdigest() + "\n")
        os.chmod(digest, 0o644)
        # Atomic, the digest first: a library never lies in the cache without its own digest (a
        # concurrent build writes the same bytes; one that did not would be caught and rebuilt).
        os.replace(digest, _digest_path(target))
        os.replace(partial, target)
    except subprocess.TimeoutExpired:
        raise KernelUnavailable(f"{compiler} took over {COMPILE_TIMEOUT_S} s") from None
    finally:
        for path in (partial, digest):
            if os.path.exists(path):
                os.unlink(path)
    logger.info("built the CPU decode kernels in %.1f s: %s", time.perf_counter() - started, target)


def _machine() -> bytes:
    """What -march=native depends on: a library built for one CPU may not run on another."""
    signature = platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            signature += next((line for line in f if line.startswith(("flags", "Features"))), "")
    except OSError:
        signature += platform.processor()
    return signature.encode()


def _self_check() -> None:
    """Each kernel on small inputs, with the remainder cases (rows past 8, a partial tile, a row that
    starts late), against numpy: a broken build falls back rather than giving wrong tokens."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((11, 5), np.float32)
    w = rng.standard_normal((5, 2 * TILE_COLS + 7), np.float32)
    q = rng.standard_normal((2, 3, 4), np.float32)
    k_t, v = rng.standard_normal((2, 3, 4, 6), np.float32), rng.standard_normal((2, 3, 6, 4), np.float32)
    start, slot = np.array([2, 0], np.int32), 4
    expected = np.empty_like(q)
    for b in range(2):
        scores = np.einsum("hk,hks->hs", q[b], k_t[b, :, :, start[b] : slot + 1]) / 2.0
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        expected[b] = np.einsum("hs,hsk->hk", probs / probs.sum(-1, keepdims=True), v[b, :, start[b] : slot + 1])
    global _checking_thread
    _checking_thread = threading.get_ident()
    try:
        with jax.ensure_compile_time_eval(), jax.default_device(jax.devices("cpu")[0]):
            results = [
                (matmul(x, pack(w)), x @ w),
                (matmul(x, pack(np.stack([w, 2 * w]), layer=1)), 2 * x @ w),
                (matmul(x, pack(w.T, transposed=True)), x @ w),
                (cached_attention(q, k_t, v, start, slot), expected),
            ]
            correct = all(np.allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5) for got, want in results)
    finally:
        _checking_thread = None
    if not correct:
        raise KernelUnavailable("the built kernels' self-check gave wrong results")
