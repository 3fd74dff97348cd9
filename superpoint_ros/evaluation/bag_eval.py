"""``superpoint-eval-bag BAG``: replay a ROS 2 bag through the node's front-end code, offline.

Reads sqlite3 or mcap bags, or ROS 1 ``.bag`` files, with ``rosbags`` (no ROS install needed), one
image topic (mono) or a rectified stereo pair (+ ``camera_info`` for the intrinsics), and runs
:class:`superpoint_ros.frontend.Frontend` -- the code the node runs -- configured by the node's own
parameter file (``--params``, default ``config/superpoint_{mono,stereo}.yaml``).

Reports per frame and in summary: keypoints, temporal matches, RANSAC inlier ratio, track lengths,
stereo matches and their epipolar error (``|y_left - y_right|``, rectified), processing time.
With a TUM ground-truth trajectory (``--groundtruth``) and intrinsics: the rotation error and the
translation-direction error (degrees) of the relative pose from the essential matrix of each
frame pair's inlier matches, and the ground-truth epipolar error of those matches.

``--baselines orb,sift`` replays the same frames through the same Frontend (same parameter file,
tracking, matching thresholds, RANSAC, stereo rules) with OpenCV ORB / SIFT features in place of
the network (:class:`superpoint_ros.evaluation.baselines.OpenCVFrontendExtractor`; their
descriptors become unit vectors, so ``matching.ratio_test``/``max_distance`` apply unchanged; only
``extractor.max_keypoints`` carries over) and prints the methods side by side. ``klt`` adds the
VINS-style optical-flow tracker (:mod:`superpoint_ros.evaluation.klt`: Shi-Tomasi + Lucas-Kanade,
forward-backward check, the same RANSAC and stereo limits); ``sp-reference`` runs the same network
with the published SuperPoint demo's tracker rules (:data:`REFERENCE_SUPERPOINT`).

Writes ``summary.json`` (+ per-frame values; baselines under ``"baselines"``), ``per_frame.png``,
``tracks.png`` into ``--output``; ``--output-bag`` also writes the node's output topics (same names
and message layout as the node, via its codec) plus the input images, to replay in rviz/Foxglove.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import yaml
from tqdm import tqdm

from ..backends import configure_process
from ..frontend import Frontend
from ..io import bags, messages
from ..params import ParamsError, load_params, validate
from ..sync import StampSynchronizer, slop_ns_for
from ..visualization import draw_tracks, to_bgr8
from ..weights import WeightsError
from .baselines import OpenCVFrontendExtractor
from .klt import KLTFrontend
from .plots import plot_bag_summary
# ground truth and relative-pose maths, shared with superpoint-eval-posed (re-exported here)
from .pose import (NS, Trajectory, direction_angle_deg, epipolar_distances, essential_pose,  # noqa: F401
                   pose_errors, read_tum, relative_pose, rotation_angle_deg, skew)

#: The node's output topics (relative names, resolved in the node's namespace).
NODE_OUTPUTS = ("features", "features_right", "temporal_matches", "stereo_matches")
#: The namespace the launch files (launch/*.launch.py) give the node.
DEFAULT_NAMESPACE = "/superpoint"


# --- per-frame statistics (shared with the demo, which fills records from the node's messages) ---
@dataclass
class FrameRecord:
    """What one frame of the front-end produced, independent of where it came from.

    ``keypoints`` ``(N, 2)`` xy px; ``track_ids`` / ``track_lengths`` ``(N,)``; ``temporal_indices``
    ``(M, 2)`` (previous idx, current idx) into the frame stamped ``previous_stamp_ns`` (None on
    the first frame after a reset); ``temporal_inliers`` ``(M,)`` bool; ``stereo_left`` /
    ``stereo_right`` ``(K, 2)`` matched xy px (None for mono); ``time_ms``: per stage.
    """

    stamp_ns: int
    keypoints: np.ndarray
    track_ids: np.ndarray
    track_lengths: np.ndarray
    temporal_indices: Optional[np.ndarray] = None
    temporal_inliers: Optional[np.ndarray] = None
    temporal_verified: bool = True
    previous_stamp_ns: Optional[int] = None
    stereo_left: Optional[np.ndarray] = None
    stereo_right: Optional[np.ndarray] = None
    time_ms: Dict[str, float] = field(default_factory=dict)


def record_from_result(result) -> FrameRecord:
    """A :class:`superpoint_ros.frontend.FrameResult` -> :class:`FrameRecord` (its stamps: the
    result's ``stamp_ns`` and ``temporal.previous_stamp_ns``)."""
    temporal = result.temporal
    stereo_left = stereo_right = None
    if result.stereo is not None:
        idx = result.stereo.indices
        stereo_left = result.features.keypoints[idx[:, 0]]
        stereo_right = result.right_features.keypoints[idx[:, 1]]
    return FrameRecord(
        result.stamp_ns, result.features.keypoints, result.track_ids, result.track_lengths,
        None if temporal is None else temporal.indices, None if temporal is None else temporal.inliers,
        True if temporal is None else bool(temporal.verified), None if temporal is None else temporal.previous_stamp_ns,
        stereo_left, stereo_right, dict(result.timings))


def _stats(values) -> Dict[str, float]:
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], np.float64)
    if v.size == 0:
        return {"count": 0}
    return {"count": int(v.size), "mean": float(v.mean()), "median": float(np.median(v)), "min": float(v.min()),
            "max": float(v.max()), "p90": float(np.percentile(v, 90))}


