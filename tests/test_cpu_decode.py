"""kernels/cpu_decode: the CPU decode kernels against numpy and XLA, their build, and the fallback.

generation.py runs its decode steps on these kernels on the CPU (test_generation covers both paths
against transformers); here each kernel is checked alone on shapes with every remainder case.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gpt_flax import generation as gen
from gpt_flax.kernels import cpu_decode


@pytest.fixture(scope="module", autouse=True)
def kernels():
    # The test machines have a C++ compiler: a kernel that fails to build here is a failure, not a skip.
    assert cpu_decode.available(), cpu_decode.unavailable_reason()
    with jax.default_device(jax.devices("cpu")[0]):  # CPU kernels, also where the default device is a GPU
        yield


def reference(x, w):
    return (x.astype(np.float64) @ w.astype(np.float64)).astype(np.float32)


@pytest.mark.parametrize("rows", [1, 3, 8, 13, 17])
@pytest.mark.parametrize("k, n", [(5, 7), (24, 48), (24, 72), (33, 100), (96, 24)])
def test_matmul_matches_numpy(rows, k, n):
    rng = np.random.default_rng(rows * 1000 + k * 10 + n)
    x, w = rng.standard_normal((rows, k), np.float32), rng.standard_normal((k, n), np.float32)
    packed = cpu_decode.pack(w)
    assert packed.shape == (k, n) and packed.tiles.shape == (-(-n // cpu_decode.TILE_COLS), k, cpu_decode.TILE_COLS)
    np.testing.assert_allclose(np.asarray(cpu_decode.matmul(x, packed)), reference(x, w), rtol=1e-5, atol=1e-5)


def test_pack_layer_of_a_stack_and_transposed_table():
    rng = np.random.default_rng(0)
    stack = rng.standard_normal((3, 24, 50), np.float32)  # [L, K, N]
    table = rng.standard_normal((37, 24), np.float32)  # [V, D], as the LM head's token table
    x = rng.standard_normal((9, 24), np.float32)
    for layer in range(3):
        got = cpu_decode.matmul(x, cpu_decode.pack(stack, layer=layer))
        np.testing.assert_allclose(np.asarray(got), reference(x, stack[layer]), rtol=1e-5, atol=1e-5)
    got = cpu_decode.matmul(x, cpu_decode.pack(table, transposed=True))
    np.testing.assert_allclose(np.asarray(got), reference(x, table.T), rtol=1e-5, atol=1e-5)
    # packing is exact: the tiles hold the weight's values, zero past N
    tiles = np.asarray(cpu_decode.pack(table, transposed=True).tiles)  # [P, K, 48]
    np.testing.assert_array_equal(tiles.transpose(1, 0, 2).reshape(24, -1)[:, :37], table.T)
    assert not tiles.transpose(1, 0, 2).reshape(24, -1)[:, 37:].any()


def test_matmul_under_jit_and_in_a_loop():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((24, 24), np.float32) * 0.2
    x = rng.standard_normal((4, 24), np.float32)

    @jax.jit
    def run(x, w):
        packed = cpu_decode.pack(w)
        return jax.lax.fori_loop(0, 5, lambda i, h: jnp.tanh(cpu_decode.matmul(h, packed)), x)

    expected = x
    for _ in range(5):
        expected = np.tanh(expected @ w)
    np.testing.assert_allclose(np.asarray(run(x, w)), expected, rtol=1e-5, atol=1e-5)


def test_bad_shapes_are_named():
    packed = cpu_decode.pack(np.ones((24, 50), np.float32))
    with pytest.raises(ValueError, match=r"x \(3, 23\).*\(24, 50\)"):
        cpu_decode.matmul(np.ones((3, 23), np.float32), packed)
    with pytest.raises(ValueError, match=r"shape \(24,\)"):
        cpu_decode.pack(np.ones(24, np.float32))


@pytest.mark.parametrize("slot", [0, 5, 12])
def test_cached_attention_matches_xla_over_the_masked_cache(slot):
    """The kernel reads slots start[b]..slot; XLA's `cached_attention` masks the rest of the array."""
    B, H, K, S = 4, 3, 8, 13
    rng = np.random.default_rng(slot)
    q = rng.standard_normal((B, 1, H, K), np.float32)
    k_t = rng.standard_normal((B, H, K, S), np.float32) * 2  # spread scores: a softmax far from uniform
    v = rng.standard_normal((B, H, S, K), np.float32)
    start = np.minimum(np.array([0, 2, 5, 12]), slot).astype(np.int32)  # a row whose only slot is `slot`
    key_mask = np.arange(S)[None, :] >= start[:, None]
    expected = gen.cached_attention(q, k_t, v, slot, key_mask)[:, 0]
    got = cpu_decode.cached_attention(q[:, 0], k_t, v, start, slot)
    np.testing.assert_allclose(np.asarray(got), np.asarray(expected), rtol=1e-5, atol=1e-6)
    # what lies outside start[b]..slot is never read
    k_noise, v_noise = k_t.copy(), v.copy()
    for b in range(B):
        outside = (np.arange(S) < start[b]) | (np.arange(S) > slot)
        k_noise[b][..., outside], v_noise[b][:, outside] = np.nan, np.nan
    np.testing.assert_array_equal(np.asarray(cpu_decode.cached_attention(q[:, 0], k_noise, v_noise, start, slot)), got)


