"""The four models users call, named as transformers' Flax models would be.

    model = FlaxOpenAIGPTLMHeadModel.from_pretrained("path/or/hub-id")
    out = model(input_ids, attention_mask=mask)              # out.logits [B, T, V]
    out = model.module.apply({"params": model.params}, input_ids)   # the same, as a pure function

Each class holds a config, a param tree (`model.params`, a plain nested dict) and a Flax module
(`model.module`) whose `apply` is the pure, jit-able forward. `__call__` validates inputs on the
host (JAX clamps out-of-range gathers silently), then runs one jitted function per instance, so
repeated calls with the same shapes do not recompile.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from gpt_flax.config import OpenAIGPTConfig
from gpt_flax.generation import (
    GENERATION_CONFIG_NAME,
    GenerationMixin,
    model_generation_config,
    read_generation_config,
)
from gpt_flax.heads import FORWARDS, init_params
from gpt_flax.sharding import in_auto_axes
from gpt_flax.validation import as_array, validate_inputs

logger = logging.getLogger("gpt_flax")


class OpenAIGPTModule(nn.Module):
    """Flax door onto `heads.forward_<head>`: declares the param tree, draws the dropout rng."""

    config: OpenAIGPTConfig
    head: str = "base"
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    gradient_checkpointing: bool = False

    def _declare_params(self) -> dict:
        init = lambda rng: init_params(self.config, self.head, rng, self.param_dtype)
        names = jax.eval_shape(init, jax.random.key(0)).keys()
        return {name: self.param(name, lambda rng, n=name: init(rng)[n]) for name in names}

    @nn.compact
    def __call__(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        head_mask=None,
        inputs_embeds=None,
        labels=None,
        mc_token_ids=None,
        mc_labels=None,
        deterministic: bool = True,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ):
        """transformers' forward; a flag left None takes the config's value, as there."""
        output_attentions, output_hidden_states, return_dict = _flags(
            self.config, output_attentions, output_hidden_states, return_dict
        )
        params = self._declare_params()
        rng = None if deterministic else self.make_rng("dropout")
        inputs = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "token_type_ids": token_type_ids,
            "position_ids": position_ids,
            "head_mask": head_mask,
            "inputs_embeds": inputs_embeds,
        }
        head_inputs = {
            "base": {},
            "lm": {"labels": labels},
            "cls": {"labels": labels},
            "double": {"labels": labels, "mc_token_ids": mc_token_ids, "mc_labels": mc_labels},
        }[self.head]
        # The pure function checks what it can too: shapes always (they are static under jit), values
        # when concrete. Through the model's door this repeats the door's checks once per compilation.
        inputs = {k: as_array(k, v) for k, v in inputs.items()}
        head_inputs = {k: as_array(k, v) for k, v in head_inputs.items()}
        validate_inputs(self.config, self.head, {**inputs, **head_inputs})
        ids, mask = inputs["input_ids"], inputs["attention_mask"]
        shape = tuple(ids.shape) if ids is not None else tuple(inputs["inputs_embeds"].shape[:-1])
        if mask is not None and tuple(mask.shape) != shape:  # [rows, T] as the inputs, or one row for all
            full = mask.size == np.prod(shape)
            inputs["attention_mask"] = mask.reshape(shape) if full else jnp.broadcast_to(mask.reshape(shape[-1]), shape)
        flags = {
            "output_attentions": output_attentions,
            "output_hidden_states": output_hidden_states,
            "dtype": self.dtype,
            "remat": self.gradient_checkpointing,
        }

        def forward(params, inputs, head_inputs, rng):
            return FORWARDS[self.head](params, self.config, inputs, **head_inputs, rng=rng, flags=flags)

        # Under a mesh with explicit axes the forward runs with them automatic (gpt_flax.sharding).
        batched = ids if ids is not None else inputs["inputs_embeds"]
        out = in_auto_axes(forward, batched, params, inputs, head_inputs, rng)
        return out if return_dict else out.to_tuple()


def _flags(config: OpenAIGPTConfig, output_attentions, output_hidden_states, return_dict) -> tuple[bool, bool, bool]:
    """The three output flags of a call, None meaning the config's (transformers' rule)."""
    return (
        config.output_attentions if output_attentions is None else bool(output_attentions),
        config.output_hidden_states if output_hidden_states is None else bool(output_hidden_states),
        config.use_return_dict if return_dict is None else bool(return_dict),
    )


@partial(jax.jit, static_argnames=("module", "train", "output_attentions", "output_hidden_states", "return_dict"))
def _forward(module, params, inputs, dropout_rng, train, output_attentions, output_hidden_states, return_dict):
    """One jitted forward for every model: modules compare by value (config, head, dtypes), so models
    of the same configuration share compilations."""
    return module.apply(
        {"params": params},
        **inputs,
        deterministic=not train,
        output_attentions=output_attentions,
        output_hidden_states=output_hidden_states,
        return_dict=return_dict,
        rngs={"dropout": dropout_rng} if train else {},
    )


# -- the user-facing classes ------------------------------------------------------------------
class FlaxOpenAIGPTPreTrainedModel:
    """Config + params + module; `__call__` runs the jitted pure forward."""

    head: str = "base"

    def __init__(
        self,
        config: OpenAIGPTConfig,
        seed: int = 0,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
        gradient_checkpointing: bool = False,
        _do_init: bool = True,
    ):
        config = self._adapt_config(config)
        self.config = config
        self.dtype = dtype
        self.module = OpenAIGPTModule(config, self.head, dtype, param_dtype, gradient_checkpointing)
        self._params = None
        self.generation_config = {}  # generation_config.json's defaults for `generate` (LM heads)
        if _do_init:
            self._params = self.init_weights(jax.random.key(seed))

    @classmethod
    def _adapt_config(cls, config: OpenAIGPTConfig) -> OpenAIGPTConfig:
        if not isinstance(config, OpenAIGPTConfig):
            raise TypeError(f"config must be an OpenAIGPTConfig, got {type(config).__name__}")
        return config

    def init_weights(self, rng, input_shape=None, params: dict | None = None) -> dict:
        """A fresh param tree drawn from `rng`, as transformers initialises this model. `input_shape` (transformers'
        argument) is not needed: the shapes come from the config. Given `params`, only the entries they lack are
        drawn; theirs are kept."""
        fresh = jax.jit(init_params, static_argnums=(0, 1, 3))(self.config, self.head, rng, self.module.param_dtype)
        return fresh if params is None else _overlay(fresh, params)

    @classmethod
    def can_generate(cls) -> bool:
        """True for the models with an LM head, which have `generate`: the LM-head model, as in transformers,
        and the double-heads model, whose transformers counterpart has no `generate` (False there)."""
        return issubclass(cls, GenerationMixin)

    @property
    def framework(self) -> str:
        return "flax"

    @property
    def params_shape_tree(self) -> dict:
        """The param tree's shapes and dtypes (jax.ShapeDtypeStruct leaves), without drawing it."""
        init = partial(init_params, self.config, self.head, dtype=self.module.param_dtype)
        return jax.eval_shape(init, jax.random.key(0))

    @property
    def required_params(self) -> set[tuple[str, ...]]:
        """The param tree's paths, as transformers' flattened keys."""
        return set(traverse_util.flatten_dict(self.params_shape_tree))

    def to_bf16(self, params: dict, mask=None) -> dict:
        """`params` with the floating leaves cast to bfloat16 (those where `mask`, a tree of bools shaped as the
        params, is True), as transformers' Flax models: for half-precision storage; the model computes in `dtype`."""
        return _cast_floating(params, jnp.bfloat16, mask)

    def to_fp16(self, params: dict, mask=None) -> dict:
        """As `to_bf16`, to float16."""
        return _cast_floating(params, jnp.float16, mask)

    def to_fp32(self, params: dict, mask=None) -> dict:
        """As `to_bf16`, to float32 (e.g. back from half precision)."""
        return _cast_floating(params, jnp.float32, mask)

    @property
    def params(self) -> dict:
        if self._params is None:
            raise ValueError("this model was built with _do_init=False: set model.params first")
        return self._params

    @params.setter
    def params(self, params: dict) -> None:
        self._params = params

    def resize_token_embeddings(self, new_num_tokens: int, *, mean_resizing: bool = True, seed: int = 0) -> None:
        """Grow or shrink the token table to `new_num_tokens` rows (transformers' semantics).

        Old rows are untouched; the tied LM head follows the table (an untied one is resized
        alike). New rows are drawn as
        transformers 4.56 does (`_init_added_embeddings_weights_with_mean`): from a normal with the
        old rows' mean and 1e-9 times their covariance (the mean alone if that is not positive
        definite), or from normal(0, initializer_range) with `mean_resizing=False`.
        """
        if not isinstance(new_num_tokens, (int, np.integer)) or isinstance(new_num_tokens, bool) or new_num_tokens < 1:
            raise ValueError(f"new_num_tokens must be a positive integer, got {new_num_tokens!r}")
        new_num_tokens = int(new_num_tokens)

        def resized(rows, seed):
            added = new_num_tokens - rows.shape[0]
            if added <= 0:
                return rows[:new_num_tokens]
            return jnp.concatenate([rows, _new_embedding_rows(rows, added, mean_resizing, self.config, seed)])

        body = self.params if self.head == "base" else self.params["transformer"]
        body = {**body, "tokens_embed": {"embedding": resized(body["tokens_embed"]["embedding"], seed)}}
        params = body if self.head == "base" else {**self.params, "transformer": body}
        if "lm_head" in params:  # untied: its [V, D] rows resized alike, new ones drawn separately
            params = {**params, "lm_head": {"kernel": resized(params["lm_head"]["kernel"].T, seed + 1).T}}
        self.params = params
        self.config = self.config.replace(vocab_size=new_num_tokens)
        self.module = self.module.clone(config=self.config)

    def enable_gradient_checkpointing(self) -> None:
        self.module = self.module.clone(gradient_checkpointing=True)

    def _run(self, call_locals: dict):
        """The shared body of every `__call__`: `call_locals` is that call's `locals()`."""
        a = {k: v for k, v in call_locals.items() if k not in ("self", "__class__")}
        params, train, dropout_rng = a.pop("params"), a.pop("train"), a.pop("dropout_rng")
        output_attentions, output_hidden_states, return_dict = (
            a.pop(k) for k in ("output_attentions", "output_hidden_states", "return_dict")
        )
        arguments = {k: as_array(k, v) for k, v in a.items()}
        validate_inputs(self.config, self.head, arguments)
        if train and dropout_rng is None:
            raise ValueError("train=True needs dropout_rng (a jax.random key) for dropout")
        inputs = {k: (jnp.asarray(v) if v is not None else None) for k, v in arguments.items()}
        return _forward(
            self.module,
            self.params if params is None else params,
            inputs,
            dropout_rng if train else None,
            bool(train),
            *_flags(self.config, output_attentions, output_hidden_states, return_dict),
        )

    # Subclasses define __call__ with their head's arguments; this is the base model's.
    def __call__(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        head_mask=None,
        inputs_embeds=None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        params: dict | None = None,
        train: bool = False,
        dropout_rng=None,
    ):
        return self._run(locals())

    # -- loading ---------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        path_or_hub_id,
        *,
        config: OpenAIGPTConfig | None = None,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
        seed: int = 0,
        revision: str | None = None,
        cache_dir: str | None = None,
        output_loading_info: bool = False,
        ignore_mismatched_sizes: bool = False,
        token: str | bool | None = None,
        local_files_only: bool = False,
        subfolder: str = "",
        from_pt: bool = False,
        _do_init: bool = True,
        **config_overrides,
    ):
        """Load a checkpoint (a local directory or a Hub id) into this head.

        Reads transformers' checkpoints (safetensors or pytorch_model.bin, sharded or not), our Flax
        format (`save_pretrained`) and OpenAI's original release (`convert.readers`). Heads the
        checkpoint lacks are newly initialised and reported; keys this head does not use are
        reported. `config_overrides` (e.g. num_labels=3) change the config read from disk; a tensor
        whose shape then differs from the checkpoint's is an error, or with `ignore_mismatched_sizes`
        newly initialised and reported (a classifier re-headed for a new number of labels).
        `from_pt` (transformers' Flax models need it to read PyTorch weights) is accepted and changes
        nothing: the format is found from the files present. `subfolder`: the checkpoint is in that
        folder of the directory or Hub repo. `_do_init=False` returns (model, params), as
        transformers' Flax models do ((model, params, loading_info) with `output_loading_info`).
        """
        del from_pt
        _refuse_torch_options(config_overrides)
        hub = {"revision": revision, "cache_dir": cache_dir, "token": token, "local_files_only": local_files_only}
        config = _as_config(config, hub)
        hub["subfolder"] = subfolder
        from convert.mapping import ShapeMismatchError, hf_to_flax
        from convert.readers import load_checkpoint

        checkpoint = load_checkpoint(path_or_hub_id, config=config, **hub)
        config = checkpoint.config if config is None else config
        if config_overrides:
            config = config.replace(**config_overrides)
        config = cls._adapt_config(config)
        try:
            loaded = hf_to_flax(checkpoint.state_dict, config, cls.head, np.dtype(param_dtype), ignore_mismatched_sizes)
        except ShapeMismatchError as error:
            cause = f" (set by {sorted(config_overrides)})" if config_overrides else ""
            raise ShapeMismatchError(
                f"{error}{cause}; pass ignore_mismatched_sizes=True to initialise it anew"
            ) from None
        model = cls(config, seed=seed, dtype=dtype, param_dtype=param_dtype, _do_init=False)
        if loaded.missing_keys or loaded.mismatched_keys:
            model.params = _fill_missing(loaded.params, model, seed, loaded.partial_layers)
        else:
            model.params = _to_jax(loaded.params)
        name = cls.__name__
        if loaded.missing_keys:
            logger.warning(
                "Some weights of %s were not in the checkpoint at %s and are newly initialized: %s",
                name,
                path_or_hub_id,
                loaded.missing_keys,
            )
        if loaded.mismatched_keys:
            logger.warning(
                "Some weights of %s were not initialized from the checkpoint at %s and are newly initialized "
                "because the shapes did not match:\n%s",
                name,
                path_or_hub_id,
                "\n".join(
                    f"- {k}: found shape {a} in the checkpoint and {b} in the model"
                    for k, a, b in loaded.mismatched_keys
                ),
            )
        if loaded.unexpected_keys:
            # transformers warns only when the checkpoint was saved from this class; from another head
            # (a double-heads checkpoint into the LM model) unused head weights are expected: info.
            log = logger.warning if checkpoint.head == cls.head else logger.info
            log(
                "Some weights of the checkpoint at %s were not used by %s: %s",
                path_or_hub_id,
                name,
                loaded.unexpected_keys,
            )
        if loaded.tied_lm_head_mismatch:
            logger.warning(
                "lm_head.weight in %s differs from tokens_embed.weight; the head is tied, so it was ignored",
                path_or_hub_id,
            )
        if isinstance(model, GenerationMixin):
            model.generation_config = read_generation_config(checkpoint.directory) or model_generation_config(config)
        model.loading_info = {
            "missing_keys": loaded.missing_keys,
            "unexpected_keys": loaded.unexpected_keys,
            "mismatched_keys": [key for key, _, _ in loaded.mismatched_keys],  # names, as transformers
        }
        if not _do_init:
            return (model, model.params, model.loading_info) if output_loading_info else (model, model.params)
        return (model, model.loading_info) if output_loading_info else model

    def save_pretrained(
        self,
        directory,
        params=None,
        *,
        format: str = "flax",
        dtype: str | None = None,
        bin: bool = False,
        **transformers_options,
    ):
        """Write this model to `directory`, atomically; `from_pretrained` loads either format back.

        `params`: the tree to write (a training loop's, as transformers' Flax models take it), or
        None for `self.params`. format "flax": config.json + flax_model.safetensors (the param tree
        under '/'-joined paths). format "hf": transformers' config.json + model.safetensors (+
        pytorch_model.bin if `bin`), which transformers' `from_pretrained` loads into the matching
        class. Either way a `generation_config` read with the checkpoint goes back as
        generation_config.json. `dtype` casts floating weights ("float32", "bfloat16", "float16").
        Returns {file name: bytes written}.
        """
        from convert.writers import save_params

        _refuse_save_options(transformers_options)
        if isinstance(params, (str, os.PathLike)):
            raise TypeError(f"save_pretrained's second argument is params; pass the format by name: format={params!r}")
        files = {}
        if self.generation_config:  # written back as read, as transformers' save_pretrained does
            files[GENERATION_CONFIG_NAME] = json.dumps(self.generation_config, indent=2, sort_keys=True) + "\n"
        params = self.params if params is None else params
        return save_params(
            directory, params, self.config, self.head, format=format, dtype=dtype, bin=bin, extra_files=files
        )


