"""Fine-tuning with optax: the paper's recipe as an optimizer, and one jitted train step for any head.

Radford et al. 2018, section 4.1 (and OpenAI's finetune code): Adam (b1 0.9, b2 0.999, eps 1e-8) at
6.25e-5, linear warmup over 0.2% of training then linear decay to 0, weight decay 0.01 on every weight
that is not a bias or a LayerNorm gain, gradients clipped to global norm 1, and for the double-heads
model the auxiliary LM loss weighted lambda = 0.5 (L3 = L2 + lambda * L1). The schedule is transformers'
`get_linear_schedule_with_warmup`, the update torch's AdamW, so a run matches transformers' step for step.

    model = FlaxOpenAIGPTDoubleHeadsModel.from_pretrained("openai-community/openai-gpt")
    optimizer = paper_optimizer(num_train_steps=3 * len(batches))
    state = create_train_state(model, optimizer)
    train_step = make_train_step(model)                     # jitted once; the state is donated
    for batch in batches:                                   # dicts of the model's inputs and labels
        state, metrics = train_step(state, batch, jax.random.key(0))
    model.params = trained_params(model, state)             # a copy: the next step would donate state.params
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax.training.train_state import TrainState
from jax.sharding import NamedSharding, PartitionSpec

from gpt_flax.sharding import explicit_axes
from gpt_flax.validation import as_array, check_finite, validate_inputs

# The paper's fine-tuning hyperparameters (section 4.1) and OpenAI's finetune code's Adam.
LEARNING_RATE = 6.25e-5
WARMUP_FRACTION = 0.002
WEIGHT_DECAY = 0.01
MAX_GRAD_NORM = 1.0
ADAM_B1, ADAM_B2, ADAM_EPS = 0.9, 0.999, 1e-8
LM_COEF = 0.5
DECAYED_LEAVES = ("kernel", "embedding")  # matrices; biases and LayerNorm gains ("bias", "scale") are not
# The model call's arguments that are not inputs of a batch.
NOT_INPUTS = ("self", "output_attentions", "output_hidden_states", "return_dict", "params", "train", "dropout_rng")


def linear_schedule_with_warmup(peak: float, num_warmup_steps: int, num_train_steps: int) -> optax.Schedule:
    """transformers' `get_linear_schedule_with_warmup`: from 0 to `peak` over the warmup steps, then
    linearly to 0 at `num_train_steps` (the learning rate of update `count`, counting from 0)."""
    if num_train_steps < 1 or not 0 <= num_warmup_steps <= num_train_steps:
        raise ValueError(f"need 0 <= num_warmup_steps <= num_train_steps, 1 <= num_train_steps; got "
                         f"{num_warmup_steps=}, {num_train_steps=}")  # fmt: skip

    def schedule(count):
        count = jnp.asarray(count, jnp.float32)
        warm = count / max(1, num_warmup_steps)
        decay = jnp.maximum(0.0, (num_train_steps - count) / max(1, num_train_steps - num_warmup_steps))
        return peak * jnp.where(count < num_warmup_steps, warm, decay)

    return schedule


def weight_decay_mask(params) -> Any:
    """True on the leaves weight decay applies to: weights, not biases or LayerNorm gains (the paper's
    "non bias or gain weights"; transformers' examples' no_decay = ["bias", "LayerNorm.weight"])."""
    return jax.tree_util.tree_map_with_path(lambda path, _: path[-1].key in DECAYED_LEAVES, params)


def paper_optimizer(
    num_train_steps: int,
    *,
    learning_rate: float = LEARNING_RATE,
    warmup_fraction: float = WARMUP_FRACTION,
    num_warmup_steps: int | None = None,
    weight_decay: float = WEIGHT_DECAY,
    max_grad_norm: float | None = MAX_GRAD_NORM,
) -> optax.GradientTransformation:
    """The paper's fine-tuning optimizer for `num_train_steps` updates: clip, then AdamW on the schedule.
    The warmup is `num_warmup_steps`, or `warmup_fraction` of training rounded up (transformers'
    Trainer `warmup_ratio`: a run of any length starts from a learning rate of 0). The learning rate
    of each update is kept in the optimizer state (`optax.inject_hyperparams`), where the train step
    reads it into its metrics."""
    warmup = math.ceil(warmup_fraction * num_train_steps) if num_warmup_steps is None else num_warmup_steps
    schedule = linear_schedule_with_warmup(learning_rate, warmup, num_train_steps)
    adamw = optax.inject_hyperparams(optax.adamw, static_args=("mask",))(
        schedule, b1=ADAM_B1, b2=ADAM_B2, eps=ADAM_EPS, weight_decay=weight_decay, mask=weight_decay_mask
    )
    return adamw if max_grad_norm is None else optax.chain(optax.clip_by_global_norm(max_grad_norm), adamw)


def create_train_state(model, optimizer: optax.GradientTransformation) -> TrainState:
    """flax's TrainState (step, params, optimizer state) over a float32 copy of the model's params: the
    master weights, whatever the model's param_dtype (a 6.25e-5 step is below half a bfloat16 ulp of
    a LayerNorm gain of 1, so bfloat16 weights would not move), and a copy because the train step
    donates its state, which must not take `model.params` with it. The forward still computes in the
    model's dtype."""
    params = jax.tree_util.tree_map(lambda x: jnp.array(x, jnp.promote_types(x.dtype, jnp.float32)), model.params)
    return TrainState.create(apply_fn=model.module.apply, params=params, tx=optimizer)


