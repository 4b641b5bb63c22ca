#!/usr/bin/env bash
# One prepared device check on a CUDA GPU (docs/gpu-check.md): the gpu tests, the quick start on
# the GPU (fp32, bf16, --compile --channels-last), profiles of dpersona, probunet, pionono and
# per_rater.multihead at the paper preset's sizes (N = 50, fp32 and bf16) and the speed gate's
# ratios, in under 8 minutes; writes gpu_check.json (+ gpu_check.txt, gpu_check.log) after every
# step into the output folder ($OUT when set, else --out, else ./gpu_check).
#
# Usage: scripts/gpu_check.sh [--dry-run] [--out DIR] [--budget-s S] [--wheels DIR] [--online]
#   --dry-run   everything but CUDA, on the CPU at tiny sizes (under 2 minutes); validates the JSON
#   --wheels    a folder of carried .whl files installed first (default .whl; scripts/gpu_wheels.sh
#               fills it with what the GPU machine lacks)
#   --online    pip may download missing packages (a CUDA torch from $TORCH_INDEX); off by
#               default: the GPU machines this was written for have no network
# Environment: PYTHON (default python3), OUT, TORCH_INDEX (https://download.pytorch.org/whl/cu126).
# Exit: 0 every step ok, 1 a step failed or ran out of time (the JSON says which), 2 setup failed
# or the JSON does not match its schema.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
REPO=$PWD
PY=${PYTHON:-python3}
DRY=()
BUDGET=()
OUT_DIR=${OUT:-}
WHEELS=.whl
ONLINE=0
TORCH_INDEX=${TORCH_INDEX:-https://download.pytorch.org/whl/cu126}
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=(--dry-run) ;;
    --out) OUT_DIR=${2:?--out needs a folder}; shift ;;
    --budget-s) BUDGET=(--budget-s "${2:?--budget-s needs seconds}"); shift ;;
    --wheels) WHEELS=${2:?--wheels needs a folder}; shift ;;
    --online) ONLINE=1 ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
OUT_DIR=${OUT_DIR:-gpu_check}
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg

# 1. carried wheels (no network): into a private folder put first on the path
if compgen -G "$WHEELS/*.whl" >/dev/null; then
  SITE=$(mktemp -d /tmp/gpu_check_site.XXXXXX)
  echo "installing $(ls "$WHEELS"/*.whl | wc -l) carried wheel(s) from $WHEELS into $SITE"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
    "$WHEELS"/*.whl || { echo "gpu_check.sh: installing the wheels in $WHEELS failed" >&2; exit 2; }
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
# 2. the project itself: from this checkout (the repository's tests and benchmarks come with it)
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"

# 3. torch (a CUDA build unless --dry-run) and the project's imports
have_cuda_torch() { "$PY" -c "import torch, sys; sys.exit(0 if torch.version.cuda else 1)" 2>/dev/null; }
if [ ${#DRY[@]} -eq 0 ] && ! have_cuda_torch; then
  if [ "$ONLINE" = 1 ]; then
    echo "no CUDA build of torch: installing one from $TORCH_INDEX"
    "$PY" -m pip install -q torch torchvision --index-url "$TORCH_INDEX" || exit 2
  else
    echo "gpu_check.sh: no CUDA build of torch for $PY (use --online, or a machine that has one)" >&2
    exit 2
  fi
fi
MODULES="torch torchvision timm segmentation_models_pytorch numpy scipy pandas jinja2 matplotlib typer rich h5py psutil PIL pytest"
MISSING=$("$PY" - $MODULES <<'EOF'
import importlib.util, sys
print(" ".join(m for m in sys.argv[1:] if importlib.util.find_spec(m) is None))
EOF
)
if [ -n "$MISSING" ]; then
  if [ "$ONLINE" = 1 ]; then
    PKGS=$(echo "$MISSING" | sed 's/segmentation_models_pytorch/segmentation-models-pytorch/; s/\bPIL\b/pillow/')
    echo "installing missing packages: $PKGS"
    "$PY" -m pip install -q $PKGS || exit 2
  else
    echo "gpu_check.sh: missing Python packages: $MISSING (carry their wheels: scripts/gpu_wheels.sh, or --online)" >&2
    exit 2
  fi
fi
"$PY" - <<'EOF' || exit 2
import platform, torch
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device"
print(f"python {platform.python_version()}; torch {torch.__version__} (CUDA {torch.version.cuda}, "
      f"cuDNN {torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None}); {gpu}")
EOF

# 4. the check
exec "$PY" -m mrseg_bench.gpucheck --out "$OUT_DIR" "${DRY[@]}" "${BUDGET[@]}"
