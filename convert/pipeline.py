"""One conversion: read a checkpoint, map it onto a head's param tree, write it in either format.

    report = convert("openai-community/openai-gpt", "out/", head="lm", to="flax", dtype="bfloat16")
    print("\\n".join(report.summary()))

Strict where a converter must be: a checkpoint whose shapes or layer count do not fit its config is
refused, as is one missing transformer weights. Heads it lacks are newly initialised (transformers'
init) and listed; keys the target head does not use are listed. Nothing is written until all of
that has passed, and then atomically (`convert.writers`).
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import sys
import time

import numpy as np

from convert.mapping import ARCHITECTURES, HEADS, PREFIX, _get, _set, flax_paths, flax_to_hf, head_table, hf_to_flax
from convert.readers import COMPANION_FILES, Checkpoint, load_checkpoint
from convert.tensors import FLOAT_DTYPES, Tensor
from convert.writers import atomic_directory, check_destination, param_dtype, write_flax, write_hf
from gpt_flax.config import OpenAIGPTConfig

_BODY_KEY = re.compile(r"^(tokens_embed|positions_embed|h)\.")


@dataclasses.dataclass
class ConvertReport:
    src: str
    dst: str
    source_format: str
    source_head: str | None
    head: str
    to: str
    dtype: str
    parameters: int
    missing_keys: list  # newly initialised
    unused_keys: list
    tied_lm_head_mismatch: bool
    files: dict  # name -> bytes
    seconds: float

    @property
    def bytes_written(self) -> int:
        return sum(self.files.values())

    def summary(self) -> list[str]:
        lines = [
            f"converted {self.src} ({self.source_format}, {self.source_head} head) -> {self.dst} ({self.to}, "
            + f"{self.head} head, {self.dtype})",
            f"parameters: {self.parameters:,}",
            f"missing keys, newly initialised: {', '.join(self.missing_keys) or 'none'}",
            f"unused keys: {', '.join(self.unused_keys) or 'none'}",
        ]
        if self.tied_lm_head_mismatch:
            lines.append(
                "warning: lm_head.weight differs from tokens_embed.weight; the head is tied, so it was ignored"
            )
        lines.append(f"written: {self.bytes_written:,} bytes in {len(self.files)} files ({', '.join(self.files)})")
        lines.append(f"time: {self.seconds:.2f} s")
        return lines


def adapt_config(config: OpenAIGPTConfig, head: str) -> OpenAIGPTConfig:
    """The config the head's model runs with (the double-heads model forces num_labels = 1)."""
    from gpt_flax import modeling

    return getattr(modeling, ARCHITECTURES[head][1])._adapt_config(config)


def load_params(
    checkpoint: Checkpoint, head: str, *, dtype: str | None = None, seed: int = 0, progress: bool = False
) -> tuple[dict, OpenAIGPTConfig, object]:
    """(numpy param tree, config, LoadResult) of `checkpoint` as `head`; refuses what does not fit."""
    config = adapt_config(checkpoint.config, head)
    state = checkpoint.state_dict
    lazy = {t.source: t for t in state.values() if isinstance(t, Tensor)}  # a shared storage is read once
    with _bar(progress, "read", sum(t.nbytes for t in lazy.values())) as bar:
        state = {k: t.with_hook(bar.update) if isinstance(t, Tensor) else t for k, t in state.items()}
        loaded = hf_to_flax(state, config, head, dtype=FLOAT_DTYPES.get(dtype))
    head_keys = {e.hf for e in head_table(config, head)}
    body_missing = [k for k in loaded.missing_keys if k not in head_keys]
    if body_missing:
        raise ValueError(
            f"{checkpoint.directory} lacks {len(body_missing)} transformer weights its config needs, e.g. {body_missing[:3]}"
        )
    body_unused = [k for k in loaded.unexpected_keys if _BODY_KEY.match(k.removeprefix(PREFIX))]
    if body_unused:
        layers = [int(m.group(1)) for k in body_unused if (m := re.match(r"h\.(\d+)\.", k.removeprefix(PREFIX)))]
        why = (
            f"layers past its n_layer={config.n_layer}"
            if layers and max(layers) >= config.n_layer
            else "names the model does not have"
        )
        raise ValueError(
            f"{checkpoint.directory} holds transformer weights its config has no place for ({why}), e.g. {body_unused[:3]}"
        )
    params = loaded.params
    if loaded.missing_keys:
        body = params.get("transformer", params)
        new_dtype = FLOAT_DTYPES[dtype] if dtype else body["tokens_embed"]["embedding"].dtype
        params = _with_new_head(params, config, head, seed, new_dtype, set(loaded.missing_keys))
    return params, config, loaded


