"""The node's parameters: one table of names, defaults, descriptions and valid ranges.

Both the ROS node (``declare_parameter`` with ``ParameterDescriptor`` ranges) and the ROS-free
:class:`superpoint_ros.frontend.Frontend` (used by the rosbag evaluator) read this table, so the
same YAML file configures both:

>>> params = load_params("config/superpoint_mono.yaml")   # flat dict, every name, defaults filled
>>> params["extractor.max_keypoints"]
1000
>>> frontend = Frontend(params)

Names are flat and dotted exactly as ROS 2 stores them (``extractor.max_keypoints``); the YAML
file may nest them (``extractor: {max_keypoints: 1000}``) or write them dotted. Accepted YAML
layouts: ``superpoint_node: {ros__parameters: {...}}``, ``/**: {ros__parameters: {...}}`` (also
with a namespace like ``/robot/superpoint_node``), or a bare mapping of parameters.

The front-end parameters' defaults are the typed configuration's (:mod:`superpoint_ros.config`,
the shipped node's values), so the YAML files hold only what differs. ROS parameters cannot be
``None``, so "off" is spelled with a value (:data:`NO_VALUE`): ``extractor.weights: ""`` means the
shipped model, ``matching.ratio_test: 0.0`` disables Lowe's test, and so on (see each
description); :func:`frontend_conf`, the one bridge to the core, turns them into ``None``.
The table in docs/node.md is :func:`markdown_table`'s output (``python -m superpoint_ros.params``).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from typing import Any, Dict, List, Mapping, Optional, Tuple

import yaml

from .config import FrontendConf
from .yaml_numbers import parse_float_text

NODE_NAME = "superpoint_node"


class ParamsError(ValueError):
    """Invalid parameters or parameter file; the message lists every problem with its reason."""


@dataclass(frozen=True)
class Param:
    """One parameter. ``kind`` is ``bool``/``int``/``float``/``str``; ``limits`` is an inclusive
    ``(min, max)`` for numbers; ``choices`` the allowed strings; ``read_only`` parameters are fixed
    at start-up (the node rejects run-time changes); ``frontend`` marks what the Frontend uses (the
    rest configure only the ROS node: topics, QoS, queues)."""

    default: Any
    description: str
    limits: Optional[Tuple[float, float]] = None
    choices: Optional[Tuple[str, ...]] = None
    read_only: bool = False
    frontend: bool = True

    @property
    def kind(self) -> type:
        return type(self.default)


#: Which field of :class:`superpoint_ros.config.FrontendConf` each front-end parameter sets:
#: ``(section, field)``, section ``""`` for a field of FrontendConf itself.
FIELDS: Dict[str, Tuple[str, str]] = {
    **{f"extractor.{n}": ("model", n) for n in ("weights", "device", "fp16", "num_threads", "backend", "precision",
                                                 "channels_last", "cuda_graphs", "compile", "input_scale")},
    **{f"extractor.{n}": ("detector", n) for n in ("nms_radius", "detection_threshold", "max_keypoints",
                                                    "remove_borders", "uniform_cell", "max_per_cell", "subpixel")},
    **{f"matching.{n}": ("matching", n) for n in ("ratio_test", "max_distance")},
    **{f"ransac.{n}": ("ransac", n) for n in ("enabled", "model", "method", "threshold", "confidence",
                                               "max_iterations", "min_matches")},
    **{f"tracking.{n}": ("tracking", n) for n in ("max_age", "max_displacement", "max_time_gap", "flow_refinement")},
    **{f"image.{n}": ("image", n) for n in ("max_size", "oversize", "bit_depth")},
    "device.cpu_fallback": ("", "cpu_fallback"),
    **{f"stereo.{n}": ("stereo", n) for n in ("min_disparity", "max_disparity", "epipolar_tolerance")},
}

#: ROS parameters cannot be ``None``: the value each of these uses for "off" / "none" (the typed
#: configuration's ``None``).
NO_VALUE: Dict[str, Any] = {
    "extractor.weights": "", "extractor.num_threads": 0, "extractor.max_keypoints": -1,
    "extractor.uniform_cell": 0, "matching.ratio_test": 0.0, "matching.max_distance": 2.0, "image.max_size": 0,
}


def _ros_value(name: str, value: Any) -> Any:
    return NO_VALUE[name] if value is None else value


def _typed_value(name: str, value: Any) -> Any:
    """A ROS value -> the typed configuration's (``None`` for the "no value" marker)."""
    if name in NO_VALUE and value == NO_VALUE[name]:
        return None
    return value