def _new_embedding_rows(old, added: int, mean_resizing: bool, config: OpenAIGPTConfig, seed: int):
    key = jax.random.key(seed)
    if not mean_resizing:
        return (config.initializer_range * jax.random.normal(key, (added, old.shape[1]))).astype(old.dtype)
    table = np.asarray(old, np.float64)
    mean = table.mean(axis=0)
    centered = table - mean
    covariance = 1e-9 * (centered.T @ centered) / table.shape[0]
    try:
        np.linalg.cholesky(covariance)
    except np.linalg.LinAlgError:  # not positive definite (e.g. fewer rows than columns): the mean
        return jnp.broadcast_to(jnp.asarray(mean, old.dtype), (added, old.shape[1]))
    rows = jax.random.multivariate_normal(
        key, jnp.asarray(mean, jnp.float32), jnp.asarray(covariance, jnp.float32), (added,)
    )
    return rows.astype(old.dtype)


def _to_jax(tree: dict) -> dict:
    """Host tree -> JAX, leaf by leaf, emptying `tree` as it goes so each host array can be freed
    once copied (peak memory about one checkpoint plus one tensor, not two checkpoints)."""
    out = {}
    for key in list(tree):
        value = tree.pop(key)
        out[key] = _to_jax(value) if isinstance(value, dict) else jnp.asarray(value)
    return out


