"""generation.py: cached decoding against transformers 4.56.2's `generate`, sampling, eos, compiles.

transformers' OpenAI GPT passes only input_ids to each step (`prepare_inputs_for_generation`):
no attention mask, no position ids. So for a left-padded batch it treats the pads as tokens, and
a padded row does not generate what it would alone. Ours masks the pads and shifts positions, so
each row generates what transformers generates for it alone (tested per row); with no mask,
ours treats the pads as tokens too and matches transformers' batched output (tested as a batch).
"""

from __future__ import annotations

import itertools
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from oracle import torch_model

from gpt_flax import FlaxOpenAIGPTDoubleHeadsModel, FlaxOpenAIGPTLMHeadModel, OpenAIGPTConfig, cli, pipeline
from gpt_flax import generation as gen
from gpt_flax.heads import init_head_params
from gpt_flax.kernels import cpu_decode

# Distinct sizes (D=24, H=3, V=37, L=2); a wide init so a random model does not repeat one token.
SMALL = OpenAIGPTConfig(vocab_size=37, n_positions=80, n_embd=24, n_layer=2, n_head=3, initializer_range=0.4)
NEW = 64


@pytest.fixture(scope="module")
def small():
    model = FlaxOpenAIGPTLMHeadModel(SMALL, seed=3)
    return model, torch_model("lm", SMALL, model.params)


@pytest.fixture(params=["cpu_kernels", "xla"])
def decode_path(request, monkeypatch):
    """Decode steps on the CPU kernels (kernels/cpu_decode, the default here) or on XLA alone."""
    if request.param == "xla":
        monkeypatch.setattr(gen, "use_cpu_kernel", lambda dtype: False)
    elif jax.default_backend() != "cpu":
        pytest.skip("the CPU decode kernels serve the CPU backend only")
    else:
        assert gen.use_cpu_kernel(jnp.float32), cpu_decode.unavailable_reason()
    return request.param


def hf_generate(torch_lm, ids, **kwargs):
    kwargs.setdefault("pad_token_id", 0)
    with torch.no_grad():
        return torch_lm.generate(torch.tensor(np.asarray(ids), dtype=torch.long), do_sample=False, **kwargs).numpy()


def prompts(seed=0, batch=3, length=7):
    return np.random.default_rng(seed).integers(0, SMALL.vocab_size, (batch, length))


# -- greedy parity ---------------------------------------------------------------------------
def test_greedy_matches_transformers_batch(small, decode_path):
    model, ref = small
    ids = prompts()
    ours = model.generate(ids, max_new_tokens=NEW)
    assert ours.shape == (3, 7 + NEW)
    np.testing.assert_array_equal(ours, hf_generate(ref, ids, max_new_tokens=NEW))
    assert len(np.unique(ours[:, 7:])) > 5  # the model does not just repeat itself


def test_max_length_counts_the_prompt_like_transformers(small):
    model, ref = small
    ids = prompts(1, batch=1, length=5)
    ours = model.generate(ids, max_length=12)
    np.testing.assert_array_equal(ours, hf_generate(ref, ids, max_length=12))
    assert ours.shape == (1, 12)
    # max_new_tokens wins over max_length, as in transformers
    assert model.generate(ids, max_new_tokens=3, max_length=40).shape == (1, 8)


def test_default_length_is_20_new_tokens_capped_at_n_positions_like_transformers(small):
    model, ref = small
    for length in (5, SMALL.n_positions - 6):  # 20 new tokens; then only the 6 that n_positions leaves
        ids = prompts(2, batch=1, length=length)
        ours = model.generate(ids)
        np.testing.assert_array_equal(ours, hf_generate(ref, ids))
        assert ours.shape == (1, min(length + gen.DEFAULT_NEW_TOKENS, SMALL.n_positions))


def left_padded(seed=1):
    """Three prompts of lengths 7, 4 and 2, left-padded into [3, 7] with the mask."""
    ids = prompts(seed)
    mask = np.ones_like(ids)
    mask[1, :3] = 0
    mask[2, :5] = 0
    return np.where(mask == 1, ids, 0), mask


def test_padded_batch_rows_generate_what_they_would_alone(small, decode_path):
    model, ref = small
    ids, mask = left_padded()
    ours = model.generate(ids, attention_mask=mask, max_new_tokens=NEW)
    np.testing.assert_array_equal(ours[:, :7], ids)
    for b in range(3):
        alone = ids[b : b + 1, 7 - mask[b].sum() :]
        np.testing.assert_array_equal(ours[b, 7:], hf_generate(ref, alone, max_new_tokens=NEW)[0, alone.shape[1] :])
    # transformers' own padded batch differs from the rows alone (it attends to the pads)
    theirs = hf_generate(ref, ids, attention_mask=torch.tensor(mask), max_new_tokens=NEW)
    assert not np.array_equal(theirs[1:, 7:], ours[1:, 7:])


def test_unmasked_padded_batch_matches_transformers_batch(small, decode_path):
    model, ref = small
    ids, mask = left_padded()
    ours = model.generate(ids, max_new_tokens=NEW)  # no mask: the pads are tokens, as in transformers
    theirs = hf_generate(ref, ids, attention_mask=torch.tensor(mask), max_new_tokens=NEW)
    np.testing.assert_array_equal(ours, theirs)


def test_right_padding_is_moved_left(small):
    model, _ = small
    ids, mask = left_padded()
    right_ids = np.stack([np.roll(r, -int((m == 0).sum())) for r, m in zip(ids, mask)])
    right_mask = np.stack([np.roll(m, -int((m == 0).sum())) for m in mask])
    np.testing.assert_array_equal(
        model.generate(right_ids, attention_mask=right_mask, max_new_tokens=9),
        model.generate(ids, attention_mask=mask, max_new_tokens=9),
    )


def test_double_heads_model_generates_with_its_lm_head(small):
    model, _ = small
    double = FlaxOpenAIGPTDoubleHeadsModel(SMALL, _do_init=False)
    double.params = {"transformer": model.params["transformer"], **init_head_params(SMALL, "double", jax.random.key(0))}
    ids = prompts()
    np.testing.assert_array_equal(double.generate(ids, max_new_tokens=NEW), model.generate(ids, max_new_tokens=NEW))


@pytest.fixture(scope="module")
def full_size():
    """The full-size model (12 x 768, vocab 40478), a prompt, and transformers' greedy tokens (once for both
    decode paths)."""
    config = OpenAIGPTConfig()
    model = FlaxOpenAIGPTLMHeadModel(config, seed=0)
    ids = np.random.default_rng(0).integers(0, config.vocab_size, (1, 8))
    return model, ids, hf_generate(torch_model("lm", config, model.params), ids, max_new_tokens=NEW)


def test_full_size_greedy_matches_transformers(full_size, decode_path):
    model, ids, expected = full_size
    np.testing.assert_array_equal(model.generate(ids, max_new_tokens=NEW), expected)