@pytest.fixture
def fresh_build(monkeypatch, tmp_path):
    """The kernels' loader run again with a private cache directory; loaded as before afterwards."""
    monkeypatch.setenv(cpu_decode.CACHE_ENV, str(tmp_path))
    cpu_decode._reset()
    yield tmp_path
    monkeypatch.undo()
    cpu_decode._reset()
    assert cpu_decode.available()


def test_built_once_then_reused_from_the_cache(fresh_build):
    assert cpu_decode.available()
    (library,) = fresh_build.glob("cpu_decode-*.so")
    built = library.stat().st_mtime_ns
    assert not list(fresh_build.glob("*.partial"))
    cpu_decode._reset()
    assert cpu_decode.available()
    assert library.stat().st_mtime_ns == built and len(list(fresh_build.glob("*"))) == 2  # and its digest


def test_no_compiler_falls_back_to_xla_with_a_reason(fresh_build, monkeypatch, caplog):
    monkeypatch.setenv("CXX", "no-such-compiler-here")
    assert not cpu_decode.available()
    assert "'no-such-compiler-here' is not on PATH" in cpu_decode.unavailable_reason()
    assert "unavailable" in caplog.text and not list(fresh_build.glob("*"))
    assert not gen.use_cpu_kernel(jnp.float32)


def test_a_compile_error_falls_back_naming_it(fresh_build, monkeypatch, tmp_path_factory):
    broken = tmp_path_factory.mktemp("src") / "cpu_decode.cc"
    broken.write_text("this is not C++\n")
    monkeypatch.setattr(cpu_decode, "SOURCE", broken)
    assert not cpu_decode.available()
    assert "failed" in cpu_decode.unavailable_reason() and "error" in cpu_decode.unavailable_reason()
    assert not list(fresh_build.glob("*"))  # nothing half-written in the cache


def test_turned_off_by_the_environment(fresh_build, monkeypatch):
    monkeypatch.setenv(cpu_decode.DISABLE_ENV, "0")
    assert not cpu_decode.available()
    assert cpu_decode.DISABLE_ENV in cpu_decode.unavailable_reason()


def test_used_only_for_float32_on_the_cpu():
    assert gen.use_cpu_kernel(jnp.float32) == (jax.default_backend() == "cpu")
    assert not gen.use_cpu_kernel(jnp.bfloat16)


def test_first_use_inside_jit_builds_and_checks_outside_the_trace(fresh_build):
    w = np.arange(24 * 50, dtype=np.float32).reshape(24, 50)
    tiles = jax.jit(lambda w: cpu_decode.pack(w).tiles)(w)  # the build and self-check run while tracing
    np.testing.assert_array_equal(np.asarray(tiles).transpose(1, 0, 2).reshape(24, -1)[:, :50], w)


def test_calling_a_kernel_when_unavailable_says_why(fresh_build, monkeypatch):
    monkeypatch.setenv(cpu_decode.DISABLE_ENV, "0")
    with pytest.raises(cpu_decode.KernelUnavailable, match=cpu_decode.DISABLE_ENV):
        cpu_decode.pack(np.ones((4, 4), np.float32))


def test_any_failure_while_loading_falls_back_naming_it(fresh_build, monkeypatch):
    def broken():
        raise RuntimeError("INTERNAL: boom")

    monkeypatch.setattr(cpu_decode, "_self_check", broken)
    assert not cpu_decode.available()
    assert cpu_decode.unavailable_reason() == "RuntimeError: INTERNAL: boom"


