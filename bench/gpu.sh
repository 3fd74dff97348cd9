#!/usr/bin/env bash
# GPU benchmark for the lead's H100 run (issue 7). Needs python3 with torch (CUDA), cv2, numpy;
# no network, no pip, no ROS. Run from the repository root:
#     OUT=/some/dir bash bench/gpu.sh
# Writes $OUT/bench_gpu.json (or ./bench_gpu.json) and prints the tables; finishes in < 3 min.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$(pwd)"
OUT_DIR="${OUT:-.}"
mkdir -p "$OUT_DIR"
PY="${PYTHON:-python3}"
"$PY" - <<'PY'
import torch, cv2, numpy
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available(),
      "| cv2", cv2.__version__, "| numpy", numpy.__version__)
assert torch.cuda.is_available(), "bench/gpu.sh needs a CUDA GPU"
print("device:", torch.cuda.get_device_name(0))
PY
# Main run: every GPU section except the node (no ROS there), all three resolutions.
# A per-table time budget keeps the whole run well inside 3 minutes.
timeout 170 "$PY" -m bench.run --device cuda --sections forward,decode,extractor,stereo,frontend,matching \
    --repeats 30 --budget 6 --json "$OUT_DIR/bench_gpu.json" 2>&1 | tee "$OUT_DIR/bench_gpu.txt"
# Optional extra (only if time is left and BENCH_COMPILE=1): torch.compile at 480x640.
if [ "${BENCH_COMPILE:-0}" = "1" ]; then
    timeout 150 "$PY" -m bench.run --device cuda --sections forward --resolutions 480x640 --compile \
        --repeats 30 --budget 6 --json "$OUT_DIR/bench_gpu_compile.json" 2>&1 | tee "$OUT_DIR/bench_gpu_compile.txt" || true
fi
echo "wrote $OUT_DIR/bench_gpu.json"
