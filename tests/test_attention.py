"""The attention dispatcher: which implementation runs, and that each agrees with `xla_attention`.

The kernels themselves are tested in test_kernels.py; here everything runs as plain XLA on the
CPU ("auto" and "cudnn" lower to XLA there), so these tests are quick.

    pytest tests/test_attention.py
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gpt_flax.attention import attention, resolve_impl, xla_attention

B, T, H, K = 2, 9, 3, 8


def qkv(seed=0, dtype=jnp.float32, seq=T):
    rs = np.random.RandomState(seed)
    return tuple(jnp.asarray(rs.normal(size=(B, seq, H, K)), dtype) for _ in range(3))


MASK = jnp.asarray([[1] * T, [0] * 2 + [1] * (T - 2)], jnp.float32)
VALID = np.cumsum(np.asarray(MASK), axis=1) > 0  # rows that see at least one unpadded key


@pytest.mark.parametrize(
    "impl, kwargs, expected",
    [
        ("auto", {}, "auto"),
        ("pallas", {}, "pallas"),
        ("cudnn", {}, "cudnn"),
        ("xla", {}, "xla"),
        ("pallas", {"output_attentions": True}, "xla"),
        ("auto", {"q_offset": 3}, "xla"),
        ("pallas", {"q_len": 1}, "xla"),  # decoding with a KV cache
        ("cudnn", {"q_len": 1}, "xla"),
        ("auto", {"head_dim": 512}, "xla"),
        ("pallas", {"head_dim": 512}, "pallas"),  # flash_attention raises for it
    ],
)
def test_resolve_impl(impl, kwargs, expected):
    output_attentions = kwargs.pop("output_attentions", False)
    sizes = {"q_len": T, "k_len": T, "head_dim": K, **kwargs}
    assert resolve_impl(impl, output_attentions, **sizes) == expected


def test_unknown_impl_is_an_error():
    with pytest.raises(ValueError, match="unknown attention implementation 'flash'"):
        attention(*qkv(), impl="flash")


@pytest.mark.parametrize("impl", ["auto", "cudnn"])
def test_cpu_lowering_equals_xla(impl):
    """On the CPU "auto" runs XLA (same arithmetic as xla_attention), forward and gradients."""
    hm = jnp.asarray([1.0, 0.0, 0.5])
    kwargs = {"attention_mask": MASK, "head_mask": hm, "dropout_rate": 0.1, "dropout_seed": jnp.uint32(3)}
    w = jnp.asarray(np.random.RandomState(1).normal(size=(B, T, H, K))) * VALID[:, :, None, None]

    def loss(impl):
        return lambda q, k, v, hm: jnp.sum(attention(q, k, v, impl=impl, **{**kwargs, "head_mask": hm})[0] * w)

    args = (*qkv(), hm)
    got = jax.jit(jax.value_and_grad(loss(impl), argnums=(0, 1, 2, 3)))(*args)
    want = jax.jit(jax.value_and_grad(loss("xla"), argnums=(0, 1, 2, 3)))(*args)
    for g, r in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
        np.testing.assert_allclose(g, r, atol=1e-6, rtol=1e-6)


def test_cudnn_without_cuda_is_xla_in_half_precision():
    q, k, v = qkv(dtype=jnp.bfloat16)
    out, probs = attention(q, k, v, impl="cudnn", attention_mask=MASK)
    ref, _ = xla_attention(q, k, v, attention_mask=MASK)
    assert probs is None
    np.testing.assert_array_equal(np.asarray(out, np.float32), np.asarray(ref, np.float32))


def test_output_attentions_returns_probabilities_from_any_impl():
    for impl in ("auto", "pallas", "cudnn"):
        out, probs = attention(*qkv(), impl=impl, attention_mask=MASK, output_attentions=True)
        ref, ref_probs = xla_attention(*qkv(), attention_mask=MASK, output_attentions=True)
        assert probs.shape == (B, H, T, T)
        np.testing.assert_array_equal(probs, ref_probs)
        np.testing.assert_array_equal(out, ref)


def test_kv_cache_shapes_fall_back_to_xla():
    """T < S with an offset (one decoding step) runs xla_attention under every impl name."""
    q = qkv(seq=1)[0]
    k, v = qkv(seed=1)[1:]
    for impl in ("auto", "pallas", "cudnn"):
        out, _ = attention(q, k, v, impl=impl, q_offset=jnp.asarray([T - 1, T - 3]))
        ref, _ = xla_attention(q, k, v, q_offset=jnp.asarray([T - 1, T - 3]))
        np.testing.assert_array_equal(out, ref)


def test_pallas_rejects_heads_wider_than_256():
    q = jnp.zeros((1, 4, 1, 272))
    with pytest.raises(ValueError, match="head_dim up to 256"):
        attention(q, q, q, impl="pallas")


def test_auto_on_a_cpu_only_process_supports_every_autodiff_mode():
    """No GPU or TPU here: "auto" is plain XLA, so forward mode and second order work on the model."""
    from gpt_flax import FlaxOpenAIGPTLMHeadModel, OpenAIGPTConfig

    assert jax.default_backend() == "cpu"
    config = OpenAIGPTConfig(vocab_size=37, n_positions=11, n_embd=16, n_layer=1, n_head=2)
    model = FlaxOpenAIGPTLMHeadModel(config)
    ids = np.array([[1, 2, 3, 4, 5]], np.int32)
    loss = lambda p: model(ids, labels=ids, params=p).loss
    tangent = jax.tree_util.tree_map(jnp.ones_like, model.params)
    _, forward = jax.jvp(loss, (model.params,), (tangent,))
    reverse = sum(
        jnp.vdot(g, t)
        for g, t in zip(jax.tree_util.tree_leaves(jax.grad(loss)(model.params)), jax.tree_util.tree_leaves(tangent))
    )
    np.testing.assert_allclose(float(forward), float(reverse), rtol=1e-4)
    _, hvp = jax.jvp(jax.grad(loss), (model.params,), (tangent,))  # forward over reverse
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree_util.tree_leaves(hvp))


@pytest.mark.parametrize("impl", ["auto", "pallas"])
def test_runs_under_shard_map(impl):
    """Data parallel with jax.shard_map (its varying-axes check on): the kernels' outputs say how they vary."""
    from jax.sharding import Mesh, PartitionSpec

    mesh = Mesh(np.array(jax.devices()[:1]), ("batch",))
    q, k, v = qkv(3)

    def step(q, k, v):
        out = attention(q, k, v, impl=impl, attention_mask=jnp.ones(q.shape[:2]))[0]
        return jax.lax.pmean(jnp.sum(out), "batch")

    spec = PartitionSpec("batch")
    sharded = jax.jit(jax.shard_map(step, mesh=mesh, in_specs=(spec, spec, spec), out_specs=PartitionSpec()))
    expected = jnp.sum(xla_attention(q, k, v)[0])
    np.testing.assert_allclose(float(sharded(q, k, v)), float(expected), rtol=1e-5)
    grads = jax.jit(
        jax.grad(
            lambda q: jax.shard_map(step, mesh=mesh, in_specs=(spec, spec, spec), out_specs=PartitionSpec())(q, k, v)
        )
    )(q)
    np.testing.assert_allclose(grads, jax.grad(lambda q: jnp.sum(xla_attention(q, k, v)[0]))(q), atol=1e-5)


