#!/usr/bin/env bash
# Download into .whl/ (ignored by git) the wheels scripts/gpu_check.sh needs on a GPU machine
# without network whose Python already has a CUDA torch: segmentation-models-pytorch (pure
# Python; its requirements, torch, torchvision, timm, huggingface-hub, safetensors, pillow, tqdm
# and numpy, are on this workplace's H200 image). Run it on a machine with network, from
# anywhere; then carry .whl with the check (docs/gpu-check.md).
# Usage: scripts/gpu_wheels.sh [PACKAGE==VERSION ...]   (default: segmentation-models-pytorch==0.6.0)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ $# -gt 0 ] || set -- "segmentation-models-pytorch==0.6.0"
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl "$@"
ls -l .whl
