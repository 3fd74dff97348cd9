"""Training state on disk, for exact resumption.

A training-state file holds the model, optimizer and AMP scaler states, the step, the config and
the RNG states of python, numpy and torch (CPU and CUDA). It contains only tensors and plain
containers so it loads with ``torch.load(weights_only=True)`` like every weight file here. The
data order and the per-step augmentation are derived from ``(seed, step)`` (see ``engine``), so
restoring the step restores them too; the RNG states cover anything else that draws randomness.
"""
from __future__ import annotations

import os
import random
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from ..weights import WeightsError, read_tensor_file
from .config import ConfigError


class TrainingStateError(RuntimeError):
    """A training-state file (``state.pt``) that cannot be resumed from, with the reason."""


@contextmanager
def one_line_errors(tool: str):
    """End a training CLI on a bad weight file, training state or config with one line on stderr
    and exit status 2, as the node does (no traceback for a user's file)."""
    try:
        yield
    except (WeightsError, TrainingStateError, ConfigError) as e:
        print(f"{tool}: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def rng_state() -> dict:
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"key": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": {"version": py_state[0], "state": list(py_state[1]), "gauss": py_state[2]},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_training_state(path: os.PathLike | str, *, model, optimizer, scaler, step: int, conf: dict,
                        wall_seconds: float, **extra) -> Path:
    """``extra``: further plain entries (e.g. ``world_size`` of a torchrun group)."""
    payload = {
        "step": int(step),
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else {},
        "config": conf,
        "rng": rng_state(),
        "wall_seconds": float(wall_seconds),
        **extra,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)  # a crash while saving keeps the previous state intact
    return path


def load_training_state(path: os.PathLike | str, *, model, optimizer, scaler) -> dict:
    """Restore everything saved by ``save_training_state`` (read on the CPU; ``load_state_dict``
    moves it to the model's and optimizer's devices); returns the payload (step, config, ...).

    Raises TrainingStateError for a file that cannot be read (truncated, not torch) or that does not
    fit this run's model/optimizer.
    """
    advice = "delete it, or pass --no-resume to start over"
    try:
        payload = read_tensor_file(path)
    except WeightsError as e:
        raise TrainingStateError(f"cannot resume: {e}; {advice}") from None
    try:
        model.load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
        if scaler is not None and payload.get("scaler"):
            scaler.load_state_dict(payload["scaler"])
        set_rng_state(payload["rng"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        detail = next((ln.strip() for ln in str(e).splitlines()[1:] if ln.strip()), str(e) or type(e).__name__)
        raise TrainingStateError(f"{path}: cannot resume: the training state does not fit this run "
                                 f"(was the model config changed?): {detail}; {advice}") from None
    return payload

