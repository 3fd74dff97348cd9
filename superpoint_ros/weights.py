"""Loading and saving SuperPoint weights.

Two on-disk formats are accepted, both read with ``torch.load(weights_only=True)`` only, so a file
can never execute code while loading:

- the *published* layout: a plain state_dict with keys ``conv1a.weight`` ... ``convDb.bias``
  (the architecture is inferred from the tensor shapes);
- the *project checkpoint*: ``{"format": FORMAT, "config": {...}, "state_dict": {...},
  "provenance": {...}}``, where provenance records training data, iterations, date, etc.
"""
from __future__ import annotations

import datetime as _dt
import os
import pickle
import sys
from pathlib import Path
from typing import Dict, Optional, Tuple

import torch

from .model import DETECTOR_CHANNELS, SuperPointConfig, SuperPointNet

FORMAT = "superpoint_ros/checkpoint-v1"
DEFAULT_MODEL_NAME = "superpoint_ros_v1.pt"


class WeightsError(RuntimeError):
    """A weight file that cannot be used, with the reason in the message."""


def _expected_keys(config: SuperPointConfig) -> Dict[str, Tuple[int, ...]]:
    model = SuperPointNet(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def infer_config(state_dict: Dict[str, torch.Tensor]) -> SuperPointConfig:
    """Read the architecture off the published layout's tensor shapes."""
    try:
        enc = tuple(int(state_dict[f"conv{i}b.weight"].shape[0]) for i in (1, 2, 3, 4))
        head = int(state_dict["convPa.weight"].shape[0])
        desc = int(state_dict["convDb.weight"].shape[0])
    except KeyError as e:
        raise WeightsError(f"cannot infer the architecture: key {e.args[0]!r} is missing") from None
    return SuperPointConfig(encoder_channels=enc, head_channels=head, descriptor_dim=desc)


def check_state_dict(state_dict: Dict[str, torch.Tensor], config: SuperPointConfig, source: str) -> None:
    """Raise WeightsError naming every missing/unexpected key and every shape mismatch."""
    expected = _expected_keys(config)
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    problems = []
    if missing:
        problems.append(f"missing keys: {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {', '.join(unexpected)}")
    for key in sorted(set(expected) & set(state_dict)):
        value = state_dict[key]
        if not isinstance(value, torch.Tensor):
            problems.append(f"{key} is a {type(value).__name__}, not a tensor")
        elif tuple(value.shape) != expected[key]:
            problems.append(f"{key} has shape {tuple(value.shape)}, expected {expected[key]}")
    if problems:
        raise WeightsError(f"{source}: incompatible SuperPoint weights: " + "; ".join(problems))


def _read(path: Path):
    if not path.exists():
        raise WeightsError(f"weight file not found: {path}")
    if not path.is_file():
        raise WeightsError(f"weight path is not a file: {path}")
    if path.stat().st_size == 0:
        raise WeightsError(f"weight file is empty: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # weights_only refuses globals that are not plain tensors/containers: a file that would
        # run code lands here, and so does an arbitrary non-torch pickle.
        raise WeightsError(
            f"{path}: refused to load: the file is not plain tensor data ({str(e).splitlines()[0]})"
        ) from None
    except Exception as e:  # torch raises many types for bytes that are not a torch file
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "central directory" in msg or "failed reading" in msg or isinstance(e, EOFError):
            raise WeightsError(f"{path}: truncated or corrupt torch file ({msg})") from None
        raise WeightsError(f"{path}: not a torch weight file ({msg})") from None


def load_weights(path: os.PathLike | str) -> Tuple[SuperPointConfig, Dict[str, torch.Tensor], dict]:
    """Read a weight file of either format.

    Returns ``(config, state_dict, provenance)``; provenance is ``{"format": "published"}`` for the
    published layout. Raises WeightsError with a specific reason for any unusable file.
    """
    path = Path(path).expanduser()
    data = _read(path)
    if not isinstance(data, dict):
        raise WeightsError(f"{path}: expected a dict of tensors, found {type(data).__name__}")
    if data.get("format") == FORMAT:
        try:
            config = SuperPointConfig.from_dict(dict(data["config"]))
            state_dict = data["state_dict"]
        except (KeyError, TypeError, ValueError) as e:
            raise WeightsError(f"{path}: malformed superpoint_ros checkpoint ({e})") from None
        provenance = dict(data.get("provenance", {}))
    elif "format" in data and not isinstance(data.get("format"), torch.Tensor):
        raise WeightsError(f"{path}: unknown checkpoint format {data['format']!r} (expected {FORMAT!r})")
    else:
        if "state_dict" in data and isinstance(data["state_dict"], dict):
            data = data["state_dict"]  # common wrapper of the published layout
        if "convPb.weight" in data and tuple(data["convPb.weight"].shape[:1]) != (DETECTOR_CHANNELS,):
            raise WeightsError(
                f"{path}: convPb.weight has {data['convPb.weight'].shape[0]} output channels, "
                f"expected {DETECTOR_CHANNELS} (64 cells + dustbin)"
            )
        config = infer_config(data)
        state_dict = data
        provenance = {"format": "published"}
    check_state_dict(state_dict, config, str(path))
    return config, state_dict, provenance


def load_model(path: os.PathLike | str) -> Tuple[SuperPointNet, dict]:
    """Build a SuperPointNet from a weight file; returns ``(model in eval mode, provenance)``."""
    config, state_dict, provenance = load_weights(path)
    model = SuperPointNet(config)
    model.load_state_dict(state_dict)
    return model.eval(), provenance


def save_checkpoint(path: os.PathLike | str, model: SuperPointNet, provenance: Optional[dict] = None) -> Path:
    """Write the project checkpoint format (fp32 tensors, architecture, provenance)."""
    provenance = dict(provenance or {})
    provenance.setdefault("date", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    provenance.setdefault("torch", str(torch.__version__))
    payload = {
        "format": FORMAT,
        "config": model.config.to_dict(),
        "state_dict": {k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()},
        "provenance": provenance,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)  # never leave a half-written weight file behind
    return path


def default_weights_path() -> Path:
    """Where the shipped default model lives: the source tree, the pip prefix, or the ROS share dir."""
    candidates = [
        Path(__file__).resolve().parent.parent / "models" / DEFAULT_MODEL_NAME,
        Path(sys.prefix) / "share" / "superpoint_ros" / "models" / DEFAULT_MODEL_NAME,
    ]
    try:  # a colcon/ROS install
        from ament_index_python.packages import get_package_share_directory

        candidates.append(Path(get_package_share_directory("superpoint_ros")) / "models" / DEFAULT_MODEL_NAME)
    except Exception:  # ament_index not installed, or the package not in AMENT_PREFIX_PATH
        pass
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise WeightsError(
        f"default model {DEFAULT_MODEL_NAME} not found (looked in: {', '.join(map(str, candidates))}); "
        "pass weights=PATH"
    )
