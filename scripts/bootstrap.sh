#!/usr/bin/env bash
# Create or update the project's virtual environment (.venv) idempotently.
# torch is pinned first so pip never pulls a multi-GB CUDA build on a CPU machine.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${SUPERPOINT_VENV:-$root/.venv}"
python="${PYTHON:-$(command -v python3.11 || command -v python3)}"
torch_spec="${SUPERPOINT_TORCH:-torch==2.13.0}"

if [ ! -x "$venv/bin/python" ]; then
  echo "bootstrap: creating $venv with $python"
  "$python" -m venv "$venv"
fi
stamp="$venv/.superpoint_ros-stamp"
want="$(cat "$root/setup.py" "$root/setup.cfg" "$root/scripts/bootstrap.sh" | sha256sum | cut -d' ' -f1) $torch_spec"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
echo "bootstrap: installing dependencies into $venv"
"$venv/bin/python" -m pip install -q --upgrade pip setuptools wheel
"$venv/bin/python" -m pip install -q "$torch_spec"
"$venv/bin/python" -m pip install -q -e "$root[ros,eval,train,dev,slam]"
echo "$want" > "$stamp"
