#!/usr/bin/env bash
# The GPU benchmark in one command, a few minutes on one GPU:
#
#   bash experiments/benchmark/gpu.sh [OUT_DIR]        (default OUT_DIR: workdirs/gpu)
#
# Needs JAX with CUDA (pip install -e . 'jax[cuda12]') and, for the torch row,
# a CUDA build of torch. Runs `python -m experiments.benchmark --grid=gpu`: the
# shipped configs' shapes and B in {1, 32, 256} x H in {64, 512} x T in
# {100, 1000} (experiments/benchmark/grid.py), training and forward, for
# our layer (`ours`), flax linen, jax.experimental.rnn's cuDNN LSTM
# (`jax_cudnn`), torch.nn.LSTM on CUDA and the matmul ceiling, rounds
# alternating between them. Writes OUT_DIR/gpu.txt (the device),
# OUT_DIR/bench.txt (the tables and the summary of ratios) and
# OUT_DIR/bench.json (every number). Stops with one line when JAX sees no GPU.
# BENCH_TIMEOUT_S (default 540) bounds the benchmark; shapes finished before
# it are kept in the JSON.
set -euo pipefail
cd "$(dirname "$0")/../.."
out="${1:-workdirs/gpu}"
mkdir -p "$out"
python - <<'EOF'
import sys
import jax
platform = jax.devices()[0].platform
if platform != "gpu":
  sys.exit(f"error: JAX's first device is {platform!r}, not a GPU; install jax[cuda12] on a "
           "machine with an NVIDIA GPU")
print(f"# {jax.devices()[0].device_kind}, jax {jax.__version__}")
EOF
(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true) > "$out/gpu.txt"
timeout "${BENCH_TIMEOUT_S:-540}" python -m experiments.benchmark --grid=gpu \
  --impls=ours,flax_linen,jax_cudnn,torch,ceiling --rounds=3 --target_s=0.1 \
  --json="$out/bench.json" | tee "$out/bench.txt"