class BagStats:
    """Accumulates :class:`FrameRecord` s into the per-frame table and the summary.

    ``K``: 3x3 intrinsics and ``trajectory``: ground truth, both optional (pose metrics need both).
    Keeps the last ``trail_length`` positions of every live track for the tracks picture.
    """

    def __init__(self, K: Optional[np.ndarray] = None, trajectory: Optional[Trajectory] = None,
                 gt_max_dt_ns: int = 10_000_000, trail_length: int = 30, min_gt_translation_m: float = 1e-3):
        self.K, self.trajectory, self.gt_max_dt_ns = K, trajectory, gt_max_dt_ns
        self.trail_length, self.min_gt_translation_m = trail_length, min_gt_translation_m
        self.frames: List[dict] = []
        self.track_length: Dict[int, int] = {}
        #: first and latest observation of every track: (stamp ns, x, y)
        self.track_first: Dict[int, Tuple[int, float, float]] = {}
        self.track_last: Dict[int, Tuple[int, float, float]] = {}
        self.trails: "OrderedDict[int, List[Tuple[float, float]]]" = OrderedDict()
        self._previous: Optional[FrameRecord] = None

    def add(self, record: FrameRecord) -> dict:
        """Add one frame; returns its row of per-frame values."""
        row = {"stamp_ns": int(record.stamp_ns), "keypoints": int(len(record.keypoints)),
               "temporal_matches": None, "inliers": None, "inlier_ratio": None, "stereo_matches": None,
               "epipolar_error_px": None, "time_ms": float(record.time_ms.get("total", np.nan)),
               "extract_ms": float(record.time_ms.get("extract", np.nan)), "rotation_error_deg": None,
               "translation_direction_error_deg": None, "gt_epipolar_error_px": None,
               "tracks_continued": int(np.sum(np.asarray(record.track_lengths) > 1))}
        previous = self._previous
        if record.temporal_indices is not None:
            row["temporal_matches"] = int(len(record.temporal_indices))
            inliers = np.asarray(record.temporal_inliers, bool)
            row["inliers"] = int(inliers.sum())
            if record.temporal_verified and len(inliers):
                row["inlier_ratio"] = float(inliers.mean())
            if previous is not None and previous.stamp_ns == record.previous_stamp_ns:
                self._pose_metrics(row, previous, record, inliers)
        if record.stereo_left is not None:
            row["stereo_matches"] = int(len(record.stereo_left))
            if len(record.stereo_left):
                row["epipolar_error_px"] = float(np.mean(np.abs(record.stereo_left[:, 1] - record.stereo_right[:, 1])))
                row["disparity_px"] = float(np.median(record.stereo_left[:, 0] - record.stereo_right[:, 0]))
        for track_id, length, xy in zip(np.asarray(record.track_ids).tolist(),
                                        np.asarray(record.track_lengths).tolist(), np.asarray(record.keypoints)):
            self.track_length[track_id] = max(length, self.track_length.get(track_id, 0))
            observation = (int(record.stamp_ns), float(xy[0]), float(xy[1]))
            self.track_first.setdefault(track_id, observation)
            self.track_last[track_id] = observation
            trail = self.trails.setdefault(track_id, [])
            trail.append((float(xy[0]), float(xy[1])))
            del trail[: -self.trail_length]
        live = set(np.asarray(record.track_ids).tolist())
        for dead in [t for t in self.trails if t not in live]:
            del self.trails[dead]  # only tracks still alive are drawn
        self.frames.append(row)
        self._previous = record
        return row

    def _pose_metrics(self, row: dict, previous: FrameRecord, record: FrameRecord, inliers: np.ndarray) -> None:
        if self.K is None or self.trajectory is None:
            return
        pose0 = self.trajectory.lookup(previous.stamp_ns, self.gt_max_dt_ns)
        pose1 = self.trajectory.lookup(record.stamp_ns, self.gt_max_dt_ns)
        if pose0 is None or pose1 is None:
            return
        R, t = relative_pose(pose0, pose1)
        idx = np.asarray(record.temporal_indices)[inliers]
        if len(idx) == 0:
            return
        p0, p1 = previous.keypoints[idx[:, 0]], record.keypoints[idx[:, 1]]
        row["gt_epipolar_error_px"] = float(np.median(epipolar_distances(p0, p1, self.K, R, t)))
        if np.linalg.norm(t) < self.min_gt_translation_m:
            return  # direction undefined for (almost) pure rotation
        errors = pose_errors(p0, p1, self.K, R, t)
        if errors is not None:
            row.update(errors)

    def track_span_errors(self, min_length: int = 5, min_baseline_m: float = 0.02) -> np.ndarray:
        """GT epipolar distance (px) between the first and the latest observation of every track
        seen in at least ``min_length`` frames whose two views are ``min_baseline_m`` apart: how
        well a track stays on one physical point (a landmark for the back-end); re-associations to
        another point and drift both show up here. Empty without intrinsics or ground truth."""
        if self.K is None or self.trajectory is None:
            return np.zeros(0)
        errors = []
        for track_id, length in self.track_length.items():
            if length < min_length:
                continue
            (s0, x0, y0), (s1, x1, y1) = self.track_first[track_id], self.track_last[track_id]
            pose0 = self.trajectory.lookup(s0, self.gt_max_dt_ns)
            pose1 = self.trajectory.lookup(s1, self.gt_max_dt_ns)
            if pose0 is None or pose1 is None:
                continue
            R, t = relative_pose(pose0, pose1)
            if np.linalg.norm(t) < min_baseline_m:
                continue
            errors.append(epipolar_distances(np.array([[x0, y0]]), np.array([[x1, y1]]), self.K, R, t)[0])
        return np.asarray(errors, np.float64)

    def summary(self) -> dict:
        column = lambda key: [f.get(key) for f in self.frames]  # noqa: E731
        lengths = np.array(list(self.track_length.values()), np.int64)
        histogram = {int(k): int(v) for k, v in zip(*np.unique(lengths, return_counts=True))} if len(lengths) else {}
        times = [t for t in column("time_ms") if t is not None and np.isfinite(t)]
        out = {
            "frames": len(self.frames),
            "keypoints_per_frame": _stats(column("keypoints")),
            "temporal_matches_per_frame": _stats(column("temporal_matches")),
            "inliers_per_frame": _stats(column("inliers")),
            "inlier_ratio": _stats(column("inlier_ratio")),
            "tracks": {"count": int(len(lengths)), **{k: v for k, v in _stats(lengths).items() if k != "count"},
                       "histogram": histogram,
                       "continued_per_frame": _stats(column("tracks_continued"))},
            "time_ms": _stats(column("time_ms")),
            "extract_ms": _stats(column("extract_ms")),
            "fps": float(1000.0 / np.mean(times)) if times else None,
        }
        if any(f["stereo_matches"] is not None for f in self.frames):
            out["stereo_matches_per_frame"] = _stats(column("stereo_matches"))
            out["stereo_epipolar_error_px"] = _stats(column("epipolar_error_px"))
            out["stereo_disparity_px"] = _stats(column("disparity_px"))
        if self.trajectory is not None:
            rotation = _stats(column("rotation_error_deg"))
            spans = self.track_span_errors()
            out["pose"] = {"pairs": rotation["count"], "rotation_error_deg": rotation,
                           "translation_direction_error_deg": _stats(column("translation_direction_error_deg")),
                           "gt_epipolar_error_px": _stats(column("gt_epipolar_error_px")),
                           "track_span_epipolar_error_px": {**_stats(spans), "above_2px": (
                               float(np.mean(spans > 2.0)) if len(spans) else None)},
                           "note": "relative pose of consecutive frames from the essential matrix of the inlier "
                                   "temporal matches (OpenCV USAC MAGSAC++, 1 px, fit on all inliers) vs. ground "
                                   "truth"}
            if self.K is None:
                out["pose"]["note"] = "no intrinsics (camera_info) in the bag: pose metrics skipped"
        return out

    def series(self) -> Dict[str, np.ndarray]:
        """Per-frame arrays for plotting (NaN where a value does not exist)."""
        names = ["keypoints", "temporal_matches", "inlier_ratio", "tracks_continued", "stereo_matches",
                 "epipolar_error_px", "time_ms", "rotation_error_deg", "translation_direction_error_deg"]
        return {n: np.array([np.nan if f.get(n) is None else f[n] for f in self.frames], float) for n in names}


