"""Shared test set-up: each test module's compiled programs are dropped when it ends.

The suite runs in one process and compiles a few thousand XLA programs; kept alive they exhaust the
process's memory mappings (vm.max_map_count, 65530 by default: LLVM maps code and data per program),
and the next compilation then crashes. No module shares compilations with another, so nothing is lost.
"""

import jax
import pytest


@pytest.fixture(autouse=True, scope="module")
def _drop_compilations_after_each_module():
    yield
    jax.clear_caches()