def training_loss(model, params, batch: dict, rng, lm_coef: float | None = None) -> tuple[jax.Array, dict]:
    """(the loss to minimise, metrics) of one batch in training mode (dropout from `rng`). The LM and
    classification heads train on their loss (as transformers' models give it: the classification model has
    no LM term); the double-heads model on mc_loss + lm_coef * LM loss (default 0.5, the paper's; the LM term
    only when the batch has `labels`; the LM loss alone when it has no `mc_labels`)."""
    lm_coef = _lm_coef(model, lm_coef)
    # The flags are set whatever the config says: a config's return_dict=False or output_attentions=True
    # (which takes the attention off the kernels) is for its own calls, not the training step.
    flags = {"output_attentions": False, "output_hidden_states": False, "return_dict": True}
    out = model(**batch, params=params, train=True, dropout_rng=rng, **flags)
    if model.head != "double":
        if out.loss is None:
            raise ValueError("the batch needs `labels` for a loss")
        return out.loss, {"loss": out.loss}
    if out.mc_loss is None and out.loss is None:
        raise ValueError("the double-heads model trains on `mc_labels`, `labels` or both; the batch has neither")
    if out.mc_loss is None:  # a language-modelling phase
        return out.loss, {"loss": out.loss, "lm_loss": out.loss}
    if out.loss is None:
        return out.mc_loss, {"loss": out.mc_loss, "mc_loss": out.mc_loss}
    loss = out.mc_loss + lm_coef * out.loss
    return loss, {"loss": loss, "mc_loss": out.mc_loss, "lm_loss": out.loss}


def _check_trainable(model) -> None:
    if model.head == "base":
        raise ValueError("the base model has no loss; fine-tune an LM, double-heads or classification model")


def _lm_coef(model, lm_coef: float | None) -> float:
    """The LM loss's weight: the double-heads model's (default the paper's 0.5); refused for the others, whose
    loss has no LM term to weigh."""
    _check_trainable(model)
    if model.head == "double":
        return LM_COEF if lm_coef is None else lm_coef
    if lm_coef is not None:
        raise ValueError(
            f"lm_coef weighs the double-heads model's LM loss; {type(model).__name__} trains on its own loss alone "
            "(for the paper's auxiliary LM loss beside a classifier, fine-tune FlaxOpenAIGPTDoubleHeadsModel)"
        )
    return 0.0


def trained_params(model, state: TrainState):
    """A copy of the state's params in the model's param_dtype, to give the model (`model.params =
    trained_params(model, state)`) mid-run or at the end: the state's own arrays are donated by the
    next train step, which would delete them under the model, and they are float32 master weights."""
    dtype = model.module.param_dtype
    return jax.tree_util.tree_map(
        lambda x: jnp.array(x, dtype if jnp.issubdtype(x.dtype, jnp.floating) else x.dtype), state.params
    )


def _learning_rate(opt_state):
    """The learning rate of the last update when the optimizer keeps it (`optax.inject_hyperparams`, as
    `paper_optimizer`), else None."""
    found = [
        value
        for path, value in optax.tree.get_all_with_path(opt_state, "learning_rate")
        if getattr(path[-2], "name", None) == "hyperparams"  # not the schedule's own state beside it
    ]
    if len(found) != 1:  # none, or several optimizers each with its own rate
        return None
    accumulating = [
        x.mini_step != 0  # a step that only accumulated its gradient updated nothing
        for x in jax.tree_util.tree_leaves(opt_state, is_leaf=lambda x: isinstance(x, optax.MultiStepsState))
        if isinstance(x, optax.MultiStepsState)
    ]
    return jnp.where(accumulating[0], jnp.zeros_like(found[0]), found[0]) if accumulating else found[0]