def format_summary(summary: dict) -> str:
    """A markdown table of the summary (mean / median / p90 / max)."""
    rows = [("keypoints / frame", summary["keypoints_per_frame"]),
            ("temporal matches / frame", summary["temporal_matches_per_frame"]),
            ("RANSAC inliers / frame", summary["inliers_per_frame"]),
            ("inlier ratio", summary["inlier_ratio"]),
            ("track length [frames]", summary["tracks"]),
            ("tracks continued / frame", summary["tracks"]["continued_per_frame"])]
    if "stereo_matches_per_frame" in summary:
        rows += [("stereo matches / frame", summary["stereo_matches_per_frame"]),
                 ("stereo epipolar error [px]", summary["stereo_epipolar_error_px"]),
                 ("stereo disparity [px]", summary["stereo_disparity_px"])]
    if "pose" in summary:
        rows += [("rotation error [deg]", summary["pose"]["rotation_error_deg"]),
                 ("translation dir. error [deg]", summary["pose"]["translation_direction_error_deg"]),
                 ("GT epipolar error [px]", summary["pose"]["gt_epipolar_error_px"]),
                 ("track first-to-last GT epipolar error [px]", summary["pose"]["track_span_epipolar_error_px"])]
    rows += [("processing time [ms]", summary["time_ms"])]
    if summary["extract_ms"].get("count"):
        rows.append(("  of which extraction [ms]", summary["extract_ms"]))
    lines = ["| metric | mean | median | p90 | max |", "|---|---|---|---|---|"]
    for name, s in rows:
        if "mean" not in s:
            lines.append(f"| {name} | - | - | - | - |")
        else:
            lines.append(f"| {name} | {s['mean']:.3g} | {s['median']:.3g} | {s['p90']:.3g} | {s['max']:.3g} |")
    lines.append(f"\n{summary['frames']} frames, {summary['tracks']['count']} tracks"
                 + (f", {summary['fps']:.1f} frames/s" if summary.get("fps") else ""))
    return "\n".join(lines)


