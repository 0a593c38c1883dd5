"""Pallas flash attention for GPT-1: Triton kernels for GPUs, Mosaic kernels for TPUs.

`flash_attention` is the entry point; `gpt_flax.attention` registers it as "pallas" (and as the
GPU/TPU half of "auto"). See flash.py for how the backend is picked at lowering time.
"""

from gpt_flax.kernels.flash import flash_attention
from gpt_flax.kernels.flash_gpu import GPUBlockSizes
from gpt_flax.kernels.flash_tpu import TPUBlockSizes

__all__ = ["GPUBlockSizes", "TPUBlockSizes", "flash_attention"]
