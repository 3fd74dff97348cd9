#!/usr/bin/env bash
# Set up (idempotently) and run the demo: the sample bag replayed through the node on the default model.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/bootstrap.sh"
cd "$root"
. scripts/ros_env.sh
exec "${SUPERPOINT_VENV:-$root/.venv}/bin/superpoint-demo" "$@"