#: Rows of the side-by-side table: (label, path into the summary, statistic).
COMPARISON_ROWS = (
    ("keypoints / frame", ("keypoints_per_frame",), "mean"),
    ("temporal matches / frame", ("temporal_matches_per_frame",), "mean"),
    ("RANSAC inliers / frame", ("inliers_per_frame",), "mean"),
    ("inlier ratio", ("inlier_ratio",), "mean"),
    ("tracks continued / frame", ("tracks", "continued_per_frame"), "mean"),
    ("track length [frames]", ("tracks",), "mean"),
    ("stereo matches / frame", ("stereo_matches_per_frame",), "mean"),
    ("stereo epipolar error [px]", ("stereo_epipolar_error_px",), "mean"),
    ("rotation error [deg]", ("pose", "rotation_error_deg"), "median"),
    ("translation dir. error [deg]", ("pose", "translation_direction_error_deg"), "median"),
    ("GT epipolar error [px]", ("pose", "gt_epipolar_error_px"), "median"),
    ("track first-to-last GT epipolar error [px]", ("pose", "track_span_epipolar_error_px"), "median"),
    ("fraction of tracks off by > 2 px", ("pose", "track_span_epipolar_error_px"), "above_2px"),
    ("processing time [ms]", ("time_ms",), "mean"),
)


