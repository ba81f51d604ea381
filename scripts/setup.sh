#!/usr/bin/env bash
# Set up shopsearch in ./.venv: the right torch build first, then the package and its tools,
# then shopsearch-research (research/).
#
# torch: an unpinned `pip install torch` on a machine without one pulls a multi-GB CUDA build.
# So, in order:
#   1. TORCH_INDEX_URL set       -> torch from that index (e.g. .../whl/cu128 for a chosen CUDA);
#   2. an NVIDIA GPU is visible  -> PyPI's torch (its Linux wheel is the CUDA build);
#   3. a local CPU wheel exists  -> that wheel (pip's find-links / local index, as on this machine);
#   4. otherwise                 -> the CPU-only build from PyTorch's CPU index.
# A torch already in the venv is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
PYTHON="${PYTHON:-python3}"

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
pip() { .venv/bin/python -m pip "$@"; }

if .venv/bin/python -c "import torch" 2>/dev/null; then
  echo "setup: keeping torch $(.venv/bin/python -c 'import torch; print(torch.__version__)')"
elif [ -n "${TORCH_INDEX_URL:-}" ]; then
  pip install -q "torch==${TORCH_VERSION}" --index-url "$TORCH_INDEX_URL"
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  echo "setup: NVIDIA GPU found: installing the CUDA build of torch"
  pip install -q "torch==${TORCH_VERSION}"
else
  tmp="$(mktemp -d)"
  if pip download -q --no-deps --no-index -d "$tmp" "torch==${TORCH_VERSION}" 2>/dev/null; then
    echo "setup: no GPU: installing the local CPU wheel $(basename "$tmp"/torch-*.whl)"
    pip install -q "$tmp"/torch-*.whl
  else
    echo "setup: no GPU: installing the CPU-only build of torch"
    pip install -q "torch==${TORCH_VERSION}" --index-url https://download.pytorch.org/whl/cpu \
      --extra-index-url https://pypi.org/simple
  fi
  rm -rf "$tmp"
fi

# onnx: ONNX Runtime, onnx and OpenVINO (CPU wheels, no torch) for --backend onnx|openvino;
# postgres: psycopg and its pool (no torch) for the shared profile store and its tests
pip install -q -e '.[dev,train,onnx,postgres]'
# research/ is its own distribution (shopsearch-research: simulator, benchmarks, the sample
# catalog, and their commands, which it registers into `shopsearch`); after the root package so
# its `shopsearch` dependency is already satisfied by the editable install.
pip install -q -e ./research
.venv/bin/python -c "import torch; print('setup: done; torch', torch.__version__, '| CUDA available:', torch.cuda.is_available())"
