"""The whole OpenAI GPT on one GPU: training step, forward and generation, gpt-flax against transformers.

    PYTHONPATH=$PWD python3 benchmarks/gpu_model.py [--repeats 5] [--budget 190]
    python3 benchmarks/gpu_model.py --tiny          # small config on the CPU: checks the script runs end to end

Full-size config (12 layers x 768, vocab 40478), the same weights on both sides (ours drawn by
`FlaxOpenAIGPTLMHeadModel(config)`, copied into transformers' `OpenAIGPTLMHeadModel` through
`convert.mapping.flax_to_hf`; the LM head is tied). Cases:
  - training step (AdamW, loss on labels = ids, dropout on), batch 8 x 512: ours in bf16 compute
    (fp32 params) with attention "auto" (Pallas), "cudnn" and "xla", and in fp32 with "auto";
    transformers in fp32 (strict and TF32) and under `torch.autocast(bfloat16)`;
  - forward (logits), batch 8 x 512, the same variants;
  - greedy generation from an 8-token prompt, batch 1 and 8, fp32 and bf16: ours 256 new tokens
    with its KV cache, transformers 64 (OpenAI GPT has no cache there, so it reruns the prefix).
Prints one table: ms per call (generation: per new token), ratio = transformers time / ours (> 1:
we are faster), achieved TFLOP/s of both sides, our compile time. Every case is independent (a
failure prints one line) and cases past --budget seconds are skipped, so one run gives what it can.
"""

from __future__ import annotations

import os
import sys

# benchmarks/tokenize.py shadows the standard library's `tokenize` (which `inspect` imports) for scripts run
# from this folder: take the folder off the import path before anything else is imported.
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [os.path.dirname(HERE)] + [p for p in sys.path if os.path.abspath(p or os.curdir) != HERE]

# JAX takes 75% of the card by default; transformers shares it in this process.
os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.5")

import argparse
import platform
import statistics
import subprocess
import time
import traceback

import numpy as np

TINY = {"vocab_size": 1000, "n_positions": 128, "n_embd": 64, "n_layer": 2, "n_head": 4}
LR, WEIGHT_DECAY = 6.25e-5, 0.01  # the paper's fine-tuning learning rate; transformers' Trainer decay


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="small config and batch (CPU smoke run)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per training/forward case (median)")
    p.add_argument("--gen-repeats", type=int, default=2, help="timed runs per generation case (median)")
    p.add_argument("--gen-tokens", type=int, default=256, help="new tokens per generate call, ours")
    p.add_argument("--hf-gen-tokens", type=int, default=64, help="new tokens per generate call, transformers")
    p.add_argument("--budget", type=float, default=190.0, help="seconds after which remaining cases are skipped")
    return p.parse_args()