def checked_batch(model, batch: dict) -> dict:
    """The batch as arrays, checked on the host as the model's own call checks it, values included (an
    id past the vocabulary, a label out of range): inside the jitted step they are tracers, where such
    a batch would only turn the loss, and then every weight, into NaN."""
    if not isinstance(batch, Mapping):
        raise TypeError(f"the batch must be a dict of the model's inputs and labels, got {type(batch).__name__}")
    names = [n for n in inspect.signature(type(model).__call__).parameters if n not in NOT_INPUTS]
    unknown = sorted(set(batch) - set(names))
    if unknown:
        raise TypeError(f"the batch has keys {type(model).__name__} does not take: {unknown}; it takes {names}")
    arrays = {name: as_array(name, batch.get(name)) for name in names}
    validate_inputs(model.config, model.head, arrays)
    for name, value in arrays.items():  # float inputs (embeddings, masks, regression labels): NaN spreads too
        check_finite(name, value)
    return {name: value for name, value in arrays.items() if value is not None}


def make_train_step(model, lm_coef: float | None = None, *, check_inputs: bool = True) -> Callable:
    """`train_step(state, batch, rng) -> (state, metrics)`, jitted once per batch shape, the state donated.
    Each step draws its dropout from `rng` folded with the step number, so one key serves a whole run.
    The batch (a dict of the model's inputs, arrays or nested lists) is checked on the host first
    (`checked_batch`); `check_inputs=False` skips that, e.g. for batches already on the devices.
    A state placed on a mesh (`NamedSharding`s, replicated or sharded) keeps each leaf's sharding from
    step to step (one compilation). metrics: the loss (and its parts), `grad_norm` (before clipping),
    and `learning_rate` (the rate of this update) when the optimizer keeps it, as `paper_optimizer` does;
    under `optax.MultiSteps`, 0 on the steps that only accumulate, and `grad_norm` is the micro-batch's.
    `lm_coef`: the double-heads model's weight of the LM loss (default 0.5), as in `training_loss`."""
    _lm_coef(model, lm_coef)

    def train_step(state: TrainState, batch: dict, rng, shardings):
        step_rng = jax.random.fold_in(rng, state.step)
        grad_fn = jax.value_and_grad(lambda p: training_loss(model, p, batch, step_rng, lm_coef), has_aux=True)
        (_, metrics), grads = grad_fn(state.params)
        metrics["grad_norm"] = optax.tree.norm(grads)
        new_state = state.apply_gradients(grads=grads)
        learning_rate = _learning_rate(new_state.opt_state)
        if learning_rate is not None:
            metrics["learning_rate"] = learning_rate
        if shardings is not None and not explicit_axes():  # (explicit axes carry their sharding in the types)
            leaves, treedef = jax.tree_util.tree_flatten(new_state)
            new_state = treedef.unflatten(jax.lax.with_sharding_constraint(leaves, list(shardings)))
        return new_state, metrics

    jitted = jax.jit(train_step, donate_argnums=(0,), static_argnames=("shardings",))

    def run(state: TrainState, batch: dict, rng):
        if any(isinstance(x, jax.Array) and x.is_deleted() for x in jax.tree_util.tree_leaves(state)):
            raise ValueError(
                "this TrainState was donated to an earlier train step, which deleted its arrays; "
                "pass the state that step returned"
            )
        if check_inputs:
            batch = checked_batch(model, batch)
        state, shardings = _placed(state)
        return jitted(state, batch, rng, shardings=shardings)

    return run


def _placed(state: TrainState) -> tuple[TrainState, tuple | None]:
    """A state on a mesh (any leaf with a NamedSharding), with its leaves placed nowhere (the step, the
    optimizer's counters) put there replicated, and each leaf's NamedSharding; or (state, None). The
    train step pins its new state to these shardings, where XLA would otherwise pick each output's
    layout (a replicated leaf came back sharded, and the next step compiled again)."""
    leaves, treedef = jax.tree_util.tree_flatten(state)
    meshes = [x.sharding.mesh for x in leaves if isinstance(getattr(x, "sharding", None), NamedSharding)]
    if not meshes:
        return state, None
    replicated = NamedSharding(meshes[0], PartitionSpec())
    leaves = [
        x if isinstance(getattr(x, "sharding", None), NamedSharding) else jax.device_put(x, replicated) for x in leaves
    ]
    return treedef.unflatten(leaves), tuple(x.sharding for x in leaves)