# transformers' PyTorch from_pretrained options: named here, so they are not mistaken for config fields.
TORCH_OPTIONS = {
    "torch_dtype": "pass param_dtype= (the weights) and dtype= (the computation), e.g. jnp.bfloat16",
    "device_map": "place the params with jax.device_put",
    "low_cpu_mem_usage": "loading already reads each tensor once, straight into its place",
    "attn_implementation": "set attention_impl ('auto', 'pallas', 'cudnn', 'xla')",
    "trust_remote_code": "there is no remote code to run",
    "use_safetensors": "the format is found from the files present",
    "variant": "only the files without a variant (model.safetensors, ...) are read; rename the variant's files",
    "force_download": "fetch anew with huggingface_hub.snapshot_download(force_download=True) and pass the directory",
    "proxies": "set HTTPS_PROXY for huggingface_hub",
    "resume_download": "downloads resume by themselves in huggingface_hub",
}


def _as_config(config, hub: dict) -> OpenAIGPTConfig | None:
    """from_pretrained's `config=`, as transformers takes it: a config, transformers' own config of this
    model, or a directory / Hub id / config.json to read one from."""
    if config is None or isinstance(config, OpenAIGPTConfig):
        return config
    if isinstance(config, (str, os.PathLike)):
        return OpenAIGPTConfig.from_pretrained(config, **hub)
    if getattr(config, "model_type", None) == "openai-gpt" and callable(getattr(config, "to_dict", None)):
        return OpenAIGPTConfig.from_dict(config.to_dict())
    raise TypeError(
        "config must be an OpenAIGPTConfig, transformers' OpenAIGPTConfig or the path of a config.json; "
        f"got {type(config).__name__}"
    )


