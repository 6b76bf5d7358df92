#!/usr/bin/env bash
# The GPU check of docs/performance.md, prepared to fit a short lease (~10 min on one H100):
#   1. generate the `market` synthetic set (751 ids, ~12.9 k training images, CamStyle copies) with all cores;
#   2. train MPRD with preset=paper (ResNet-50, 256x128, batch 32, bf16) for 2 epochs, ImageNet weights off
#      (backbone.pretrained=none: they cannot reach the lent machines; timing does not depend on them);
#   3. write gpu_check.json / gpu_check.md: training img/s, refresh time, evaluation time, peak GPU memory and
#      the projected 40-epoch wall time. Goals (issue 17): >= 1,500 img/s, refresh < 2 s, 40 epochs < 1 h.
# Usage: benchmarks/gpu_check.sh [OUT_DIR] [extra Hydra overrides...]   (OUT_DIR default: $OUT or ./gpu_check)
# Environment: PYTHON (default .venv/bin/python, else python3), WORK (scratch, default /tmp/mprd-gpu-check).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:-${OUT:-gpu_check}}
shift || true
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
WORK=${WORK:-/tmp/mprd-gpu-check}
mkdir -p "$OUT_DIR" "$WORK"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
{
  echo "== $(date -u +%FT%TZ) $(hostname)"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "no nvidia-smi"
  "$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'bf16', torch.cuda.is_available() and torch.cuda.is_bf16_supported())"
} | tee "$OUT_DIR/environment.txt"
CORES=$(nproc)
t0=$(date +%s)
"$PYTHON" -m mprd.data.synthetic --root "$WORK/data" --preset market --seed 0 --workers "$CORES" 2>&1 | tail -3 | tee "$OUT_DIR/generate.log"
echo "generation: $(( $(date +%s) - t0 )) s" | tee -a "$OUT_DIR/generate.log"
"$PYTHON" benchmarks/gpu_check.py --root "$WORK" --out "$OUT_DIR" "$@" 2>&1 | tee "$OUT_DIR/gpu_check.log" | tail -20