def ros_params(conf: FrontendConf) -> Dict[str, Any]:
    """The front-end parameters (flat ROS names and values, "no value" markers for ``None``) that
    configure ``conf``; the inverse of :func:`frontend_conf` (fields without a ROS parameter, e.g.
    the flow limits, are left out)."""
    return {name: _ros_value(name, getattr(getattr(conf, section) if section else conf, key))
            for name, (section, key) in FIELDS.items()}


#: The default of a front-end parameter is the shipped configuration's value (superpoint_ros.config).
CONF = object()


def _with_shipped_defaults(table: Dict[str, Param]) -> Dict[str, Param]:
    shipped = ros_params(FrontendConf())
    filled = {}
    for name, param in table.items():
        if (param.default is CONF) != (name in FIELDS) or (name in FIELDS) != param.frontend:
            raise AssertionError(f"{name}: a front-end parameter takes its default from superpoint_ros.config")
        filled[name] = replace(param, default=shipped[name]) if param.default is CONF else param
    return filled


#: Every parameter, its default, meaning and valid range, in one place.
PARAMETERS: Dict[str, Param] = _with_shipped_defaults({
    # --- extractor (defaults: superpoint_ros.config.ExtractorConf) ---
    "extractor.weights": Param(CONF, "Weight file (project checkpoint or published state_dict); "
                               "empty = the shipped default model", read_only=True),
    "extractor.device": Param(CONF, "auto (CUDA if available, else CPU), cpu, cuda or cuda:N; "
                              "an explicit cuda without CUDA is a start-up error", read_only=True),
    "extractor.fp16": Param(CONF, "Half-precision network on CUDA (ignored on CPU)", read_only=True),
    "extractor.num_threads": Param(CONF, "CPU threads of the ONNX Runtime network; 0 = torch's default count "
                                   "(torch itself runs one thread: backends.configure_process)", (0, 256),
                                   read_only=True),
    "extractor.backend": Param(CONF, "Network runtime: auto (CPU fp32: ONNX Runtime if installed, else torch), "
                               "torch or onnxruntime", choices=("auto", "torch", "onnxruntime"), read_only=True),
    "extractor.precision": Param(CONF, "auto (CUDA: fp16 if extractor.fp16, else fp32; CPU: int8 where the CPU "
                                 "has VNNI / dot-product instructions and onnxruntime is installed, else fp32), "
                                 "fp32, fp16 (CUDA), bf16, or int8 (CPU, ONNX Runtime static quantisation: "
                                 "docs/benchmarks.md)", choices=("auto", "fp32", "fp16", "bf16", "int8"),
                                 read_only=True),
    "extractor.channels_last": Param(CONF, "NHWC activations (faster convolutions on oneDNN/cuDNN)", read_only=True),
    "extractor.cuda_graphs": Param(CONF, "Replay the network as a CUDA graph per input size (CUDA only)",
                                   read_only=True),
    "extractor.compile": Param(CONF, "torch.compile the network (slow first frame)", read_only=True),
    "extractor.input_scale": Param(CONF, "Run the network on the image scaled by this factor (keypoints stay in "
                                   "input pixels): the CPU real-time knob, see docs/benchmarks.md", (0.1, 1.0),
                                   read_only=True),
    "extractor.nms_radius": Param(CONF, "Non-maximum suppression radius in px; 0 disables NMS", (0, 32)),
    "extractor.detection_threshold": Param(CONF, "Minimum detector probability of a keypoint", (0.0, 1.0)),
    "extractor.max_keypoints": Param(CONF, "Keypoints kept per image, best first; -1 = unlimited", (-1, 100000)),
    "extractor.remove_borders": Param(CONF, "Pixels ignored at each image border", (0, 128)),
    "extractor.uniform_cell": Param(CONF, "Grid cell in px for spatially uniform keypoints; 0 = off", (0, 1024)),
    "extractor.max_per_cell": Param(CONF, "Keypoints kept per uniform grid cell", (1, 1024)),
    "extractor.subpixel": Param(CONF, "Sub-pixel keypoints: score-weighted centroid of the 7x7 heatmap window"),
    # --- descriptor matching (temporal and stereo) ---
    "matching.ratio_test": Param(CONF, "Lowe's ratio test on descriptor distances; 0 = off", (0.0, 1.0)),
    "matching.max_distance": Param(CONF, "Maximum descriptor distance of a match (unit descriptors: "
                                   "0..2); 2 = no limit", (0.0, 2.0)),
    # --- outlier rejection of temporal matches ---
    "ransac.enabled": Param(CONF, "Reject temporal outliers with OpenCV USAC"),
    "ransac.model": Param(CONF, "Geometric model: fundamental (general motion, pixels), homography "
                          "(planar scene or pure rotation, pixels), essential (normalised coordinates of "
                          "the camera_info; fundamental while there is none) or auto (essential with "
                          "intrinsics, else fundamental)",
                          choices=("fundamental", "homography", "essential", "auto")),
    "ransac.method": Param(CONF, "OpenCV USAC flavour", choices=("magsac", "default", "accurate", "fast")),
    "ransac.threshold": Param(CONF, "Inlier threshold in px (epipolar or reprojection distance; "
                              "essential: px at the camera's mean focal length)", (0.01, 100.0)),
    "ransac.confidence": Param(CONF, "RANSAC confidence", (0.5, 0.999999)),
    "ransac.max_iterations": Param(CONF, "Maximum RANSAC iterations", (1, 1000000)),
    "ransac.min_matches": Param(CONF, "Fewer temporal matches than this: no geometric check (all kept "
                                "and flagged unverified)", (8, 100000)),
    # --- tracks ---
    "tracking.max_age": Param(CONF, "Frames a track may go unmatched and still be re-found (by "
                              "descriptor, within tracking.max_displacement, confirmed by optical flow "
                              "when tracking.flow_refinement is on); 0 = must match every frame. Without "
                              "flow_refinement re-found tracks are often another point (docs/node.md)",
                              (0, 1000)),
    "tracking.max_displacement": Param(CONF, "Max px a lost track may move to be re-found", (0.0, 100000.0)),
    "tracking.max_time_gap": Param(CONF, "Seconds between frames beyond which tracks reset; time going "
                                   "backwards also resets", (0.0, 86400.0)),
    "tracking.flow_refinement": Param(CONF, "Refine matched keypoints (temporal inliers, stereo right points) "
                                      "with Lucas-Kanade flow from their match: sub-pixel, consistent "
                                      "along tracks; matches the flow contradicts (> 2 px away) are "
                                      "dropped; costs a few ms of CPU per frame"),
    # --- input images (bad or extreme input; docs/reliability.md) ---
    "image.max_size": Param(CONF, "Longest image side in px the network and the optical flow run on; larger "
                            "images are handled per image.oversize (logged once per input size); 0 = no limit. "
                            "Memory grows with its square: an 8000x8000 mono8 frame peaks at 1.3 GiB (ONNX "
                            "Runtime) / 1.6 GiB (torch) with 1280, 2.6 GiB with 2048 on the CPU (docs/reliability.md)", (0, 65536)),
    "image.oversize": Param(CONF, "Image larger than image.max_size: resize (area filter; keypoints still "
                            "in input pixels) or reject (frame skipped and logged)", choices=("resize", "reject")),
    "image.bit_depth": Param(CONF, "Valid bits of 16-bit images (mono16/16UC1 from 10/12-bit cameras): 8..16 = "
                             "white is 2^bit_depth - 1 (brighter pixels clip); 0 = auto per image: the smallest "
                             "2^b - 1 (b 8..16) holding the image's maximum (12-bit data -> 4095, full-range or "
                             "MSB-aligned 16-bit -> 65535). 8-bit and float images ignore it", (0, 16)),
    "device.cpu_fallback": Param(CONF, "extractor.device cuda requested but CUDA absent: false = start-up "
                                 "error, true = log a warning and run on the CPU", read_only=True),
    # --- rectified stereo ---
    "stereo.min_disparity": Param(CONF, "Minimum disparity x_left - x_right in px", (0.0, 10000.0)),
    "stereo.max_disparity": Param(CONF, "Maximum disparity x_left - x_right in px", (0.0, 10000.0)),
    "stereo.epipolar_tolerance": Param(CONF, "Max |y_left - y_right| in px of a stereo match", (0.0, 1000.0)),
    # --- ROS node only ---
    "stereo.enabled": Param(False, "Subscribe to a rectified stereo pair (left/image_rect, right/image_rect) "
                            "instead of one image", read_only=True, frontend=False),
    "input.compressed": Param(False, "Subscribe to sensor_msgs/CompressedImage on the resolved image topic + "
                              "/compressed, as image_transport names it (remapping image is enough)",
                              read_only=True, frontend=False),
    "input.queue_size": Param(1, "Frames waiting for the processing thread; when full the oldest is "
                              "dropped (newest frame wins), counted and logged (throttled)", (1, 100), read_only=True,
                              frontend=False),
    "qos.reliability": Param("auto", "Image subscription reliability: auto (what the topic's publishers offer, "
                             "as rosbag2 does: reliable when all of them are, else best_effort; chosen when the "
                             "first publisher appears, logged), reliable or best_effort",
                             choices=("auto", "reliable", "best_effort"), read_only=True, frontend=False),
    "qos.depth": Param(5, "Subscription and publisher history depth", (1, 1000), read_only=True, frontend=False),
    "sync.mode": Param("approximate", "Stereo pairing: exact stamps or approximate within sync.slop",
                       choices=("exact", "approximate"), read_only=True, frontend=False),
    "sync.slop": Param(0.005, "Max stamp difference in s of an approximate stereo pair", (0.0, 10.0),
                       read_only=True, frontend=False),
    "sync.queue_size": Param(10, "Unpaired messages kept per stereo input", (1, 1000), read_only=True,
                             frontend=False),
    "camera_info.mode": Param("auto", "Intrinsics from sensor_msgs/CameraInfo (camera_info; stereo left/camera_info and "
                              "right/camera_info, paired with the images by stamp, else the latest): auto (use them "
                              "once they arrive, pixel-only until then), required (pixel-only and a WARN in "
                              "diagnostics and the log while missing) or off (not subscribed)",
                              choices=("auto", "required", "off"), read_only=True, frontend=False),
    "camera_info.images": Param("auto", "Whether the images the camera_info describes are already rectified: auto "
                                "(image_proc's names: rectified when the image topic's last name starts with "
                                "image_rect, e.g. left/image_rect), raw or rectified. For rectified images the "
                                "camera is taken as CameraInfo's P (no distortion, R = I), since a CameraInfo "
                                "always describes the raw camera", choices=("auto", "raw", "rectified"),
                                read_only=True, frontend=False),
    "output.vins_feature": Param("", "Also publish vins_feature (sensor_msgs/PointCloud in VINS-Fusion's (fusion) or "
                                 "VINS-Mono's (mono) feature-tracker layout; frames with intrinsics only); "
                                 "\"\" = off", choices=("", "fusion", "mono"), read_only=True, frontend=False),
    "debug.track_length": Param(10, "Frames of trail drawn per track in debug_image (only computed "
                                "while someone subscribes)", (0, 1000), frontend=False),
    "diagnostics.period": Param(1.0, "Seconds between /diagnostics messages", (0.05, 3600.0),
                                read_only=True, frontend=False),
    "diagnostics.stale_after": Param(2.0, "Seconds without an input image after which diagnostics warn "
                                     "(camera stopped); 0 = never", (0.0, 3600.0), frontend=False),
    "diagnostics.max_latency": Param(0.5, "Mean processing latency in s above which diagnostics warn",
                                     (0.0, 3600.0), frontend=False),
})

