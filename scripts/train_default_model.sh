#!/usr/bin/env bash
# Train the default model: synthetic shapes -> MagicPoint -> homographic adaptation -> SuperPoint.
#
#   bash scripts/train_default_model.sh OUT_DIR [--smoke] [--until STAGE]
#
# STAGE is one of magicpoint, images, adapt, superpoint, adapt2, superpoint2, finalize: stop after it (to split the run
# over several shorter jobs; a later call on the same OUT_DIR skips the finished stages).
# Runs from the repo root (PYTHONPATH is set here) with the first of: $PYTHON, the activated virtual
# env, the project's .venv (${SUPERPOINT_VENV:-.venv}); with none of them it runs
# scripts/bootstrap.sh first (creates .venv; SUPERPOINT_TORCH picks the torch build, e.g. a CUDA one).
# On one H100 the full run takes ~25 min (time budgets below); --smoke runs tiny configs in ~1 min on CPU.
# Every stage checkpoints and is skipped/resumed when the script is run again on the same OUT_DIR.
# Result: OUT_DIR/superpoint_ros_v1.pt (--smoke: OUT_DIR/superpoint_ros_smoke.pt, a pipeline check,
# not a model to ship) (+ .sanity.json) and OUT_DIR/logs/*.log.
# Budgets (minutes) can be changed with env vars: MAGICPOINT_MINUTES, ADAPT_MINUTES, SUPERPOINT_MINUTES,
# ROUND2_ADAPT_MINUTES, ROUND2_SUPERPOINT_MINUTES (defaults: the shipped model's budgets on one H100).
set -euo pipefail

usage() { echo "usage: bash scripts/train_default_model.sh OUT_DIR [--smoke] [--until STAGE]" >&2; exit 2; }
[[ $# -ge 1 ]] || usage
out="$1"; shift
smoke=0; until=finalize
while [[ $# -gt 0 ]]; do
  case "$1" in
    --smoke) smoke=1 ;;
    --until) [[ $# -ge 2 ]] || usage; until="$2"; shift ;;
    *) usage ;;
  esac
  shift
done
case "$until" in magicpoint|images|adapt|superpoint|adapt2|superpoint2|finalize) ;; *) usage ;; esac

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-4}"
. "$root/scripts/project_python.sh"
mkdir -p "$out/logs"
out="$(cd "$out" && pwd)"

model_name=superpoint_ros_v1.pt
if [[ $smoke -eq 1 ]]; then
  model_name=superpoint_ros_smoke.pt  # never mistaken for the shipped model
  cfg=smoke; mp_min=1; ad_min=1; sp_min=1; ad2_min=1; sp2_min=1
  crops=(--height 64 --width 80 --crops-per-image 2 --max-images 3)
else
  cfg=default
  mp_min="${MAGICPOINT_MINUTES:-6}"; ad_min="${ADAPT_MINUTES:-3}"; sp_min="${SUPERPOINT_MINUTES:-8}"
  ad2_min="${ROUND2_ADAPT_MINUTES:-1.4}"; sp2_min="${ROUND2_SUPERPOINT_MINUTES:-4.3}"
  crops=(--height 240 --width 320 --crops-per-image "${CROPS_PER_IMAGE:-50}" --opencv-doc)
fi

stage() {  # stage NAME COMMAND...: run once (marker file), log to OUT/logs/NAME.log
  local name="$1"; shift
  if [[ -f "$out/.done_$name" ]]; then
    echo "== $name: already done (rm $out/.done_$name to redo)"
    if [[ "$name" == "$until" ]]; then exit 0; fi
    return
  fi
  echo "== $name: $(date -u +%H:%M:%S) $*"
  local t0=$SECONDS
  "$@" 2>&1 | tee "$out/logs/$name.log"
  touch "$out/.done_$name"
  echo "== $name: done in $((SECONDS - t0)) s"
  if [[ "$name" == "$until" ]]; then echo "== stopping after $name (--until)"; exit 0; fi
}

"$py" -c "import sys, torch; print(sys.executable, '| torch', torch.__version__, '| cuda:', torch.cuda.is_available(), \
  torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')" | tee "$out/logs/env.log"

stage magicpoint "$py" -m superpoint_ros.training.train_magicpoint \
  --config "config/train/${cfg}_magicpoint.yaml" --out "$out/magicpoint" --max-minutes "$mp_min"
stage images "$py" -m superpoint_ros.training.data --out "$out/images" "${crops[@]}"
stage adapt "$py" -m superpoint_ros.training.adapt --weights "$out/magicpoint/model.pt" \
  --images "$out/images" --out "$out/labels" --config "config/train/${cfg}_adapt.yaml" --max-minutes "$ad_min"
stage superpoint "$py" -m superpoint_ros.training.train_superpoint \
  --config "config/train/${cfg}_superpoint.yaml" --images "$out/images" --labels "$out/labels" \
  --out "$out/superpoint" --max-minutes "$sp_min" --set "init_weights=$out/magicpoint/model.pt"
# Round 2 of homographic adaptation (as in the paper): relabel the same crops with the round-1
# SuperPoint, fine-tune from it. The shipped model used 1.4 + 4.3 minutes (ROUND2_*_MINUTES).
r2="$out/round2"
mkdir -p "$r2/magicpoint"
stage adapt2 "$py" -m superpoint_ros.training.adapt --weights "$out/superpoint/model.pt" \
  --images "$out/images" --out "$r2/labels" --config "config/train/${cfg}_adapt.yaml" --max-minutes "$ad2_min"
stage superpoint2 "$py" -m superpoint_ros.training.train_superpoint \
  --config "config/train/${cfg}_superpoint.yaml" --images "$out/images" --labels "$r2/labels" \
  --out "$r2/superpoint" --max-minutes "$sp2_min" --set "init_weights=$out/superpoint/model.pt"
# stage 1's model and synthetic-shapes evaluation go into the final model's provenance
cp -f "$out/magicpoint/model.pt" "$r2/magicpoint/model.pt"
if [[ -f "$out/magicpoint/eval.json" ]]; then cp -f "$out/magicpoint/eval.json" "$r2/magicpoint/eval.json"; fi
stage finalize "$py" -m superpoint_ros.training.pipeline finalize --run "$r2" \
  --output "$out/$model_name"
ls -l "$out/$model_name"
