"""Checkpoint conversion, no torch needed: files -> {HF key: lazy Tensor} -> param tree -> files.

readers (safetensors, sharded, torch zip through a restricted unpickler, OpenAI's release, Hub),
mapping (the HF <-> Flax name table), writers (our Flax format, transformers'; atomic), pipeline
(`convert`, behind `gpt-flax convert`), verify (parity against transformers, when installed).
"""