SAVE_OPTIONS = {
    "push_to_hub": "upload the written directory with huggingface_hub.upload_folder",
    "max_shard_size": "the weights are written whole, one file per format (GPT-1 is 0.5 GB in float32)",
    "safe_serialization": "weights are always written as safetensors; format='hf', bin=True adds pytorch_model.bin",
    "token": "it is for push_to_hub, which is not supported",
}


def _refuse_save_options(kwargs: dict) -> None:
    """transformers' save_pretrained options we do not take, each named with what to do instead."""
    for name, value in kwargs.items():
        if name == "safe_serialization" and value is True:  # what is written anyway
            continue
        if name in SAVE_OPTIONS:
            raise TypeError(f"save_pretrained does not take {name}={value!r}: {SAVE_OPTIONS[name]}")
        raise TypeError(
            f"save_pretrained got an unexpected keyword argument {name!r}; it takes params, format, dtype and bin"
        )


def _refuse_torch_options(kwargs: dict) -> None:
    for name, hint in TORCH_OPTIONS.items():
        if name in kwargs:
            raise TypeError(f"from_pretrained does not take {name}= (an option of transformers'): {hint}")


def _fill_missing(partial: dict, model, seed: int, partial_layers: dict | None = None) -> dict:
    """Overlay the loaded tensors on a fresh init, so what the checkpoint lacks is newly initialised.

    `partial_layers` (path -> layer indices): stacks the checkpoint holds only those layers of; the
    loaded value there stacks just them, the other layers keep the fresh init."""
    return _overlay(model.init_weights(jax.random.key(seed)), partial, partial_layers or {})


