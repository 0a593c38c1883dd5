"""Find a checkpoint's files: in a local directory, or on the Hugging Face Hub by id."""

from __future__ import annotations

import functools
import os
import posixpath


def is_local(path_or_hub_id: str | os.PathLike) -> bool:
    return os.path.isdir(path_or_hub_id)


def looks_like_path(path_or_hub_id) -> bool:
    """A Hub id is `name` or `org/name`; anything absolute, relative-dotted or deeper is a path."""
    text = os.fspath(path_or_hub_id)
    return os.path.isabs(text) or text.startswith((".", "~")) or text.count("/") > 1 or os.sep in text.replace("/", "")


def resolve_file(
    path_or_hub_id: str | os.PathLike,
    filename: str,
    *,
    required: bool = True,
    revision: str | None = None,
    cache_dir: str | None = None,
    token: str | bool | None = None,
    local_files_only: bool = False,
    subfolder: str = "",
) -> str | None:
    """The local path of `filename` in a directory or a Hub repo (in its `subfolder`, if given); None if
    absent and not `required`. The Hub options are huggingface_hub's (and transformers' from_pretrained's)."""
    if subfolder:
        filename = posixpath.join(subfolder.strip("/"), filename)
    if is_local(path_or_hub_id):
        path = os.path.join(path_or_hub_id, filename)
        if os.path.isfile(path):
            return path
        if required:
            raise FileNotFoundError(f"{filename} not found in {path_or_hub_id}")
        return None
    if os.path.exists(path_or_hub_id):
        raise ValueError(f"{path_or_hub_id} is a file; pass the directory that holds {filename}")
    if looks_like_path(path_or_hub_id):
        raise FileNotFoundError(f"no such directory: {path_or_hub_id}")
    options = {"revision": revision, "cache_dir": cache_dir, "token": token, "local_files_only": local_files_only}
    return _hub_download(str(path_or_hub_id), filename, required=required, **options)


def hub_offline() -> bool:
    """Whether HF_HUB_OFFLINE is set (read now, not when huggingface_hub was imported)."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")


def online_repo_files(
    repo_id: str, revision: str | None, token: str | bool | None = None, local_files_only: bool = False
) -> frozenset | None:
    """The files of a Hub repo, or None where only the cache can be read: `local_files_only`,
    HF_HUB_OFFLINE, or a Hub that cannot be reached (no network), where transformers falls back to the
    cache too."""
    from huggingface_hub.errors import HfHubHTTPError

    if local_files_only or hub_offline():
        return None
    try:
        return _repo_files(repo_id, revision, token)
    except OSError as error:
        # The Hub's own answers about the repo (404, 401, a bad revision) stand; no connection, a
        # timeout or the Hub failing (5xx, 429) mean "read the cache", as huggingface_hub does.
        status = getattr(getattr(error, "response", None), "status_code", None)
        if isinstance(error, HfHubHTTPError) and status is not None and status < 500 and status != 429:
            raise
        return None


@functools.lru_cache(maxsize=32)
def _repo_files(repo_id: str, revision: str | None, token: str | bool | None = None) -> frozenset:
    """The files of a Hub repo: one request, which fails at once without network (a file download
    would retry for tens of seconds first), and tells which optional files to skip."""
    import huggingface_hub

    return frozenset(huggingface_hub.list_repo_files(repo_id, revision=revision, token=token))


def _hub_download(repo_id, filename, *, required, revision, cache_dir, token, local_files_only):
    import huggingface_hub
    from huggingface_hub.utils import (
        EntryNotFoundError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        files = online_repo_files(repo_id, revision, token, local_files_only)
        offline = files is None
        if not offline and filename not in files:
            if required:
                raise FileNotFoundError(f"{filename} not found in Hub repo {repo_id}")
            return None
        return huggingface_hub.hf_hub_download(
            repo_id, filename, revision=revision, cache_dir=cache_dir, token=token, local_files_only=offline
        )
    except HFValidationError:
        raise ValueError(f"{repo_id!r} is neither a local directory nor a valid Hub model id") from None
    except LocalEntryNotFoundError:  # offline (or the network went away) and not in the cache
        if offline and not required:
            return None
        raise OSError(
            f"{repo_id!r} is not a local directory, the Hugging Face Hub cannot be reached (or HF_HUB_OFFLINE or "
            f"local_files_only is set) and there is no cached {filename}: pass a local model directory instead"
        ) from None
    except EntryNotFoundError:
        if required:
            raise FileNotFoundError(f"{filename} not found in Hub repo {repo_id}") from None
        return None
    except RepositoryNotFoundError:
        raise FileNotFoundError(f"Hub repo {repo_id!r} not found (or it is private)") from None
    except RevisionNotFoundError:
        raise ValueError(f"Hub repo {repo_id!r} has no revision {revision!r}") from None
    except FileNotFoundError:
        raise
    except OSError as e:  # offline, DNS, HTTP errors (requests' errors are OSErrors): say what to do
        raise OSError(
            f"could not fetch {filename} of {repo_id!r} from the Hugging Face Hub ({type(e).__name__}); "
            "without network access pass a local model directory instead"
        ) from None
