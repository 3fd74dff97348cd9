#!/usr/bin/env bash
# Fine-tune a SuperPoint checkpoint on a folder of real photos with the v2 recipe (docs/training.md,
# "v2: fine-tuning on a photo corpus"): training crops of the folder's train split -> homographic
# adaptation labels from the starting model -> SuperPoint training from it with strong photometric
# (noise, shot noise, blur, JPEG, low light) and geometric (rotation, 0.5-2x scale) augmentation.
#
#   bash scripts/train_v2.sh OUT_DIR --images DIR [--images DIR ...] [--init WEIGHTS] [--smoke] [--until STAGE]
#
# STAGE: images, adapt, superpoint, finalize (stop after it). Every stage resumes: images and adapt
# are done once (marker OUT_DIR/.done_NAME; rm it to redo/extend), the superpoint stage always
# continues from OUT_DIR/superpoint/state.pt until max_steps, within SUPERPOINT_MINUTES per call,
# so calling the script again on the same OUT_DIR (any machine, CPU or GPU) trains further.
# Result: OUT_DIR/superpoint_ros_v2.pt (+ .sanity.json), logs in OUT_DIR/logs/.
# Env: PYTHON (default: the activated venv, else .venv: scripts/project_python.sh), OMP_NUM_THREADS (default 2), ADAPT_MINUTES (40), SUPERPOINT_MINUTES
# (480), CROPS_PER_IMAGE (1), SP_SET (extra --set KEY=VALUE overrides of the superpoint stage,
# e.g. "batch_size=32 num_workers=8" on a GPU).
set -euo pipefail

usage() {
  echo "usage: bash scripts/train_v2.sh OUT_DIR --images DIR [--images DIR ...] [--init WEIGHTS] [--smoke] [--until STAGE]" >&2
  exit 2
}
[[ $# -ge 1 ]] || usage
out="$1"; shift
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
smoke=0; until=finalize; init="$root/models/superpoint_ros_v1.pt"; photos=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --images) [[ $# -ge 2 ]] || usage; photos+=("$(cd "$2" && pwd)"); shift ;;
    --init) [[ $# -ge 2 ]] || usage; init="$(cd "$(dirname "$2")" && pwd)/$(basename "$2")"; shift ;;
    --smoke) smoke=1 ;;
    --until) [[ $# -ge 2 ]] || usage; until="$2"; shift ;;
    *) usage ;;
  esac
  shift
done
[[ ${#photos[@]} -ge 1 ]] || usage
[[ -f "$init" ]] || { echo "starting checkpoint not found: $init" >&2; exit 2; }
case "$until" in images|adapt|superpoint|finalize) ;; *) usage ;; esac

mkdir -p "$out/logs"
out="$(cd "$out" && pwd)"
cd "$root"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
. "$root/scripts/project_python.sh"

if [[ $smoke -eq 1 ]]; then
  cfg=smoke_v2; ad_min=1; sp_min=1
  crops=(--height 64 --width 80 --crops-per-image 1 --max-images 6 --no-builtin)
else
  cfg=v2; ad_min="${ADAPT_MINUTES:-40}"; sp_min="${SUPERPOINT_MINUTES:-480}"
  crops=(--height 240 --width 320 --crops-per-image "${CROPS_PER_IMAGE:-1}")
fi
read -r -a sp_set <<< "${SP_SET:-}"

log() { echo "== $*" | tee -a "$out/logs/stages.log"; }
stage_done() { [[ -f "$out/.done_$1" ]]; }
finish_stage() {  # finish_stage NAME: marker, and stop here if --until NAME
  touch "$out/.done_$1"
  if [[ "$1" == "$until" ]]; then log "stopping after $1 (--until)"; exit 0; fi
}
run_logged() {  # run_logged NAME COMMAND...: append stdout+stderr to OUT/logs/NAME.log
  local name="$1"; shift
  log "$name: $(date -u +%FT%TZ) $*"
  local t0=$SECONDS
  "$@" >> "$out/logs/$name.log" 2>&1
  log "$name: finished in $((SECONDS - t0)) s"
}

"$py" -c "import torch; print('torch', torch.__version__, '| threads', torch.get_num_threads(), '| cuda:', \
  torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')" >> "$out/logs/env.log"

if stage_done images; then log "images: already done"; else
  photo_args=(); for p in "${photos[@]}"; do photo_args+=(--photos "$p"); done
  run_logged images "$py" -m superpoint_ros.training.data --out "$out/images" --val-out "$out/val_images" \
    "${photo_args[@]}" "${crops[@]}"
fi
finish_stage images

if stage_done adapt; then log "adapt: already done (rm $out/.done_adapt and rerun to label more crops)"; else
  run_logged adapt "$py" -m superpoint_ros.training.adapt --weights "$init" --images "$out/images" \
    --out "$out/labels" --config "config/train/${cfg}_adapt.yaml" --max-minutes "$ad_min"
fi
finish_stage adapt

# no marker: each call continues the training state until max_steps (a call after that is a no-op)
run_logged superpoint "$py" -m superpoint_ros.training.train_superpoint \
  --config "config/train/${cfg}_superpoint.yaml" --images "$out/images" --labels "$out/labels" \
  --out "$out/superpoint" --max-minutes "$sp_min" --set "init_weights=$init" "${sp_set[@]}"
if [[ "$until" == superpoint ]]; then log "stopping after superpoint (--until)"; exit 0; fi

run_logged finalize "$py" -m superpoint_ros.training.pipeline finalize --run "$out" \
  --output "$out/superpoint_ros_v2.pt" \
  --pipeline "scripts/train_v2.sh: fine-tune of $(basename "$init") on photo folders (${photos[*]})"
log "result: $(ls -l "$out/superpoint_ros_v2.pt")"
