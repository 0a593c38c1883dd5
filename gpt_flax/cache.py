"""Where gpt-flax keeps what it builds on this machine: $GPT_FLAX_CACHE_DIR, else $XDG_CACHE_HOME/gpt_flax,
else ~/.cache/gpt_flax. The CPU decode kernels' libraries lie at its top, JAX's compilation cache for
`gpt-flax generate` in its `jax` folder. (No heavy imports: the command line reads it for --help.)"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

CACHE_ENV = "GPT_FLAX_CACHE_DIR"


def cache_root() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]) / "gpt_flax"
    try:
        return Path.home() / ".cache" / "gpt_flax"
    except RuntimeError:  # no home directory (a container's arbitrary user): the temporary one
        return Path(tempfile.gettempdir()) / f"gpt_flax-{os.getuid()}"
