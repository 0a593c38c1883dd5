"""Where gpt-flax keeps what it builds on this machine: $GPT_FLAX_CACHE_DIR, else $XDG_CACHE_HOME/gpt_flax,
else ~/.cache/gpt_flax. The CPU decode kernels' libraries lie at its top, JAX's compilation cache for
`gpt-flax generate` in its `jax` folder. (No heavy imports: the command line reads it for --help.)"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "GPT_FLAX_CACHE_DIR"


def cache_root() -> Path:
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(os.environ.get(CACHE_ENV) or Path(xdg) / "gpt_flax")