# -- the cache -------------------------------------------------------------------------------
def test_cached_logits_equal_full_forward_at_every_step(small, decode_path):
    model, _ = small
    params = model.params["transformer"]
    ids, mask = left_padded(2)
    start = 7 - mask.sum(1)
    fed = np.random.default_rng(5).integers(0, SMALL.vocab_size, (3, 12))  # teacher-forced tokens

    def decode(p, c, t):
        if decode_path == "xla":
            return gen.decode_step(p, SMALL, c, t)
        lm_head = cpu_decode.pack(p["tokens_embed"]["embedding"], transposed=True)
        return gen.decode_step(p, SMALL, c, t, layers=gen.pack_layers(p["h"], SMALL.n_layer), lm_head=lm_head)

    step = jax.jit(decode, donate_argnums=(1,))
    logits, cache = jax.jit(gen.prefill, static_argnums=(1, 4))(params, SMALL, ids, start, 32)
    steps = [logits]
    for j in range(fed.shape[1]):
        logits, cache = step(params, cache, jnp.asarray(fed[:, j], jnp.int32))
        steps.append(logits)
    steps = np.stack(steps, axis=1)  # [B, 13, V]
    # The full forward over each row alone, right-padded into one batch (causal: position t sees only its prefix).
    full = np.zeros((3, 7 + fed.shape[1]), np.int32)
    full_mask = np.zeros_like(full)
    for b in range(3):
        row = np.concatenate([ids[b, start[b] :], fed[b]])
        full[b, : len(row)], full_mask[b, : len(row)] = row, 1
    ref = np.asarray(model(full, attention_mask=full_mask).logits)
    for b in range(3):
        n = 7 - start[b]
        expected = ref[b, n - 1 : n + fed.shape[1]]
        np.testing.assert_allclose(steps[b], expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


def test_phase_widths():
    assert gen.phase_widths(8, 64) == (64,)
    assert gen.phase_widths(8, 320) == (128, 320)
    assert gen.phase_widths(8, 640) == (128, 256, 640)
    assert gen.phase_widths(256, 320) == (320,)


def test_generation_crosses_cache_phases(decode_path):
    config = SMALL.replace(n_positions=300)
    model = FlaxOpenAIGPTLMHeadModel(config, seed=3)
    ids = prompts(4, batch=2, length=3)
    assert gen.phase_widths(8, gen.cache_bucket(8, 130)) == (128, 192)  # the cache grows once
    theirs = hf_generate(torch_model("lm", config, model.params), ids, max_new_tokens=130)
    np.testing.assert_array_equal(model.generate(ids, max_new_tokens=130), theirs)


# -- eos ---------------------------------------------------------------------------------------
def test_eos_stops_rows_independently(small, decode_path):
    model, ref = small
    ids = prompts(6)
    free = model.generate(ids, max_new_tokens=20)
    eos = int(free[0, 7 + 4])  # row 0's fifth new token
    pad = 36
    ours = model.generate(ids, max_new_tokens=20, eos_token_id=eos, pad_token_id=pad)
    theirs = hf_generate(ref, ids, max_new_tokens=20, eos_token_id=eos, pad_token_id=pad)
    np.testing.assert_array_equal(ours, theirs)
    for b in range(3):
        new = free[b, 7:]
        hits = np.flatnonzero(new == eos)
        stop = hits[0] + 1 if len(hits) else len(new)
        np.testing.assert_array_equal(ours[b, 7 : 7 + stop], new[:stop])  # unaffected until its own eos
        assert (ours[b, 7 + stop :] == pad).all()


def test_config_eos_token_id_0_stops_like_transformers():
    config = SMALL.replace(eos_token_id=0)  # id 0 is a token like any other
    model = FlaxOpenAIGPTLMHeadModel(config, seed=3)
    rng = np.random.default_rng(0)
    # a prompt whose free continuation emits 0 before its end
    ids = next(
        p
        for p in (rng.integers(1, 37, (1, 7)) for _ in range(200))
        if 0 in gen.generate(model.params["transformer"], SMALL, p, max_new_tokens=12)[0, 7:-1]
    )
    ours = model.generate(ids, max_new_tokens=12)
    np.testing.assert_array_equal(ours, hf_generate(torch_model("lm", config, model.params), ids, max_new_tokens=12))
    assert ours.shape[1] < 7 + 12 and ours[0, -1] == 0


def test_all_rows_finished_ends_early(small):
    model, ref = small
    ids = prompts(6, batch=1)
    eos = int(model.generate(ids, max_new_tokens=5)[0, 7 + 2])
    eos_ids = [eos, (eos + 1) % SMALL.vocab_size]
    ours = model.generate(ids, max_new_tokens=20, eos_token_id=eos_ids)
    assert ours.shape[1] <= 7 + 3 and ours[0, -1] in eos_ids
    np.testing.assert_array_equal(ours, hf_generate(ref, ids, max_new_tokens=20, eos_token_id=eos_ids))


# -- sampling ----------------------------------------------------------------------------------
CRAFTED = np.log(np.array([[0.05, 0.30, 0.10, 0.40, 0.15], [0.5, 0.2, 0.2, 0.06, 0.04]], np.float32))


def kept(logits):
    return [set(np.flatnonzero(np.isfinite(row))) for row in np.asarray(logits)]


def test_top_k_keeps_the_k_largest():
    assert kept(gen.top_k_filter(jnp.asarray(CRAFTED), 2)) == [{1, 3}, {0, 1, 2}]  # tie with the 2nd is kept
    assert kept(gen.top_k_filter(jnp.asarray(CRAFTED), 1)) == [{3}, {0}]
    assert kept(gen.top_k_filter(jnp.asarray(CRAFTED), 99)) == [set(range(5))] * 2


def test_top_p_keeps_the_smallest_set_past_p():
    # row 0 sorted: .40 .30 .15 .10 .05 -> cumulative .40 .70 .85 .95 1.0
    assert kept(gen.top_p_filter(jnp.asarray(CRAFTED), 0.6)) == [{1, 3}, {0, 1, 2}]
    assert kept(gen.top_p_filter(jnp.asarray(CRAFTED), 0.8))[0] == {1, 3, 4}
    assert kept(gen.top_p_filter(jnp.asarray(CRAFTED), 0.1)) == [{3}, {0}]  # the top token always stays
    assert kept(gen.top_p_filter(jnp.asarray(CRAFTED), 1.0)) == [set(range(5))] * 2


def test_warpers_match_transformers_on_random_logits():
    logits = np.random.default_rng(0).normal(size=(4, 37)).astype(np.float32) * 3
    scores = torch.tensor(logits)
    for k in (1, 5, 36):
        theirs = transformers.TopKLogitsWarper(k)(None, scores.clone()).numpy()
        np.testing.assert_array_equal(np.asarray(gen.top_k_filter(jnp.asarray(logits), k)), theirs)
    for p in (0.05, 0.5, 0.9, 0.999):
        theirs = transformers.TopPLogitsWarper(p)(None, scores.clone()).numpy()
        np.testing.assert_array_equal(kept(gen.top_p_filter(jnp.asarray(logits), p)), kept(theirs))
    sampler = gen.Sampler(do_sample=True, top_k=7, top_p=True)
    ours = gen.process_logits(jnp.asarray(logits), sampler, 0.7, 0.8)
    warpers = [
        transformers.TemperatureLogitsWarper(0.7),
        transformers.TopKLogitsWarper(7),
        transformers.TopPLogitsWarper(0.8),
    ]
    theirs = scores.clone()
    for w in warpers:
        theirs = w(None, theirs)
    np.testing.assert_allclose(np.asarray(ours), theirs.numpy(), rtol=1e-6)


def draws(logits, sampler, temperature=1.0, top_p=1.0, n=4000):
    keys = jax.random.split(jax.random.key(0), n)
    f = jax.vmap(lambda k: gen.choose(jnp.asarray(logits), k, sampler, temperature, top_p))
    return np.asarray(f(keys))  # [n, B]


def test_sampling_draws_only_and_all_of_the_kept_tokens():
    for sampler, top_p, expected in [
        (gen.Sampler(True, top_k=2), 1.0, [{1, 3}, {0, 1, 2}]),
        (gen.Sampler(True, top_p=True), 0.8, [{1, 3, 4}, {0, 1, 2}]),
        (gen.Sampler(True, top_k=3, top_p=True), 0.6, [{1, 3}, {0, 1, 2}]),
    ]:
        samples = draws(CRAFTED, sampler, top_p=top_p)
        assert [set(samples[:, b]) for b in range(2)] == expected


def test_temperature_sharpens_and_flattens():
    plain = draws(CRAFTED, gen.Sampler(True))[:, 0]
    np.testing.assert_allclose(np.bincount(plain, minlength=5) / len(plain), np.exp(CRAFTED[0]), atol=0.03)
    cold = draws(CRAFTED, gen.Sampler(True), temperature=0.1)[:, 0]
    assert (cold == 3).mean() > 0.9
    hot = draws(CRAFTED, gen.Sampler(True), temperature=100.0)[:, 0]
    assert np.abs(np.bincount(hot, minlength=5) / len(hot) - 0.2).max() < 0.04


def test_sampling_is_reproducible_for_a_key(small):
    model, _ = small
    ids = prompts(7)
    kw = {"max_new_tokens": 16, "do_sample": True, "top_k": 20, "top_p": 0.95, "temperature": 1.3}
    a = model.generate(ids, prng_key=jax.random.key(1), **kw)
    np.testing.assert_array_equal(a, model.generate(ids, prng_key=jax.random.key(1), **kw))
    np.testing.assert_array_equal(a, model.generate(ids, prng_key=1, **kw))
    assert not np.array_equal(a, model.generate(ids, prng_key=jax.random.key(2), **kw))


def test_num_return_sequences(small):
    model, _ = small
    ids = prompts(8, batch=2)
    out = model.generate(ids, max_new_tokens=12, do_sample=True, num_return_sequences=3, prng_key=0)
    assert out.shape == (6, 7 + 12)
    np.testing.assert_array_equal(out[:, :7], np.repeat(ids, 3, axis=0))
    assert len({tuple(r) for r in out[:3, 7:]}) > 1


def test_streamer_sees_each_step_as_it_is_chosen(small):
    model, _ = small
    ids = prompts(9)
    seen = []
    out = model.generate(ids, max_new_tokens=10, streamer=seen.append)
    np.testing.assert_array_equal(np.stack(seen, axis=1), out[:, 7:])


# -- compiles and errors -----------------------------------------------------------------------
def test_same_shapes_do_not_recompile(small):
    model, _ = small
    ids = prompts(10)
    model.generate(ids, max_new_tokens=20, do_sample=True, prng_key=0)
    before = gen._generate_loop._cache_size()
    model.generate(prompts(11), max_new_tokens=20, do_sample=True, prng_key=1, temperature=0.5)
    model.generate(prompts(12)[:, :6], max_new_tokens=30, do_sample=True, prng_key=2)  # same buckets
    model.generate(ids, attention_mask=np.tril(np.ones((3, 7)))[::-1].copy(), max_new_tokens=20, do_sample=True)
    assert gen._generate_loop._cache_size() == before


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"max_new_tokens": 80}, "n_positions"),
        ({"max_length": 82}, "n_positions"),  # 81 = n_positions + 1 fits: the last token is not fed back
        ({"max_length": 7}, "max_length"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"temperature": 0.0, "do_sample": True}, "temperature"),
        ({"temperature": -1.0, "do_sample": True}, "temperature"),
        ({"top_p": 0.0, "do_sample": True}, "top_p"),
        ({"top_p": 1.5, "do_sample": True}, "top_p"),
        ({"top_k": -1, "do_sample": True}, "top_k"),  # 0 is no filter, as transformers
        ({"num_return_sequences": 2}, "do_sample"),
        ({"attention_mask": np.zeros((3, 7))}, "attention_mask"),
        # 1e-46 is > 0 as a Python float but 0 in float32, where the logits are divided by it
        ({"temperature": 1e-46, "do_sample": True}, r"temperature must be a finite number > 0 \(in float32\)"),
        ({"temperature": True, "do_sample": True}, "temperature"),
        ({"temperature": 10**400, "do_sample": True}, "temperature must be a finite number"),
        ({"max_length": 10.0}, "max_length must be an int"),
        ({"max_length": "10"}, "max_length must be an int"),
        ({"pad_token_id": 2.7}, "pad_token_id must be an int, got 2.7"),
        ({"num_return_sequences": True, "do_sample": True}, "num_return_sequences"),
        ({"prng_key": 2**70, "do_sample": True}, r"prng_key as an int seed must be in \[-2\*\*63, 2\*\*63\)"),
        ({"prng_key": 1.5, "do_sample": True}, "prng_key must be an int seed, a jax.random.key"),
        ({"prng_key": "abc", "do_sample": True}, "prng_key must be"),
    ],
)
def test_clear_errors(small, kwargs, message):
    model, _ = small
    with pytest.raises(ValueError, match=message):
        model.generate(prompts(), **kwargs)


def test_bad_input_ids(small):
    model, _ = small
    with pytest.raises(ValueError, match="outside"):
        model.generate(np.full((1, 3), SMALL.vocab_size))
    with pytest.raises(ValueError, match=r"\[batch, seq_len\]"):
        model.generate(np.zeros(3, np.int32))
    with pytest.raises(ValueError, match="input_ids rows differ in length .row 0 has 2, row 1 has 1."):
        model.generate([[1, 2], [1]])
    with pytest.raises(ValueError, match="the prompt's 80 tokens fill n_positions=80"):
        model.generate(np.zeros((1, SMALL.n_positions), np.int32))


