"""`gpt-flax convert --verify`: run the converted model and transformers' on the same sample inputs.

The torch side is built as independently of our name table as the source allows: transformers'
own `from_pretrained` on the written HF checkpoint (`--to hf`) or on the source checkpoint; for a
source transformers cannot read (our Flax format, OpenAI's release) a transformers model takes the
source's tensors by their HF names. Heads the source lacked (newly initialised on our side) are
copied across so both sides run the same weights, which are rounded through the converted dtype on
the torch side too; both then compute in float32. Needs torch and transformers (test extras).
"""

from __future__ import annotations

import numpy as np

from convert.mapping import ARCHITECTURES, flax_to_hf
from convert.readers import load_checkpoint

SAMPLE_SEQ_LEN = 7
SAMPLE_BATCH = 2
# Both sides compute in float32; what differs is op order (XLA vs ATen), about 1e-6 of the scale.
TOLERANCE = 1e-4
OUTPUTS = {"base": ("last_hidden_state",), "lm": ("logits",), "double": ("logits", "mc_logits"), "cls": ("logits",)}


def torch_available() -> bool:
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        return False
    return True


def sample_inputs(config, head: str, seed: int = 0) -> np.ndarray:
    """Token ids [B, T] ([B, C, T] for the double-heads model); batch 1 for cls without a pad token."""
    rng = np.random.default_rng(seed)
    seq_len = min(SAMPLE_SEQ_LEN, config.n_positions)
    batch = 1 if head == "cls" and config.pad_token_id is None else SAMPLE_BATCH
    shape = (batch, 2, seq_len) if head == "double" else (batch, seq_len)
    return rng.integers(0, config.vocab_size, shape)


def verify(report, *, revision=None, cache_dir=None, config=None) -> tuple[dict, float]:
    """({output name: max |ours - transformers'|}, max |transformers' output|) for a ConvertReport."""
    import transformers

    # Its load reports and progress bars (a sharded checkpoint's) are not ours to show: the caller's
    # settings are restored after.
    verbosity, bars = transformers.logging.get_verbosity(), transformers.logging.is_progress_bar_enabled()
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    try:
        return _verify(report, revision=revision, cache_dir=cache_dir, config=config)
    finally:
        transformers.logging.set_verbosity(verbosity)
        if bars:
            transformers.logging.enable_progress_bar()


def _verify(report, *, revision, cache_dir, config) -> tuple[dict, float]:
    import jax.numpy as jnp
    import torch
    import transformers
    from transformers.models.openai import modeling_openai

    from gpt_flax import modeling

    src, dst, head = report.src, report.dst, report.head
    ours = getattr(modeling, ARCHITECTURES[head][1]).from_pretrained(dst, param_dtype=jnp.float32)
    afn = "gelu" if ours.config.afn == "gelu_new" else ours.config.afn  # the same function, transformers' name
    if afn not in modeling_openai.ACT_FNS:
        raise ValueError(
            f"transformers {transformers.__version__} has no afn {afn!r} for OpenAI GPT "
            f"(it has {sorted(modeling_openai.ACT_FNS)}), so it cannot run this model"
        )
    hf_config = transformers.OpenAIGPTConfig.from_dict({**ours.config.to_dict(), "afn": afn})
    torch_cls = getattr(transformers, ARCHITECTURES[head][0])
    source = load_checkpoint(src, revision=revision, cache_dir=cache_dir, config=config)
    if report.to == "hf":
        theirs = torch_cls.from_pretrained(dst, config=hf_config)
    elif source.format in ("flax", "original"):
        theirs = torch_cls(hf_config)
        tensors = {k: torch.from_numpy(np.asarray(t).astype(np.float32)) for k, t in source.state_dict.items()}
        if head == "base":  # the base model's keys have no `transformer.`, whichever head the source was
            tensors = {k.removeprefix("transformer."): t for k, t in tensors.items()}
        theirs.load_state_dict(tensors, strict=False)
        if head != "base":
            theirs.transformer.load_state_dict(tensors, strict=False)  # keys saved without `transformer.`
    else:
        theirs = torch_cls.from_pretrained(source.directory, config=hf_config)
    ours_hf = flax_to_hf(ours.params, ours.config, head)
    state = theirs.state_dict()
    with torch.no_grad():
        for key in report.missing_keys:
            state[key].copy_(torch.from_numpy(np.array(ours_hf[key], np.float32)))
        for p in theirs.parameters():
            p.copy_(p.to(getattr(torch, report.dtype)).float())
        theirs.eval()
        ids = sample_inputs(ours.config, head)
        torch_out = theirs(torch.from_numpy(ids), return_dict=True)  # whatever config.json's return_dict says
    flax_out = ours(ids, return_dict=True)
    diffs, scale = {}, 0.0
    for name in OUTPUTS[head]:
        a, b = np.asarray(getattr(flax_out, name), np.float32), getattr(torch_out, name).numpy()
        diffs[name] = float(np.abs(a - b).max())
        scale = max(scale, float(np.abs(b).max()))
    return diffs, scale
