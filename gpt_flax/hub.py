"""Find a checkpoint's files: in a local directory, or on the Hugging Face Hub by id."""

from __future__ import annotations

import os


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
) -> str | None:
    """The local path of `filename` in a directory or a Hub repo; None if absent and not `required`."""
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
    return _hub_download(str(path_or_hub_id), filename, required=required, revision=revision, cache_dir=cache_dir)


def _hub_download(repo_id, filename, *, required, revision, cache_dir):
    import huggingface_hub
    from huggingface_hub.utils import EntryNotFoundError, HFValidationError, RepositoryNotFoundError

    try:
        return huggingface_hub.hf_hub_download(repo_id, filename, revision=revision, cache_dir=cache_dir)
    except HFValidationError:
        raise ValueError(f"{repo_id!r} is neither a local directory nor a valid Hub model id") from None
    except EntryNotFoundError:
        if required:
            raise FileNotFoundError(f"{filename} not found in Hub repo {repo_id}") from None
        return None
    except RepositoryNotFoundError:
        raise FileNotFoundError(f"Hub repo {repo_id!r} not found (or it is private)") from None
    except OSError as e:  # offline, DNS, HTTP errors (requests' errors are OSErrors): say what to do
        if not required and "404" in str(e):
            return None
        raise OSError(
            f"could not fetch {filename} of {repo_id!r} from the Hugging Face Hub ({type(e).__name__}); "
            "without network access pass a local model directory instead"
        ) from None