def _overlay(base, loaded, partial_layers: dict | None = None, path: tuple = ()):
    """`base` (a fresh param tree) with every leaf `loaded` has replaced by it; at the paths of `partial_layers`
    (path -> layer indices) only those layers of the stack."""
    if isinstance(base, Mapping):
        if loaded is None:
            return dict(base)
        return {k: _overlay(v, loaded.get(k), partial_layers, path + (k,)) for k, v in base.items()}
    if loaded is None:
        return base
    if partial_layers and path in partial_layers:
        return base.at[np.asarray(partial_layers[path])].set(jnp.asarray(loaded, base.dtype))
    return jnp.asarray(loaded)


def _cast_floating(params: dict, dtype, mask=None) -> dict:
    """transformers' `FlaxPreTrainedModel._cast_floating_to`: floating leaves to `dtype`, where `mask` says."""

    def cast(leaf, masked=True):
        if masked and isinstance(leaf, (jax.Array, np.ndarray)) and jnp.issubdtype(leaf.dtype, jnp.floating):
            return jnp.asarray(leaf).astype(dtype)
        return leaf

    if mask is None:
        return jax.tree_util.tree_map(cast, params)
    if jax.tree_util.tree_structure(params) != jax.tree_util.tree_structure(mask):
        raise ValueError(
            f"mask must be a tree of bools with the params' structure ({len(jax.tree_util.tree_leaves(params))} "
            f"leaves), got one with {len(jax.tree_util.tree_leaves(mask))} leaves or other keys; "
            "flax.traverse_util.path_aware_map(lambda path, x: ..., params) makes one"
        )
    return jax.tree_util.tree_map(lambda leaf, masked: cast(leaf, bool(masked)), params, mask)