FRONTEND_PARAMETERS = tuple(name for name, p in PARAMETERS.items() if p.frontend)


def defaults() -> Dict[str, Any]:
    """A fresh flat dict of every parameter's default."""
    return {name: p.default for name, p in PARAMETERS.items()}


def check_value(name: str, value: Any) -> Optional[str]:
    """Why ``value`` is invalid for parameter ``name``, or ``None`` when it is valid."""
    param = PARAMETERS.get(name)
    if param is None:
        return f"unknown parameter {name!r}"
    kind = param.kind
    if kind is bool:
        if not isinstance(value, bool):
            return f"{name} must be a bool, got {value!r}"
    elif kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            return f"{name} must be an integer, got {value!r}"
    elif kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"{name} must be a number, got {value!r}"
        if not math.isfinite(float(value)):
            return f"{name} must be finite, got {value!r}"
    elif kind is str and not isinstance(value, str):
        return f"{name} must be a string, got {value!r}"
    if param.limits is not None:
        lo, hi = param.limits
        if not lo <= value <= hi:
            return f"{name}={value!r} is outside [{lo}, {hi}] ({param.description})"
    if param.choices is not None and value not in param.choices:
        return f"{name}={value!r} is not one of {', '.join(param.choices)}"
    if name == "extractor.device" and not (value in ("auto", "cpu", "cuda") or
                                           (value.startswith("cuda:") and value[5:].isdigit())):
        return f"extractor.device={value!r} must be auto, cpu, cuda or cuda:N"
    if name == "image.bit_depth" and 0 < value < 8:
        return f"image.bit_depth={value!r} must be 0 (auto) or 8..16 (the valid bits of 16-bit images)"
    return None