def test_an_eos_no_token_can_match_is_warned_about(small, caplog):
    model, _ = small
    model.generate(prompts(), max_new_tokens=2, eos_token_id=-1)
    assert "eos_token_id [-1] is outside [0, 37)" in caplog.text


def test_a_streamer_that_raises_stops_generation_with_its_own_error(small, decode_path):
    """As in transformers (which calls the streamer from Python): the user's exception, unchanged,
    not XLA's INTERNAL error, and no further steps once it raised."""
    model, _ = small

    class Enough(Exception):
        pass

    calls = []

    def streamer(tokens):
        calls.append(tokens)
        if len(calls) == 3:
            raise Enough("three steps are enough")

    with pytest.raises(Enough, match="three steps are enough"):
        model.generate(prompts(), max_new_tokens=20, streamer=streamer)
    assert len(calls) == 3
    assert not gen._STREAMERS and not gen._STREAM_ERRORS
    seen = []  # the next call streams as usual
    out = model.generate(prompts(), max_new_tokens=5, streamer=seen.append)
    np.testing.assert_array_equal(np.stack(seen, axis=1), out[:, 7:])
    with pytest.raises(TypeError, match="streamer must be a callable"):
        model.generate(prompts(), max_new_tokens=5, streamer=[])


# -- pipeline and CLI ----------------------------------------------------------------------------
TOKENIZER_FILES = os.path.join(os.path.dirname(__file__), "fixtures", "openai-gpt-tokenizer")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny random transformers model saved with save_pretrained, the real tokenizer files beside it,
    and openai-gpt's task_specific_params (text-generation: do_sample, max_length 50)."""
    directory = str(tmp_path_factory.mktemp("tiny-openai-gpt"))
    config = transformers.OpenAIGPTConfig(
        n_positions=64,
        n_embd=24,
        n_layer=2,
        n_head=3,
        initializer_range=0.4,
        task_specific_params={"text-generation": {"do_sample": True, "max_length": 50}},
    )
    torch.manual_seed(0)
    transformers.OpenAIGPTLMHeadModel(config).eval().save_pretrained(directory)
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(os.path.join(TOKENIZER_FILES, name), directory)
    return directory


PROMPTS = ["Hello there, General Kenobi!", "The future of AI is", "One"]


def test_pipeline_matches_transformers_pipeline(model_dir):
    ours = pipeline("text-generation", model=model_dir)
    theirs = transformers.pipeline(
        "text-generation",
        model=transformers.OpenAIGPTLMHeadModel.from_pretrained(model_dir),
        tokenizer=transformers.AutoTokenizer.from_pretrained(model_dir),
    )
    expected = [theirs(p, max_new_tokens=10, do_sample=False, pad_token_id=0) for p in PROMPTS]
    assert ours(PROMPTS, max_new_tokens=10, do_sample=False) == expected  # one batch, each row as alone
    assert ours(PROMPTS[1], max_new_tokens=10, do_sample=False) == expected[1]
    assert expected[1][0]["generated_text"].startswith("The future of AI is ")
    short = ours(PROMPTS[1], max_new_tokens=10, do_sample=False, return_full_text=False)[0]["generated_text"]
    assert expected[1][0]["generated_text"] == PROMPTS[1] + short


def test_pipeline_defaults_are_transformers_pipeline_defaults(model_dir):
    ours = pipeline("text-generation", model=model_dir)
    theirs = transformers.pipeline(
        "text-generation",
        model=transformers.OpenAIGPTLMHeadModel.from_pretrained(model_dir),
        tokenizer=transformers.AutoTokenizer.from_pretrained(model_dir),
    )
    names = ("max_new_tokens", "max_length", "do_sample", "temperature", "top_k")
    assert {k: ours.task_defaults[k] for k in names} == {k: getattr(theirs.generation_config, k) for k in names}
    # 256 new tokens by default, which here (n_positions 64) stop at the end of the position table
    first = ours(PROMPTS[1], seed=0, num_return_sequences=2, return_tensors=True)
    assert [len(r["generated_token_ids"]) for r in first] == [64, 64]
    assert first == ours(PROMPTS[1], seed=0, num_return_sequences=2, return_tensors=True)
    assert first != ours(PROMPTS[1], seed=1, num_return_sequences=2, return_tensors=True)
    # a max_length the caller gives counts, whether to the call or to pipeline()
    assert len(ours(PROMPTS[1], max_length=20, return_tensors=True)[0]["generated_token_ids"]) == 20
    short = pipeline("text-generation", model=model_dir, max_length=12, do_sample=False)
    assert len(short(PROMPTS[1], return_tensors=True)[0]["generated_token_ids"]) == 12
    with pytest.raises(ValueError, match="task"):
        pipeline("summarization", model=model_dir)
    with pytest.raises(ValueError, match="no tokens"):
        ours("")
    with pytest.raises(TypeError, match="does not take return_text_maybe"):
        ours("Hi", return_text_maybe=True)
    with pytest.raises(ValueError, match="n_positions=64"):
        ours("hello " * 64)


def test_pipeline_batch_rows_stop_as_they_would_alone(model_dir):
    ours = pipeline("text-generation", model=model_dir, do_sample=False, max_new_tokens=10)
    theirs = transformers.pipeline(
        "text-generation",
        model=transformers.OpenAIGPTLMHeadModel.from_pretrained(model_dir),
        tokenizer=transformers.AutoTokenizer.from_pretrained(model_dir),
    )
    alone = ours(PROMPTS[1], return_tensors=True)[0]["generated_token_ids"]
    eos = alone[-8]  # the third new token of this prompt: it stops early, the others run on
    expected = [theirs(p, max_new_tokens=10, do_sample=False, eos_token_id=eos, pad_token_id=0) for p in PROMPTS]
    got = ours(PROMPTS, eos_token_id=eos)
    assert got == expected and got == [ours(p, eos_token_id=eos) for p in PROMPTS]
    assert len(ours(PROMPTS[1], eos_token_id=eos, return_tensors=True)[0]["generated_token_ids"]) <= len(alone) - 7