@pytest.mark.parametrize("damage", ["junk", "cut short"])
def test_a_cached_library_that_does_not_load_is_rebuilt(fake_compiler, damage):
    """Junk fails dlopen; a library cut short (a crash, a partial copy into a shared cache) would load
    and kill the process with SIGBUS, so it must be caught before dlopen. (Built by the copying compiler,
    here and in the new process: the rebuild, not the compile, is under test.)"""
    assert cpu_decode.available()
    (library,) = cpu_decode.cache_root().glob("cpu_decode-*.so")
    whole = library.read_bytes()
    # Replaced, not written over: this process has the file mapped, and truncating a mapped library
    # kills the process with SIGBUS when the loader next touches it (at exit at the latest).
    bad = library.with_suffix(".bad")
    bad.write_bytes(b"not a shared library" if damage == "junk" else whole[: len(whole) // 2])
    os.replace(bad, library)
    # A new process: this one has the library loaded already, and dlopen would hand that back.
    check = "from gpt_flax.kernels import cpu_decode; print(cpu_decode.available(), cpu_decode.unavailable_reason())"
    result = subprocess.run([sys.executable, "-c", check], check=False, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "True None", result.stderr
    assert library.read_bytes() == whole and fake_compiler() == 2


def test_the_cached_library_is_readable_by_other_users(fresh_build):
    old = os.umask(0o022)
    try:
        assert cpu_decode.available()
    finally:
        os.umask(old)
    (library,) = fresh_build.glob("cpu_decode-*.so")
    assert stat.S_IMODE(library.stat().st_mode) == 0o755


def test_cxx_may_carry_a_launcher_and_threads_build_once(fresh_build, monkeypatch):
    monkeypatch.setenv("CXX", "env c++")  # as "ccache g++": a launcher, then the compiler
    builds = []
    run = subprocess.run
    monkeypatch.setattr(
        cpu_decode.subprocess, "run", lambda command, **kw: builds.append(command) or run(command, **kw)
    )
    threads = [threading.Thread(target=cpu_decode.available) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert cpu_decode.available() and len(builds) == 1 and builds[0][1] == "c++"


def test_bad_layers_and_attention_operands_are_named():
    stack = np.ones((3, 24, 50), np.float32)
    for layer in (3, -1):
        with pytest.raises(ValueError, match=rf"layer={layer} is out of range for a stack of 3 layers"):
            cpu_decode.pack(stack, layer=layer)
    with pytest.raises(TypeError, match="must be a Python int, not a traced value"):
        jax.jit(lambda w, i: cpu_decode.pack(w, layer=i).tiles)(stack, 1)
    B, H, K, S = 2, 3, 4, 6
    q, k_t, v = np.ones((B, H, K), np.float32), np.ones((B, H, K, S), np.float32), np.ones((B, H, S, K), np.float32)
    start = np.zeros(B, np.int32)
    bad = {
        r"q \[B, H, K\].*got q \(2, 1, 3, 4\)": (q[:, None], k_t, v, start, 1),
        r"needs v \(2, 3, 6, 4\), got \(2, 3, 6, 5\)": (q, k_t, np.ones((B, H, S, 5), np.float32), start, 1),
        r"needs start \(2,\), got \(3,\)": (q, k_t, v, np.zeros(3, np.int32), 1),
        r"needs slot \(\), got \(1,\)": (q, k_t, v, start, np.ones(1, np.int32)),
        r"start must be an integer array, got float32": (q, k_t, v, start.astype(np.float32), 1),
        r"start has a negative entry": (q, k_t, v, np.array([-1, 0], np.int32), 1),
        r"start \[0, 2\] has a row that starts after slot=1": (q, k_t, v, np.array([0, 2], np.int32), 1),
        r"slot=6 is outside the cache's 6 slots": (q, k_t, v, start, 6),
    }
    for message, args in bad.items():
        with pytest.raises((ValueError, TypeError), match=message):
            cpu_decode.cached_attention(*args)
    # traced, as in the decode loop, a negative start is named by the kernel
    with pytest.raises(Exception, match="start is negative"):
        np.asarray(jax.jit(cpu_decode.cached_attention)(q, k_t, v, np.array([-1, 0], np.int32), 1))


@pytest.fixture
def reload():
    """The kernels' loader run again over the already built library (no compile)."""
    cpu_decode._reset()
    yield
    cpu_decode._reset()
    assert cpu_decode.available()


def test_other_threads_wait_for_the_self_check(reload, monkeypatch):
    """A kernel called from another thread while the self-check runs must wait for its verdict, not
    run kernels that have not passed it."""
    other: dict = {}

    def pack_in_another_thread():
        try:
            other["result"] = cpu_decode.pack(np.ones((4, 4), np.float32))
        except cpu_decode.KernelUnavailable as e:
            other["error"] = e

    def wrong_matmul(x, w):  # the self-check's first kernel: start the other thread, then fail the check
        if "thread" not in other:
            other["thread"] = threading.Thread(target=pack_in_another_thread)
            other["thread"].start()
            other["thread"].join(0.5)
            other["done_during_check"] = not other["thread"].is_alive()
        return jnp.zeros((x.shape[0], w.features), jnp.float32)

    monkeypatch.setattr(cpu_decode, "matmul", wrong_matmul)
    assert not cpu_decode.available()
    other["thread"].join()
    assert not other["done_during_check"] and "result" not in other
    assert "self-check gave wrong results" in str(other["error"])


@pytest.fixture
def fake_compiler(fresh_build, monkeypatch, tmp_path_factory):
    """$CXX set to a script that writes (the first FAKE_BYTES bytes of) FAKE_LIB, by default the
    library this process built, to its -o path and logs each run: a build with no compile."""
    folder = tmp_path_factory.mktemp("cxx")
    script, log = folder / "fake-c++", folder / "runs"
    script.write_text(
        '#!/bin/sh\nwhile [ $# -gt 1 ]; do [ "$1" = -o ] && out=$2; shift; done\n'
        'echo run >> "$FAKE_LOG"\nhead -c "$FAKE_BYTES" "$FAKE_LIB" > "$out"\n'
    )
    script.chmod(0o755)
    built = cpu_decode._registered[0]._name  # the library the module fixture loaded
    monkeypatch.setenv("CXX", str(script))
    monkeypatch.setenv("FAKE_LOG", str(log))
    monkeypatch.setenv("FAKE_LIB", built)
    monkeypatch.setenv("FAKE_BYTES", str(os.path.getsize(built)))
    return lambda: len(log.read_text().splitlines()) if log.exists() else 0


@pytest.mark.parametrize("damage", ["a flipped byte", "another library", "no digest"])
def test_a_cached_library_that_fails_its_digest_is_rebuilt_before_loading(fake_compiler, damage):
    """Damaged code with intact headers would load and die of SIGILL when run; a valid library of
    another kind would load and never heal. The digest written beside the build catches both."""
    assert cpu_decode.available() and fake_compiler() == 1
    (library,) = cpu_decode.cache_root().glob("cpu_decode-*.so")
    good = library.read_bytes()
    if damage == "a flipped byte":
        bad = bytearray(good)
        bad[len(bad) // 2] ^= 0xFF
        replace(library, bytes(bad))
    elif damage == "another library":
        replace(library, Path(ctypes_library()).read_bytes())
    else:
        library.with_name(library.name + ".sha256").unlink(missing_ok=True)
    cpu_decode._reset()
    assert cpu_decode.available(), cpu_decode.unavailable_reason()
    assert fake_compiler() == 2 and library.read_bytes() == good


def ctypes_library():
    """A valid shared library that is not the kernels' (CPython's _ctypes extension)."""
    import _ctypes

    return _ctypes.__file__


def replace(path, data):
    """Write over a library by replacing it: this process may have it mapped (see above)."""
    path.with_suffix(".new").write_bytes(data)
    os.replace(path.with_suffix(".new"), path)


@pytest.mark.parametrize("output", ["cut short", "another library"])
def test_a_bad_fresh_build_falls_back_and_leaves_nothing(fake_compiler, monkeypatch, output):
    """A compiler (or a wrapper, ccache, a full disk) that exits 0 but leaves a short file: dlopen
    would die of SIGBUS. Checked before loading, removed, and not built again: the same compiler
    would give the same."""
    if output == "cut short":
        monkeypatch.setenv("FAKE_BYTES", str(os.path.getsize(os.environ["FAKE_LIB"]) // 2))
    else:
        monkeypatch.setenv("FAKE_LIB", ctypes_library())
        monkeypatch.setenv("FAKE_BYTES", str(os.path.getsize(ctypes_library())))
    assert not cpu_decode.available()
    reason = cpu_decode.unavailable_reason()
    assert "fake-c++ built" in reason, reason
    assert ("is cut short" if output == "cut short" else "lacks the kernels' symbols") in reason, reason
    assert fake_compiler() == 1 and not list(cpu_decode.cache_root().glob("*"))


def test_a_bad_library_in_a_read_only_cache_names_the_cache(fake_compiler, monkeypatch):
    assert cpu_decode.available()
    cache = cpu_decode.cache_root()
    (library,) = cache.glob("cpu_decode-*.so")
    replace(library, b"not a shared library")
    unlink = os.unlink

    def read_only(path, *args, **kwargs):  # root ignores a directory's mode: refuse as the kernel would
        if os.path.dirname(os.fspath(path)) == str(cache):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", read_only)
    cpu_decode._reset()
    assert not cpu_decode.available()
    reason = cpu_decode.unavailable_reason()
    assert f"the cache dir {cache} is not writable" in reason and cpu_decode.CACHE_ENV in reason, reason
