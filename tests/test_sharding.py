"""Data and head parallelism under plain `jax.jit` on 8 CPU devices (a subprocess: the device count is
fixed when JAX starts): the flash kernels run on each device's slice of the batch and heads instead
of being gathered whole onto every device (and run unpartitioned under vmap), and the model, its params
and inputs sharded or under `jax.pmap`, gives what one device gives, under a mesh with automatic or explicit axes."""

import subprocess
import sys
import textwrap

CHECK = textwrap.dedent(
    """
    import os
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from gpt_flax import FlaxOpenAIGPTLMHeadModel, OpenAIGPTConfig
    from gpt_flax.kernels.flash import flash_attention

    assert jax.device_count() == 8
    mesh = Mesh(np.array(jax.devices()).reshape(4, 2), ("data", "model"))

    def gathers(fn, *args):
        text = jax.jit(fn).lower(*args).compile().as_text()
        return text.count("all-gather")

    def close(got, want, rtol):
        for g, w in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
            g, w = np.asarray(g, np.float64), np.asarray(w, np.float64)
            assert np.max(np.abs(g - w)) <= rtol * np.max(np.abs(w)) + 1e-7, (np.max(np.abs(g - w)), np.max(np.abs(w)))

    # The kernel alone: batch over "data", heads over "model"; padding, head_mask, dropout.
    B, T, H, K = 8, 40, 4, 16
    q, k, v = (jax.random.normal(jax.random.key(i), (B, T, H, K)) for i in range(3))
    mask = jnp.ones((B, T)).at[1, 30:].set(0).at[6, :5].set(0)
    hm = jnp.array([1.0, 0.5, 0.0, 2.0])

    for cpu in ("interpret", "interpret_tpu"):
        def loss(q, k, v, hm, cpu=cpu):
            out = flash_attention(q, k, v, attention_mask=mask, head_mask=hm, dropout_rate=0.1,
                                  dropout_seed=jnp.uint32(3), cpu=cpu)
            return jnp.sum(out ** 2)
        grad = jax.value_and_grad(loss, argnums=(0, 1, 2, 3))
        by_heads = NamedSharding(mesh, P("data", None, "model"))
        args = [jax.device_put(x, by_heads) for x in (q, k, v)] + [jax.device_put(hm, NamedSharding(mesh, P()))]
        assert gathers(loss, *args) == 0 and gathers(grad, *args) == 0, cpu
        close(jax.jit(grad)(*args), jax.jit(grad)(q, k, v, hm), 1e-5)

    # Under vmap (per-example gradients) on a multi-device host the kernels run batched, unpartitioned.
    def one(q):
        return jnp.sum(flash_attention(q, q, q, attention_mask=mask[:2], head_mask=hm) ** 2)

    stacked = q.reshape(4, 2, T, H, K)
    per_example = jax.jit(jax.vmap(jax.value_and_grad(one)))(stacked)
    looped = [jax.value_and_grad(one)(stacked[i]) for i in range(4)]
    close(per_example, jax.tree_util.tree_map(lambda *x: jnp.stack(x), *looped), 1e-5)

    # Inside shard_map with only "data" manual ("model" left to the partitioner), as before.
    def inner(q):
        return flash_attention(q, q, q, attention_mask=jnp.ones(q.shape[:2]))

    part = jax.shard_map(inner, mesh=mesh, in_specs=P("data"), out_specs=P("data"), axis_names={"data"})
    close(jax.jit(jax.value_and_grad(lambda q: jnp.sum(part(q) ** 2)))(q),
          jax.value_and_grad(lambda q: jnp.sum(inner(q) ** 2))(q), 1e-5)  # fmt: skip

    # The model: data parallel training step (batch over all 8 devices, params replicated),
    # "pallas" (interpreted) against the same step on one device with "xla".
    config = OpenAIGPTConfig(vocab_size=50, n_positions=24, n_embd=32, n_layer=2, n_head=4, attention_impl="pallas")
    model = FlaxOpenAIGPTLMHeadModel(config, seed=0)
    ids = np.random.default_rng(0).integers(0, 50, (8, 24)).astype(np.int32)
    attn = np.ones((8, 24), np.int32)
    attn[2, 17:] = 0

    def step(params, ids, attn, model=model):
        out = model(ids, attention_mask=attn, labels=ids, params=params, train=True, dropout_rng=jax.random.key(1))
        return out.loss

    rows = NamedSharding(mesh, P(("data", "model")))
    params = jax.device_put(model.params, NamedSharding(mesh, P()))
    sharded = (params, jax.device_put(ids, rows), jax.device_put(attn, rows))
    assert gathers(step, *sharded) == 0
    assert gathers(jax.grad(step), *sharded) == 0
    xla = FlaxOpenAIGPTLMHeadModel(config.replace(attention_impl="xla"), seed=0)
    want = jax.jit(jax.value_and_grad(lambda p, i, a: step(p, i, a, model=xla)))(model.params, ids, attn)
    close(jax.jit(jax.value_and_grad(step))(*sharded), want, 1e-4)

    # Params sharded too (each matrix's last axis over "model", the batch over "data").
    def spread(x):
        spec = P(*([None] * (x.ndim - 1) + ["model"])) if x.ndim >= 2 and x.shape[-1] % 2 == 0 else P()
        return jax.device_put(x, NamedSharding(mesh, spec))

    by_data = NamedSharding(mesh, P("data"))
    spread_args = (jax.tree_util.tree_map(spread, model.params), jax.device_put(ids, by_data), jax.device_put(attn, by_data))
    close(jax.jit(jax.value_and_grad(step))(*spread_args), want, 1e-4)

    # The train step keeps a sharded state's placement from step to step, and compiles once.
    from gpt_flax.training import create_train_state, make_train_step, paper_optimizer
    xla.params = jax.tree_util.tree_map(spread, xla.params)
    state, train_step = create_train_state(xla, paper_optimizer(4)), make_train_step(xla)
    placed = [x.sharding.spec for x in jax.tree_util.tree_leaves(state) if getattr(x, "ndim", 0)]
    batch = {"input_ids": ids, "attention_mask": attn, "labels": ids}
    compiles = []
    jax.monitoring.register_event_duration_secs_listener(
        lambda event, _, **kw: compiles.append(event) if event.endswith("backend_compile_duration") else None
    )
    for _ in range(3):
        state, _ = train_step(state, jax.device_put(batch, by_data), jax.random.key(0))
        compiles.append("step")
    assert [x.sharding.spec for x in jax.tree_util.tree_leaves(state) if x.ndim] == placed
    assert compiles.count("step") == 3 and compiles.index("step") == len(compiles) - 3, compiles  # all before step 1
    xla.params = jax.device_get(xla.params)

    # The forward under jax.pmap, a row per device.
    logits = jax.pmap(lambda i, a: xla(i[None], attention_mask=a[None]).logits[0])(ids, attn)
    close(logits, xla(ids, attention_mask=attn).logits, 1e-5)

    # A mesh with explicit axes (sharding in types): the same step (no all-gathers), and the forward with
    # params sharded over "model", its outputs typed with the inputs' batch sharding.
    from jax.sharding import AxisType
    explicit = jax.make_mesh((4, 2), ("data", "model"), axis_types=(AxisType.Explicit,) * 2)
    greedy = np.asarray(xla.generate(ids[:, :6], max_new_tokens=3))
    with jax.set_mesh(explicit):
        by_data = NamedSharding(explicit, P("data"))
        spec = lambda x: P(*([None] * (x.ndim - 1) + ["model"])) if x.ndim >= 2 and x.shape[-1] % 2 == 0 else P()
        batch = (jax.device_put(ids, by_data), jax.device_put(attn, by_data))
        args = (jax.device_put(model.params, NamedSharding(explicit, P())), *batch)
        compiled = jax.jit(jax.value_and_grad(step)).lower(*args).compile()
        assert compiled.as_text().count("all-gather") == 0
        close(compiled(*args), want, 1e-4)
        params = jax.tree_util.tree_map(lambda x: jax.device_put(x, NamedSharding(explicit, spec(x))), model.params)
        args = (params, *batch)
        out = jax.jit(lambda p, i, a: model(i, attention_mask=a, params=p, output_hidden_states=True))(*args)
        assert jax.typeof(out.logits).sharding.spec == P("data", None, None), jax.typeof(out.logits)
        close(out.logits, xla(ids, attention_mask=attn).logits, 1e-4)
        # Inside a shard_map over "data" alone: "model" stays explicit, and only it is made automatic.
        per_shard = jax.shard_map(lambda i: xla(i).logits, in_specs=P("data"), out_specs=P("data"), axis_names={"data"})
        close(jax.jit(per_shard)(batch[0]), xla(ids).logits, 1e-4)
        assert np.array_equal(np.asarray(xla.generate(batch[0][:, :6], max_new_tokens=3)), greedy)
    print("OK")
    """
)


def test_flash_kernels_partition_over_batch_and_heads_under_jit():
    result = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0 and result.stdout.strip().endswith("OK"), (
        result.stdout[-2000:] + result.stderr[-4000:]
    )