def run_cli(argv, capsys):
    code = cli.main(["generate", *argv, "--compile-cache", ""])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_generates_from_a_local_directory(model_dir, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a local directory needs no network
    expected = pipeline("text-generation", model=model_dir)(PROMPTS[1], max_new_tokens=12, do_sample=False)
    code, out, _ = run_cli([PROMPTS[1], "--model", model_dir, "--max-new-tokens", "12", "--greedy"], capsys)
    assert code == 0 and out == expected[0]["generated_text"] + "\n"
    code, streamed, _ = run_cli(
        [PROMPTS[1], "--model", model_dir, "--max-new-tokens", "12", "--greedy", "--stream"], capsys
    )
    assert code == 0 and streamed == out
    argv = [PROMPTS[1], "--model", model_dir, "--max-length", "20", "--do-sample", "--seed", "3"]
    code, sampled, _ = run_cli(
        [*argv, "--top-k", "5", "--top-p", "0.9", "--temperature", "0.8", "--num-return-sequences", "2"], capsys
    )
    assert code == 0 and len(sampled.splitlines()) == 2


def test_cli_offline_hub_id_is_a_one_line_error(capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, out, err = run_cli(
        ["The future of AI is", "--model", "openai-community/openai-gpt", "--max-length", "50"], capsys
    )
    assert code == 1 and out == ""
    assert len(err.strip().splitlines()) == 1 and "local model directory" in err


def test_cli_bad_arguments_are_one_line_errors(model_dir, capsys):
    code, _, err = run_cli(["Hi", "--model", model_dir, "--do-sample", "--top-p", "1.5"], capsys)
    assert code == 1 and "top_p" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(["Hi", "--model", model_dir, "--max-length", "66"], capsys)
    assert code == 1 and "n_positions" in err


def test_generates_the_same_with_x64_enabled(small, decode_path):
    model, _ = small
    ids = prompts(13)
    expected = model.generate(ids, max_new_tokens=8)
    with jax.enable_x64(True):
        np.testing.assert_array_equal(model.generate(ids, max_new_tokens=8), expected)


def test_generation_config_json_gives_generate_and_pipeline_defaults(model_dir, tmp_path, caplog):
    """As transformers: a checkpoint's generation_config.json defaults generate's arguments (a call's
    own win) and goes back out with save_pretrained; the pipeline puts it between its own defaults
    and task_specific_params (a max_length there displaces the default 256 new tokens), and takes
    the tokenizer's pad token when no config names one. Options generate lacks are named."""
    import json

    from gpt_flax import OpenAIGPTTokenizer

    directory = tmp_path / "model"
    shutil.copytree(model_dir, directory)
    theirs = transformers.OpenAIGPTLMHeadModel.from_pretrained(directory).eval()
    ids = np.asarray([[10, 20, 30]])
    eos = int(hf_generate(theirs, ids, max_new_tokens=12)[0, 3 + 4])  # the fifth new token
    theirs.generation_config = transformers.GenerationConfig(eos_token_id=eos, max_new_tokens=12)
    theirs.save_pretrained(directory)
    ours = FlaxOpenAIGPTLMHeadModel.from_pretrained(directory)
    theirs = transformers.OpenAIGPTLMHeadModel.from_pretrained(directory).eval()
    with torch.no_grad():
        expected = theirs.generate(torch.tensor(ids)).numpy()
    np.testing.assert_array_equal(ours.generate(ids), expected)
    assert expected.shape[1] <= 3 + 5  # it stopped at the file's eos
    assert ours.generate(ids, max_new_tokens=2, eos_token_id=[]).shape[1] == 5
    ours.save_pretrained(tmp_path / "saved")
    with open(tmp_path / "saved" / "generation_config.json") as f, open(directory / "generation_config.json") as g:
        assert json.load(f) == json.load(g)

    theirs.generation_config = transformers.GenerationConfig(max_length=30, do_sample=True, temperature=0.5, top_k=7)
    theirs.save_pretrained(directory)
    tokenizer = OpenAIGPTTokenizer.from_pretrained(directory)
    tokenizer.pad_token = tokenizer.unk_token
    their_tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
    their_tokenizer.pad_token = their_tokenizer.unk_token
    ours = pipeline("text-generation", model=str(directory), tokenizer=tokenizer)
    theirs = transformers.pipeline(
        "text-generation",
        model=transformers.OpenAIGPTLMHeadModel.from_pretrained(directory),
        tokenizer=their_tokenizer,
    )
    names = ("max_new_tokens", "max_length", "do_sample", "temperature", "top_k", "pad_token_id")
    assert {k: ours.task_defaults.get(k) for k in names} == {k: getattr(theirs.generation_config, k) for k in names}
    assert ours.task_defaults["pad_token_id"] == tokenizer.unk_token_id

    with open(directory / "generation_config.json", "w") as f:
        json.dump({"num_beam_groups": 2, "num_beams": 4, "transformers_version": "4.56.2"}, f)
    with caplog.at_level("WARNING", logger="gpt_flax"):
        FlaxOpenAIGPTLMHeadModel.from_pretrained(directory)
    assert "sets {'num_beam_groups': 2}, which gpt-flax's generate does not implement" in caplog.text


def test_generation_config_json_values_read_as_transformers_reads_them(model_dir, tmp_path):
    """top_k 0 (no filter), temperature 0 (greedy), max_length 20 (GenerationConfig's default: 20 new
    tokens) and sampling options under greedy decoding run as in transformers; in the pipeline a
    caller's max_length beats the file's max_new_tokens, as the pipeline's own default does."""
    import json

    directory = tmp_path / "model"
    shutil.copytree(model_dir, directory)
    theirs = transformers.OpenAIGPTLMHeadModel.from_pretrained(directory).eval()
    ids = np.asarray([[10, 20, 30]])
    for file in ({"top_k": 0}, {"temperature": 0.0}, {"max_length": 20}, {"top_p": 2.0, "top_k": -1}):
        with open(directory / "generation_config.json", "w") as f:
            json.dump(file, f)
        ours = FlaxOpenAIGPTLMHeadModel.from_pretrained(directory)
        theirs.generation_config = transformers.GenerationConfig.from_pretrained(directory)
        with torch.no_grad():
            expected = theirs.generate(torch.tensor(ids), pad_token_id=0).numpy()
        np.testing.assert_array_equal(ours.generate(ids, pad_token_id=0), expected, err_msg=str(file))
    with open(directory / "generation_config.json", "w") as f:
        json.dump({"max_new_tokens": 30}, f)
    generator = pipeline("text-generation", model=str(directory))
    assert len(generator("One", max_length=6, return_tensors=True)[0]["generated_token_ids"]) == 6

    # A generation_config.json replaces config.json's eos and pad (transformers reads the file alone).
    eos = int(hf_generate(theirs, ids, max_new_tokens=12)[0, 3 + 3])
    with open(directory / "config.json") as f:
        config = json.load(f)
    with open(directory / "config.json", "w") as f:
        json.dump({**config, "eos_token_id": eos}, f)
    ours = FlaxOpenAIGPTLMHeadModel.from_pretrained(directory)
    theirs = transformers.OpenAIGPTLMHeadModel.from_pretrained(directory).eval()
    with torch.no_grad():
        expected = theirs.generate(torch.tensor(ids)).numpy()
    assert expected.shape[1] == 3 + 30  # past the config's eos
    np.testing.assert_array_equal(ours.generate(ids), expected)
    assert ours.generate(ids, max_new_tokens=30, pad_token_id=0).shape[1] == 3 + 30

    # In the pipeline: a file's max_length clears the default 256 new tokens, and a file of
    # transformers >= 4.50 then lays its max_new_tokens back (an older one leaves the length to
    # task_specific_params' max_length, 50); greedy calls ignore its sampling options.
    for version, length in (("4.56.2", 1 + 5), ("4.26.0", 50)):
        with open(directory / "generation_config.json", "w") as f:
            json.dump({"max_length": 30, "max_new_tokens": 5, "top_p": 0.0, "transformers_version": version}, f)
        generator = pipeline("text-generation", model=str(directory), do_sample=False)
        assert len(generator("One", return_tensors=True)[0]["generated_token_ids"]) == length, version


def test_prompt_and_new_tokens_may_reach_n_positions_plus_one_like_transformers(small, decode_path):
    """The last new token is never fed back, so it needs no position: transformers generates
    n_positions + 1 tokens in all, and so do we; one more is refused before any work."""
    model, ref = small
    ids = prompts(4, batch=2, length=SMALL.n_positions - 1)
    ours = model.generate(ids, max_new_tokens=2)
    assert ours.shape == (2, SMALL.n_positions + 1)
    np.testing.assert_array_equal(ours, hf_generate(ref, ids, max_new_tokens=2))
    full = prompts(5, batch=1, length=SMALL.n_positions)
    np.testing.assert_array_equal(model.generate(full, max_new_tokens=1), hf_generate(ref, full, max_new_tokens=1))
    with pytest.raises(ValueError, match="past n_positions=80"):
        model.generate(ids, max_new_tokens=3)
    # the longest unpadded prompt counts, not the padded width
    mask = np.ones_like(ids)
    mask[:, :10] = 0
    assert model.generate(ids, attention_mask=mask, max_new_tokens=12).shape == (2, SMALL.n_positions - 1 + 12)


def test_greedy_ignores_sampling_options_like_transformers(small):
    """temperature=0 or top_p=0 with greedy decoding (a common habit) are not used, so not refused."""
    model, _ = small
    greedy = model.generate(prompts(), max_new_tokens=4)
    for options in ({"temperature": 0.0}, {"top_p": 0.0}, {"top_k": -3}, {"temperature": 0.0, "do_sample": False}):
        np.testing.assert_array_equal(model.generate(prompts(), max_new_tokens=4, **options), greedy)


def test_eos_token_id_as_an_array_or_tensor(small):
    model, ref = small
    ids = prompts()
    eos = int(model.generate(ids, max_new_tokens=3)[0, -1])
    expected = hf_generate(ref, ids, max_new_tokens=6, eos_token_id=eos, pad_token_id=0)
    for given in (np.array(eos), np.array([eos]), torch.tensor([eos]), jnp.asarray(eos)):
        np.testing.assert_array_equal(
            model.generate(ids, max_new_tokens=6, eos_token_id=given, pad_token_id=0), expected
        )
    with pytest.raises(ValueError, match="eos_token_id must be an int or a list of ints"):
        model.generate(ids, eos_token_id=np.array([1.5]))


def test_pipeline_prompts_in_a_list_each_get_their_own_length(model_dir):
    """A short prompt beside a long one generates what it would alone: the default length stops at each
    prompt's own end of the position table, and a max_length counts each prompt's own tokens."""
    ours = pipeline("text-generation", model=model_dir, do_sample=False)
    short, long = "One", "the quick brown fox jumps over the lazy dog " * 2
    for options in ({}, {"max_length": 24}):
        alone = [ours(p, return_tensors=True, **options) for p in (short, long)]
        assert ours([short, long], return_tensors=True, **options) == alone
    assert len(alone[0][0]["generated_token_ids"]) == 24
    with pytest.raises(ValueError, match="leaves no room after the 18-token prompt"):
        ours([short, long], max_length=12)


# -- logits processors: repetition penalty, no-repeat n-grams, minimum length ------------------
def test_logits_processors_match_transformers_on_random_histories():
    """constrain_logits against transformers' processors, each row given to them alone (without its
    padding: ours masks it), then with the sampling warpers after them in transformers' order."""
    rng = np.random.default_rng(0)
    B, V, W = 4, 11, 16  # a small vocabulary, so n-grams repeat
    history = rng.integers(0, V, (B, W))
    starts = np.array([0, 3, 9, 12])  # rows of 16, 13, 7 and 4 tokens, their padding on the left
    valid = np.arange(W)[None, :] >= starts[:, None]
    logits = (rng.normal(size=(B, V)) * 3).astype(np.float32)
    eos = [2, 5]

    def theirs(processors, step):
        rows = []
        for b in range(B):
            row, scores = torch.tensor(history[b : b + 1, starts[b] :]), torch.tensor(logits[b : b + 1])
            for p in processors(prompt_length=row.shape[1] - step):
                scores = p(row, scores)
            rows.append(scores.numpy()[0])
        return np.stack(rows)

    def ours(sampler, penalty=1.0, min_new=0, step=0):
        args = (jnp.asarray(history), jnp.asarray(valid), jnp.int32(step), jnp.asarray(eos), sampler)
        return np.asarray(gen.constrain_logits(jnp.asarray(logits), *args, jnp.float32(penalty), jnp.int32(min_new)))

    for penalty in (1.4, 0.6):
        expected = theirs(lambda prompt_length, p=penalty: [transformers.RepetitionPenaltyLogitsProcessor(p)], 0)
        np.testing.assert_allclose(ours(gen.Sampler(repetition_penalty=True), penalty), expected, rtol=1e-6)
    for n in (1, 2, 3, 7):
        expected = theirs(lambda prompt_length, n=n: [transformers.NoRepeatNGramLogitsProcessor(n)], 0)
        got = ours(gen.Sampler(no_repeat_ngram_size=n))
        np.testing.assert_array_equal(got, expected)
        if n <= 2:
            assert np.isinf(got).any()  # the case bans something
    for step in (3, 4):  # 4 new tokens at least: eos is banned at step 3, allowed at step 4
        expected = theirs(
            lambda prompt_length: [transformers.MinNewTokensLengthLogitsProcessor(prompt_length, 4, eos)], step
        )
        got = ours(gen.Sampler(min_new_tokens=True), min_new=4, step=step)
        np.testing.assert_array_equal(got, expected)
        assert np.isinf(got[:, eos]).all() == (step == 3)

    sampler = gen.Sampler(
        True, top_k=6, top_p=True, repetition_penalty=True, no_repeat_ngram_size=2, min_new_tokens=True
    )
    got = gen.process_logits(jnp.asarray(ours(sampler, 1.3, 4, 1)), sampler, 0.7, 0.9)
    expected = theirs(
        lambda prompt_length: [
            transformers.RepetitionPenaltyLogitsProcessor(1.3),
            transformers.NoRepeatNGramLogitsProcessor(2),
            transformers.MinNewTokensLengthLogitsProcessor(prompt_length, 4, eos),
            transformers.TemperatureLogitsWarper(0.7),
            transformers.TopKLogitsWarper(6),
            transformers.TopPLogitsWarper(0.9),
        ],
        1,
    )
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"repetition_penalty": 1.3, "no_repeat_ngram_size": 2},
        {"repetition_penalty": 0.7, "no_repeat_ngram_size": 1, "min_new_tokens": 12, "eos_token_id": 27},
        {"no_repeat_ngram_size": 3, "min_length": 20, "eos_token_id": [27, 33]},
    ],
)
def test_logits_processors_greedy_matches_transformers(small, kwargs):
    model, ref = small
    ids = prompts(4)
    ours = model.generate(ids, max_new_tokens=40, pad_token_id=0, **kwargs)
    np.testing.assert_array_equal(ours, hf_generate(ref, ids, max_new_tokens=40, **kwargs))
    plain = {k: v for k, v in kwargs.items() if k == "eos_token_id"}
    assert not np.array_equal(ours, model.generate(ids, max_new_tokens=40, pad_token_id=0, **plain))