def format_comparison(summaries: Dict[str, dict]) -> str:
    """A markdown table with one column per method (name -> summary); a row per metric, the mean
    (or the median where noted), ``-`` where a method has no value."""
    names = list(summaries)
    lines = ["| metric | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for label, path, statistic in COMPARISON_ROWS:
        cells, present = [], False
        for name in names:
            node = summaries[name]
            for key in path:
                node = node.get(key, {}) if isinstance(node, dict) else {}
            value = node.get(statistic) if isinstance(node, dict) else None
            present |= value is not None
            cells.append("-" if value is None else f"{value:.3g}")
        if present:
            lines.append(f"| {label}{' (median)' if statistic == 'median' else ''} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


#: ``--baselines`` choices: OpenCV features through the node's Frontend, the KLT tracker, or the
#: same network with the association rules of the published SuperPoint demo tracker.
BASELINES = ("orb", "sift", "klt", "sp-reference")
#: ``sp-reference``: the published SuperPoint demo's settings (magicleap/SuperPointPretrainedNetwork,
#: ``demo_superpoint.py`` defaults: NMS 4 px, confidence 0.015, border 4 px, every point above it;
#: its tracker links mutual nearest neighbours within descriptor distance 0.7), with nothing of this
#: front-end's own: no ratio test, RANSAC, flow refinement, uniform grid, sub-pixel or re-finding.
REFERENCE_SUPERPOINT = {
    "extractor.nms_radius": 4, "extractor.detection_threshold": 0.015, "extractor.remove_borders": 4,
    "extractor.max_keypoints": -1, "extractor.uniform_cell": 0, "extractor.subpixel": False,
    "matching.ratio_test": 0.0, "matching.max_distance": 0.7, "ransac.enabled": False,
    "tracking.flow_refinement": False, "tracking.max_age": 0,
}


def parse_baselines(text: Optional[str]) -> List[str]:
    """``"orb,sift"`` -> ``["orb", "sift"]``; unknown names raise ValueError."""
    names = [n.strip().lower() for n in (text or "").split(",") if n.strip()]
    unknown = [n for n in names if n not in BASELINES]
    if unknown:
        raise ValueError(f"--baselines: unknown method(s) {', '.join(unknown)} (choose from {', '.join(BASELINES)})")
    return list(dict.fromkeys(names))


def baseline_frontend(name: str, params: Optional[dict]):
    """``orb``/``sift``: the node's Frontend with ``params`` on OpenCV features instead of the
    network; ``klt``: the VINS-style optical-flow tracker with the same shared parameters;
    ``sp-reference``: the same network and weights with :data:`REFERENCE_SUPERPOINT` (what the
    front-end adds over the published demo's tracker)."""
    conf = validate(params or {})
    if name == "klt":
        return KLTFrontend(conf)
    if name == "sp-reference":
        return Frontend(validate({**conf, **REFERENCE_SUPERPOINT}))
    return Frontend(conf, extractor=OpenCVFrontendExtractor(name, int(conf["extractor.max_keypoints"])))


def tracks_picture(image: np.ndarray, trails: Dict[int, List[Tuple[float, float]]], max_width: int = 0) -> np.ndarray:
    """The last frame with every live track's trail (green) and head (red dot), BGR uint8."""
    canvas = to_bgr8(image).copy()
    draw_tracks(canvas, [np.asarray(t) for t in trails.values() if len(t) >= 2], color=(0, 255, 0))
    for trail in trails.values():
        x, y = trail[-1]
        cv2.circle(canvas, (int(round(x)), int(round(y))), 2, (0, 0, 255), -1, cv2.LINE_AA)
    if max_width and canvas.shape[1] > max_width:
        scale = max_width / canvas.shape[1]
        canvas = cv2.resize(canvas, (max_width, int(round(canvas.shape[0] * scale))), interpolation=cv2.INTER_AREA)
    return canvas


# --- reading the bag ------------------------------------------------------------------------------
def camera_matrix(info) -> np.ndarray:
    """K of a rectified camera from sensor_msgs/CameraInfo (P[:3, :3], falling back to K)."""
    p = np.asarray(info.p, np.float64).reshape(3, 4)
    K = p[:, :3] if p[0, 0] > 0 else np.asarray(info.k, np.float64).reshape(3, 3)
    if K[0, 0] <= 0 or K[1, 1] <= 0:
        raise bags.BagError("camera_info has no valid intrinsics (fx, fy <= 0)")
    return K


def find_camera_info(bag: Path, image_topic: str, available: Dict[str, Tuple[str, int]]) -> Optional[str]:
    """The camera_info topic next to an image topic (``.../image_rect`` -> ``.../camera_info``)."""
    base = image_topic.rsplit("/", 1)[0]
    candidate = f"{base}/camera_info"
    if available.get(candidate, ("",))[0] == bags.CAMERA_INFO_TYPE:
        return candidate
    return None


def first_camera_info(bag: Path, topic: str):
    for item in bags.read_messages(bag, [topic]):
        return item.message
    return None


@dataclass
class Frame:
    """A frame to process: stamp, frame_id, images, and the input messages' raw data for copying."""

    stamp_ns: int
    log_time_ns: int
    frame_id: str
    left: np.ndarray
    right: Optional[np.ndarray] = None
    raw: List[Tuple[str, str, bytes, int]] = field(default_factory=list)  # (topic, msgtype, cdr, log time)
    right_frame_id: Optional[str] = None


def iterate_frames(bag: Path, left_topic: str, right_topic: Optional[str] = None, slop_ns: int = 0,
                   queue_size: int = 10) -> Iterator[Frame]:
    """Mono frames, or stereo pairs matched by header stamp in bag order by the node's
    synchroniser (:class:`superpoint_ros.sync.StampSynchronizer`: exact stamps first, else the
    closest within ``slop_ns``; at most ``queue_size`` unpaired images wait per side)."""
    topic_list = [left_topic] + ([right_topic] if right_topic else [])
    sync = StampSynchronizer(topic_list, slop_ns, queue_size)
    for item in bags.read_messages(bag, topic_list):
        message = item.message
        entry = (bags.stamp_ns(message), item.log_time_ns, message.header.frame_id, bags.message_image(message),
                 (item.topic, item.msgtype, item.raw, item.log_time_ns))
        matched = sync.add(item.topic, entry[0], entry)
        if matched is None:
            continue
        if right_topic is None:
            yield Frame(entry[0], entry[1], entry[2], entry[3], None, [entry[4]])
            continue
        left, right = matched
        yield Frame(left[0], max(left[1], right[1]), left[2], left[3], right[3], [left[4], right[4]], right[2])


# --- the evaluation ------------------------------------------------------------------------------
def default_params_file(stereo: bool) -> Path:
    """The node's shipped parameter file (source tree or installed share directory)."""
    name = "superpoint_stereo.yaml" if stereo else "superpoint_mono.yaml"
    candidates = [Path(__file__).resolve().parents[2] / "config" / name,
                  Path(sys.prefix) / "share" / "superpoint_ros" / "config" / name]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"parameter file {name} not found (looked in {', '.join(map(str, candidates))}); "
                            "pass --params")


def evaluate_bag(bag: Path, left_topic: str, right_topic: Optional[str] = None, params: Optional[dict] = None,
                 groundtruth: Optional[Path] = None, camera_info_topic: Optional[str] = None,
                 output_bag: Optional[Path] = None, storage: str = "sqlite3", max_frames: Optional[int] = None,
                 show_progress: bool = True, frontend=None, output_namespace: str = DEFAULT_NAMESPACE) -> Tuple[dict, BagStats, Optional[np.ndarray]]:
    """Run the front-end over the bag. Returns ``(summary, stats, last left image)``.

    ``params``: a flat parameter dict as :func:`superpoint_ros.params.load_params` returns (the
    node's defaults when None). ``frontend``: an already built Frontend (tests share one).
    """
    bag = Path(bag)
    available = bags.check_image_topics(bag, [left_topic] + ([right_topic] if right_topic else []))
    frontend = frontend if frontend is not None else Frontend(params or {})
    conf = frontend.params
    info_topic = camera_info_topic or find_camera_info(bag, left_topic, available)
    K = None
    if info_topic is not None:
        if info_topic not in available:
            raise bags.BagError(f"{bag}: camera_info topic {info_topic} not in the bag")
        info = first_camera_info(bag, info_topic)
        K = camera_matrix(info) if info is not None else None
    trajectory = read_tum(groundtruth) if groundtruth is not None else None
    stats = BagStats(K, trajectory)
    total = available[left_topic][1] if max_frames is None else min(max_frames, available[left_topic][1])
    slop_ns = slop_ns_for(conf.get("sync.mode", "approximate"), conf.get("sync.slop", 0.005))
    last_image = None
    with contextlib.ExitStack() as stack:
        output = None
        if output_bag is not None:
            output = OutputBag(stack.enter_context(bags.BagWriter(output_bag, storage=storage, overwrite=True)),
                               output_namespace)
        progress = None
        if show_progress:
            progress = stack.enter_context(tqdm(total=total, unit="frame", desc="superpoint-eval-bag", file=sys.stderr))
        frames = iterate_frames(bag, left_topic, right_topic, slop_ns, int(conf.get("sync.queue_size", 10)))
        for count, frame in enumerate(frames):
            if max_frames is not None and count >= max_frames:
                break
            start = time.perf_counter()
            if frame.right is None:
                result = frontend.process_mono(frame.left, frame.stamp_ns, frame.frame_id)
            else:
                result = frontend.process_stereo(frame.left, frame.right, frame.stamp_ns, frame.frame_id)
            result.timings["wall"] = (time.perf_counter() - start) * 1e3
            stats.add(record_from_result(result))
            if output is not None:
                output.write(frame, result)
            last_image = frame.left
            if progress is not None:
                progress.update(1)
                progress.set_postfix(kp=len(result.features), tracks=int(np.sum(result.track_lengths > 1)))
    summary = stats.summary()
    summary["bag"] = str(bag)
    summary["topics"] = {"left": left_topic, "right": right_topic, "camera_info": info_topic}
    summary["weights"] = frontend.weights_path or "in-memory model"
    summary["parameters"] = {k: v for k, v in conf.items()}
    return summary, stats, last_image


class OutputBag:
    """Writes the node's output messages (its codec's :func:`frame_messages`, its topic names)
    plus the input images."""

    def __init__(self, writer: bags.BagWriter, namespace: str = DEFAULT_NAMESPACE):
        self.writer, self.messages = writer, messages
        self.classes = messages.MessageClasses(
            bags.msg_class("std_msgs/msg/Header"), bags.msg_class("builtin_interfaces/msg/Time"),
            bags.msg_class("sensor_msgs/msg/PointCloud2"), bags.msg_class("sensor_msgs/msg/PointField"),
            data_as_array=True)
        self.topics = output_topics(namespace)

    def write(self, frame: Frame, result) -> None:
        for topic, msgtype, raw, log_time in frame.raw:
            self.writer.write_raw(topic, msgtype, raw, log_time)
        # as the node: the right features carry the right frame_id and the left stamp
        for name, msg in self.messages.frame_messages(result, frame.frame_id, self.classes,
                                                      frame.right_frame_id).items():
            self.writer.write(self.topics[name], msg, frame.log_time_ns)


def output_topics(namespace: str = "/") -> Dict[str, str]:
    """The node's output topic names as a node in ``namespace`` publishes them (``/features``...
    for ``ros2 run superpoint_ros superpoint_node``; ``/cam/features``... with ``__ns:=/cam``)."""
    prefix = "/" + namespace.strip("/") if namespace.strip("/") else ""
    return {name: f"{prefix}/{name}" for name in NODE_OUTPUTS}


# --- command line -----------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="superpoint-eval-bag", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bag", type=Path, help="rosbag2 folder or file (sqlite3 or mcap), or a ROS 1 .bag")
    p.add_argument("--image-topic", help="mono: the image topic")
    p.add_argument("--left-topic", help="stereo: left rectified image topic")
    p.add_argument("--right-topic", help="stereo: right rectified image topic")
    p.add_argument("--camera-info", default=None, help="camera_info topic (default: next to the image topic)")
    p.add_argument("--params", type=Path, default=None,
                   help="the node's parameter file (default: config/superpoint_{mono,stereo}.yaml)")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="override a parameter, e.g. --set extractor.max_keypoints=500 (YAML value)")
    p.add_argument("--weights", default=None, help="shortcut for --set extractor.weights=PATH")
    p.add_argument("--device", default=None, help="shortcut for --set extractor.device=...")
    p.add_argument("--groundtruth", type=Path, default=None, help="TUM trajectory of the (left) camera")
    p.add_argument("--max-frames", type=int, default=None)
    p.add_argument("--output", "-o", type=Path, default=Path("out/eval_bag"), help="folder for JSON and plots")
    p.add_argument("--output-bag", type=Path, default=None, help="also write the node's topics to this bag")
    p.add_argument("--storage", choices=bags.STORAGE_FORMATS, default="sqlite3", help="output bag storage")
    p.add_argument("--output-namespace", default=DEFAULT_NAMESPACE,
                   help="namespace of the node's topics in the output bag (default: the launch files')")
    p.add_argument("--baselines", default="", metavar="orb,sift,klt,sp-reference",
                   help="also run the same front-end on OpenCV ORB and/or SIFT features, a VINS-style KLT "
                        "tracker, and/or the same network with the published SuperPoint demo's tracker rules "
                        "(sp-reference), same frames and parameters, and print the methods side by side")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def parse_overrides(items: Sequence[str]) -> dict:
    overrides = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--set {item!r} must look like NAME=VALUE")
        name, value = item.split("=", 1)
        overrides[name.strip()] = yaml.safe_load(value) if value.strip() else ""
    return overrides