def test_a_fractional_mask_value_pads_its_key_in_every_impl():
    """transformers adds (1 - m) * finfo.min: a key with 0 < m < 1 is padding, as with m = 0. Query 0
    of row 0 then sees no unpadded key (the kernels' special case); row 1 has one inside."""
    mask = jnp.asarray([[0.5] + [1] * (T - 1), [1, 0.25] + [1] * (T - 2)], jnp.float32)
    as_zeros = jnp.where(mask < 1, 0.0, mask)
    ref, _ = xla_attention(*qkv(), attention_mask=mask)
    np.testing.assert_array_equal(ref, xla_attention(*qkv(), attention_mask=as_zeros)[0])
    for impl in ("pallas", "cudnn"):
        out, _ = attention(*qkv(), impl=impl, attention_mask=mask)
        np.testing.assert_allclose(out, ref, atol=1e-5, err_msg=impl)
    # Rows without an unpadded key: transformers' softmax is uniform over the keys of the largest m.
    # (1 - 1e-9 rounds to 1 in float32: that key's bias equals the zeros', so they all tie.)
    soft = jnp.asarray([[0.5, 0.25] * 4 + [0.5], [0.0, 1e-9, 0.3] + [0.0] * (T - 3)], jnp.float32)
    ref, _ = xla_attention(*qkv(), attention_mask=soft)
    np.testing.assert_allclose(attention(*qkv(), impl="pallas", attention_mask=soft)[0], ref, atol=1e-5)
    soft = jnp.asarray([[0.5, 0.25] * 4 + [0.5], [0.0, 1e-9, 0.0] + [0.0] * (T - 3)], jnp.float32)
    ref, _ = xla_attention(*qkv(), attention_mask=soft)
    np.testing.assert_allclose(attention(*qkv(), impl="pallas", attention_mask=soft)[0], ref, atol=1e-5)