def test_logits_processors_see_each_row_as_alone(small, decode_path):
    """In a padded batch a row's penalties and n-grams come from its own tokens, not the padding."""
    model, ref = small
    ids, mask = left_padded(5)
    kwargs = {"repetition_penalty": 1.5, "no_repeat_ngram_size": 2, "min_new_tokens": 9, "eos_token_id": 27}
    ours = model.generate(ids, attention_mask=mask, max_new_tokens=30, pad_token_id=0, **kwargs)
    for b in range(3):
        alone = ids[b : b + 1, 7 - mask[b].sum() :]
        expected = hf_generate(ref, alone, max_new_tokens=30, **kwargs)[0, alone.shape[1] :]
        np.testing.assert_array_equal(ours[b, 7 : 7 + len(expected)], expected)


def test_sampling_with_logits_processors_keeps_their_rules(small):
    model, _ = small
    ids = prompts(6, batch=2, length=4)
    out = model.generate(
        ids, max_new_tokens=30, do_sample=True, num_return_sequences=3, prng_key=0, no_repeat_ngram_size=2,
        min_new_tokens=30, eos_token_id=27, temperature=2.0,
    )  # fmt: skip
    assert out.shape == (6, 34)
    for row in out:
        bigrams = list(itertools.pairwise(row))
        assert len(set(bigrams)) == len(bigrams)
        assert 27 not in row[4:]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"repetition_penalty": 0.0}, "repetition_penalty must be a finite number > 0"),
        ({"repetition_penalty": float("nan")}, "repetition_penalty"),
        ({"no_repeat_ngram_size": -1}, "no_repeat_ngram_size must be an integer >= 0"),
        ({"no_repeat_ngram_size": 2.0}, "no_repeat_ngram_size"),
        ({"min_new_tokens": -2}, "min_new_tokens must be an integer >= 0"),
        ({"min_length": True}, "min_length"),
    ],
)
def test_logits_processor_options_are_checked(small, kwargs, message):
    model, _ = small
    with pytest.raises(ValueError, match=message):
        model.generate(prompts(), **kwargs)


def test_logits_processors_in_generation_config_pipeline_and_cli(model_dir, tmp_path, capsys):
    """generation_config.json's repetition penalty is used, as transformers uses it; the pipeline
    counts min_length on each prompt's own tokens (transformers runs the prompts one by one)."""
    directory = tmp_path / "model"
    shutil.copytree(model_dir, directory)
    theirs = transformers.OpenAIGPTLMHeadModel.from_pretrained(directory).eval()
    theirs.generation_config = transformers.GenerationConfig(repetition_penalty=1.6, no_repeat_ngram_size=2)
    theirs.save_pretrained(directory)
    ids = np.asarray([[10, 20, 30]])
    ours = FlaxOpenAIGPTLMHeadModel.from_pretrained(directory)
    theirs = transformers.OpenAIGPTLMHeadModel.from_pretrained(directory).eval()
    with torch.no_grad():
        expected = theirs.generate(torch.tensor(ids), max_new_tokens=16, pad_token_id=0).numpy()
    np.testing.assert_array_equal(ours.generate(ids, max_new_tokens=16), expected)
    assert not np.array_equal(
        ours.generate(ids, max_new_tokens=16, repetition_penalty=1.0, no_repeat_ngram_size=0), expected
    )

    generator = pipeline("text-generation", model=model_dir, do_sample=False, max_new_tokens=12)
    their_generator = transformers.pipeline(
        "text-generation",
        model=transformers.OpenAIGPTLMHeadModel.from_pretrained(model_dir),
        tokenizer=transformers.AutoTokenizer.from_pretrained(model_dir),
    )
    eos = generator(PROMPTS[2], return_tensors=True)[0]["generated_token_ids"][2]  # the second new token
    options = {"repetition_penalty": 1.3, "min_length": 8, "eos_token_id": eos}
    expected = [their_generator(p, max_new_tokens=12, do_sample=False, pad_token_id=0, **options) for p in PROMPTS]
    assert generator(PROMPTS, **options) == expected

    code, out, _ = run_cli(
        [PROMPTS[1], "--model", model_dir, "--max-new-tokens", "12", "--greedy", "--repetition-penalty", "1.3",
         "--no-repeat-ngram-size", "2", "--min-new-tokens", "3"], capsys,
    )  # fmt: skip
    options = {"repetition_penalty": 1.3, "no_repeat_ngram_size": 2, "min_new_tokens": 3}
    assert code == 0 and out == generator(PROMPTS[1], **options)[0]["generated_text"] + "\n"
    code, out, _ = run_cli(
        [
            PROMPTS[1],
            "--model",
            model_dir,
            "--max-new-tokens",
            "6",
            "--min-p",
            "0.1",
            "--typical-p",
            "0.9",
            "--seed",
            "4",
        ],
        capsys,
    )
    options = {"do_sample": True, "min_p": 0.1, "typical_p": 0.9, "seed": 4}
    assert code == 0 and out == generator(PROMPTS[1], max_new_tokens=6, **options)[0]["generated_text"] + "\n"


def test_sampling_keeps_transformers_default_top_k_of_50():
    """transformers' generate samples from the 50 most likely tokens unless told otherwise (top_k=0: all)."""
    config = OpenAIGPTConfig(vocab_size=300, n_positions=16, n_embd=16, n_layer=1, n_head=2, initializer_range=0.02)
    model = FlaxOpenAIGPTLMHeadModel(config, seed=0)
    ids = np.zeros((8, 1), np.int32)
    kwargs = {"max_new_tokens": 12, "do_sample": True, "temperature": 5.0, "prng_key": 3}
    default = model.generate(ids, **kwargs)
    np.testing.assert_array_equal(default, model.generate(ids, top_k=50, **kwargs))
    assert not np.array_equal(default, model.generate(ids, top_k=0, **kwargs))
    assert len(np.unique(model.generate(ids, top_k=0, **kwargs)[:, 1])) > 5  # nearly uniform over 300


def test_a_tiny_temperature_samples_the_most_likely_token():
    """1e-38 is a float32 > 0, but a logit divided by it overflows: the shift by the largest logit
    keeps that token finite and the draw greedy, where it used to pick the first token at +inf."""
    logits = jnp.asarray([[1.0, 5.0, 3.0, -2.0], [4.0, -1.0, 0.5, 3.9]])
    for temperature in (1e-38, 1e-44):
        for sampler in (gen.Sampler(True, top_k=2), gen.Sampler(True), gen.Sampler(True, top_p=True)):
            for seed in range(5):
                token = gen.choose(logits, jax.random.key(seed), sampler, temperature, 0.9)
                np.testing.assert_array_equal(token, [1, 0])


def test_generation_config_argument_and_unsupported_options(small):
    model, ref = small
    ids = prompts(8)
    eos = int(model.generate(ids, max_new_tokens=4)[0, -1])
    options = {"max_new_tokens": 10, "eos_token_id": eos, "pad_token_id": 0, "repetition_penalty": 1.2}
    with torch.no_grad():
        expected = ref.generate(torch.tensor(ids), generation_config=transformers.GenerationConfig(**options)).numpy()
    np.testing.assert_array_equal(model.generate(ids, generation_config=options), expected)
    np.testing.assert_array_equal(
        model.generate(ids, generation_config=transformers.GenerationConfig(**options)), expected
    )
    assert model.generate(ids, generation_config=options, max_new_tokens=2).shape == (3, 9)  # arguments win
    with pytest.raises(TypeError, match="generate does not take num_beam_groups: gpt-flax implements greedy decoding"):
        model.generate(ids, num_beam_groups=2)
    with pytest.raises(TypeError, match="generation_config must be a dict"):
        model.generate(ids, generation_config=3)


def test_pipeline_takes_transformers_pipeline_options(model_dir):
    """prefix (not in the output, not counted by max_length), stop_sequence, handle_long_generation="hole",
    clean_up_tokenization_spaces, batch_size and return_text, against transformers' pipeline."""
    from gpt_flax import OpenAIGPTTokenizer

    tokenizer = OpenAIGPTTokenizer.from_pretrained(model_dir)
    tokenizer.model_max_length = 64  # the model's n_positions, for "hole"
    their_tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    their_tokenizer.model_max_length = 64
    ours = pipeline("text-generation", model=model_dir, tokenizer=tokenizer, do_sample=False)
    theirs = transformers.pipeline(
        "text-generation", model=transformers.OpenAIGPTLMHeadModel.from_pretrained(model_dir), tokenizer=their_tokenizer
    )
    base = {"do_sample": False, "pad_token_id": 0}
    prompts_ = ["Hello there, General Kenobi!", "One"]
    for options in (
        {"max_new_tokens": 8, "prefix": "once upon a time ,"},
        {"max_new_tokens": 8, "clean_up_tokenization_spaces": False, "batch_size": 2},
        {"max_new_tokens": 8, "return_full_text": False, "prefix": "so"},
    ):
        expected = [theirs(p, **base, **options) for p in prompts_]
        assert ours(prompts_, **options) == expected, options
    # a max_length does not count the prefix's 5 tokens (transformers would generate 256 tokens here, see above)
    with_prefix = ours("One", max_length=12, prefix="once upon a time ,", return_tensors=True)
    assert len(with_prefix[0]["generated_token_ids"]) == 12 + 5
    stop = ours(prompts_[1], max_new_tokens=8, return_full_text=False)[0]["generated_text"].split()[1]
    expected = theirs(prompts_[1], max_new_tokens=8, stop_sequence=stop, **base)
    got = ours(prompts_[1], max_new_tokens=8, stop_sequence=stop)
    assert got == expected and len(got[0]["generated_text"].split()) < 1 + 8
    long = "the quick brown fox jumps over the lazy dog " * 8  # 72 tokens: past n_positions
    expected = theirs(long, max_new_tokens=10, handle_long_generation="hole", **base)
    assert ours(long, max_new_tokens=10, handle_long_generation="hole") == expected
    with pytest.raises(ValueError, match="`return_text` is mutually exclusive with `return_full_text`"):
        ours("One", return_text=True, return_full_text=False)
    with pytest.raises(ValueError, match="handle_long_generation"):
        ours("One", handle_long_generation="middle")
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        ours("One", batch_size=0)