def parameter_overrides(args) -> dict:
    """The command line's parameter overrides: ``--set NAME=VALUE`` items, then ``--weights`` and
    ``--device`` when given (shared by superpoint-eval-bag and superpoint-eval-slam)."""
    overrides = parse_overrides(args.set)
    if args.weights:
        overrides["extractor.weights"] = args.weights
    if args.device:
        overrides["extractor.device"] = args.device
    return overrides


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    configure_process()
    stereo = bool(args.left_topic or args.right_topic)
    if stereo and not (args.left_topic and args.right_topic):
        print("superpoint-eval-bag: stereo needs both --left-topic and --right-topic", file=sys.stderr)
        return 2
    if stereo == bool(args.image_topic):
        print("superpoint-eval-bag: give either --image-topic (mono) or --left-topic/--right-topic (stereo)",
              file=sys.stderr)
        return 2
    try:
        overrides = parameter_overrides(args)
        baselines = parse_baselines(args.baselines)
        params_file = args.params or default_params_file(stereo)
        params = load_params(params_file, overrides=overrides)
        summary, stats, last_image = evaluate_bag(
            args.bag, args.left_topic or args.image_topic, args.right_topic, params, args.groundtruth,
            args.camera_info, args.output_bag, args.storage, args.max_frames, not args.quiet,
            output_namespace=args.output_namespace)
        baseline_runs = {}
        for name in baselines:  # the same frames through the same Frontend code, other features
            baseline_summary, baseline_stats, _ = evaluate_bag(
                args.bag, args.left_topic or args.image_topic, args.right_topic, params, args.groundtruth,
                args.camera_info, None, args.storage, args.max_frames, not args.quiet,
                frontend=baseline_frontend(name, params))
            baseline_runs[name] = {**baseline_summary, "per_frame": baseline_stats.frames}
    except (bags.BagError, ParamsError, WeightsError, ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"superpoint-eval-bag: {e}", file=sys.stderr)
        return 2
    summary["params_file"] = str(params_file)
    args.output.mkdir(parents=True, exist_ok=True)
    document = {**summary, "per_frame": stats.frames}
    if baseline_runs:
        document["baselines"] = baseline_runs
    (args.output / "summary.json").write_text(json.dumps(document, indent=1, default=float) + "\n")
    lengths = np.array(list(stats.track_length.values()), np.int64)
    plot_bag_summary(stats.series(), lengths, args.output / "per_frame.png")
    if last_image is not None:
        cv2.imwrite(str(args.output / "tracks.png"), tracks_picture(last_image, stats.trails))
    print(f"weights: {summary['weights']}\nparameters: {params_file}")
    print(format_summary(summary))
    if baseline_runs:
        print("\nside by side (same frames, same front-end and parameters):\n")
        print(format_comparison({"superpoint": summary, **baseline_runs}))
    print(f"\nwrote {args.output / 'summary.json'}, per_frame.png, tracks.png"
          + (f"; output bag {args.output_bag}" if args.output_bag else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
