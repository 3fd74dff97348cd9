"""Loading and saving SuperPoint weights.

Three on-disk layouts are accepted, all read with ``torch.load(weights_only=True)`` only, so a file
can never execute code while loading:

- the *published* layout: a plain state_dict with keys ``conv1a.weight`` ... ``convDb.bias``
  (the architecture is inferred from the tensor shapes; Magic Leap's ``superpoint_v1.pth``);
- the *BatchNorm* layout of rpautrat/SuperPoint's ``superpoint_pytorch.py``
  (``superpoint_v6_from_tf.pth``: ``backbone.B.J.conv/bn``, ``detector.J``, ``descriptor.J``),
  converted on load by :func:`convert_batchnorm_layout`;
- the *project checkpoint*: ``{"format": FORMAT, "config": {...}, "state_dict": {...},
  "provenance": {...}}``, where provenance records training data, iterations, date, etc.

A state_dict saved from a wrapped model (``module.`` from DistributedDataParallel, ``_orig_mod.``
from ``torch.compile``) loads with the prefix stripped; provenance ``load_notes`` says so.
Exports for other runtimes (TorchScript, ``torch.export``, ONNX) are recognised and refused with
that reason, before torch reads them.
"""
from __future__ import annotations

import datetime as _dt
import logging
import os
import pickle
import re
import sys
import warnings
import zipfile
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch

from .model import DETECTOR_CHANNELS, ENCODER_LAYERS, SuperPointConfig, SuperPointNet

log = logging.getLogger(__name__)

FORMAT = "superpoint_ros/checkpoint-v1"
DEFAULT_MODEL_NAME = "superpoint_ros_v1.pt"


#: Key prefixes added by wrappers around a model: DistributedDataParallel, torch.compile.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
#: BatchNorm2d epsilon of rpautrat/SuperPoint's VGGBlock (not stored in its state_dict).
BATCHNORM_LAYOUT_EPS = 1e-3
#: Where each block of the BatchNorm layout goes: ``backbone.B.J`` -> conv{B+1}{a|b}, heads.
BATCHNORM_LAYOUT_BLOCKS = {
    **{f"backbone.{i // 2}.{i % 2}": f"conv{name}" for i, name in enumerate(ENCODER_LAYERS)},
    "detector.0": "convPa", "detector.1": "convPb", "descriptor.0": "convDa", "descriptor.1": "convDb",
}
_EXPORT_ADVICE = "this is an export for other runtimes; pass the .pt checkpoint it was exported from"


class WeightsError(RuntimeError):
    """A weight file that cannot be used, with the reason in the message."""