# -- beam search ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_beams": 4, "num_return_sequences": 3, "eos_token_id": 27, "pad_token_id": 5},  # pad fills short ones
        {"num_beams": 3, "eos_token_id": [27, 33]},  # no pad: the first eos fills
        {"num_beams": 3, "eos_token_id": 27, "early_stopping": True},
        {"num_beams": 3, "eos_token_id": 27, "early_stopping": "never", "length_penalty": 2.0},
        {"num_beams": 2, "eos_token_id": 27, "length_penalty": -0.5, "no_repeat_ngram_size": 2},
    ],
)
def test_beam_search_matches_transformers(small, kwargs):
    model, ref = small
    ids = prompts(9)
    kwargs = {"max_new_tokens": 20, "pad_token_id": 0, **kwargs}
    ours = model.generate(ids, **kwargs)
    theirs = hf_generate(ref, ids, **kwargs)
    np.testing.assert_array_equal(ours, theirs)
    greedy = model.generate(ids, max_new_tokens=20, pad_token_id=0, eos_token_id=kwargs.get("eos_token_id"))
    assert not np.array_equal(ours[:: kwargs.get("num_return_sequences", 1)], greedy)  # beams found other text


def test_beam_search_rows_as_alone_and_across_cache_phases(monkeypatch):
    """Each prompt of a padded batch gets the beams it would alone; the cache, reordered every step,
    grows between the decode phases (which the XLA decode path has; the CPU kernels use one)."""
    monkeypatch.setattr(gen, "use_cpu_kernel", lambda dtype: False)
    config = SMALL.replace(n_positions=300)
    model = FlaxOpenAIGPTLMHeadModel(config, seed=3)
    ref = torch_model("lm", config, model.params)
    ids, mask = left_padded(10)
    kwargs = {"num_beams": 3, "num_return_sequences": 2, "max_new_tokens": 130, "repetition_penalty": 1.2}
    assert gen.phase_widths(8, gen.cache_bucket(8, 130)) == (128, 192)
    ours = model.generate(ids, attention_mask=mask, **kwargs)
    for b in range(3):
        alone = ids[b : b + 1, 7 - mask[b].sum() :]
        expected = hf_generate(ref, alone, **kwargs)[:, alone.shape[1] :]
        np.testing.assert_array_equal(ours[2 * b : 2 * b + 2, 7:], expected)


def test_beam_sampling_is_reproducible_and_cold_beam_sampling_is_beam_search(small):
    """do_sample with num_beams draws the candidates from the softmax of the beams' scores (transformers'
    multinomial without replacement); at a temperature near 0 the draws are the top candidates."""
    model, _ = small
    ids = prompts(11)
    kwargs = {"num_beams": 3, "max_new_tokens": 16, "do_sample": True, "top_k": 0}
    first = model.generate(ids, prng_key=1, **kwargs)
    np.testing.assert_array_equal(first, model.generate(ids, prng_key=1, **kwargs))
    assert not np.array_equal(first, model.generate(ids, prng_key=2, **kwargs))
    beam = model.generate(ids, num_beams=3, max_new_tokens=16)
    np.testing.assert_array_equal(model.generate(ids, prng_key=1, **{**kwargs, "temperature": 0.01}), beam)


def test_beam_search_options_are_checked(small):
    model, _ = small
    for kwargs, message in (
        ({"num_beams": 0}, "num_beams must be a positive integer"),
        ({"num_beams": 1.0}, "num_beams must be a positive integer"),
        ({"num_beams": 2, "eos_token_id": list(range(37))}, "more than the vocabulary's 37 tokens"),
        (
            {"num_beams": 2, "num_return_sequences": 3},
            r"num_return_sequences \(3\) has to be smaller or equal to num_beams",
        ),
        ({"num_beams": 2, "early_stopping": "sometimes"}, "early_stopping must be True, False or 'never'"),
        ({"num_beams": 2, "length_penalty": float("inf")}, "length_penalty must be a finite number"),
        ({"num_beams": 2, "streamer": print}, "streamer"),
    ):
        with pytest.raises(ValueError, match=message):
            model.generate(prompts(), max_new_tokens=3, **kwargs)


def test_pipeline_and_cli_beam_search_match_transformers(model_dir, capsys):
    ours = pipeline("text-generation", model=model_dir, do_sample=False)
    theirs = transformers.pipeline(
        "text-generation",
        model=transformers.OpenAIGPTLMHeadModel.from_pretrained(model_dir),
        tokenizer=transformers.AutoTokenizer.from_pretrained(model_dir),
    )
    options = {"num_beams": 3, "num_return_sequences": 2, "max_new_tokens": 10}
    expected = [theirs(p, do_sample=False, pad_token_id=0, **options) for p in PROMPTS]
    assert ours(PROMPTS, **options) == expected
    code, out, _ = run_cli(
        [PROMPTS[1], "--model", model_dir, "--max-new-tokens", "10", "--greedy", "--num-beams", "3"], capsys
    )
    assert code == 0 and out == ours(PROMPTS[1], num_beams=3, max_new_tokens=10)[0]["generated_text"] + "\n"


def test_a_no_repeat_ngram_size_past_the_history_bans_nothing(small):
    model, ref = small
    ids = prompts(12, batch=1, length=5)
    for n in (60, 70, 100):  # the history holds 64 slots: no n-gram fits, as in transformers
        ours = model.generate(ids, max_new_tokens=20, pad_token_id=0, no_repeat_ngram_size=n)
        np.testing.assert_array_equal(ours, hf_generate(ref, ids, max_new_tokens=20, no_repeat_ngram_size=n))


def test_a_calls_generation_config_keeps_the_models_defaults(model_dir, tmp_path):
    """transformers (>= 4.50): what a call's generation_config leaves at GenerationConfig's global defaults
    comes from the model's (its generation_config.json, else config.json's eos); a top_k of None there
    means no top-k filter."""
    import json

    directory = tmp_path / "model"
    shutil.copytree(model_dir, directory)
    with open(directory / "generation_config.json", "w") as f:
        json.dump({"repetition_penalty": 1.6, "no_repeat_ngram_size": 2, "eos_token_id": [5, 9]}, f)
    ours = FlaxOpenAIGPTLMHeadModel.from_pretrained(directory)
    theirs = transformers.OpenAIGPTLMHeadModel.from_pretrained(directory).eval()
    ids = np.asarray([[10, 20, 30]])
    call = transformers.GenerationConfig(max_new_tokens=16, pad_token_id=0)
    with torch.no_grad():
        expected = theirs.generate(torch.tensor(ids), generation_config=call).numpy()
    np.testing.assert_array_equal(ours.generate(ids, generation_config=call), expected)
    np.testing.assert_array_equal(
        ours.generate(ids, generation_config={"max_new_tokens": 16, "pad_token_id": 0}), expected
    )

    os.remove(directory / "generation_config.json")
    with open(directory / "config.json") as f:
        config = json.load(f)
    eos = int(expected[0, 5])
    with open(directory / "config.json", "w") as f:
        json.dump({**config, "eos_token_id": eos}, f)
    ours = FlaxOpenAIGPTLMHeadModel.from_pretrained(directory)
    theirs = transformers.OpenAIGPTLMHeadModel.from_pretrained(directory).eval()
    with torch.no_grad():
        expected = theirs.generate(torch.tensor(ids), generation_config=call).numpy()
    assert expected.shape[1] < 3 + 16  # stopped at config.json's eos
    np.testing.assert_array_equal(ours.generate(ids, generation_config=call), expected)

    rows = np.zeros((64, 1), np.int32)
    sample = {"do_sample": True, "temperature": 5.0, "max_new_tokens": 1, "prng_key": 0}
    no_filter = ours.generate(rows, top_k=0, **sample)
    np.testing.assert_array_equal(ours.generate(rows, generation_config={"top_k": None}, **sample), no_filter)
    assert not np.array_equal(ours.generate(rows, **sample), no_filter)  # 50 by default


def test_pipeline_output_options_of_the_call_win_and_prefix_counts_only_keywords(model_dir, tmp_path):
    import json

    directory = tmp_path / "model"
    shutil.copytree(model_dir, directory)
    generator = pipeline("text-generation", model=str(directory), return_full_text=False, do_sample=False)
    got = generator(PROMPTS[1], return_tensors=True, max_new_tokens=4)  # transformers: the call's choice wins
    assert list(got[0]) == ["generated_token_ids"]
    with pytest.raises(ValueError, match="has no tokens to stop at"):
        generator(PROMPTS[1], stop_sequence="")

    eos = generator("One", return_tensors=True, max_new_tokens=4)[0]["generated_token_ids"][2]
    with open(directory / "generation_config.json", "w") as f:
        json.dump({"min_length": 8, "eos_token_id": eos}, f)
    ours = pipeline("text-generation", model=str(directory), do_sample=False)
    theirs = transformers.pipeline(
        "text-generation",
        model=transformers.OpenAIGPTLMHeadModel.from_pretrained(directory),
        tokenizer=transformers.AutoTokenizer.from_pretrained(directory),
    )
    options = {"prefix": "once upon a time ,", "max_new_tokens": 10, "return_tensors": True}
    expected = theirs("One", do_sample=False, pad_token_id=0, **options)
    assert ours("One", **options) == expected  # the file's min_length is not shifted by the prefix

    # "hole" with a max_length: the new tokens are max_length less the whole prompt, the prompt then cut
    ours.tokenizer.model_max_length = 64
    long = "the quick brown fox jumps over the lazy dog " * 6  # 54 tokens
    out = ours(long, max_length=70, handle_long_generation="hole", return_tensors=True)
    assert len(out[0]["generated_token_ids"]) == 64  # 48 kept + 16 new


