"""A reference stereo visual-odometry back-end on GTSAM, fed exactly what a front-end outputs.

Input per frame: the left keypoints' track IDs, their rectified left pixels and the x of their
stereo match in the right image (a disparity). Nothing else: no descriptors, no images, no
front-end-specific tuning; every front-end goes through the same code and :class:`VOConfig`.

How it works (small on purpose: a reference, not a product SLAM):

- **Map**: a landmark per track ID, created at the first keyframe that sees it by stereo
  triangulation; it enters the factor graph once a second keyframe sees it (a single stereo view
  constrains only itself).
- **Tracking** (every frame): PnP RANSAC + Levenberg-Marquardt refinement (OpenCV) of the frame's
  left pixels against the landmarks of its tracks, from a constant-velocity guess. Fewer than
  ``min_pnp_inliers`` inliers: the frame is *lost*; its pose is the constant-velocity prediction and
  it becomes a keyframe (so the map restarts from its stereo points).
- **Keyframes**: when the tracked landmarks fall below ``keyframe_tracked_ratio`` of the last
  keyframe's stereo observations, after ``keyframe_max_interval`` frames, or when lost.
- **Mapping** (every keyframe): one ``GenericStereoFactor3D`` per stereo observation of a landmark
  in the graph, with a robust noise model (Huber by default: wrong associations pull with a
  bounded force), solved incrementally by ``ISAM2``. The first keyframe has a prior; a keyframe
  that shares fewer than ``min_shared_landmarks`` landmarks with the graph is tied to the previous
  keyframe by a weak between-factor of the tracked motion (the graph stays solvable).
- **Output**: keyframes at their final ISAM2 estimate; other frames at their tracked pose relative
  to their keyframe, composed with that keyframe's final estimate.

Poses are camera (optical frame: x right, y down, z forward) -> world, as GTSAM's ``Pose3`` of a
camera; the world is the first tracked frame's camera.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import cv2
import numpy as np


class SlamError(RuntimeError):
    """The back-end cannot produce a trajectory (e.g. too few stereo tracks)."""


@dataclass(frozen=True)
class StereoCalibration:
    """Rectified stereo camera: focal lengths and principal point (px), baseline (m)."""

    fx: float
    fy: float
    cx: float
    cy: float
    baseline_m: float

    def matrix(self) -> np.ndarray:
        return np.array([[self.fx, 0, self.cx], [0, self.fy, self.cy], [0, 0, 1]], np.float64)


@dataclass
class VOConfig:
    """The back-end's parameters: the same for every front-end."""

    pixel_sigma: float = 1.0            # px, stereo measurement noise (uL, uR, v)
    robust_kernel: str = "huber"        # huber | cauchy | none
    robust_threshold: float = 1.345     # in sigmas (Huber: quadratic below, linear above)
    outlier_gate_px: float = 5.0        # an observation this far (max of uL, uR, v) from its landmark's
                                        # projection at the tracked pose stays out of the graph
    min_disparity_px: float = 1.0       # closer to infinity than this: no depth, not used
    min_stereo_observations: int = 20   # to start (or restart) the map
    min_pnp_inliers: int = 12
    pnp_threshold_px: float = 2.0
    pnp_iterations: int = 100
    keyframe_tracked_ratio: float = 0.6
    keyframe_max_interval: int = 5
    min_shared_landmarks: int = 10
    weak_motion_sigmas: Tuple[float, float] = (0.1, 0.5)  # rad, m: between-factor when a keyframe is loosely tied
    relinearize_threshold: float = 0.01
    final_updates: int = 3              # extra ISAM2 iterations at the end

    def validate(self) -> "VOConfig":
        if self.robust_kernel not in ("huber", "cauchy", "none"):
            raise ValueError(f"robust_kernel must be huber, cauchy or none, got {self.robust_kernel!r}")
        if self.pixel_sigma <= 0 or self.robust_threshold <= 0 or self.pnp_threshold_px <= 0:
            raise ValueError("pixel_sigma, robust_threshold and pnp_threshold_px must be > 0")
        if not 0 < self.keyframe_tracked_ratio <= 1 or self.keyframe_max_interval < 1:
            raise ValueError("keyframe_tracked_ratio must be in (0, 1], keyframe_max_interval >= 1")
        return self


@dataclass
class VOTrajectory:
    """The estimate: ``stamps_ns`` ``(P,)`` int64, ``rotations`` ``(P, 3, 3)``, ``positions`` ``(P, 3)``
    (camera -> world), ``keyframe`` ``(P,)`` bool, and what the back-end did."""

    stamps_ns: np.ndarray
    rotations: np.ndarray
    positions: np.ndarray
    keyframe: np.ndarray
    stats: Dict[str, float] = field(default_factory=dict)


