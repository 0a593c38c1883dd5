"""Checkpoint readers: a directory or Hub id -> its config and {HF key: lazy Tensor}. No torch, no JAX.

    checkpoint = load_checkpoint("path/or/hub-id")     # .config, .format, .head, .state_dict
    state_dict = read_state_dict("path/or/hub-id")     # {HF key: Tensor}; np.asarray(t) reads it

Formats, looked for in this order in a directory: our Flax format (`flax_model.safetensors`,
written by `convert.writers`), `model.safetensors`, its sharded index, `pytorch_model.bin` (torch's
zip, through the restricted unpickler of `convert.torch_zip`), its sharded index, and OpenAI's
original release (`convert.original`). Every format comes back under transformers' key names, so
one name table (`convert.mapping`) serves them all. A Hub id is fetched with huggingface_hub into
its cache (revision, cache_dir, HF_HUB_OFFLINE honoured), only the files one format needs.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Callable

import numpy as np

from convert import original
from convert.mapping import ARCHITECTURES, HEADS, _set, flax_paths, flax_to_hf, head_from_architectures, infer_head
from convert.safetensors_io import open_safetensors, read_safetensors
from convert.torch_zip import read_torch_bin
from gpt_flax.config import CONFIG_NAME, OpenAIGPTConfig, read_json_object
from gpt_flax.hub import online_repo_files

logger = logging.getLogger("gpt_flax")

FLAX_WEIGHTS_NAME = "flax_model.safetensors"
FLAX_FORMAT = "gpt-flax"  # the `format` in our Flax file's safetensors metadata
SAFETENSORS_NAME = "model.safetensors"
SAFETENSORS_INDEX_NAME = "model.safetensors.index.json"
BIN_NAME = "pytorch_model.bin"
BIN_INDEX_NAME = "pytorch_model.bin.index.json"

# format -> the file that marks it, in the order a directory is searched.
FORMATS = {
    "flax": FLAX_WEIGHTS_NAME,
    "safetensors": SAFETENSORS_NAME,
    "safetensors-sharded": SAFETENSORS_INDEX_NAME,
    "bin": BIN_NAME,
    "bin-sharded": BIN_INDEX_NAME,
    "original": original.SHAPES_NAME,
}
# format -> the files (glob patterns) to fetch from the Hub for it, besides config.json.
# Files beside the weights that a converted model still needs (the tokenizer's, generate's defaults):
# fetched with the weights from the Hub, copied by `gpt-flax convert`.
COMPANION_FILES = (
    "vocab.json",
    "merges.txt",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "generation_config.json",
)
HUB_PATTERNS = {
    "flax": [FLAX_WEIGHTS_NAME],
    "safetensors": [SAFETENSORS_NAME],
    "safetensors-sharded": [SAFETENSORS_INDEX_NAME, "model-*-of-*.safetensors"],
    "bin": [BIN_NAME],
    "bin-sharded": [BIN_INDEX_NAME, "pytorch_model-*-of-*.bin"],
    "original": [original.SHAPES_NAME, original.NAMES_NAME, "params_*.npy"],
}


@dataclasses.dataclass
class Checkpoint:
    directory: str  # local (a Hub id is resolved to its snapshot in the cache)
    format: str  # a key of FORMATS
    config: OpenAIGPTConfig
    head: str | None  # the head it was saved from, when known
    state_dict: dict  # HF key -> Tensor (or numpy array)


def load_checkpoint(
    path_or_hub_id: str | os.PathLike,
    *,
    revision: str | None = None,
    cache_dir: str | None = None,
    config: OpenAIGPTConfig | None = None,
    token: str | bool | None = None,
    local_files_only: bool = False,
    subfolder: str = "",
) -> Checkpoint:
    """Find, check and open a checkpoint; tensors are read later, on np.asarray.

    `config` stands in for a missing config.json (and is required for an original release that is
    not the published size); a config.json beside the weights is used when present. The Hub options
    are huggingface_hub's.
    """
    hub = {"revision": revision, "cache_dir": cache_dir, "token": token, "local_files_only": local_files_only}
    directory = resolve_directory(path_or_hub_id, subfolder=subfolder, **hub)
    fmt = find_format(directory)
    config_path = os.path.join(directory, CONFIG_NAME)
    saved = OpenAIGPTConfig.from_json_file(config_path) if os.path.isfile(config_path) else None
    if fmt == "original":
        saved = saved or config or _published_config(directory)
    elif saved is None and config is None:
        raise FileNotFoundError(f"{directory} has no {CONFIG_NAME}; the weights cannot be checked without one")
    saved = saved or config
    if fmt == "flax":
        head, state_dict = _read_flax(os.path.join(directory, FLAX_WEIGHTS_NAME), saved)
    elif fmt == "original":
        head, state_dict = "lm", original.read_original(directory)
    else:
        state_dict = _READERS[fmt](directory)
        head = head_from_architectures(saved.extra.get("architectures")) or infer_head(state_dict) or "base"
    return Checkpoint(directory, fmt, saved, head, state_dict)


def read_state_dict(
    path_or_hub_id: str | os.PathLike, *, revision: str | None = None, cache_dir: str | None = None
) -> dict:
    """The {HF key: Tensor} state dict of a checkpoint directory or Hub repo, in any format above."""
    return load_checkpoint(path_or_hub_id, revision=revision, cache_dir=cache_dir).state_dict


def find_format(directory: str) -> str:
    """The checkpoint format of `directory` (see `choose_format`)."""
    present = [fmt for fmt, name in FORMATS.items() if os.path.isfile(os.path.join(directory, name))]
    if not present:
        raise FileNotFoundError(f"no weights in {directory} (looked for {', '.join(FORMATS.values())})")
    return choose_format(present, os.path.join(directory, CONFIG_NAME), directory)


def choose_format(present: list[str], config_path: str | None, where: str) -> str:
    """The first of the formats `present` (in FORMATS order), except where both our Flax file and
    transformers' weights are there (transformers' save_pretrained into a directory of ours, or the
    reverse): config.json, which the last save wrote, then tells which is current by the classes its
    `architectures` name."""
    if present[0] != "flax" or len(present) == 1:
        return present[0]
    found = config_path is not None and os.path.isfile(config_path)
    architectures = read_json_object(config_path).get("architectures") if found else None
    names = set(architectures) if isinstance(architectures, list) else set()
    transformers_classes = {name for name, _ in ARCHITECTURES.values()}
    chosen = present[1] if names and names <= transformers_classes else "flax"
    logger.warning(
        "%s holds both %s and %s; reading %s (config.json's architectures: %s)",
        where,
        FORMATS["flax"],
        FORMATS[present[1]],
        FORMATS[chosen],
        architectures,
    )
    return chosen


# -- one reader per format -------------------------------------------------------------------
def _read_sharded(directory: str, index_name: str, read_one: Callable[[str], dict]) -> dict:
    """Shards named by an index's `weight_map` {key: file}; the index and the shards must agree."""
    index_path = os.path.join(directory, index_name)
    try:
        with open(index_path, encoding="utf-8") as f:
            weight_map = json.load(f)["weight_map"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{index_path} is not a shard index with a weight_map ({type(e).__name__}: {e})") from None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise ValueError(f"{index_path}: weight_map must map tensor names to file names")
    tensors: dict = {}
    for shard in sorted(set(weight_map.values())):
        if os.path.basename(shard) != shard or shard in (".", ".."):
            raise ValueError(f"{index_path} names shard {shard!r}, which is not a file in {directory}")
        path = os.path.join(directory, shard)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{index_path} names shard {shard}, which is missing")
        part = read_one(path)
        listed = {k for k, v in weight_map.items() if v == shard}
        if set(part) != listed:
            odd = sorted(set(part) ^ listed)
            raise ValueError(f"{index_path} and shard {shard} disagree on {len(odd)} tensors, e.g. {odd[:3]}")
        tensors.update(part)
    return tensors


_READERS = {
    "safetensors": lambda d: read_safetensors(os.path.join(d, SAFETENSORS_NAME)),
    "safetensors-sharded": lambda d: _read_sharded(d, SAFETENSORS_INDEX_NAME, read_safetensors),
    "bin": lambda d: read_torch_bin(os.path.join(d, BIN_NAME)),
    "bin-sharded": lambda d: _read_sharded(d, BIN_INDEX_NAME, read_torch_bin),
}


def _read_flax(path: str, config: OpenAIGPTConfig) -> tuple[str, dict]:
    """Our format: the param tree under '/'-joined paths; returned under HF keys (the table run backwards)."""
    tensors, metadata = open_safetensors(path)
    head = metadata.get("head")
    if metadata.get("format") != FLAX_FORMAT or head not in HEADS:
        raise ValueError(f"{path} is not a gpt-flax checkpoint (metadata {metadata})")
    paths = flax_paths(config, head)
    expected = {"/".join(p) for p in paths}
    if set(tensors) != expected:
        odd = sorted(set(tensors) ^ expected)
        raise ValueError(
            f"{path} does not hold the {head} param tree of its config: {len(odd)} paths differ, e.g. {odd[:3]}"
        )
    tree: dict = {}
    for p in paths:
        _set(tree, p, np.asarray(tensors["/".join(p)]))
    return head, flax_to_hf(tree, config, head)


def _published_config(directory: str) -> OpenAIGPTConfig:
    fields = original.config_fields(original.read_shapes(directory))
    if any(fields[k] != v for k, v in original.PUBLISHED.items() if k in fields):
        raise FileNotFoundError(
            f"{directory} is an original release of a size other than the published one, and has no {CONFIG_NAME}: "
            "n_head cannot be read off the arrays, so put a config.json beside them or pass one "
            "(gpt-flax convert --config FILE; from_pretrained(..., config=OpenAIGPTConfig(...)))"
        )
    return OpenAIGPTConfig(**fields, n_head=original.PUBLISHED["n_head"])


# -- where the files are ---------------------------------------------------------------------
def resolve_directory(
    path_or_hub_id: str | os.PathLike,
    *,
    revision: str | None = None,
    cache_dir: str | None = None,
    token: str | bool | None = None,
    local_files_only: bool = False,
    subfolder: str = "",
) -> str:
    """A local directory as given, or a Hub repo's snapshot in the cache (fetched if need be); with
    `subfolder`, that folder of it (transformers' from_pretrained option)."""
    path = os.fspath(path_or_hub_id)
    subfolder = subfolder.strip("/")
    if os.path.isdir(path):
        inner = os.path.join(path, subfolder) if subfolder else path
        if not os.path.isdir(inner):
            raise FileNotFoundError(f"{path} has no subfolder {subfolder!r}")
        return inner
    if os.path.exists(path):
        raise ValueError(f"{path} is a file; pass the directory that holds the checkpoint")
    return _hub_snapshot(path, revision, cache_dir, token, local_files_only, subfolder)


def _hub_snapshot(repo_id: str, revision, cache_dir, token, local_files_only: bool, subfolder: str = "") -> str:
    import huggingface_hub as hub
    from huggingface_hub import errors

    where = (
        f"{repo_id!r}"
        + (f" at revision {revision!r}" if revision else "")
        + (f", subfolder {subfolder!r}" if subfolder else "")
    )
    prefix = f"{subfolder}/" if subfolder else ""

    def inside(snapshot: str) -> str:
        folder = os.path.join(snapshot, subfolder) if subfolder else snapshot
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"Hub repo {where} has no such subfolder")
        return folder

    try:
        files = online_repo_files(repo_id, revision, token, local_files_only)
        options = {"revision": revision, "cache_dir": cache_dir, "token": token}
        if files is None:  # local_files_only, HF_HUB_OFFLINE or no network: the cached snapshot, as transformers
            return inside(hub.snapshot_download(repo_id, local_files_only=True, **options))
        files = {f[len(prefix) :] for f in files if f.startswith(prefix)}
        present = [f for f, name in FORMATS.items() if name in files]
        if not present:
            raise FileNotFoundError(f"Hub repo {where} holds no weights (looked for {', '.join(FORMATS.values())})")
        config_path = None
        if len(present) > 1 and present[0] == "flax" and CONFIG_NAME in files:  # which one is current: as locally
            config_path = hub.hf_hub_download(repo_id, prefix + CONFIG_NAME, **options)
        fmt = choose_format(present, config_path, f"Hub repo {where}")
        patterns = [CONFIG_NAME] + HUB_PATTERNS[fmt] + [f for f in COMPANION_FILES if f in files]
        return inside(hub.snapshot_download(repo_id, allow_patterns=[prefix + p for p in patterns], **options))
    except errors.HFValidationError:
        raise ValueError(f"{repo_id!r} is neither a local directory nor a valid Hub model id") from None
    except errors.LocalEntryNotFoundError:
        raise OSError(
            f"{where} is not a local directory, the Hugging Face Hub cannot be reached (or HF_HUB_OFFLINE or "
            "local_files_only is set) and there is no cached copy: pass a local model directory"
        ) from None
    except errors.RepositoryNotFoundError:
        raise FileNotFoundError(
            f"{repo_id!r} is not a local directory nor a Hub repo (or the repo is private)"
        ) from None
    except errors.RevisionNotFoundError:
        raise ValueError(f"Hub repo {repo_id!r} has no revision {revision!r}") from None
    except FileNotFoundError:
        raise
    except OSError as e:  # no network, DNS, HTTP errors (requests' errors are OSErrors)
        raise OSError(
            f"could not fetch {where} from the Hugging Face Hub ({type(e).__name__}); pass a local model directory instead"
        ) from None
