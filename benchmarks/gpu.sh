#!/usr/bin/env bash
# The GPU figures, on one GPU in under 10 minutes (docs/gpu.md): B0/B1 on a random-weight
# model with Llama-3.1-8B's shape in bfloat16, and vLLM rollouts on the same shape, with
# absolute tokens/s, to benchmarks/results/GPU-*.json (then RESULTS.md is regenerated).
# Setup first, on a GPU machine with the package index reachable:
#   TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128" \
#     bash scripts/setup.sh --with-vllm        # vllm==0.32.0 in .venv-vllm (GPU build)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device')"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
start=$(date +%s)
timeout 300 "$PY" -m benchmarks.gpu engine   # B0, B1a, B1b at batch 1 and 32 (about 3 min)
timeout 270 "$PY" -m benchmarks.gpu vllm     # vLLM rollouts (start with compile about 1-2 min)
"$PY" -m benchmarks.report
echo "gpu.sh: $(( $(date +%s) - start )) s"