@dataclass
class _FramePose:
    stamp_ns: int
    keyframe_index: int
    keyframe_T_frame: object  # gtsam.Pose3
    is_keyframe: bool = False


def robust_noise(dimension: int, sigma_px: float, kernel: str, threshold_sigmas: float):
    """An isotropic ``sigma_px`` pixel noise model, wrapped in a Huber or Cauchy kernel (``kernel``
    ``huber | cauchy | none``; ``threshold_sigmas`` where the kernel stops being quadratic)."""
    import gtsam  # optional heavy dependency (the slam extra): imported on use

    nm = gtsam.noiseModel
    gaussian = nm.Isotropic.Sigma(dimension, sigma_px)
    if kernel == "none":
        return gaussian
    estimator = nm.mEstimator.Huber if kernel == "huber" else nm.mEstimator.Cauchy
    return nm.Robust.Create(estimator.Create(threshold_sigmas), gaussian)


def _pose_from_pnp(rvec: np.ndarray, tvec: np.ndarray):
    """OpenCV's world -> camera (rvec, tvec) -> gtsam Pose3 camera -> world."""
    import gtsam  # optional heavy dependency (the slam extra): imported on use

    R, _ = cv2.Rodrigues(rvec)
    return gtsam.Pose3(gtsam.Rot3(R.T), -R.T @ tvec.reshape(3))


def _pnp_from_pose(pose) -> Tuple[np.ndarray, np.ndarray]:
    R_wc, c = pose.rotation().matrix(), pose.translation()
    rvec, _ = cv2.Rodrigues(R_wc.T)
    return rvec, (-R_wc.T @ c).reshape(3, 1)