def coerce(name: str, value: Any) -> Any:
    """Integers given for float parameters become floats (YAML ``1`` for ``1.0``), and so does
    exponent notation that PyYAML leaves as text (``1e-3``), as ROS's own parser reads it."""
    param = PARAMETERS.get(name)
    if param is not None and param.kind is float:
        value = parse_float_text(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return float(value)
    return value


def cross_check(params: Mapping[str, Any]) -> list:
    """Problems that involve more than one parameter."""
    problems = []
    if params["stereo.min_disparity"] > params["stereo.max_disparity"]:
        problems.append(f"stereo.min_disparity={params['stereo.min_disparity']} is larger than "
                        f"stereo.max_disparity={params['stereo.max_disparity']}")
    return problems


def checked_values(params: Mapping[str, Any]) -> Tuple[Dict[str, Any], List[str]]:
    """(the valid ones of ``params``, coerced (:func:`coerce`); why each other one is invalid)."""
    values, problems = {}, []
    for name, value in params.items():
        value = coerce(name, value)
        reason = check_value(name, value)
        if reason:
            problems.append(reason)
        else:
            values[name] = value
    return values, problems


def validate(params: Mapping[str, Any]) -> Dict[str, Any]:
    """Merge ``params`` (flat dotted names, any subset) over the defaults and check every value.

    Returns the complete flat dict. Raises :class:`ParamsError` listing every problem.
    """
    values, problems = checked_values(params)
    merged = {**defaults(), **values}
    if not problems:
        problems = cross_check(merged)
    if problems:
        raise ParamsError("invalid parameters: " + "; ".join(problems))
    return merged


def flatten(tree: Mapping[str, Any], prefix: str = "") -> Dict[str, Any]:
    """``{"extractor": {"max_keypoints": 5}}`` -> ``{"extractor.max_keypoints": 5}``."""
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def _parameters_section(document: Any, source: str, node_name: str) -> Mapping[str, Any]:
    if document is None:
        return {}
    if not isinstance(document, Mapping):
        raise ParamsError(f"{source}: expected a mapping at the top level, found {type(document).__name__}")
    sections = [v for k, v in document.items()
                if isinstance(v, Mapping) and "ros__parameters" in v
                and (k == "/**" or str(k).rstrip("/").split("/")[-1] in (node_name, "**"))]
    if any(isinstance(v, Mapping) and "ros__parameters" in v for v in document.values()):
        if not sections:
            raise ParamsError(f"{source}: no 'ros__parameters' section for node {node_name!r} or '/**' "
                              f"(found: {', '.join(map(str, document))})")
        merged: Dict[str, Any] = {}
        for section in sections:  # '/**' first in file order, a node-specific one overrides it
            merged.update(flatten(section["ros__parameters"] or {}))
        return merged
    return flatten(document)


def load_params(path: os.PathLike | str, node_name: str = NODE_NAME,
                overrides: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """Read the node's YAML parameter file -> complete, validated flat dict (defaults filled in).

    ``overrides`` (flat dotted names) are applied over the file. Raises :class:`ParamsError` with
    the file name and every problem (unknown names, wrong types, out-of-range values).
    """
    path = os.fspath(path)
    try:
        with open(path, "r", encoding="utf-8") as f:
            document = yaml.safe_load(f)
    except FileNotFoundError:
        raise ParamsError(f"parameter file not found: {path}") from None
    except yaml.YAMLError as e:
        raise ParamsError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    flat = dict(_parameters_section(document, path, node_name))
    flat.update(overrides or {})
    try:
        return validate(flat)
    except ParamsError as e:
        raise ParamsError(f"{path}: {e}") from None


def frontend_conf(params: Mapping[str, Any], base: Optional[FrontendConf] = None) -> FrontendConf:
    """Flat ROS parameters (any subset; validated, the rest from the defaults) -> the typed
    configuration: THE bridge between the node's parameters and the core, where the ROS "no value"
    markers (:data:`NO_VALUE`) become ``None``. ``base`` supplies the fields without a ROS
    parameter (default: the shipped values). Raises :class:`ParamsError`."""
    checked = validate(params)
    conf = base or FrontendConf()
    sections: Dict[str, Dict[str, Any]] = {}
    for name, (section, key) in FIELDS.items():
        sections.setdefault(section, {})[key] = _typed_value(name, checked[name])
    top = sections.pop("", {})
    return replace(conf, **top, **{section: replace(getattr(conf, section), **values)
                                    for section, values in sections.items()})


def _markdown_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return '""' if value == "" else str(value)


def markdown_table() -> str:
    """The parameter table of docs/node.md (``python -m superpoint_ros.params`` prints it)."""
    lines = ["| parameter | default | range / choices | run-time | description |", "| --- | --- | --- | --- | --- |"]
    for name, p in PARAMETERS.items():
        valid = (f"[{p.limits[0]:g}, {p.limits[1]:g}]" if p.limits else
                 " \\| ".join(map(_markdown_value, p.choices)) if p.choices else "")
        description = p.description.replace("|", "\\|") + ("" if p.frontend else " (node only)")
        lines.append(f"| `{name}` | `{_markdown_value(p.default)}` | {valid} | {'no' if p.read_only else 'yes'} | "
                     f"{description} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown_table())
