"""The model's attention kernels on a GPU at small and odd sequence lengths: "auto" (Pallas) against "xla".

    PYTHONPATH=$PWD python3 benchmarks/gpu_attention_shapes.py

Full-size random model, bf16 and fp32 compute: logits of a [B, T] batch with attention_impl "auto"
against "xla" for T from 1 to 300 and B 1 and 4, with and without left padding. Prints the largest
|difference| relative to the largest |logit| per case, and whether the logits are finite.
"""

from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [os.path.dirname(HERE)] + [p for p in sys.path if os.path.abspath(p or os.curdir) != HERE]

import jax
import jax.numpy as jnp
import numpy as np

from gpt_flax import FlaxOpenAIGPTLMHeadModel, OpenAIGPTConfig


def main() -> None:
    print("jax", jax.__version__, jax.devices(), flush=True)
    config = OpenAIGPTConfig(n_layer=2)
    rng = np.random.default_rng(0)
    for dtype in (jnp.bfloat16, jnp.float32):
        ours = FlaxOpenAIGPTLMHeadModel(config.replace(attention_impl="auto"), seed=0, dtype=dtype)
        ref = FlaxOpenAIGPTLMHeadModel(config.replace(attention_impl="xla"), seed=0, dtype=dtype)
        ref.params = ours.params
        for batch in (1, 4):
            for length in (1, 8, 65, 300):
                ids = rng.integers(0, config.vocab_size, (batch, length))
                for padded in (False, True):
                    mask = np.ones_like(ids)
                    if padded:
                        mask[:, : length // 2] = 0
                        mask[:, -1] = 1
                    try:
                        a = np.asarray(ours(ids, attention_mask=mask).logits, np.float32)
                        b = np.asarray(ref(ids, attention_mask=mask).logits, np.float32)
                        rel = float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-6))
                        flag = "" if np.isfinite(a).all() and rel < 0.05 else "   <-- BAD"
                        print(f"{jnp.dtype(dtype).name} B={batch} T={length} padded={padded}: max rel diff "
                              f"{rel:.2e}, finite {np.isfinite(a).all()}{flag}", flush=True)  # fmt: skip
                    except Exception as error:  # noqa: BLE001 - one line per failing case
                        print(f"{jnp.dtype(dtype).name} B={batch} T={length}: FAILED {type(error).__name__}: "
                              f"{str(error).splitlines()[0][:200]}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
