#!/usr/bin/env bash
# Set up (idempotently) and run the full test suite.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/bootstrap.sh"
cd "$root"
. scripts/ros_env.sh
exec "${SUPERPOINT_VENV:-$root/.venv}/bin/python" -m pytest -q "$@"
