# Source me (with $root set to the repo root): sets $py to the training scripts' interpreter, the
# first of: $PYTHON, the activated virtual env, the project's .venv (${SUPERPOINT_VENV:-.venv},
# created by scripts/bootstrap.sh when missing). Exits 2 with a hint when it cannot import torch.
venv="${SUPERPOINT_VENV:-$root/.venv}"
if [[ -n "${PYTHON:-}" ]]; then
  py="$PYTHON"
elif [[ -n "${VIRTUAL_ENV:-}" && -x "$VIRTUAL_ENV/bin/python" ]]; then
  py="$VIRTUAL_ENV/bin/python"
else
  if [[ ! -x "$venv/bin/python" ]]; then
    echo "== no PYTHON, no activated virtual env and no $venv: creating it (scripts/bootstrap.sh)"
    SUPERPOINT_VENV="$venv" bash "$root/scripts/bootstrap.sh"
  fi
  py="$venv/bin/python"
fi
if ! "$py" -c "import torch" 2>/dev/null; then
  echo "error: $py cannot import torch: run 'bash scripts/bootstrap.sh' (creates .venv) or set PYTHON=..." >&2
  exit 2
fi
