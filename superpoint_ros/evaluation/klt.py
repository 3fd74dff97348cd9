"""A VINS-style optical-flow front-end, the classical tracker SLAM users compare against.

What VINS-Mono / VINS-Fusion's feature tracker does (described in their papers and docs; no code
of theirs is used): optional CLAHE equalisation of each image, Shi-Tomasi corners kept at least
``min_distance`` px apart, tracked frame to frame with pyramidal Lucas-Kanade, a forward-backward
consistency check, outliers removed with a fundamental-matrix RANSAC (and not tracked further),
new corners added away from the surviving tracks up to a budget; for a stereo pair the left
corners are tracked into the right image with the same flow.

:class:`KLTFrontend` returns the package's :class:`superpoint_ros.frontend.FrameResult`, so
``superpoint-eval-bag --baselines klt`` scores it with exactly the statistics and ground truth
used for SuperPoint. Shared parameters (from the node's parameter file): ``extractor.max_keypoints``
(the corner budget), ``extractor.remove_borders``, all ``ransac.*``, ``stereo.epipolar_tolerance``,
``stereo.min/max_disparity``, ``tracking.max_time_gap``. Camera models (:meth:`KLTFrontend.set_cameras`)
are accepted and ignored: the baseline tracks and verifies in pixels. There are no descriptors: the feature
descriptors are ``(N, 0)`` and match distances are the forward-backward errors in px.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Tuple

import cv2
import numpy as np

from ..camera_models import CameraModel, same_camera
from ..extractor import Features
from ..flow import flow_forward_backward
from ..frontend import FrameResult, StereoMatches, TemporalMatches, continuity_break
from ..image import to_grayscale_uint8
from ..geometry import MIN_POINTS, ransac_inliers
from ..params import frontend_conf, validate
from ..stamps import check_stamp_ns, stamp_ns_from_seconds

default_conf = {
    "min_distance": 10,         # px between corners (VINS uses 30 px for 150 corners at 752x480)
    "quality_level": 0.01,      # Shi-Tomasi: fraction of the best corner's response
    "window": 21,               # px, Lucas-Kanade window side
    "pyramid_levels": 3,
    "max_flow_back_error": 0.5,  # px, forward-backward consistency
    "equalize": True,           # CLAHE (clip 3, 8x8 tiles) before tracking, as VINS does by default
}


def pixel_model(model: str) -> str:
    """The pixel RANSAC model this baseline verifies with: ``ransac.model`` when it is one
    (fundamental, homography), else the fundamental matrix (models on normalised coordinates need
    the intrinsics the baseline ignores)."""
    return model if model in MIN_POINTS else "fundamental"



@dataclass
class _Previous:
    image: np.ndarray
    points: np.ndarray          # (N, 2) float32 xy px
    track_ids: np.ndarray       # (N,) int64
    track_lengths: np.ndarray   # (N,) int32
    alive: np.ndarray           # (N,) bool: tracked on into the next frame (RANSAC outliers are not)
    stamp_ns: int
    frame_id: str


class KLTFrontend:
    """Shi-Tomasi + pyramidal Lucas-Kanade tracking with the node front-end's interface
    (``process_mono``, ``process_stereo``, ``params``, ``conf``, ``weights_path``).

    ``params``: the node's flat parameters (any subset; read through
    :func:`superpoint_ros.params.frontend_conf` like the Frontend's); ``conf``: KLT options
    (:data:`default_conf`)."""

    #: what produced the features, for the evaluator's reports (the Frontend's is its weight file)
    weights_path = "opencv-klt"

    def __init__(self, params: Optional[Mapping[str, Any]] = None, conf: Optional[Mapping[str, Any]] = None):
        self.params = validate(params or {})
        self.conf = frontend_conf(self.params)
        unknown = set(conf or {}) - set(default_conf)
        if unknown:
            raise ValueError(f"unknown KLT options: {sorted(unknown)}")
        self.klt = {**default_conf, **(conf or {})}
        self._clahe = cv2.createCLAHE(clipLimit=3.0, tileGridSize=(8, 8)) if self.klt["equalize"] else None
        self._previous: Optional[_Previous] = None
        self._next_id = 0
        #: the camera models of :meth:`set_cameras` (kept for reports; the tracker stays in pixels)
        self.cameras: Tuple[Optional[CameraModel], Optional[CameraModel]] = (None, None)

    def set_cameras(self, left: Optional[CameraModel], right: Optional[CameraModel] = None) -> Optional[str]:
        """The Frontend's interface: set or clear the intrinsics. This baseline ignores them for
        tracking and verification (pixel Lucas-Kanade, the pixel RANSAC of ``ransac.*``, rectified
        stereo rows): it measures the classical tracker as configured, not a camera-aware one.
        Like the Frontend, a change of calibration resets the tracks; returns the reason then."""
        changed = not all(same_camera(new, old) for new, old in zip((left, right), self.cameras))
        self.cameras = (left, right)
        if not changed or self._previous is None:
            return None
        self._previous = None
        return "camera calibration changed"

    # --- the two entry points ----------------------------------------------------------------------
    def process_mono(self, image: np.ndarray, stamp_ns: int, frame_id: str) -> FrameResult:
        return self._process(self._prepare(image), None, check_stamp_ns(stamp_ns), frame_id)

    def process_stereo(self, left: np.ndarray, right: np.ndarray, stamp_ns: int, frame_id: str) -> FrameResult:
        if np.shape(left)[:2] != np.shape(right)[:2]:
            raise ValueError(f"stereo images differ in size: {np.shape(left)} vs {np.shape(right)}")
        return self._process(self._prepare(left), self._prepare(right), check_stamp_ns(stamp_ns), frame_id)

    def _prepare(self, image: np.ndarray) -> np.ndarray:
        gray = to_grayscale_uint8(image)
        return self._clahe.apply(gray) if self._clahe is not None else gray

    # --- steps -------------------------------------------------------------------------------------
    def _track(self, image0: np.ndarray, image1: np.ndarray,
               points: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Points of ``image0`` followed into ``image1``: ``(moved (N, 2), ok (N,), back_error (N,))``;
        ``ok`` also requires the forward-backward limit and the point inside the border."""
        moved, ok, error = flow_forward_backward(image0, image1, points, None, self.klt["window"],
                                                 self.klt["pyramid_levels"])
        h, w = image1.shape
        border = self.conf.detector.remove_borders
        ok &= ((error <= self.klt["max_flow_back_error"]) & (moved[:, 0] >= border) & (moved[:, 0] <= w - 1 - border)
               & (moved[:, 1] >= border) & (moved[:, 1] <= h - 1 - border))
        return moved, ok, error

    def _new_corners(self, image: np.ndarray, existing: np.ndarray, budget_used: int) -> np.ndarray:
        """Shi-Tomasi corners at least ``min_distance`` px from each other and from ``existing``,
        at most ``extractor.max_keypoints - budget_used`` of them."""
        budget = self.conf.detector.max_keypoints
        budget = 100000 if budget is None else int(budget)
        wanted = budget - budget_used
        if wanted <= 0:
            return np.zeros((0, 2), np.float32)
        distance = int(self.klt["min_distance"])
        mask = np.zeros_like(image)
        border = max(int(self.conf.detector.remove_borders), 1)
        mask[border:-border, border:-border] = 255
        for x, y in np.round(existing).astype(int):
            cv2.circle(mask, (int(x), int(y)), distance, 0, -1)
        corners = cv2.goodFeaturesToTrack(image, wanted, self.klt["quality_level"], distance, mask=mask)
        return np.zeros((0, 2), np.float32) if corners is None else corners.reshape(-1, 2).astype(np.float32)

    def _process(self, image: np.ndarray, right: Optional[np.ndarray], stamp_ns: int, frame_id: str) -> FrameResult:
        conf, timings = self.conf, {}
        start = time.perf_counter()
        previous = self._previous
        reset_reason = None if previous is None else continuity_break(
            previous.stamp_ns, previous.frame_id, stamp_ns, frame_id,
            stamp_ns_from_seconds(self.conf.tracking.max_time_gap))
        if reset_reason:
            self._previous = None
        previous, temporal = self._previous, None
        kept_points = np.zeros((0, 2), np.float32)
        kept_ids, kept_lengths = np.zeros(0, np.int64), np.zeros(0, np.int32)
        alive = np.zeros(0, bool)
        if previous is not None:
            moved, ok, error = self._track(previous.image, image, previous.points)
            source = np.flatnonzero(ok & previous.alive)
            inliers, verified, model = np.ones(len(source), bool), False, None
            ransac = conf.ransac
            if ransac.enabled and len(source):
                geometry = ransac_inliers(previous.points[source], moved[source], pixel_model(ransac.model),
                                          ransac.method, ransac.threshold, ransac.confidence,
                                          ransac.max_iterations, ransac.min_matches)
                inliers, verified, model = geometry.inliers, geometry.verified, geometry.model
            # the tracked points come first in this frame, in the order of ``source``
            indices = np.stack([source, np.arange(len(source))], axis=1).astype(np.int64).reshape(-1, 2)
            temporal = TemporalMatches(indices, error[source], inliers, previous.stamp_ns, previous.frame_id,
                                       verified, model)
            # an outlier is still a point of this frame (the matches refer to it), but as VINS does,
            # it is not tracked any further: a one-frame track, and new corners may take its place
            kept_points = moved[source]
            kept_ids = np.where(inliers, previous.track_ids[source], -1)
            kept_lengths = np.where(inliers, previous.track_lengths[source] + 1, 1).astype(np.int32)
            alive = inliers.copy()
        timings["temporal_match"] = (time.perf_counter() - start) * 1e3
        start = time.perf_counter()
        fresh = self._new_corners(image, kept_points[alive], budget_used=len(kept_points))
        points = np.concatenate([kept_points, fresh]).astype(np.float32)
        alive = np.concatenate([alive, np.ones(len(fresh), bool)])
        track_ids = np.concatenate([kept_ids, np.full(len(fresh), -1, np.int64)])
        track_lengths = np.concatenate([kept_lengths, np.ones(len(fresh), np.int32)])
        new = track_ids < 0
        track_ids[new] = np.arange(self._next_id, self._next_id + int(new.sum()))
        self._next_id += int(new.sum())
        timings["extract"] = (time.perf_counter() - start) * 1e3
        features = Features(points, np.ones(len(points), np.float32), np.zeros((len(points), 0), np.float32),
                            image.shape[:2])
        right_features, stereo = None, None
        if right is not None:
            start = time.perf_counter()
            right_points, ok, error = self._track(image, right, points)
            disparity = points[:, 0] - right_points[:, 0]
            ok &= (np.abs(points[:, 1] - right_points[:, 1]) <= conf.stereo.epipolar_tolerance) & \
                (disparity >= conf.stereo.min_disparity) & (disparity <= conf.stereo.max_disparity)
            left_index = np.flatnonzero(ok)
            right_features = Features(right_points[left_index], np.ones(len(left_index), np.float32),
                                      np.zeros((len(left_index), 0), np.float32), right.shape[:2])
            pairs = np.stack([left_index, np.arange(len(left_index))], 1).astype(np.int64).reshape(-1, 2)
            stereo = StereoMatches(pairs, error[left_index], disparity[left_index].astype(np.float32))
            timings["stereo_match"] = (time.perf_counter() - start) * 1e3
        timings["total"] = sum(timings.values())
        self._previous = _Previous(image, points, track_ids, track_lengths, alive, stamp_ns, frame_id)
        return FrameResult(stamp_ns, frame_id, features, track_ids, track_lengths, temporal, right_features,
                           stereo, timings, reset_reason)
