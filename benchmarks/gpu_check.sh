#!/usr/bin/env bash
# The one prepared device run: environment, the kernel variants against XLA on the GPU, then the
# benchmark of the variants side by side with cuDNN and XLA.
#
#   OUT=/tmp/out bash benchmarks/gpu_check.sh     # logs land in $OUT
#
# Each step runs under its own timeout and a failing step does not stop the next, so one run
# gives as much as it can. Runs from the repository root with PYTHONPATH=$PWD (no install).
set -x
set -o pipefail
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
OUT="${OUT:-/tmp/gpt_flax_gpu_check}"
mkdir -p "$OUT"

{
  nvidia-smi
  python3 -c "import jax, jaxlib; print('jax', jax.__version__, 'jaxlib', jaxlib.__version__); print(jax.devices())"
} 2>&1 | tee "$OUT/env.log"

# Kernel correctness of every variant (odd T, K 64/128/80, fp32 and bf16, dropout, padding,
# head_mask, forward and gradients), then the variants timed beside cuDNN and XLA: the split
# backward (dK/dV + dQ kernels) against the fused one (atomic dQ) at a few block shapes.
# Checking costs ~15 s per case and variant (compiles), so only the two backward kinds are checked.
timeout 95 python3 benchmarks/attention.py --check --check-only --variants fused split 2>&1 | tee "$OUT/check.log"
echo "check exit: $?" | tee -a "$OUT/check.log"
timeout 175 python3 benchmarks/attention.py --iters 10 --repeats 5 \
  --variants fused fused-k128 fused-q32k128 fused-fwd128 split \
  --dropout 0.0 0.1 --dropout-variants split fused 2>&1 | tee "$OUT/bench.log"
echo "bench exit: $?" | tee -a "$OUT/bench.log"

# The interpret-mode test file, which on a GPU runs the real Triton kernels (small blocks), and
# the model with "pallas" against "xla". TF32 off so float32 can be held to 1e-5.
JAX_DEFAULT_MATMUL_PRECISION=highest timeout 45 python3 -m pytest -q -p no:cacheprovider tests/test_kernels.py \
  -k "model_pallas or fused_backward or (matches_reference and interpret-)" 2>&1 | tail -30 | tee "$OUT/pytest.log"