class FlaxOpenAIGPTModel(FlaxOpenAIGPTPreTrainedModel):
    """The bare transformer: last_hidden_state [B, T, D] (transformers `OpenAIGPTModel`)."""

    head = "base"


class _LabelledModel(FlaxOpenAIGPTPreTrainedModel):
    """A model whose forward takes `labels` after the inputs (the LM-head and classification models)."""

    def __call__(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        head_mask=None,
        inputs_embeds=None,
        labels=None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        params: dict | None = None,
        train: bool = False,
        dropout_rng=None,
    ):
        return self._run(locals())


class FlaxOpenAIGPTLMHeadModel(GenerationMixin, _LabelledModel):
    """Transformer + LM head (tied to the token embedding unless the config unties it): logits [B, T, V],
    shifted LM loss."""

    head = "lm"


class FlaxOpenAIGPTDoubleHeadsModel(GenerationMixin, FlaxOpenAIGPTPreTrainedModel):
    """LM head + multiple-choice head over [B, C, T] inputs: logits [B, C, T, V], mc_logits [B, C]."""

    head = "double"

    @classmethod
    def _adapt_config(cls, config):
        config = super()._adapt_config(config)
        # transformers' OpenAIGPTDoubleHeadsModel.__init__ forces num_labels = 1.
        return config if config.num_labels == 1 else config.replace(num_labels=1)

    def __call__(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        head_mask=None,
        inputs_embeds=None,
        mc_token_ids=None,
        labels=None,
        mc_labels=None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        params: dict | None = None,
        train: bool = False,
        dropout_rng=None,
    ):
        return self._run(locals())


class FlaxOpenAIGPTForSequenceClassification(_LabelledModel):
    """Transformer + `score` (no bias), pooled at each row's last non-pad token: logits [B, N]."""

    head = "cls"
