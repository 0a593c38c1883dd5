"""Checkpoint writers: our Flax format and transformers' format, each written atomically.

Flax format (a directory): `config.json` (architectures = our class) and `flax_model.safetensors`,
the param tree under '/'-joined paths (`transformer/h/attn/c_attn/kernel` [L, D, 3D]), metadata
`{"format": "gpt-flax", "head": ...}`. transformers' format: `config.json` (architectures = the
transformers class), `model.safetensors` (metadata `{"format": "pt"}`, tied `lm_head` left out as
transformers does), and optionally `pytorch_model.bin`.

Atomic: everything is written into a hidden sibling directory, synced, then moved into place. A new
or empty destination is replaced by one rename. Into a non-empty one (other files kept, e.g. a
tokenizer), its `config.json` is removed first and the new one moved in last, so a crash in between
leaves a directory with no config, which every loader refuses, never a mix that looks valid.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import secrets
import shutil
from collections.abc import Callable

import numpy as np

from convert.mapping import ARCHITECTURES, ShapeMismatchError, _get, flax_paths, flax_to_hf
from convert.readers import BIN_NAME, FLAX_FORMAT, FLAX_WEIGHTS_NAME, SAFETENSORS_NAME
from convert.safetensors_io import write_safetensors
from convert.tensors import FLOAT_DTYPES, is_floating
from convert.torch_zip import write_torch_zip
from gpt_flax.config import CONFIG_NAME, OpenAIGPTConfig

# Files that belong to a checkpoint: replaced (or removed when stale) when one is written over another.
CHECKPOINT_FILES = (
    CONFIG_NAME,
    FLAX_WEIGHTS_NAME,
    SAFETENSORS_NAME,
    "model.safetensors.index.json",
    "model-*-of-*.safetensors",
    BIN_NAME,
    "pytorch_model.bin.index.json",
    "pytorch_model-*-of-*.bin",
)


def check_destination(dst: str, overwrite: bool, *, src: str | None = None, option: str = "overwrite=True") -> None:
    """Refuse, before any work, a destination we may not write.

    `src`: the checkpoint directory being read, which is never written over (replacing its checkpoint
    would delete the weights being converted). `option`: how the caller spells the switch that allows
    a non-empty destination, for the message (`--overwrite` on the command line)."""
    if not str(dst).strip():
        raise ValueError("the destination directory is an empty path")
    if os.path.exists(dst) and not os.path.isdir(dst):
        raise FileExistsError(f"{dst} exists and is not a directory")
    # samefile: the same directory under any name (a symlink, `./`, a trailing slash, a bind mount).
    if src is not None and os.path.isdir(src) and os.path.isdir(dst) and os.path.samefile(src, dst):
        raise ValueError(
            f"cannot write into {dst}: it is the source checkpoint's directory; choose another destination"
        )
    if os.path.isdir(dst) and os.listdir(dst) and not overwrite:
        raise FileExistsError(f"{dst} exists and is not empty; pass {option} to replace its checkpoint")
    ancestor = os.path.dirname(os.path.realpath(dst))
    while not os.path.exists(ancestor):
        ancestor = os.path.dirname(ancestor)
    if not os.path.isdir(ancestor):
        raise NotADirectoryError(f"cannot write the checkpoint to {dst}: {ancestor} is a file, not a directory")


@contextlib.contextmanager
def atomic_directory(dst: str, overwrite: bool = False):
    """Yield a temporary directory; on a clean exit its files become `dst`'s, on an error they vanish.

    A `dst` that is a symlink (to a directory, or to one yet to be made) is written through: the files
    land in its target, and the link stays."""
    check_destination(dst, overwrite)
    target = os.path.realpath(dst)
    parent = os.path.dirname(target)
    tmp = os.path.join(parent, f".{os.path.basename(target)}.tmp-{secrets.token_hex(4)}")
    try:
        os.makedirs(parent, exist_ok=True)
        os.mkdir(tmp)
    except OSError as e:  # name the user's path, not our temporary one
        raise OSError(f"cannot write the checkpoint to {dst}: {e.strerror or e}") from None
    try:
        yield tmp
        _fsync_dir(tmp)
        _commit(tmp, target)
        _fsync_dir(parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _commit(tmp: str, dst: str) -> None:
    if not os.path.isdir(dst) or not os.listdir(dst):
        os.replace(tmp, dst)  # rename(2) replaces a missing or empty directory in one step
        return
    new = set(os.listdir(tmp))
    with contextlib.suppress(FileNotFoundError):
        os.remove(os.path.join(dst, CONFIG_NAME))  # from here on dst is no checkpoint until the new config lands
    for name in os.listdir(dst):
        if name not in new and any(fnmatch.fnmatch(name, p) for p in CHECKPOINT_FILES):
            os.remove(os.path.join(dst, name))
    for name in sorted(new - {CONFIG_NAME}) + [CONFIG_NAME]:
        os.replace(os.path.join(tmp, name), os.path.join(dst, name))
    _fsync_dir(dst)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_config(directory: str, config: OpenAIGPTConfig, architecture: str, dtype) -> None:
    extra = {k: v for k, v in config.extra.items() if k != "torch_dtype"}  # 4.56 writes `dtype`
    extra["dtype"] = np.dtype(dtype).name
    config.replace(extra=extra).save_pretrained(directory, architectures=[architecture])


def param_dtype(arrays) -> np.dtype:
    """The dtype of the first floating array (what a checkpoint's `dtype` field reports)."""
    return next((a.dtype for a in arrays if is_floating(a.dtype)), np.dtype(np.float32))


def write_flax(
    directory: str, params: dict, config: OpenAIGPTConfig, head: str, on_write: Callable | None = None
) -> dict[str, int]:
    """Our format into `directory` (already created); returns {file name: bytes}."""
    flat = {"/".join(p): np.asarray(_get(params, p)) for p in flax_paths(config, head)}
    size = write_safetensors(
        os.path.join(directory, FLAX_WEIGHTS_NAME), flat, {"format": FLAX_FORMAT, "head": head}, on_write
    )
    _write_config(directory, config, ARCHITECTURES[head][1], param_dtype(flat.values()))
    return {FLAX_WEIGHTS_NAME: size, CONFIG_NAME: os.path.getsize(os.path.join(directory, CONFIG_NAME))}


def write_hf(
    directory: str,
    state_dict: dict,
    config: OpenAIGPTConfig,
    head: str,
    *,
    bin: bool = False,
    on_write: Callable | None = None,
) -> dict[str, int]:
    """transformers' format into `directory` (already created); returns {file name: bytes}."""
    files = {SAFETENSORS_NAME: write_safetensors(os.path.join(directory, SAFETENSORS_NAME), state_dict, {"format": "pt"}, on_write)}
    if bin:
        path = os.path.join(directory, BIN_NAME)
        write_torch_zip(path, state_dict, on_write)
        files[BIN_NAME] = os.path.getsize(path)
    if config.afn == "gelu_new":  # the same tanh gelu, under the name transformers' OpenAI GPT knows
        config = config.replace(afn="gelu")
    _write_config(directory, config, ARCHITECTURES[head][0], param_dtype(state_dict.values()))
    files[CONFIG_NAME] = os.path.getsize(os.path.join(directory, CONFIG_NAME))
    return files


def save_params(
    dst: str,
    params: dict,
    config: OpenAIGPTConfig,
    head: str,
    *,
    format: str = "flax",
    dtype: str | None = None,
    bin: bool = False,
    overwrite: bool = True,
    on_write: Callable | None = None,
    extra_files: dict[str, str] | None = None,
) -> dict[str, int]:
    """Save a param tree (JAX or numpy leaves) as a checkpoint directory, atomically.

    `format` "flax" (ours) or "hf" (transformers'); `dtype` casts floating weights (float32,
    bfloat16, float16; None keeps them); `bin` also writes pytorch_model.bin (hf only);
    `extra_files` (name -> text) go in beside the weights.
    """
    if format not in ("flax", "hf"):
        shown = repr(format) if isinstance(format, str) else f"a {type(format).__name__}"
        raise ValueError(f"format must be 'flax' or 'hf', got {shown}")
    if bin and format != "hf":
        raise ValueError("bin=True writes pytorch_model.bin, which only the hf format has")
    if dtype is not None and dtype not in FLOAT_DTYPES:
        raise ValueError(f"dtype must be one of {list(FLOAT_DTYPES)} or None, got {dtype!r}")
    cast = FLOAT_DTYPES.get(dtype)
    host = _map_tree(lambda x: _cast(np.asarray(x), cast), params)
    state_dict = _checked_state_dict(host, config, head)  # either format: every tensor the config's shape
    with atomic_directory(dst, overwrite) as tmp:
        if format == "flax":
            written = write_flax(tmp, host, config, head, on_write)
        else:
            written = write_hf(tmp, state_dict, config, head, bin=bin, on_write=on_write)
        for name, text in (extra_files or {}).items():
            data = text.encode("utf-8")
            with open(os.path.join(tmp, name), "wb") as f:
                f.write(data)
            written[name] = len(data)
        return written


def _checked_state_dict(host: dict, config: OpenAIGPTConfig, head: str) -> dict:
    """transformers' state dict of a param tree, refusing (before anything is written) a tree that lacks
    a tensor or holds one of another shape than the config's."""
    try:
        return flax_to_hf(host, config, head)
    except KeyError as error:
        raise KeyError(f"the params to save have no {error.args[0]!r}, which the {head} model has") from None
    except ShapeMismatchError as error:
        raise ShapeMismatchError(f"cannot save these params with this config: {error}") from None


def _cast(x: np.ndarray, dtype) -> np.ndarray:
    return x.astype(dtype) if dtype is not None and is_floating(x.dtype) and x.dtype != dtype else x


def _map_tree(fn, tree):
    return {k: _map_tree(fn, v) for k, v in tree.items()} if isinstance(tree, dict) else fn(tree)