def _expected_keys(config: SuperPointConfig) -> Dict[str, Tuple[int, ...]]:
    model = SuperPointNet(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def infer_config(state_dict: Dict[str, torch.Tensor], source: str = "") -> SuperPointConfig:
    """Read the architecture off the published layout's tensor shapes (``source``: for messages)."""
    where = f"{source}: " if source else ""
    try:
        enc = tuple(int(state_dict[f"conv{i}b.weight"].shape[0]) for i in (1, 2, 3, 4))
        head = int(state_dict["convPa.weight"].shape[0])
        desc = int(state_dict["convDb.weight"].shape[0])
    except KeyError as e:
        raise WeightsError(f"{where}cannot infer the architecture: key {e.args[0]!r} is missing") from None
    except (AttributeError, IndexError):
        raise WeightsError(f"{where}cannot infer the architecture: the conv weights are not tensors") from None
    return SuperPointConfig(encoder_channels=enc, head_channels=head, descriptor_dim=desc,
                            post_relu_affine="affine1a.weight" in state_dict)


def strip_wrapper_prefixes(state_dict: Dict[str, torch.Tensor]) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """Remove ``module.`` / ``_orig_mod.`` when every key carries it (repeatedly: both can stack).

    Returns ``(state_dict, prefixes removed in order)``.
    """
    removed = []
    while state_dict:
        prefix = next((p for p in WRAPPER_PREFIXES
                       if all(isinstance(k, str) and k.startswith(p) for k in state_dict)), None)
        if prefix is None:
            break
        state_dict = {k[len(prefix):]: v for k, v in state_dict.items()}
        removed.append(prefix)
    return state_dict, removed


def check_finite(state_dict: Dict[str, torch.Tensor], source: str) -> None:
    """Raise WeightsError naming every floating tensor that holds NaN or infinity.

    Why: NaN weights run without error and detect nothing, on every frame.
    """
    bad = []
    for key, value in state_dict.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            count = int((~torch.isfinite(value)).sum())
            if count:
                bad.append(f"{key} ({count} of {value.numel()} values)")
    if bad:
        raise WeightsError(f"{source}: weights hold NaN or infinite values: {', '.join(bad)}")


def is_batchnorm_layout(state_dict: Dict[str, torch.Tensor]) -> bool:
    """True for rpautrat/SuperPoint's PyTorch layout (``backbone.0.0.conv.weight`` ...)."""
    return "backbone.0.0.conv.weight" in state_dict and "detector.1.conv.weight" in state_dict


def _frozen_batchnorm(state_dict, block: str, source: str) -> Tuple[torch.Tensor, torch.Tensor]:
    """A BatchNorm's inference form as ``(scale, shift)``, each ``(C,)`` float32."""
    try:
        gamma, beta, mean, var = (state_dict[f"{block}.bn.{p}"].float()
                                  for p in ("weight", "bias", "running_mean", "running_var"))
    except KeyError as e:
        raise WeightsError(f"{source}: BatchNorm layout: key {e.args[0]!r} is missing") from None
    if bool((var < 0).any()):
        raise WeightsError(f"{source}: BatchNorm layout: {block}.bn.running_var has negative values")
    scale = gamma / torch.sqrt(var + BATCHNORM_LAYOUT_EPS)
    return scale, beta - mean * scale


def convert_batchnorm_layout(state_dict: Dict[str, torch.Tensor], source: str = "weights"
                             ) -> Tuple[SuperPointConfig, Dict[str, torch.Tensor]]:
    """rpautrat/SuperPoint's ``superpoint_pytorch.py`` state_dict -> this network's.

    Each of its blocks is conv -> ReLU -> BatchNorm (eps 1e-3); the heads' last blocks
    (``detector.1``, ``descriptor.1``, 1x1 convs) have no ReLU. The BatchNorm follows the ReLU, so
    it cannot go into the conv before it (``relu(z) * s`` is not ``relu(z * s)`` for ``s < 0``, and
    the shift stays outside the ReLU), nor exactly into the next 3x3 conv (its zero padding would
    see the shift as 0). Hence, exactly:

    - encoder blocks: the BatchNorm becomes the per-channel affine ``affine1a`` ... ``affine4b``
      (``SuperPointConfig.post_relu_affine``), applied before the max-pool as in the original;
    - ``convPa``/``convDa``'s BatchNorm is folded into the next conv (1x1, no padding: exact);
    - ``convPb``/``convDb``'s BatchNorm (no ReLU) is folded into that conv itself.
    """
    convs, norms = {}, {}
    for block, name in BATCHNORM_LAYOUT_BLOCKS.items():
        try:
            convs[name] = [state_dict[f"{block}.conv.weight"].float(), state_dict[f"{block}.conv.bias"].float()]
        except KeyError as e:
            raise WeightsError(f"{source}: BatchNorm layout: key {e.args[0]!r} is missing") from None
        norms[name] = _frozen_batchnorm(state_dict, block, source)
    out: Dict[str, torch.Tensor] = {}
    for layer in ENCODER_LAYERS:
        out[f"conv{layer}.weight"], out[f"conv{layer}.bias"] = convs[f"conv{layer}"]
        out[f"affine{layer}.weight"], out[f"affine{layer}.bias"] = norms[f"conv{layer}"]
    for first, last in (("convPa", "convPb"), ("convDa", "convDb")):
        out[f"{first}.weight"], out[f"{first}.bias"] = convs[first]
        (in_scale, in_shift), (out_scale, out_shift) = norms[first], norms[last]
        weight, bias = convs[last]
        if weight.ndim != 4 or weight.shape[-2:] != (1, 1):
            raise WeightsError(f"{source}: BatchNorm layout: {last} is not a 1x1 conv ({tuple(weight.shape)})")
        bias = bias + weight[:, :, 0, 0] @ in_shift  # the input's shift, through the 1x1 conv
        weight = weight * in_scale.view(1, -1, 1, 1)  # the input's scale
        out[f"{last}.weight"] = weight * out_scale.view(-1, 1, 1, 1)
        out[f"{last}.bias"] = bias * out_scale + out_shift
    return infer_config(out, source), out


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


def _looks_like_onnx(head: bytes) -> bool:
    """An ONNX ModelProto: field 1 ``ir_version`` (varint, 1..127), then another of its fields
    (producer_name, producer_version, domain, model_version, doc_string, graph, opset_import)."""
    return len(head) >= 3 and head[0] == 0x08 and 1 <= head[1] < 0x80 and head[2] in (
        0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42)


def _zip_problem(path: Path) -> Optional[str]:
    """Why a zip archive is no torch.save checkpoint (an export, or not torch), or None if it is one."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        # a zip's directory is at its end: a file cut short (an interrupted save or copy) lands here
        return "truncated or corrupt torch file (its zip directory is missing or unreadable)"
    if any("/code/" in n or n.endswith("constants.pkl") for n in names):
        return f"a TorchScript export: {_EXPORT_ADVICE}"
    if any(n.endswith(("archive_format", "models/model.json")) for n in names):
        return f"a torch.export program (.pt2): {_EXPORT_ADVICE}"
    if not any(n.endswith("data.pkl") for n in names):
        return "not a PyTorch checkpoint (a zip archive without torch data)"
    return None


def _sniff(path: Path) -> None:
    """Refuse known non-checkpoints before torch sees them (its advice for them is misleading)."""
    with open(path, "rb") as f:
        head = f.read(8)
    problem = None
    if head.startswith(b"PK\x03\x04"):
        problem = _zip_problem(path)
    elif _looks_like_onnx(head) or path.suffix.lower() == ".onnx":
        problem = f"an ONNX model: {_EXPORT_ADVICE}"
    if problem:
        raise WeightsError(f"{path}: {problem}")


def _refused_global(error: Exception) -> Optional[str]:
    """The Python object a weights_only refusal names (``posix.system``), if it names one."""
    match = re.search(r"GLOBAL ([\w.]+)", str(error))
    return match.group(1) if match else None


def _torch_load(path: Path):
    """``torch.load(weights_only=True)`` with its warnings for files we refuse anyway silenced."""
    with warnings.catch_warnings():
        # "Detected pickle protocol N": noise on a (refused) plain pickle; TorchScript dispatch
        warnings.filterwarnings("ignore", message=r".*pickle protocol", category=UserWarning)
        warnings.filterwarnings("ignore", message=r".*TorchScript archive", category=UserWarning)
        return torch.load(path, map_location="cpu", weights_only=True)


def read_tensor_file(path: os.PathLike | str):
    """What ``torch.load(weights_only=True)`` reads from ``path``, or WeightsError with the reason
    (missing, empty, an export, not torch, code-carrying, truncated); for any torch file of ours."""
    return _read(Path(path).expanduser())


def _read(path: Path):
    if not path.exists():
        raise WeightsError(f"weight file not found: {path}")
    if not path.is_file():
        raise WeightsError(f"weight path is not a file: {path}")
    if path.stat().st_size == 0:
        raise WeightsError(f"weight file is empty: {path}")
    _sniff(path)
    try:
        return _torch_load(path)
    except pickle.UnpicklingError as e:
        # weights_only refuses globals that are not plain tensors/containers: a file that would
        # run code lands here ("GLOBAL posix.system"); bytes that are no torch pickle at all too.
        name = _refused_global(e)
        if name:
            raise WeightsError(f"{path}: refused to load: the file holds a Python object ({name}), "
                               "not plain tensor data; weights are only loaded as tensor data") from None
        raise WeightsError(f"{path}: not a PyTorch checkpoint") from None
    except Exception as e:  # torch raises many types for bytes that are not a torch file
        msg = str(e).splitlines()[0].split(" This is an internal")[0] if str(e) else type(e).__name__
        if "central directory" in msg or "failed reading" in msg or isinstance(e, EOFError):
            raise WeightsError(f"{path}: truncated or corrupt torch file ({msg})") from None
        raise WeightsError(f"{path}: not a PyTorch checkpoint") from None


def load_weights(path: os.PathLike | str) -> Tuple[SuperPointConfig, Dict[str, torch.Tensor], dict]:
    """Read a weight file of any accepted layout (module docstring).

    Returns ``(config, state_dict, provenance)``; provenance is ``{"format": "published"}`` for the
    published layout. Raises WeightsError with a specific reason for any unusable file.
    """
    path = Path(path).expanduser()
    data = _read(path)
    if not isinstance(data, dict):
        raise WeightsError(f"{path}: expected a dict of tensors, found {type(data).__name__}")
    notes: List[str] = []
    if data.get("format") == FORMAT:
        try:
            config = SuperPointConfig.from_dict(dict(data["config"]))
            state_dict, notes = _unwrapped(dict(data["state_dict"]))
        except (KeyError, TypeError, ValueError) as e:
            raise WeightsError(f"{path}: malformed superpoint_ros checkpoint ({e})") from None
        check_finite(state_dict, str(path))
        provenance = dict(data.get("provenance", {}))
    elif "format" in data and not isinstance(data.get("format"), torch.Tensor):
        raise WeightsError(f"{path}: unknown checkpoint format {data['format']!r} (expected {FORMAT!r})")
    else:
        if "state_dict" in data and isinstance(data["state_dict"], dict):
            data = data["state_dict"]  # common wrapper of the published layout
        state_dict, notes = _unwrapped(data)
        check_finite(state_dict, str(path))  # before a conversion hides which key it was
        if is_batchnorm_layout(state_dict):
            config, state_dict = convert_batchnorm_layout(state_dict, str(path))
            notes.append("converted from rpautrat/SuperPoint's BatchNorm layout (heads' BatchNorm folded "
                         "into convPb/convDb, encoder BatchNorm kept as a per-channel affine after each ReLU)")
        else:
            _check_detector_channels(state_dict, str(path))
            config = infer_config(state_dict, str(path))
        provenance = {"format": "published"}
    check_state_dict(state_dict, config, str(path))
    if notes:
        provenance["load_notes"] = notes
        for note in notes:
            log.info("%s: %s", path, note)
    return config, state_dict, provenance


def _unwrapped(state_dict: Dict[str, torch.Tensor]) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """:func:`strip_wrapper_prefixes` with the notes for provenance."""
    state_dict, removed = strip_wrapper_prefixes(state_dict)
    wrapper = {"module.": "DistributedDataParallel", "_orig_mod.": "torch.compile"}
    return state_dict, [f"stripped the key prefix {p!r} (a {wrapper[p]} model's state_dict)" for p in removed]


def _check_detector_channels(state_dict: Dict[str, torch.Tensor], source: str) -> None:
    weight = state_dict.get("convPb.weight")
    if isinstance(weight, torch.Tensor) and weight.ndim and weight.shape[0] != DETECTOR_CHANNELS:
        raise WeightsError(f"{source}: convPb.weight has {weight.shape[0]} output channels, "
                           f"expected {DETECTOR_CHANNELS} (64 cells + dustbin)")


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