class StereoVO:
    """Feed :meth:`add_frame` once per stereo frame in time order, then call :meth:`finish`."""

    def __init__(self, calibration: StereoCalibration, config: Optional[VOConfig] = None):
        import gtsam  # optional heavy dependency (the slam extra): imported on use

        self.gtsam = gtsam
        self.calibration, self.config = calibration, (config or VOConfig()).validate()
        c = calibration
        self.K = gtsam.Cal3_S2Stereo(c.fx, c.fy, 0.0, c.cx, c.cy, c.baseline_m)
        self.K_matrix = c.matrix()
        params = gtsam.ISAM2Params()
        params.setRelinearizeThreshold(self.config.relinearize_threshold)
        params.relinearizeSkip = 1
        # Dogleg (a trust region) rather than Gauss-Newton: a landmark pulled by a wrong
        # association must not jump behind the camera in one step
        params.setOptimizationParams(gtsam.ISAM2DoglegParams())
        self.isam = gtsam.ISAM2(params)
        self.noise = robust_noise(3, self.config.pixel_sigma, self.config.robust_kernel, self.config.robust_threshold)
        self.landmarks: Dict[int, np.ndarray] = {}      # track id -> world xyz (m)
        self.in_graph: set = set()
        # seen by one keyframe only: track id -> (keyframe index, its StereoPoint2, xyz in that camera (m))
        self.pending: Dict[int, Tuple[int, object, np.ndarray]] = {}
        self.keyframe_poses: List[object] = []          # latest estimate per keyframe
        self.frames: List[_FramePose] = []
        self.last_pose = None
        self.velocity = gtsam.Pose3()
        self.reference_count = 0
        self.frames_since_keyframe = 0
        # what the back-end did (summary.json): frames, frames before the map started, lost frames,
        # factors (all / stereo), stereo observations given, PnP inliers, observations gated out
        self.counts = {"frames": 0, "skipped_before_start": 0, "lost": 0, "factors": 0, "stereo_factors": 0,
                       "stereo_observations": 0, "tracked": 0, "gated": 0}
        self.best_stereo_count = 0

    # --- per frame --------------------------------------------------------------------------------
    def add_frame(self, stamp_ns: int, track_ids: np.ndarray, left_xy: np.ndarray, right_x: np.ndarray) -> bool:
        """One frame's stereo tracks: ``track_ids`` ``(K,)`` int, ``left_xy`` ``(K, 2)`` rectified
        left pixels (xy), ``right_x`` ``(K,)`` the matched right x (px; same row). Returns whether
        the frame became a keyframe."""
        ids = np.asarray(track_ids, np.int64).reshape(-1)
        left = np.asarray(left_xy, np.float64).reshape(-1, 2)
        right = np.asarray(right_x, np.float64).reshape(-1)
        if not len(ids) == len(left) == len(right):
            raise ValueError(f"track_ids, left_xy and right_x differ in length: {len(ids)}, {len(left)}, {len(right)}")
        valid = (left[:, 0] - right >= self.config.min_disparity_px) & np.all(np.isfinite(left), axis=1)
        ids, left, right = ids[valid], left[valid], right[valid]
        _, first = np.unique(ids, return_index=True)  # one observation per track
        ids, left, right = ids[first], left[first], right[first]
        self.counts["frames"] += 1
        self.counts["stereo_observations"] += len(ids)
        self.best_stereo_count = max(self.best_stereo_count, len(ids))
        if self.last_pose is None:  # not started yet
            if len(ids) < self.config.min_stereo_observations:
                self.counts["skipped_before_start"] += 1
                return False
            self._add_keyframe(stamp_ns, self.gtsam.Pose3(), ids, left, right, lost=False)
            self.last_pose = self.keyframe_poses[-1]
            return True
        predicted = self.last_pose.compose(self.velocity)
        pose, inliers = self._track(predicted, ids, left)
        lost = pose is None
        if lost:
            pose, inliers = predicted, 0
            self.counts["lost"] += 1
        self.counts["tracked"] += inliers
        self.frames_since_keyframe += 1
        is_keyframe = (lost or inliers < self.config.keyframe_tracked_ratio * self.reference_count
                       or self.frames_since_keyframe >= self.config.keyframe_max_interval)
        if is_keyframe:
            pose = self._add_keyframe(stamp_ns, pose, ids, left, right, lost)
        else:
            keyframe = self.keyframe_poses[-1]
            self.frames.append(_FramePose(stamp_ns, len(self.keyframe_poses) - 1, keyframe.between(pose)))
        self.velocity = self.last_pose.between(pose)
        self.last_pose = pose
        return is_keyframe

    def _track(self, predicted, ids: np.ndarray, left: np.ndarray):
        """PnP RANSAC + LM refinement against the map: ``(Pose3 or None, inlier count)``."""
        known = np.array([i in self.landmarks for i in ids.tolist()], bool)
        if known.sum() < max(self.config.min_pnp_inliers, 4):
            return None, int(known.sum())
        objects = np.array([self.landmarks[i] for i in ids[known].tolist()], np.float64)
        pixels = np.ascontiguousarray(left[known])
        rvec, tvec = _pnp_from_pose(predicted)
        cv2.setRNGSeed(self.counts["frames"])  # the same input gives the same trajectory
        ok, rvec, tvec, inliers = cv2.solvePnPRansac(
            objects, pixels, self.K_matrix, None, rvec, tvec, useExtrinsicGuess=True,
            iterationsCount=self.config.pnp_iterations, reprojectionError=self.config.pnp_threshold_px,
            confidence=0.999, flags=cv2.SOLVEPNP_ITERATIVE)
        if not ok or inliers is None or len(inliers) < self.config.min_pnp_inliers:
            return None, 0 if inliers is None else len(inliers)
        inliers = inliers.reshape(-1)
        rvec, tvec = cv2.solvePnPRefineLM(objects[inliers], pixels[inliers], self.K_matrix, None, rvec, tvec)
        return _pose_from_pnp(rvec, tvec), len(inliers)

    # --- keyframes --------------------------------------------------------------------------------
    def _add_keyframe(self, stamp_ns: int, pose, ids: np.ndarray, left: np.ndarray, right: np.ndarray, lost: bool):
        """Adds a keyframe's factors and solves; returns its pose estimate."""
        gtsam = self.gtsam
        X, L = gtsam.symbol_shorthand.X, gtsam.symbol_shorthand.L
        k = len(self.keyframe_poses)
        graph, values = gtsam.NonlinearFactorGraph(), gtsam.Values()
        values.insert(X(k), pose)
        if k == 0:
            graph.add(gtsam.PriorFactorPose3(X(0), pose, gtsam.noiseModel.Isotropic.Sigma(6, 1e-6)))
        camera = gtsam.StereoCamera(pose, self.K)
        shared = 0
        for track_id, (ul, v), ur in zip(ids.tolist(), left, right):
            measured = gtsam.StereoPoint2(ul, ur, v)
            if track_id in self.landmarks and not self._within_gate(camera, measured, self.landmarks[track_id]):
                self.counts["gated"] += 1
                continue
            if track_id in self.in_graph:
                graph.add(gtsam.GenericStereoFactor3D(measured, self.noise, X(k), L(track_id), self.K))
                self.counts["stereo_factors"] += 1
                shared += 1
            elif track_id in self.pending:
                first_k, first_measured, _ = self.pending.pop(track_id)
                values.insert(L(track_id), self.landmarks[track_id])
                graph.add(gtsam.GenericStereoFactor3D(first_measured, self.noise, X(first_k), L(track_id), self.K))
                graph.add(gtsam.GenericStereoFactor3D(measured, self.noise, X(k), L(track_id), self.K))
                self.in_graph.add(track_id)
                self.counts["stereo_factors"] += 2
                shared += 1
            else:  # a new landmark, triangulated from this keyframe's stereo pair
                world = np.asarray(camera.backproject(measured), np.float64).reshape(3)
                self.landmarks[track_id] = world
                self.pending[track_id] = (k, measured, np.asarray(pose.transformTo(world), np.float64).reshape(3))
        if k > 0 and (lost or shared < self.config.min_shared_landmarks):
            rotation_sigma, translation_sigma = self.config.weak_motion_sigmas
            sigmas = np.array([rotation_sigma] * 3 + [translation_sigma] * 3)
            graph.add(gtsam.BetweenFactorPose3(X(k - 1), X(k), self.keyframe_poses[-1].between(pose),
                                               gtsam.noiseModel.Diagonal.Sigmas(sigmas)))
        self.counts["factors"] += graph.size()
        try:
            self.isam.update(graph, values)
            estimate = self.isam.calculateEstimate()
        except RuntimeError as e:  # an indeterminate system: report, never a traceback
            raise SlamError(f"ISAM2 failed at keyframe {k} ({shared} landmarks shared with the map): {e}") from None
        self.keyframe_poses.append(estimate.atPose3(X(k)))
        self._refresh(estimate)
        self.frames.append(_FramePose(stamp_ns, k, gtsam.Pose3(), True))
        self.reference_count = len(ids)
        self.frames_since_keyframe = 0
        return self.keyframe_poses[-1]

    def _within_gate(self, camera, measured, landmark: np.ndarray) -> bool:
        """Whether a stereo observation is within ``outlier_gate_px`` of the landmark's projection."""
        in_camera = camera.pose().transformTo(landmark)
        if in_camera[2] <= 0:
            return False
        projected = camera.project(landmark)
        error = np.abs(np.array([projected.uL() - measured.uL(), projected.uR() - measured.uR(),
                                 projected.v() - measured.v()]))
        return bool(error.max() <= self.config.outlier_gate_px)

    def _refresh(self, estimate) -> None:
        """Copy the latest estimate into the keyframe poses and the map that tracking uses."""
        X, L = self.gtsam.symbol_shorthand.X, self.gtsam.symbol_shorthand.L
        for k in range(len(self.keyframe_poses)):
            self.keyframe_poses[k] = estimate.atPose3(X(k))
        for track_id in self.in_graph:
            self.landmarks[track_id] = estimate.atPoint3(L(track_id))
        for track_id, (k, _, in_camera) in self.pending.items():
            self.landmarks[track_id] = np.asarray(self.keyframe_poses[k].transformFrom(in_camera)).reshape(3)

    # --- result -----------------------------------------------------------------------------------
    def finish(self) -> VOTrajectory:
        """Final ISAM2 iterations; every tracked frame's pose."""
        if not self.keyframe_poses:
            raise SlamError(f"too few stereo tracks: the best of {self.counts['frames']} frames had "
                            f"{self.best_stereo_count} stereo observations with disparity >= "
                            f"{self.config.min_disparity_px:g} px; the back-end needs "
                            f"{self.config.min_stereo_observations} in one frame to start")
        for _ in range(self.config.final_updates):
            self.isam.update()
        self._refresh(self.isam.calculateEstimate())
        poses = [self.keyframe_poses[f.keyframe_index].compose(f.keyframe_T_frame) for f in self.frames]
        keyframe_count = len(self.keyframe_poses)
        stats = {**self.counts, "keyframes": keyframe_count, "landmarks_in_graph": len(self.in_graph),
                 "landmarks": len(self.landmarks),
                 "observations_per_landmark": self.counts["stereo_factors"] / max(len(self.in_graph), 1)}
        return VOTrajectory(np.array([f.stamp_ns for f in self.frames], np.int64),
                            np.array([p.rotation().matrix() for p in poses]).reshape(-1, 3, 3),
                            np.array([p.translation() for p in poses]).reshape(-1, 3),
                            np.array([f.is_keyframe for f in self.frames], bool), stats)


def stereo_observations(result) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A :class:`superpoint_ros.frontend.FrameResult` -> ``(track_ids (K,), left_xy (K, 2),
    right_x (K,))`` of its stereo-matched left keypoints (empty for a mono result)."""
    if result.stereo is None or result.right_features is None or len(result.stereo.indices) == 0:
        return np.zeros(0, np.int64), np.zeros((0, 2)), np.zeros(0)
    idx = np.asarray(result.stereo.indices)
    left = np.asarray(result.features.keypoints, np.float64)[idx[:, 0]]
    right = np.asarray(result.right_features.keypoints, np.float64)[idx[:, 1]]
    return np.asarray(result.track_ids, np.int64)[idx[:, 0]], left, right[:, 0]
