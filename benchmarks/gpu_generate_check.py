"""Generation on a GPU: the new decoding options give the GPU the same tokens as the CPU, and their cost.

    PYTHONPATH=$PWD python3 benchmarks/gpu_generate_check.py          # on a machine with a GPU

Part 1, a small random model (float32, highest matmul precision on both devices): greedy decoding,
the logits processors (repetition penalty, no-repeat n-grams, minimum new tokens), beam search with
and without them, on a left-padded batch; each run on the GPU and on the host's CPU device in the
same process, tokens compared (a random model's near-ties may flip an argmax between devices, so
the script prints the share of equal rows rather than stopping). Part 2, the full-size model
(random weights, bf16 and fp32): ms per new token of greedy decoding and of 4-beam search, batch 1,
8-token prompt, 64 new tokens, after a compiling warm-up. Prints one line per case.
"""

from __future__ import annotations

import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [os.path.dirname(HERE)] + [p for p in sys.path if os.path.abspath(p or os.curdir) != HERE]

import jax
import jax.numpy as jnp
import numpy as np

from gpt_flax import FlaxOpenAIGPTLMHeadModel, OpenAIGPTConfig

CASES = {
    "greedy": {},
    "processors": {"repetition_penalty": 1.3, "no_repeat_ngram_size": 2, "min_new_tokens": 12, "eos_token_id": 27},
    "beams": {"num_beams": 4, "num_return_sequences": 2, "eos_token_id": 27},
    "beams+processors": {"num_beams": 3, "repetition_penalty": 1.2, "no_repeat_ngram_size": 3, "length_penalty": 0.5},
}


def small_model_parity() -> None:
    jax.config.update("jax_default_matmul_precision", "highest")
    config = OpenAIGPTConfig(vocab_size=37, n_positions=80, n_embd=24, n_layer=2, n_head=3, initializer_range=0.4)
    model = FlaxOpenAIGPTLMHeadModel(config, seed=3)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 37, (3, 7))
    mask = np.ones_like(ids)
    mask[1, :3] = mask[2, :5] = 0
    cpu = jax.devices("cpu")[0]
    for name, options in CASES.items():
        kwargs = {"attention_mask": mask, "max_new_tokens": 24, "pad_token_id": 0, **options}
        try:
            start = time.perf_counter()
            gpu_out = model.generate(ids, **kwargs)
            gpu_s = time.perf_counter() - start
            with jax.default_device(cpu):
                host = FlaxOpenAIGPTLMHeadModel(config, seed=3)
                host.params = jax.device_put(model.params, cpu)
                cpu_out = host.generate(ids, **kwargs)
            same = (
                [bool(np.array_equal(a, b)) for a, b in zip(gpu_out, cpu_out)] if gpu_out.shape == cpu_out.shape else []
            )
            print(f"parity {name}: shape {gpu_out.shape} vs {cpu_out.shape}, rows equal {sum(same)}/{len(same)}, "
                  f"GPU call {gpu_s:.1f} s (compile included)", flush=True)  # fmt: skip
        except Exception as error:  # noqa: BLE001 - one line per failing case, the others still run
            print(f"parity {name}: FAILED {type(error).__name__}: {str(error).splitlines()[0][:200]}", flush=True)
    jax.config.update("jax_default_matmul_precision", None)


def full_size_timing() -> None:
    config = OpenAIGPTConfig()
    ids = np.random.default_rng(1).integers(0, config.vocab_size, (1, 8))
    for dtype in (jnp.bfloat16, jnp.float32):
        model = FlaxOpenAIGPTLMHeadModel(config, seed=0, dtype=dtype)
        for name, options in (("greedy", {}), ("4 beams", {"num_beams": 4})):
            kwargs = {"max_new_tokens": 64, "pad_token_id": 0, **options}
            try:
                model.generate(ids, **kwargs)  # compile
                times = []
                for _ in range(3):
                    start = time.perf_counter()
                    out = model.generate(ids, **kwargs)
                    times.append(time.perf_counter() - start)
                per_token = 1e3 * min(times) / (out.shape[1] - ids.shape[1])
                print(f"full size {jnp.dtype(dtype).name} {name}: {per_token:.2f} ms per new token "
                      f"({out.shape[1] - ids.shape[1]} tokens, best of 3)", flush=True)  # fmt: skip
            except Exception as error:  # noqa: BLE001
                print(
                    f"full size {name}: FAILED {type(error).__name__}: {str(error).splitlines()[0][:200]}", flush=True
                )


if __name__ == "__main__":
    print("jax", jax.__version__, jax.devices(), flush=True)
    small_model_parity()
    full_size_timing()