# -- return_dict_in_generate: scores, logits, transition scores ------------------------------------------------
def test_scores_and_logits_match_transformers_greedy(small, decode_path):
    """Greedy with processors and an eos that stops rows early: sequences, scores (after the processors), raw
    logits and compute_transition_scores as transformers' generate gives them. (No padding: transformers' GPT
    generates without the mask, see the module's docstring.)"""
    model, ref = small
    ids = prompts(5, batch=3, length=6)
    eos = int(model.generate(ids, max_new_tokens=3)[2, -1])
    options = {"max_new_tokens": 9, "eos_token_id": eos, "pad_token_id": 0, "min_new_tokens": 2}
    options.update(no_repeat_ngram_size=2, repetition_penalty=1.3)
    options.update(return_dict_in_generate=True, output_scores=True, output_logits=True)
    ours = model.generate(ids, **options)
    with torch.no_grad():
        theirs = ref.generate(torch.tensor(ids), do_sample=False, **options)
    assert type(ours).__name__ == type(theirs).__name__ == "GenerateDecoderOnlyOutput"
    assert list(ours.keys()) == ["sequences", "scores", "logits"]
    np.testing.assert_array_equal(ours.sequences, theirs.sequences.numpy())
    assert len(ours.scores) == len(theirs.scores) == ours.sequences.shape[1] - 6 < 9  # a row stopped early
    for got, want in zip(ours.scores + ours.logits, theirs.scores + theirs.logits):
        assert got.dtype == np.float32 and got.shape == (3, SMALL.vocab_size)
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=2e-5)  # -inf where banned, in both
    for normalize in (False, True):
        got = model.compute_transition_scores(ours.sequences, ours.scores, normalize_logits=normalize)
        with torch.no_grad():
            want = ref.compute_transition_scores(theirs.sequences, theirs.scores, normalize_logits=normalize)
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=2e-5)


def test_sampling_scores_are_transformers_warpers_on_each_step(small):
    """Sampling: each step's scores are transformers' processors and warpers (repetition penalty, temperature,
    top-k, top-p) applied to the model's logits for the tokens so far, and each chosen token is among those kept."""
    model, ref = small
    ids = prompts(6, batch=2, length=5)
    out = model.generate(ids, do_sample=True, top_k=6, top_p=0.8, temperature=0.7, repetition_penalty=1.4,
                         max_new_tokens=5, num_return_sequences=2, prng_key=3, return_dict_in_generate=True,
                         output_scores=True, output_logits=True)  # fmt: skip
    assert out.sequences.shape == (4, 10) and len(out.scores) == len(out.logits) == 5
    processors = transformers.LogitsProcessorList([
        transformers.RepetitionPenaltyLogitsProcessor(1.4),
        transformers.TemperatureLogitsWarper(0.7),
        transformers.TopKLogitsWarper(6),
        transformers.TopPLogitsWarper(0.8),
    ])  # fmt: skip
    for step in range(5):
        prefix = torch.tensor(out.sequences[:, : 5 + step], dtype=torch.long)
        with torch.no_grad():
            logits = ref(prefix).logits[:, -1].float()
            want = processors(prefix, logits.clone())
        np.testing.assert_allclose(out.logits[step], logits.numpy(), rtol=1e-5, atol=2e-5)
        np.testing.assert_allclose(out.scores[step], want.numpy(), rtol=1e-5, atol=2e-5)
        chosen = out.sequences[:, 5 + step]
        assert np.isfinite(out.scores[step][np.arange(4), chosen]).all()
    log_probs = model.compute_transition_scores(out.sequences, out.scores, normalize_logits=True)
    assert log_probs.shape == (4, 5) and (log_probs <= 0).all() and np.isfinite(log_probs).all()


def test_return_dict_in_generate_options(small, caplog):
    model, _ = small
    ids = prompts(7, batch=2, length=4)
    plain = model.generate(ids, max_new_tokens=3, num_beams=2)
    beams = model.generate(ids, max_new_tokens=3, num_beams=2, return_dict_in_generate=True)
    assert type(beams).__name__ == "GenerateBeamDecoderOnlyOutput"
    assert list(beams.keys()) == ["sequences", "beam_indices"]  # (transformers': also its cache)
    np.testing.assert_array_equal(beams.sequences, plain)
    with caplog.at_level("WARNING", logger="gpt_flax"):
        assert isinstance(model.generate(ids, max_new_tokens=2, output_scores=True), np.ndarray)
    assert "return_dict_in_generate is not True, so output_scores / output_logits are ignored" in caplog.text
    with pytest.raises(TypeError, match="return_dict_in_generate must be True or False, got 'yes'"):
        model.generate(ids, return_dict_in_generate="yes")
    from_config = model.generate(ids, max_new_tokens=2, generation_config={"return_dict_in_generate": True})
    assert list(from_config.keys()) == ["sequences"] and from_config.sequences.shape == (2, 6)
    out = model.generate(ids, max_new_tokens=2, return_dict_in_generate=True, output_scores=True)
    with pytest.raises(ValueError, match="sequences has 3 rows but each score 2"):
        model.compute_transition_scores(np.concatenate([out.sequences, out.sequences[:1]]), out.scores)
    with pytest.raises(ValueError, match="scores must be generate's non-empty tuple"):
        model.compute_transition_scores(out.sequences, ())


# -- the other processors and warpers: bad words, suppressed and forced tokens, min-p, typical, epsilon, eta ------
def test_more_warpers_match_transformers_on_random_logits():
    rng = np.random.default_rng(1)
    logits = (rng.normal(size=(6, 37)) * rng.uniform(0.3, 4, (6, 1))).astype(np.float32)
    logits[5, 3:] = -np.inf  # a row already filtered down to three tokens
    cases = [
        (gen.min_p_filter, transformers.MinPLogitsWarper, (0.0, 0.05, 0.3, 1.0)),
        (gen.typical_filter, transformers.TypicalLogitsWarper, (0.2, 0.5, 0.95, 0.999)),
        (gen.epsilon_filter, transformers.EpsilonLogitsWarper, (1e-4, 0.02, 0.3, 0.9)),
        (gen.eta_filter, transformers.EtaLogitsWarper, (1e-4, 0.02, 0.3, 0.9)),
    ]
    for ours, theirs, values in cases:
        for value in values:
            want = theirs(value)(None, torch.tensor(logits)).numpy()
            np.testing.assert_array_equal(np.asarray(ours(jnp.asarray(logits), value)), want, err_msg=f"{ours} {value}")
    sampler = gen.Sampler(do_sample=True, top_k=20, min_p=0.02, typical_p=0.9, epsilon_cutoff=1e-3, eta_cutoff=1e-3)
    want = torch.tensor(logits[:5])
    for warper in (
        transformers.TemperatureLogitsWarper(0.8), transformers.TopKLogitsWarper(20), transformers.MinPLogitsWarper(0.02),
        transformers.TypicalLogitsWarper(0.9), transformers.EpsilonLogitsWarper(1e-3), transformers.EtaLogitsWarper(1e-3),
    ):  # fmt: skip
        want = warper(None, want)
    ours = np.asarray(gen.process_logits(jnp.asarray(logits[:5]), sampler, 0.8, 1.0))
    assert kept(ours) == kept(want.numpy())
    np.testing.assert_allclose(ours, want.numpy(), rtol=1e-6)


def test_bad_words_suppressed_and_forced_tokens_match_transformers(small):
    """Greedy and beam search with every such processor against transformers' generate (scores included), and
    what each processor bans is indeed not generated."""
    model, ref = small
    ids = prompts(9, batch=3, length=5)
    free = model.generate(ids, max_new_tokens=8)
    seen = [int(t) for t in free[0, 5:8]]  # greedy's first three new tokens of row 0
    suppressed = int(free[1, 5])
    options = {
        "max_new_tokens": 8, "eos_token_id": 36, "pad_token_id": 0, "bad_words_ids": [[seen[0], seen[1]], [seen[2]], [36]],
        "suppress_tokens": [suppressed], "forced_eos_token_id": [5, 36],
    }  # fmt: skip
    options["begin_suppress_tokens"] = [begin := int(model.generate(ids, **options)[2, 5])]
    out = model.generate(ids, **options)
    np.testing.assert_array_equal(out, hf_generate(ref, ids, **options))
    np.testing.assert_array_equal(
        model.generate(ids, **options, num_beams=3), hf_generate(ref, ids, **options, num_beams=3)
    )
    new = out[:, 5:]
    assert not any(list(row[t : t + 2]) == seen[:2] for row in new for t in range(7))  # the two-token bad word
    assert seen[2] not in new and suppressed not in new and out[2, 5] != begin
    assert all(row[-1] in (5, 36) or 36 in row[:-1] for row in new)  # forced at the last step (or stopped before)
    with_scores = model.generate(ids, **options, return_dict_in_generate=True, output_scores=True)
    with torch.no_grad():
        want = ref.generate(
            torch.tensor(ids), do_sample=False, **options, return_dict_in_generate=True, output_scores=True
        )
    for got, theirs in zip(with_scores.scores, want.scores):
        np.testing.assert_allclose(got, theirs.numpy(), rtol=1e-5, atol=2e-5)
    one = ids[:, :1]  # forced_bos_token_id fires where the prompt is one token wide, as transformers'
    bos = {"max_new_tokens": 3, "forced_bos_token_id": 7, "begin_suppress_tokens": [int(free[0, 5])]}
    assert (model.generate(one, **bos)[:, 1] == 7).all()
    np.testing.assert_array_equal(model.generate(one, **bos), hf_generate(ref, one, **bos))
    np.testing.assert_array_equal(model.generate(ids, **bos), hf_generate(ref, ids, **bos))