def _with_new_head(params: dict, config: OpenAIGPTConfig, head: str, seed: int, dtype, missing: set) -> dict:
    """Fill the head's `missing` params with transformers' init (normal(0, initializer_range), zero bias)."""
    import jax

    from gpt_flax.heads import init_head_params

    fresh = init_head_params(config, head, jax.random.key(seed), dtype)
    for entry in head_table(config, head):
        if entry.hf in missing:
            _set(params, entry.flax, np.asarray(_get(fresh, entry.flax)))
    return params


def convert(
    src: str,
    dst: str,
    *,
    head: str | None = None,
    to: str = "flax",
    dtype: str | None = None,
    config: OpenAIGPTConfig | None = None,
    revision: str | None = None,
    cache_dir: str | None = None,
    bin: bool = False,
    overwrite: bool = False,
    seed: int = 0,
    progress: bool = False,
) -> ConvertReport:
    """Convert the checkpoint at `src` (Hub id or directory) into `dst` as `head`, in format `to`."""
    start = time.perf_counter()
    if head is not None and head not in HEADS:
        raise ValueError(f"head must be one of {HEADS}, got {head!r}")
    if to not in ("flax", "hf"):
        raise ValueError(f"to must be 'flax' or 'hf', got {to!r}")
    if dtype is not None and dtype not in FLOAT_DTYPES:
        raise ValueError(f"dtype must be one of {list(FLOAT_DTYPES)}, got {dtype!r}")
    if bin and to != "hf":
        raise ValueError("pytorch_model.bin is only written with --to hf")
    check_destination(dst, overwrite, src=src)
    checkpoint = load_checkpoint(src, revision=revision, cache_dir=cache_dir, config=config)
    check_destination(dst, overwrite, src=checkpoint.directory)  # a Hub id's snapshot is known only now
    head = head or checkpoint.head
    params, config, loaded = load_params(checkpoint, head, dtype=dtype, seed=seed, progress=progress)
    state = {"/".join(p): _get(params, p) for p in flax_paths(config, head)}
    total = sum(a.nbytes for a in state.values()) * (2 if bin else 1)
    with _bar(progress, "write", total) as bar, atomic_directory(dst, overwrite) as tmp:
        if to == "flax":
            files = write_flax(tmp, params, config, head, bar.update)
        else:
            files = write_hf(tmp, flax_to_hf(params, config, head), config, head, bin=bin, on_write=bar.update)
        files.update(_copy_companions(checkpoint.directory, tmp))
    return ConvertReport(
        src=str(src),
        dst=str(dst),
        source_format=checkpoint.format,
        source_head=checkpoint.head,
        head=head,
        to=to,
        dtype=param_dtype(state.values()).name,
        parameters=sum(a.size for a in state.values()),
        missing_keys=loaded.missing_keys,
        unused_keys=loaded.unexpected_keys,
        tied_lm_head_mismatch=loaded.tied_lm_head_mismatch,
        files=files,
        seconds=time.perf_counter() - start,
    )


def _copy_companions(src_dir, dst_dir: str) -> dict:
    """Copy the tokenizer and generation files the source holds, so DST loads as SRC did."""
    copied = {}
    for name in COMPANION_FILES:
        path = os.path.join(src_dir, name) if src_dir else None
        if path and os.path.isfile(path):
            shutil.copyfile(path, os.path.join(dst_dir, name))
            copied[name] = os.path.getsize(path)
    return copied


def _bar(enabled: bool, stage: str, total: int):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=stage, unit="B", unit_scale=True, disable=not enabled, file=sys.stderr, leave=False)