def median_seconds(fn, repeats: int) -> float:
    """Median wall time of `fn` (which must wait for its results) over `repeats` runs, after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def forward_flops(config, batch: int, seq: int) -> float:
    """Matmul FLOPs of one forward with LM logits: 2 * (weights * tokens) + attention's two products
    (full T x S, as benchmarks/forward.py counts them). A training step is 3 times this."""
    D, L, V = config.n_embd, config.n_layer, config.vocab_size
    tokens = batch * seq
    per_layer = 2 * tokens * (D * 3 * D + D * D + 2 * D * 4 * D) + 2 * 2 * batch * seq * seq * D
    return L * per_layer + 2 * tokens * D * V


def gpu_name() -> str:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
            check=False,
            capture_output=True,
            text=True,
            timeout=20,
        )
        return out.stdout.strip() or "nvidia-smi printed nothing"
    except (OSError, subprocess.SubprocessError) as e:
        return f"no nvidia-smi ({type(e).__name__})"


class Runner:
    """Runs cases in order, each in its own try/except, until the time budget is spent."""

    def __init__(self, budget: float):
        self.t0 = time.perf_counter()
        self.budget = budget
        self.failures = []

    def __call__(self, name: str, fn):
        elapsed = time.perf_counter() - self.t0
        if elapsed > self.budget:
            print(f"  {name}: skipped ({elapsed:.0f} s > budget {self.budget:.0f} s)", flush=True)
            self.failures.append(f"{name}: skipped (time budget)")
            return None
        start = time.perf_counter()
        try:
            result = fn()
        except Exception as e:  # noqa: BLE001 - one failing case must not lose the others
            line = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
            print(f"  {name}: FAILED {line}", flush=True)
            traceback.print_exc(limit=3, file=sys.stdout)
            self.failures.append(f"{name}: {line}")
            return None
        print(f"  {name}: {_show(result)} ({time.perf_counter() - start:.1f} s)", flush=True)
        return result


def _show(result) -> str:
    """(seconds, compile seconds) or seconds, as a log line."""
    if isinstance(result, tuple):
        return f"{result[0] * 1e3:.2f} ms, first call {result[1]:.1f} s"
    return f"{result * 1e3:.2f} ms"


def main():
    args = parse_args()
    import jax
    import jax.numpy as jnp
    import optax
    import torch
    import transformers

    from convert.mapping import flax_to_hf
    from gpt_flax import FlaxOpenAIGPTLMHeadModel, OpenAIGPTConfig

    run = Runner(args.budget)
    cuda = torch.cuda.is_available()
    dev = torch.device("cuda" if cuda else "cpu")
    if not cuda:
        torch.set_num_threads(min(2, os.cpu_count() or 1))

    def sync():
        if cuda:
            torch.cuda.synchronize()

    config = OpenAIGPTConfig(**TINY) if args.tiny else OpenAIGPTConfig()
    B, T = (2, 32) if args.tiny else (8, 512)
    gen_batches = (1, 2) if args.tiny else (1, 8)
    gen_new, hf_gen_new = (8, 4) if args.tiny else (args.gen_tokens, args.hf_gen_tokens)
    repeats, gen_repeats = (1, 1) if args.tiny else (args.repeats, args.gen_repeats)

    print(f"card: {gpu_name()}")
    print(
        f"python {platform.python_version()}, jax {jax.__version__} ({jax.devices()[0].device_kind}), "
        f"torch {torch.__version__}, transformers {transformers.__version__}, optax {optax.__version__}"
    )
    print(
        f"config: {config.n_layer} x {config.n_embd}, {config.n_head} heads, vocab {config.vocab_size}; "
        f"batch {B} x {T}; JAX fp32 matmuls at its default precision (TF32 on GPUs that have it)\n",
        flush=True,
    )

    # -- both models on the same weights -------------------------------------------------------
    ours = FlaxOpenAIGPTLMHeadModel(config, seed=0)
    params = ours.params
    hf_config = transformers.OpenAIGPTConfig(
        **{
            k: getattr(config, k)
            for k in (
                "vocab_size",
                "n_positions",
                "n_embd",
                "n_layer",
                "n_head",
                "afn",
                "resid_pdrop",
                "embd_pdrop",
                "attn_pdrop",
                "layer_norm_epsilon",
                "initializer_range",
            )
        }
    )
    theirs = transformers.OpenAIGPTLMHeadModel(hf_config)
    state = {k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in flax_to_hf(params, config, "lm").items()}
    missing, unexpected = theirs.load_state_dict(state, strict=False)
    assert not unexpected, unexpected
    assert set(missing) <= {"lm_head.weight"}, missing  # tied to tokens_embed
    theirs.to(dev)
    if theirs.lm_head.weight.data_ptr() != theirs.transformer.tokens_embed.weight.data_ptr():
        theirs.tie_weights()  # transformers versions differ in when they tie; timing does not depend on it
        tied = theirs.lm_head.weight.data_ptr() == theirs.transformer.tokens_embed.weight.data_ptr()
        print(f"warning: transformers' lm_head was not tied to tokens_embed; after tie_weights(): tied={tied}")

    rs = np.random.RandomState(0)
    ids_np = rs.randint(0, config.vocab_size, (B, T)).astype(np.int32)
    ids = jnp.asarray(ids_np)
    tids = torch.from_numpy(ids_np.astype(np.int64)).to(dev)

    variants = [("bf16", "auto"), ("bf16", "cudnn"), ("bf16", "xla"), ("fp32", "auto")]
    dtypes = {"bf16": jnp.bfloat16, "fp32": jnp.float32}

    def module_of(precision: str, impl: str):
        return FlaxOpenAIGPTLMHeadModel(
            config.replace(attention_impl=impl), dtype=dtypes[precision], _do_init=False
        ).module

    def hf_mode(mode: str):
        """transformers' numerics: fp32 (strict), tf32 (TF32 matmuls), bf16 (autocast)."""
        torch.backends.cuda.matmul.allow_tf32 = mode == "tf32"
        torch.backends.cudnn.allow_tf32 = mode == "tf32"
        if mode == "bf16":
            return torch.autocast(dev.type, dtype=torch.bfloat16)
        return torch.autocast(dev.type, enabled=False)

    ours_t, hf_t, compile_t = {}, {}, {}

    # -- training step ---------------------------------------------------------------------------
    print("training step", flush=True)
    optimizer = optax.adamw(LR, weight_decay=WEIGHT_DECAY)

    def ours_train(precision: str, impl: str):
        module = module_of(precision, impl)

        def train_step(params, opt_state, ids, key):
            def loss_fn(p):
                return module.apply({"params": p}, ids, labels=ids, deterministic=False, rngs={"dropout": key}).loss

            loss, grads = jax.value_and_grad(loss_fn)(params)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, loss

        step_fn = jax.jit(train_step, donate_argnums=(0, 1))
        p = jax.tree.map(jnp.copy, params)  # donated: keep the shared weights intact
        s = {"params": p, "opt": optimizer.init(p), "i": 0}

        def step():
            key = jax.random.fold_in(jax.random.key(0), s["i"])
            s["i"] += 1
            s["params"], s["opt"], loss = step_fn(s["params"], s["opt"], ids, key)
            jax.block_until_ready((s["params"], s["opt"], loss))
            return loss

        start = time.perf_counter()
        loss = step()
        compile_t["train", precision, impl] = time.perf_counter() - start
        if not np.isfinite(float(loss)):
            raise FloatingPointError(f"loss {float(loss)}")
        ours_t["train", precision, impl] = median_seconds(step, repeats)
        return ours_t["train", precision, impl], compile_t["train", precision, impl]

    for precision, impl in variants:
        run(f"ours {precision} {impl}", lambda precision=precision, impl=impl: ours_train(precision, impl))

    def hf_train(mode: str):
        theirs.train()
        opt = torch.optim.AdamW(theirs.parameters(), lr=LR, weight_decay=WEIGHT_DECAY, fused=cuda)

        def step():
            opt.zero_grad(set_to_none=True)
            with hf_mode(mode):
                loss = theirs(tids, labels=tids).loss
            loss.backward()
            opt.step()
            sync()

        hf_t["train", mode] = median_seconds(step, repeats)
        return hf_t["train", mode]

    for mode in ("bf16", "fp32", "tf32"):
        run(f"transformers {mode}", lambda mode=mode: hf_train(mode))
    theirs.load_state_dict(state, strict=False)  # training moved the weights: back to ours for what follows
    theirs.eval()
    if cuda:
        torch.cuda.empty_cache()

    # -- forward -------------------------------------------------------------------------------
    print("forward", flush=True)

    def ours_forward(precision: str, impl: str):
        module = module_of(precision, impl)
        fn = jax.jit(lambda p, ids: module.apply({"params": p}, ids).logits)
        start = time.perf_counter()
        fn(params, ids).block_until_ready()
        compile_t["forward", precision, impl] = time.perf_counter() - start
        ours_t["forward", precision, impl] = median_seconds(lambda: fn(params, ids).block_until_ready(), repeats)
        return ours_t["forward", precision, impl], compile_t["forward", precision, impl]

    for precision, impl in variants:
        run(f"ours {precision} {impl}", lambda precision=precision, impl=impl: ours_forward(precision, impl))

    def hf_forward(mode: str):
        def call():
            with torch.inference_mode(), hf_mode(mode):
                _ = theirs(tids).logits
            sync()

        hf_t["forward", mode] = median_seconds(call, repeats)
        return hf_t["forward", mode]

    for mode in ("bf16", "fp32", "tf32"):
        run(f"transformers {mode}", lambda mode=mode: hf_forward(mode))

    # -- generation ------------------------------------------------------------------------------
    print("generation (greedy, 8-token prompt)", flush=True)
    prompts = {b: rs.randint(0, config.vocab_size, (b, 8)).astype(np.int32) for b in gen_batches}
    generated = {}

    def ours_generate(precision: str, batch: int):
        model = FlaxOpenAIGPTLMHeadModel(config, dtype=dtypes[precision], _do_init=False)
        model.params = params
        call = lambda: model.generate(prompts[batch], max_new_tokens=gen_new, do_sample=False)
        start = time.perf_counter()
        out = call()
        compile_t["generate", precision, batch] = time.perf_counter() - start
        if out.shape != (batch, 8 + gen_new):
            raise AssertionError(f"ours generated {out.shape}, expected {(batch, 8 + gen_new)}")
        generated["ours", precision, batch] = out
        ours_t["generate", precision, batch] = median_seconds(call, gen_repeats) / gen_new
        return ours_t["generate", precision, batch], compile_t["generate", precision, batch]

    def hf_generate(precision: str, batch: int):
        prompt = torch.from_numpy(prompts[batch].astype(np.int64)).to(dev)

        def call():
            with torch.inference_mode(), hf_mode("bf16" if precision == "bf16" else "fp32"):
                out = theirs.generate(
                    prompt,
                    attention_mask=torch.ones_like(prompt),
                    max_new_tokens=hf_gen_new,
                    min_new_tokens=hf_gen_new,
                    do_sample=False,
                    pad_token_id=0,
                )
            sync()
            return out

        out = call()
        if tuple(out.shape) != (batch, 8 + hf_gen_new):
            raise AssertionError(f"transformers generated {tuple(out.shape)}, expected {(batch, 8 + hf_gen_new)}")
        generated["hf", precision, batch] = out.cpu().numpy()
        hf_t["generate", precision, batch] = median_seconds(call, gen_repeats) / hf_gen_new
        return hf_t["generate", precision, batch]

    for precision in ("fp32", "bf16"):
        for batch in gen_batches:
            run(f"ours {precision} batch {batch}", lambda p=precision, b=batch: ours_generate(p, b))
            run(f"transformers {precision} batch {batch}", lambda p=precision, b=batch: hf_generate(p, b))

    # -- the table -------------------------------------------------------------------------------
    rows = []
    train_flops, fwd_flops = 3 * forward_flops(config, B, T), forward_flops(config, B, T)
    for precision, impl in variants:
        for hf_mode_name in ("bf16",) if precision == "bf16" else ("fp32", "tf32"):
            label = f"train {precision} {impl}" + ("" if precision == "bf16" else f" / hf {hf_mode_name}")
            rows.append((label, ("train", precision, impl), ("train", hf_mode_name), train_flops, ""))
    for precision, impl in variants:
        for hf_mode_name in ("bf16",) if precision == "bf16" else ("fp32", "tf32"):
            label = f"forward {precision} {impl}" + ("" if precision == "bf16" else f" / hf {hf_mode_name}")
            rows.append((label, ("forward", precision, impl), ("forward", hf_mode_name), fwd_flops, ""))
    for precision in ("fp32", "bf16"):
        for batch in gen_batches:
            key = ("generate", precision, batch)
            rows.append((f"generate {precision} B={batch}", key, key, None, batch))

    header = (
        f"{'case':<30}{'ours ms':>10}{'hf ms':>10}{'ratio':>8}{'ours TF/s':>11}{'hf TF/s':>9}{'compile s':>11}"
        f"{'ours tok/s':>12}{'hf tok/s':>10}"
    )
    print(f"\ncard: {gpu_name()}; batch {B} x {T}; generation: ours {gen_new} new tokens, transformers {hf_gen_new}")
    print(header)
    print("-" * len(header))
    fmt = lambda x, spec: format(x, spec) if x is not None else format("-", ">" + spec.split(".")[0])
    for label, ours_key, hf_key, flops, batch in rows:
        o, h = ours_t.get(ours_key), hf_t.get(hf_key)
        ratio = f"{h / o:>7.2f}x" if o and h else f"{'-':>8}"
        tf_o = flops / o / 1e12 if flops and o else None
        tf_h = flops / h / 1e12 if flops and h else None
        tok_o = batch / o if batch and o else None
        tok_h = batch / h if batch and h else None
        print(
            f"{label:<30}{fmt(o and o * 1e3, '10.2f')}{fmt(h and h * 1e3, '10.2f')}{ratio}"
            f"{fmt(tf_o, '11.1f')}{fmt(tf_h, '9.1f')}{fmt(compile_t.get(ours_key), '11.1f')}"
            f"{fmt(tok_o, '12.0f')}{fmt(tok_h, '10.0f')}"
        )
    print(
        "\nratio = transformers time / ours (> 1: ours faster); generation ms = per new token of the batch, "
        "tok/s = new tokens per second over the batch"
    )
    for precision in ("fp32", "bf16"):
        for batch in gen_batches:
            a, b = generated.get(("ours", precision, batch)), generated.get(("hf", precision, batch))
            if a is not None and b is not None:
                n = 8 + hf_gen_new
                same = int((a[:, :n] == b).all(axis=1).sum())
                print(f"greedy {precision} B={batch}: first {hf_gen_new} new tokens identical in {same}/{batch} rows")
    print(f"total {time.perf_counter() - run.t0:.0f} s; failed or skipped: {run.failures or 'none'}")


if __name__ == "__main__":
    main()
