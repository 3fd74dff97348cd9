"""Per-frame statistics of a front-end run and their summary (``superpoint-eval-bag``, ``superpoint-demo``).

A :class:`FrameRecord` is what one frame produced, whatever produced it (a
:class:`superpoint_ros.frontend.FrameResult` via :func:`record_from_result`, or the node's decoded
messages in the demo); :class:`BagStats` accumulates records into the per-frame table, the track
statistics and the summary, with the ground-truth pose metrics of :mod:`.pose` when intrinsics
and a trajectory are given.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..camera_models import CameraModel, rectify_points
from .pose import Trajectory, epipolar_distances, pose_errors, relative_pose


@dataclass
class FrameRecord:
    """What one frame of the front-end produced, independent of where it came from.

    ``keypoints`` ``(N, 2)`` xy px; ``track_ids`` / ``track_lengths`` ``(N,)``; ``temporal_indices``
    ``(M, 2)`` (previous idx, current idx) into the frame stamped ``previous_stamp_ns`` (None on
    the first frame after a reset); ``temporal_inliers`` ``(M,)`` bool; ``stereo_left`` /
    ``stereo_right`` ``(K, 2)`` matched xy px (None for mono); ``time_ms``: per stage;
    ``rectified``: ``(N, 2)`` xy px of the keypoints in the rectified camera the ground truth and
    K describe, for a raw (distorted or unrectified) camera (NaN where a point cannot be mapped;
    None: ``keypoints`` are rectified already). Stereo points of a raw pair are rectified too.
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
    rectified: Optional[np.ndarray] = None

    @property
    def geometry_keypoints(self) -> np.ndarray:
        """``(N, 2)`` xy px in the rectified camera: what the pose metrics measure."""
        return self.keypoints if self.rectified is None else self.rectified


def is_raw_camera(camera: Optional[CameraModel]) -> bool:
    """Whether pixels of ``camera`` differ from those of its rectified camera ``P`` (distortion,
    a rectification rotation, or other intrinsics): then keypoints must be rectified before
    they are compared with a ground truth that ``P[:3, :3]`` projects."""
    if camera is None:
        return False
    return camera.is_distorted or not np.array_equal(camera.R, np.eye(3)) or (
        camera.P is not None and not np.array_equal(camera.P[:, :3], camera.K))


def _rectified(camera: Optional[CameraModel], xy: np.ndarray) -> Optional[np.ndarray]:
    return rectify_points(camera, xy) if is_raw_camera(camera) and camera.P is not None else None


def record_from_result(result, camera: Optional[CameraModel] = None,
                       right_camera: Optional[CameraModel] = None) -> FrameRecord:
    """A :class:`superpoint_ros.frontend.FrameResult` -> :class:`FrameRecord` (its stamps: the
    result's ``stamp_ns`` and ``temporal.previous_stamp_ns``). ``camera`` / ``right_camera``: the
    frame's camera models; raw ones give the record rectified points (:func:`is_raw_camera`)."""
    temporal = result.temporal
    rectified = _rectified(camera, result.features.keypoints)
    stereo_left = stereo_right = None
    if result.stereo is not None:
        idx = result.stereo.indices
        stereo_left = (result.features.keypoints if rectified is None else rectified)[idx[:, 0]]
        right = result.right_features.keypoints
        right_rectified = _rectified(right_camera, right)
        stereo_right = (right if right_rectified is None else right_rectified)[idx[:, 1]]
    return FrameRecord(
        result.stamp_ns, result.features.keypoints, result.track_ids, result.track_lengths,
        None if temporal is None else temporal.indices, None if temporal is None else temporal.inliers,
        True if temporal is None else bool(temporal.verified), None if temporal is None else temporal.previous_stamp_ns,
        stereo_left, stereo_right, dict(result.timings), rectified)


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
        for track_id, length, xy, geometry_xy in zip(
                np.asarray(record.track_ids).tolist(), np.asarray(record.track_lengths).tolist(),
                np.asarray(record.keypoints), np.asarray(record.geometry_keypoints)):
            self.track_length[track_id] = max(length, self.track_length.get(track_id, 0))
            observation = (int(record.stamp_ns), float(geometry_xy[0]), float(geometry_xy[1]))
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
        p0, p1 = previous.geometry_keypoints[idx[:, 0]], record.geometry_keypoints[idx[:, 1]]
        finite = np.all(np.isfinite(p0), axis=1) & np.all(np.isfinite(p1), axis=1)
        if not finite.all():  # raw points outside the camera model's valid region
            p0, p1 = p0[finite], p1[finite]
            if len(p0) == 0:
                return
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
            if not np.all(np.isfinite((x0, y0, x1, y1))):
                continue  # a raw point outside the camera model's valid region
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

