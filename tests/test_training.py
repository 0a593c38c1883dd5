"""gpt_flax.training against transformers' recipe in torch: the schedule, AdamW steps with weight decay and
clipping on the same weights, the double-heads loss, and a short run whose loss falls.

    pytest tests/test_training.py
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
import torch
import transformers
from oracle import rel_err, t, torch_model

from convert.mapping import flax_to_hf
from gpt_flax import FlaxOpenAIGPTDoubleHeadsModel, FlaxOpenAIGPTLMHeadModel, FlaxOpenAIGPTModel, OpenAIGPTConfig
from gpt_flax.training import (
    create_train_state,
    linear_schedule_with_warmup,
    make_train_step,
    paper_optimizer,
    trained_params,
    weight_decay_mask,
)

# Distinct sizes (D=24, H=3, L=2, V=37, P=11); no dropout, so torch and we take the same steps.
SMALL = {"vocab_size": 37, "n_positions": 11, "n_embd": 24, "n_layer": 2, "n_head": 3, "initializer_range": 0.2}
NO_DROPOUT = {"resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0, "summary_first_dropout": 0.0}


@pytest.mark.parametrize(("warmup", "total"), [(0, 10), (3, 10), (1, 1), (10, 10)])
def test_schedule_is_transformers_linear_schedule_with_warmup(warmup, total):
    probe = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2.0)
    ref = transformers.get_linear_schedule_with_warmup(probe, num_warmup_steps=warmup, num_training_steps=total)
    ours = linear_schedule_with_warmup(2.0, warmup, total)
    for count in range(total + 3):
        np.testing.assert_allclose(float(ours(count)), ref.get_last_lr()[0], rtol=1e-6, atol=1e-9, err_msg=count)
        probe.step()
        ref.step()


def test_weight_decay_skips_biases_and_layer_norm_gains():
    model = FlaxOpenAIGPTDoubleHeadsModel(OpenAIGPTConfig(**SMALL))
    decayed = {
        "/".join(k.key for k in path)
        for path, on in jax.tree_util.tree_leaves_with_path(weight_decay_mask(model.params))
        if on
    }
    assert decayed == {
        "multiple_choice_head/summary/kernel",
        "transformer/h/attn/c_attn/kernel",
        "transformer/h/attn/c_proj/kernel",
        "transformer/h/mlp/c_fc/kernel",
        "transformer/h/mlp/c_proj/kernel",
        "transformer/positions_embed/embedding",
        "transformer/tokens_embed/embedding",
    }


def test_steps_match_torch_adamw_with_transformers_schedule_and_clipping():
    """Five steps of paper_optimizer against torch.optim.AdamW with transformers' no_decay groups,
    get_linear_schedule_with_warmup and clip_grad_norm_(1.0), from the same weights on the same batch."""
    config = OpenAIGPTConfig(**SMALL, **NO_DROPOUT)
    model = FlaxOpenAIGPTLMHeadModel(config, seed=0)
    tm = torch_model("lm", config, model.params).train()
    ids = np.random.RandomState(0).randint(0, 37, (3, 11)).astype(np.int32)
    steps, warmup, lr = 5, 2, 3e-3

    optimizer = paper_optimizer(steps, learning_rate=lr, num_warmup_steps=warmup)
    state = create_train_state(model, optimizer)
    train_step = make_train_step(model)
    rates = []
    for _ in range(steps):
        state, metrics = train_step(state, {"input_ids": ids, "labels": ids}, jax.random.key(0))
        assert float(metrics["grad_norm"]) > 1.0  # clipping is exercised
        rates.append(float(metrics["learning_rate"]))

    no_decay = ("bias", "ln_1.weight", "ln_2.weight")
    groups = [
        {"params": [p for n, p in tm.named_parameters() if not n.endswith(no_decay)], "weight_decay": 0.01},
        {"params": [p for n, p in tm.named_parameters() if n.endswith(no_decay)], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), eps=1e-8)
    sched = transformers.get_linear_schedule_with_warmup(opt, num_warmup_steps=warmup, num_training_steps=steps)
    for step in range(steps):
        np.testing.assert_allclose(rates[step], sched.get_last_lr()[0], rtol=1e-6)  # the rate of this update
        opt.zero_grad()
        tm(t(ids), labels=t(ids)).loss.backward()
        torch.nn.utils.clip_grad_norm_(tm.parameters(), 1.0)
        opt.step()
        sched.step()

    ours = flax_to_hf(state.params, config, "lm")
    start = flax_to_hf(model.params, config, "lm")
    D = config.n_embd
    for name, p in tm.named_parameters():
        theirs = p.detach().numpy()
        assert not np.allclose(theirs, start[name]), name  # every tensor moved
        ours_moved, theirs_moved = ours[name] - start[name], theirs - start[name]
        if name.endswith("attn.c_attn.bias"):
            # The key bias shifts every score of a row alike: its gradient is 0 up to rounding, which
            # Adam scales to +-lr either way. Compared: the query and value biases.
            keep = np.r_[0:D, 2 * D : 3 * D]
            ours_moved, theirs_moved = ours_moved[keep], theirs_moved[keep]
        assert rel_err(ours_moved, theirs_moved) < 1e-3, name


def test_double_heads_train_on_mc_loss_plus_half_the_lm_loss():
    model = FlaxOpenAIGPTDoubleHeadsModel(OpenAIGPTConfig(**SMALL, **NO_DROPOUT))
    rs = np.random.RandomState(1)
    batch = {
        "input_ids": rs.randint(0, 37, (2, 3, 9)).astype(np.int32),
        "mc_token_ids": np.full((2, 3), 8, np.int32),
        "mc_labels": np.array([0, 2], np.int32),
    }
    batch["labels"] = batch["input_ids"]
    out = model(**batch)
    state = create_train_state(model, paper_optimizer(10))
    _, metrics = make_train_step(model)(state, batch, jax.random.key(0))
    np.testing.assert_allclose(float(metrics["loss"]), float(out.mc_loss + 0.5 * out.loss), rtol=1e-5)
    _, metrics = make_train_step(model, lm_coef=0.9)(
        create_train_state(model, paper_optimizer(10)), batch, jax.random.key(0)
    )
    np.testing.assert_allclose(float(metrics["loss"]), float(out.mc_loss + 0.9 * out.loss), rtol=1e-5)
    # a language-modelling phase (labels, no mc_labels) trains on the LM loss, which transformers returns
    lm_batch = {k: v for k, v in batch.items() if k != "mc_labels"}
    _, metrics = make_train_step(model)(create_train_state(model, paper_optimizer(10)), lm_batch, jax.random.key(0))
    np.testing.assert_allclose(float(metrics["loss"]), float(out.loss), rtol=1e-5)
    assert "mc_loss" not in metrics


def test_default_warmup_rounds_up_as_transformers_trainer():
    """0.2% of 300 steps is 0.6: one warmup step (Trainer's warmup_ratio takes the ceiling), so the first
    update's rate is 0 and every run starts from 0, as the paper's warmup does."""
    model = FlaxOpenAIGPTLMHeadModel(OpenAIGPTConfig(**SMALL, **NO_DROPOUT))
    ids = np.ones((1, 4), np.int32)
    probe = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=6.25e-5)
    for total in (300, 1001):
        warmup = -(-2 * total // 1000)  # ceil(0.002 * total): 1 and 3
        sched = transformers.get_linear_schedule_with_warmup(probe, num_warmup_steps=warmup, num_training_steps=total)
        state = create_train_state(model, paper_optimizer(total))
        train_step = make_train_step(model)
        for _ in range(4):
            state, metrics = train_step(state, {"input_ids": ids, "labels": ids}, jax.random.key(0))
            np.testing.assert_allclose(float(metrics["learning_rate"]), sched.get_last_lr()[0], rtol=1e-6, atol=0)
            sched.step()


def test_trained_params_outlive_the_next_step_in_the_models_dtype():
    """The state is donated to the next step: the model keeps a copy, cast back to its param_dtype."""
    import jax.numpy as jnp

    model = FlaxOpenAIGPTLMHeadModel(OpenAIGPTConfig(**SMALL), dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)
    ids = np.ones((1, 4), np.int32)
    state = create_train_state(model, paper_optimizer(10, num_warmup_steps=0))
    train_step = make_train_step(model)
    state, _ = train_step(state, {"input_ids": ids, "labels": ids}, jax.random.key(0))
    model.params = trained_params(model, state)
    old = state
    state, _ = train_step(state, {"input_ids": ids, "labels": ids}, jax.random.key(0))  # donates the old state
    with pytest.raises(ValueError, match="donated to an earlier train step"):
        train_step(old, {"input_ids": ids, "labels": ids}, jax.random.key(0))
    assert {x.dtype for x in jax.tree_util.tree_leaves(model.params)} == {jnp.dtype(jnp.bfloat16)}
    assert np.isfinite(np.asarray(model(ids).logits, np.float32)).all()


def test_a_short_run_learns_with_dropout():
    """An LM memorises two sentences: with dropout on and the paper's optimizer (a larger peak rate),
    the loss falls by half in 60 steps; the state (donated) comes back each step."""
    model = FlaxOpenAIGPTLMHeadModel(OpenAIGPTConfig(**SMALL))
    ids = np.array([[1, 5, 9, 2, 7, 3, 3, 8, 1, 4, 6], [2, 2, 4, 9, 1, 0, 5, 7, 7, 3, 8]], np.int32)
    state = create_train_state(model, paper_optimizer(60, learning_rate=1e-2, num_warmup_steps=5))
    train_step = make_train_step(model)
    losses = []
    for _ in range(60):
        state, metrics = train_step(state, {"input_ids": ids, "labels": ids}, jax.random.key(0))
        losses.append(float(metrics["loss"]))
    assert int(state.step) == 60
    assert losses[-1] < 0.5 * losses[0], losses


def test_what_cannot_train_is_refused():
    base = FlaxOpenAIGPTModel(OpenAIGPTConfig(**SMALL))
    ids = np.ones((1, 4), np.int32)
    with pytest.raises(ValueError, match="base model has no loss"):
        make_train_step(base)  # refused at once, not at the first step
    lm = FlaxOpenAIGPTLMHeadModel(OpenAIGPTConfig(**SMALL))
    with pytest.raises(ValueError, match="needs `labels`"):
        make_train_step(lm)(create_train_state(lm, paper_optimizer(2)), {"input_ids": ids}, jax.random.key(0))
    double = FlaxOpenAIGPTDoubleHeadsModel(OpenAIGPTConfig(**SMALL))
    with pytest.raises(ValueError, match="`mc_labels`, `labels` or both; the batch has neither"):
        make_train_step(double)(create_train_state(double, paper_optimizer(2)), {"input_ids": ids}, jax.random.key(0))
    with pytest.raises(ValueError, match="num_warmup_steps <= num_train_steps"):
        paper_optimizer(2, num_warmup_steps=3)


def test_a_bad_batch_is_refused_before_the_step_and_the_state_survives():
    """Inside the jitted step values are tracers: the batch is checked on the host first, as the model's
    own call checks it, so an id past the vocabulary is an error, not NaN weights."""
    model = FlaxOpenAIGPTDoubleHeadsModel(OpenAIGPTConfig(**SMALL))
    state = create_train_state(model, paper_optimizer(10))
    train_step = make_train_step(model)
    ids = np.ones((1, 2, 5), np.int32)
    good = {"input_ids": ids, "mc_token_ids": np.array([[4, 4]]), "mc_labels": np.array([1])}
    for bad, message in (
        ({**good, "input_ids": np.full((1, 2, 5), 37)}, "input_ids holds 37"),
        ({**good, "mc_labels": np.array([2])}, "mc_labels holds 2"),
        ({**good, "labels": np.full((1, 2, 5), 40)}, "labels holds 40"),
        ({**good, "label": ids}, r"does not take: \['label'\]"),
        (
            {**good, "attention_mask": np.array([[[1, 1, np.nan, 1, 1], [1] * 5]])},
            r"attention_mask holds nan at index \(0, 0, 2\)",
        ),
        ({**good, "input_ids": [[[1, 2], [3]]]}, r"row \[0\]\[0\] has 2, row \[0\]\[1\] has 1"),
        ((ids, good["mc_labels"]), "the batch must be a dict of the model's inputs and labels, got tuple"),
    ):
        with pytest.raises((ValueError, TypeError), match=message):
            train_step(state, bad, jax.random.key(0))
    as_lists = {k: v.tolist() for k, v in good.items()}
    state, metrics = train_step(state, as_lists, jax.random.key(0))  # the state was not donated away
    assert np.isfinite(float(metrics["loss"])) and int(state.step) == 1


def test_bfloat16_weights_train_on_float32_master_weights():
    """A model with bfloat16 params: the state keeps float32 master weights, so the paper's small steps
    move even the LayerNorm gains (1.0 in bfloat16 does not move by 6.25e-5)."""
    import jax.numpy as jnp

    model = FlaxOpenAIGPTLMHeadModel(OpenAIGPTConfig(**SMALL), dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)
    state = create_train_state(model, paper_optimizer(10, num_warmup_steps=0))
    assert {x.dtype for x in jax.tree_util.tree_leaves(state.params)} == {jnp.dtype(jnp.float32)}
    ids = np.random.RandomState(2).randint(0, 37, (2, 9)).astype(np.int32)
    start = np.asarray(state.params["transformer"]["h"]["ln_1"]["scale"])
    train_step = make_train_step(model)
    for _ in range(3):
        state, _ = train_step(state, {"input_ids": ids, "labels": ids}, jax.random.key(0))
    moved = np.asarray(state.params["transformer"]["h"]["ln_1"]["scale"]) - start
    assert np.all(np.abs(moved) > 1e-5)


def test_the_configs_output_flags_do_not_reach_the_step_and_lm_coef_is_the_double_heads():
    """A config saved with return_dict=False (or output_attentions=True) trains as any other; lm_coef is refused
    where the loss has no LM term."""
    config = OpenAIGPTConfig(**SMALL, **NO_DROPOUT, return_dict=False, output_attentions=True, pad_token_id=0)
    ids = np.ones((2, 5), np.int32)
    lm = FlaxOpenAIGPTLMHeadModel(config)
    _, metrics = make_train_step(lm)(create_train_state(lm, paper_optimizer(4)), {"input_ids": ids, "labels": ids},
                                     jax.random.key(0))  # fmt: skip
    np.testing.assert_allclose(float(metrics["loss"]), float(lm(ids, labels=ids, return_dict=True).loss), rtol=1e-5)
    from gpt_flax import FlaxOpenAIGPTForSequenceClassification

    for model in (lm, FlaxOpenAIGPTForSequenceClassification(config)):
        with pytest.raises(ValueError, match="lm_coef weighs the double-heads model's LM loss"):
            make_train_step(model, lm_coef=0.5)


def test_under_optax_multisteps_the_learning_rate_is_that_of_the_update_and_0_while_accumulating():
    """MultiSteps inside another transformation: its state is found nested in the optimizer's."""
    import optax

    model = FlaxOpenAIGPTLMHeadModel(OpenAIGPTConfig(**SMALL))
    schedule = linear_schedule_with_warmup(1.0, 1, 3)
    inner = paper_optimizer(3, learning_rate=1.0, num_warmup_steps=1)
    optimizer = optax.MultiSteps(inner, every_k_schedule=2)
    state = create_train_state(model, optax.apply_if_finite(optimizer, 3))
    train_step = make_train_step(model)
    ids = np.ones((1, 4), np.int32)
    rates = []
    for _ in range(6):
        state, metrics = train_step(state, {"input_ids": ids, "labels": ids}, jax.random.key(0))
        rates.append(float(metrics["learning_rate"]))
    np.testing.assert_allclose(rates, [0.0, schedule(0), 0.0, schedule(1), 0.0, schedule(2)], rtol=1e-6)
    assert rates[3] > 0
