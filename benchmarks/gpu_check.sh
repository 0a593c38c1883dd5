#!/usr/bin/env bash
# The one prepared device run: environment, the kernels against XLA on the GPU, then the benchmark.
#
#   OUT=/tmp/out bash benchmarks/gpu_check.sh     # logs land in $OUT
#
# Each step runs under its own timeout and a failing step does not stop the next, so one run
# gives as much as it can. Runs from the repository root with PYTHONPATH=$PWD (no install).
set -x
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
OUT="${OUT:-/tmp/gpt_flax_gpu_check}"
mkdir -p "$OUT"

{
  nvidia-smi
  python3 -c "import jax, jaxlib; print('jax', jax.__version__, 'jaxlib', jaxlib.__version__); print(jax.devices())"
  python3 -c "import flax, optax; print('flax', flax.__version__, 'optax', optax.__version__)"
} 2>&1 | tee "$OUT/env.log"

# Kernel correctness at production block sizes (odd T, K 64/128/80, fp32 and bf16, dropout,
# padding, head_mask, forward and gradients), then the block sweep at T=2048 and the table.
timeout 270 python3 benchmarks/attention.py --check --sweep 2048 --dropout 0.0 0.1 2>&1 | tee "$OUT/bench.log"
echo "benchmarks/attention.py exit: ${PIPESTATUS[0]}" | tee -a "$OUT/bench.log"

# The interpret-mode test file, which on a GPU runs the real Triton kernels (small blocks), and
# the model with "pallas" against "xla". TF32 off so float32 can be held to 1e-5.
JAX_DEFAULT_MATMUL_PRECISION=highest timeout 60 python3 -m pytest -q -p no:cacheprovider tests/test_kernels.py \
  -k "model_pallas or (matches_reference and interpret-)" 2>&1 | tail -30 | tee "$OUT/pytest.log"