def test_more_processor_options_are_checked(small):
    model, _ = small
    ids = prompts(9, batch=1, length=3)
    for kwargs, match in (
        ({"bad_words_ids": []}, "bad_words_ids must be a non-empty list of lists"),
        ({"bad_words_ids": [3, 4]}, "bad_words_ids must be a non-empty list of lists"),
        ({"bad_words_ids": [[3], []]}, r"bad_words_ids\[1\] is empty"),
        (
            {"bad_words_ids": [[3, 37]]},
            r"bad_words_ids\[0\] holds 37, which is not a token id of the vocabulary \[0, 37\)",
        ),
        ({"suppress_tokens": [-1]}, "suppress_tokens holds -1"),
        ({"forced_eos_token_id": 99}, "forced_eos_token_id holds 99"),
        ({"do_sample": True, "min_p": 1.5}, r"min_p must be in \[0.0, 1.0\], got 1.5"),
        ({"do_sample": True, "typical_p": 0.0}, r"typical_p must be in \(0.0, 1.0\]"),
        ({"do_sample": True, "epsilon_cutoff": 1.0}, r"epsilon_cutoff must be in \[0.0, 1.0\)"),
    ):
        with pytest.raises(ValueError, match=match):
            model.generate(ids, max_new_tokens=2, **kwargs)
    with pytest.raises(TypeError, match="forced_bos_token_id must be one token id"):
        model.generate(ids, forced_bos_token_id=[1, 2])
    assert model.generate(ids, max_new_tokens=2, min_p=7.0).shape == (1, 5)  # greedy: warpers unused, unchecked
    sampled = model.generate(ids, max_new_tokens=6, do_sample=True, min_p=0.2, typical_p=0.8, prng_key=0)
    assert sampled.shape == (1, 9)


def test_warpers_keep_min_tokens_as_transformers():
    """transformers' min_tokens_to_keep (beam sampling keeps one more token than the eos ids) in every warper."""
    rng = np.random.default_rng(2)
    logits = (rng.normal(size=(5, 37)) * rng.uniform(0.5, 6, (5, 1))).astype(np.float32)
    cases = [
        (gen.top_k_filter, transformers.TopKLogitsWarper, 1),
        (gen.top_p_filter, transformers.TopPLogitsWarper, 0.05),
        (gen.min_p_filter, transformers.MinPLogitsWarper, 0.9),
        (gen.typical_filter, transformers.TypicalLogitsWarper, 0.05),
        (gen.epsilon_filter, transformers.EpsilonLogitsWarper, 0.5),
        (gen.eta_filter, transformers.EtaLogitsWarper, 0.5),
    ]
    for ours, theirs, value in cases:
        for keep in (1, 3):
            want = theirs(value, min_tokens_to_keep=keep)(None, torch.tensor(logits)).numpy()
            got = np.asarray(ours(jnp.asarray(logits), value, keep))
            assert kept(got) == kept(want), (ours.__name__, keep)
            assert min(len(k) for k in kept(got)) >= keep


def test_beam_sampling_keeps_a_token_per_eos_and_one_more(small):
    """top_k=1 would leave each beam one candidate; transformers keeps len(eos) + 1, so two beams always fill."""
    model, ref = small
    ids = prompts(11, batch=1, length=4)
    kwargs = {"max_new_tokens": 1, "do_sample": True, "num_beams": 2, "num_return_sequences": 2, "top_k": 1}
    got = model.generate(ids, pad_token_id=0, prng_key=0, **kwargs)
    torch.manual_seed(0)
    with torch.no_grad():
        want = ref.generate(torch.tensor(ids), pad_token_id=0, **kwargs).numpy()
    assert (got >= 0).all() and sorted(got[:, -1]) == sorted(want[:, -1])  # the two candidates, in either order


def test_bad_words_forced_bos_and_array_options_read_each_row_as_transformers(small):
    model, ref = small
    one = np.array([[5]])
    free = model.generate(one, max_new_tokens=2)
    word = [5, int(free[0, 1])]  # longer than the row before its last token is out: transformers skips it
    np.testing.assert_array_equal(model.generate(one, max_new_tokens=2, bad_words_ids=[word]), free)
    np.testing.assert_array_equal(free, hf_generate(ref, one, max_new_tokens=2, bad_words_ids=[word]))
    # forced bos and begin_suppress per row: a one-token prompt in a padded batch gets them as alone
    ids, mask = np.array([[0, 0, 7], [3, 4, 5]]), np.array([[0, 0, 1], [1, 1, 1]])
    options = {"max_new_tokens": 3, "forced_bos_token_id": 11, "begin_suppress_tokens": [int(free[0, 1])]}
    out = model.generate(ids, attention_mask=mask, **options)
    np.testing.assert_array_equal(out[0, 2:], hf_generate(ref, ids[:1, 2:], **options)[0])
    np.testing.assert_array_equal(out[1], hf_generate(ref, ids[1:], **options)[0])
    assert out[0, 3] == 11 and out[1, 3] != 11
    as_array = model.generate(ids, max_new_tokens=2, suppress_tokens=np.array([3, 4]), forced_eos_token_id=jnp.int32(9))
    np.testing.assert_array_equal(
        as_array, model.generate(ids, max_new_tokens=2, suppress_tokens=[4, 3, 3], forced_eos_token_id=9)
    )
    with pytest.raises(ValueError, match="forced_eos_token_id is an empty list"):
        model.generate(ids, forced_eos_token_id=[])
    out = model.generate(ids, max_new_tokens=2, return_dict_in_generate=True, output_scores=True)
    with pytest.raises(ValueError, match="beam_indices point past the scores"):
        model.compute_transition_scores(out.sequences, out.scores, beam_indices=np.zeros((2, 3), int))


def test_config_json_generation_options_without_a_generation_config_as_transformers(small, tmp_path):
    """No generation_config.json: the generate options config.json sets default the calls (transformers'
    GenerationConfig.from_model_config)."""
    import json

    model, _ = small
    model.save_pretrained(tmp_path, format="hf")
    config = json.loads((tmp_path / "config.json").read_text())
    config.update(no_repeat_ngram_size=1, suppress_tokens=[int(model.generate(prompts(3), max_new_tokens=1)[0, -1])])
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert not (tmp_path / "generation_config.json").exists()
    ours = FlaxOpenAIGPTLMHeadModel.from_pretrained(tmp_path)
    theirs = transformers.OpenAIGPTLMHeadModel.from_pretrained(tmp_path)
    ids = prompts(3)
    with torch.no_grad():
        want = theirs.generate(torch.tensor(ids), max_new_tokens=8, pad_token_id=0).numpy()
    np.testing.assert_array_equal(ours.generate(ids, max_new_tokens=8, pad_token_id=0), want)
    assert not np.array_equal(model.generate(ids, max_new_tokens=8, pad_token_id=0), want)  # the options changed it


def test_sequence_bias_and_renormalize_logits_match_transformers(small):
    model, ref = small
    ids = prompts(12, batch=3, length=5)
    free = model.generate(ids, max_new_tokens=6)
    first, second = int(free[0, 5]), int(free[0, 6])
    bias = [[[first], -3.0], [[first, second], -50.0], [[int(free[1, 5])], 2.5], [[int(ids[2, -1]), 9], 4.0]]
    for extra in ({}, {"num_beams": 3}, {"renormalize_logits": True}, {"num_beams": 3, "renormalize_logits": True}):
        options = {"max_new_tokens": 6, "sequence_bias": bias, **extra}
        out = model.generate(ids, **options, return_dict_in_generate=True, output_scores="num_beams" not in extra)
        with torch.no_grad():
            want = ref.generate(torch.tensor(ids), do_sample=False, pad_token_id=0, **options,
                                return_dict_in_generate=True, output_scores=True)  # fmt: skip
        np.testing.assert_array_equal(out.sequences, want.sequences.numpy())
        for got, theirs in zip(out.scores or (), want.scores if out.scores else ()):
            np.testing.assert_allclose(got, theirs.numpy(), rtol=1e-5, atol=2e-5)
    assert not np.array_equal(model.generate(ids, max_new_tokens=6, sequence_bias=bias), free)
    # the older dict form, and a bad pair named
    dict_form = {tuple(ids_): b for ids_, b in bias}
    np.testing.assert_array_equal(
        model.generate(ids, max_new_tokens=6, sequence_bias=dict_form),
        model.generate(ids, max_new_tokens=6, sequence_bias=bias),
    )
    with pytest.raises(ValueError, match=r"sequence_bias\[0\] must be a \[token ids, bias\] pair"):
        model.generate(ids, sequence_bias=[[3, 1.0]])
    with pytest.raises(TypeError, match="renormalize_logits must be True or False"):
        model.generate(ids, renormalize_logits="yes")


def test_beam_search_scores_and_beam_indices_match_transformers(small):
    """return_dict_in_generate with beams: sequences_scores, per-step scores and logits, beam_indices and
    compute_transition_scores over them, as transformers' beam search gives them (eos, several returns,
    length penalty, hypotheses of different lengths)."""
    model, ref = small
    ids = prompts(4, batch=2, length=5)
    eos = int(model.generate(ids, max_new_tokens=3)[0, -1])
    options = {"num_beams": 3, "num_return_sequences": 2, "eos_token_id": eos, "max_new_tokens": 7}
    options.update(length_penalty=0.7, pad_token_id=0, return_dict_in_generate=True, output_scores=True)
    out = model.generate(ids, **options, output_logits=True)
    with torch.no_grad():
        want = ref.generate(torch.tensor(ids), do_sample=False, **options, output_logits=True)
    assert list(out.keys()) == ["sequences", "sequences_scores", "scores", "logits", "beam_indices"]
    np.testing.assert_array_equal(out.sequences, want.sequences.numpy())
    np.testing.assert_array_equal(out.beam_indices, want.beam_indices.numpy())
    assert (out.beam_indices == -1).any()  # hypotheses of different lengths
    np.testing.assert_allclose(out.sequences_scores, want.sequences_scores.numpy(), rtol=1e-5)
    assert len(out.scores) == len(out.logits) == len(want.scores)
    for got, theirs in zip(out.scores + out.logits, want.scores + want.logits):
        assert got.shape == (2 * 3, SMALL.vocab_size)
        np.testing.assert_allclose(got, theirs.numpy(), rtol=1e-5, atol=2e-5)
    got = model.compute_transition_scores(out.sequences, out.scores, out.beam_indices)
    with torch.no_grad():
        theirs = ref.compute_transition_scores(want.sequences, want.scores, want.beam_indices)
    np.testing.assert_allclose(got, theirs.numpy(), rtol=1e-5, atol=2e-5)
