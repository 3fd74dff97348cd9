"""A reference monocular structure-from-motion back-end on GTSAM, fed exactly what a front-end outputs.

Input per frame: the keypoints' track IDs and their pixels (undistorted, xy). As
:mod:`.stereo_vo`: no descriptors, no images, no front-end-specific tuning; every front-end goes
through the same code and :class:`MonoConfig`. Meant for short sequences (tens of frames: every
step re-solves the whole problem), e.g. posed multi-view photo sets.

How it works (small on purpose):

- **Initialisation**: the first frame with tracks and the first later frame that shares
  ``min_init_inliers`` essential-matrix inliers with it
  (:func:`superpoint_ros.evaluation.pose.essential_pose_inliers`, MAGSAC++); the second camera
  is placed at distance 1 from the first (the monocular scale: the first baseline is the unit).
  Frames in between are not registered.
- **Registration** (every later frame): PnP RANSAC + Levenberg-Marquardt refinement (OpenCV) of its
  pixels against the landmarks of its tracks. Fewer than ``min_pnp_inliers`` inliers: the frame is
  *lost* (no pose; a later frame whose tracks still reach the map registers again).
- **Triangulation**: a track without a landmark, seen by a registered frame before, is
  triangulated from its first registered observation and the newest one (DLT) once the rays
  part by ``min_parallax_deg``, lie in front of both cameras and reproject within
  ``max_reprojection_px``.
- **Bundle adjustment** (after every registered frame and at the end): every registered pose and
  landmark, one ``GenericProjectionFactorCal3_S2`` per observation with a robust noise model
  (Huber by default), Levenberg-Marquardt. Gauge: a prior fixes the first pose, a range factor
  keeps the first baseline at 1. Observations that reproject beyond ``max_reprojection_px``
  afterwards leave the problem (landmarks with fewer than two left are dropped).

Poses are camera (optical frame: x right, y down, z forward) -> world; the world is the first
camera's frame, in units of the first baseline. Score them with a Sim(3) alignment.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import cv2
import numpy as np

from .pose import essential_pose_inliers
from .stereo_vo import SlamError, VOTrajectory, _pnp_from_pose, _pose_from_pnp, robust_noise


@dataclass
class MonoConfig:
    """The back-end's parameters: the same for every front-end."""

    pixel_sigma: float = 1.0            # px, measurement noise
    robust_kernel: str = "huber"        # huber | cauchy | none
    robust_threshold: float = 1.345     # in sigmas
    essential_threshold_px: float = 1.0  # MAGSAC++ threshold of the initial pair
    min_init_inliers: int = 30
    min_parallax_deg: float = 1.0       # between the two rays of a new landmark
    max_reprojection_px: float = 4.0    # gate of new landmarks and of observations after each adjustment
    min_pnp_inliers: int = 12
    pnp_threshold_px: float = 2.0
    pnp_iterations: int = 200
    ba_iterations: int = 30

    def validate(self) -> "MonoConfig":
        if self.robust_kernel not in ("huber", "cauchy", "none"):
            raise ValueError(f"robust_kernel must be huber, cauchy or none, got {self.robust_kernel!r}")
        if min(self.pixel_sigma, self.robust_threshold, self.pnp_threshold_px, self.max_reprojection_px,
               self.essential_threshold_px) <= 0:
            raise ValueError("pixel_sigma, robust_threshold and the pixel thresholds must be > 0")
        if self.min_init_inliers < 5 or self.min_pnp_inliers < 4:
            raise ValueError("min_init_inliers must be >= 5 and min_pnp_inliers >= 4")
        return self


def _world_to_camera(pose) -> np.ndarray:
    """``(3, 4)`` [R_cw | t_cw] of a camera -> world gtsam Pose3."""
    R_wc, c = pose.rotation().matrix(), pose.translation()
    return np.hstack([R_wc.T, (-R_wc.T @ c).reshape(3, 1)])


class MonoVO:
    """Feed :meth:`add_frame` once per frame in time order, then call :meth:`finish`."""

    def __init__(self, K: np.ndarray, config: Optional[MonoConfig] = None):
        import gtsam  # optional heavy dependency (the slam extra): imported on use

        self.gtsam = gtsam
        self.config = (config or MonoConfig()).validate()
        self.K_matrix = np.asarray(K, np.float64).reshape(3, 3)
        k = self.K_matrix
        self.K = gtsam.Cal3_S2(k[0, 0], k[1, 1], k[0, 1], k[0, 2], k[1, 2])
        self.noise = robust_noise(2, self.config.pixel_sigma, self.config.robust_kernel, self.config.robust_threshold)
        self.observations: List[Dict[int, np.ndarray]] = []   # per frame: track id -> xy (px)
        self.stamps_ns: List[int] = []
        self.poses: Dict[int, object] = {}                     # frame index -> gtsam Pose3 (camera -> world)
        self.landmarks: Dict[int, np.ndarray] = {}             # track id -> world xyz
        self.rejected: set = set()                             # (frame index, track id) gated out
        self.first_pair: Optional[Tuple[int, int]] = None
        self.counts = {"frames": 0, "lost": 0, "gated": 0, "init_inliers": 0}

    # --- per frame --------------------------------------------------------------------------------
    def add_frame(self, stamp_ns: int, track_ids: np.ndarray, xy: np.ndarray) -> bool:
        """One frame's tracks: ``track_ids`` ``(K,)`` int, ``xy`` ``(K, 2)`` undistorted pixels.
        Returns whether the frame has a pose (registered)."""
        ids = np.asarray(track_ids, np.int64).reshape(-1)
        xy = np.asarray(xy, np.float64).reshape(-1, 2)
        if len(ids) != len(xy):
            raise ValueError(f"track_ids and xy differ in length: {len(ids)}, {len(xy)}")
        finite = np.all(np.isfinite(xy), axis=1)
        ids, xy = ids[finite], xy[finite]
        _, first = np.unique(ids, return_index=True)  # one observation per track
        frame = len(self.observations)
        self.observations.append(dict(zip(ids[first].tolist(), xy[first])))
        self.stamps_ns.append(int(stamp_ns))
        self.counts["frames"] += 1
        if self.first_pair is None:
            return self._initialise(frame)
        if not self._register(frame):
            self.counts["lost"] += 1
            return False
        self._triangulate(frame)
        self._adjust()
        return True

    def _initialise(self, frame: int) -> bool:
        """Tries the first frame against ``frame``; on success both are posed and the map starts."""
        if frame == 0:
            return False
        first, second = self.observations[0], self.observations[frame]
        shared = sorted(set(first) & set(second))
        if len(shared) < self.config.min_init_inliers:
            return False
        p0 = np.array([first[i] for i in shared])
        p1 = np.array([second[i] for i in shared])
        estimate = essential_pose_inliers(p0, p1, self.K_matrix, self.config.essential_threshold_px)
        if estimate is None or estimate[2].sum() < self.config.min_init_inliers:
            return False
        R, t, _ = estimate  # x1 = R x0 + t, |t| = 1
        gtsam = self.gtsam
        self.poses[0] = gtsam.Pose3()
        self.poses[frame] = gtsam.Pose3(gtsam.Rot3(R.T), -R.T @ t)
        self.first_pair = (0, frame)
        self._triangulate(frame)
        if len(self.landmarks) < self.config.min_init_inliers:  # too little parallax: try a later frame
            self.poses.pop(frame)
            self.landmarks.clear()
            self.first_pair = None
            return False
        self.counts["init_inliers"] = int(estimate[2].sum())
        self._adjust()
        return True

    def _register(self, frame: int) -> bool:
        """PnP RANSAC + LM refinement of ``frame`` against the map."""
        seen = self.observations[frame]
        known = [i for i in seen if i in self.landmarks]
        if len(known) < self.config.min_pnp_inliers:
            return False
        objects = np.array([self.landmarks[i] for i in known], np.float64)
        pixels = np.ascontiguousarray([seen[i] for i in known], np.float64)
        previous = self.poses[max(self.poses)]
        rvec, tvec = _pnp_from_pose(previous)
        cv2.setRNGSeed(frame)  # the same input gives the same trajectory
        ok, rvec, tvec, inliers = cv2.solvePnPRansac(
            objects, pixels, self.K_matrix, None, rvec, tvec, useExtrinsicGuess=True,
            iterationsCount=self.config.pnp_iterations, reprojectionError=self.config.pnp_threshold_px,
            confidence=0.999, flags=cv2.SOLVEPNP_EPNP)
        if not ok or inliers is None or len(inliers) < self.config.min_pnp_inliers:
            return False
        inliers = inliers.reshape(-1)
        rvec, tvec = cv2.solvePnPRefineLM(objects[inliers], pixels[inliers], self.K_matrix, None, rvec, tvec)
        self.poses[frame] = _pose_from_pnp(rvec, tvec)
        outliers = set(known) - {known[i] for i in inliers.tolist()}
        self.rejected.update((frame, i) for i in outliers)
        return True

    # --- map --------------------------------------------------------------------------------------
    def _triangulate(self, frame: int) -> None:
        """New landmarks for ``frame``'s tracks from their first registered observation."""
        config = self.config
        candidates: Dict[int, List[int]] = {}  # earlier registered frame -> track ids first seen there
        for track_id in self.observations[frame]:
            if track_id in self.landmarks:
                continue
            first = next((f for f in sorted(self.poses) if f < frame and track_id in self.observations[f]), None)
            if first is not None:
                candidates.setdefault(first, []).append(track_id)
        P1 = self.K_matrix @ _world_to_camera(self.poses[frame])
        for first, ids in candidates.items():
            P0 = self.K_matrix @ _world_to_camera(self.poses[first])
            x0 = np.array([self.observations[first][i] for i in ids])
            x1 = np.array([self.observations[frame][i] for i in ids])
            homogeneous = cv2.triangulatePoints(P0, P1, x0.T, x1.T)
            with np.errstate(divide="ignore", invalid="ignore"):
                points = (homogeneous[:3] / homogeneous[3]).T
            keep = np.all(np.isfinite(points), axis=1)
            for P, x, pose in ((P0, x0, self.poses[first]), (P1, x1, self.poses[frame])):
                projected = np.column_stack([points, np.ones(len(points))]) @ P.T
                with np.errstate(divide="ignore", invalid="ignore"):
                    error = np.linalg.norm(projected[:, :2] / projected[:, 2:] - x, axis=1)
                keep &= (projected[:, 2] > 0) & (error <= config.max_reprojection_px)
            rays0 = points - self.poses[first].translation()
            rays1 = points - self.poses[frame].translation()
            with np.errstate(divide="ignore", invalid="ignore"):
                cos = np.sum(rays0 * rays1, axis=1) / (np.linalg.norm(rays0, axis=1) * np.linalg.norm(rays1, axis=1))
            keep &= np.degrees(np.arccos(np.clip(cos, -1, 1))) >= config.min_parallax_deg
            for track_id, point in zip(np.asarray(ids)[keep].tolist(), points[keep]):
                self.landmarks[track_id] = point

    def _adjust(self) -> None:
        """Bundle adjustment of every registered pose and landmark, then the outlier gate."""
        gtsam = self.gtsam
        X, L = gtsam.symbol_shorthand.X, gtsam.symbol_shorthand.L
        graph, values = gtsam.NonlinearFactorGraph(), gtsam.Values()
        first, second = self.first_pair
        graph.add(gtsam.PriorFactorPose3(X(first), self.poses[first], gtsam.noiseModel.Isotropic.Sigma(6, 1e-6)))
        graph.add(gtsam.RangeFactorPose3(X(first), X(second), 1.0, gtsam.noiseModel.Isotropic.Sigma(1, 1e-6)))
        for frame, pose in self.poses.items():
            values.insert(X(frame), pose)
        used = set()
        for frame in self.poses:
            for track_id, xy in self.observations[frame].items():
                if track_id in self.landmarks and (frame, track_id) not in self.rejected:
                    graph.add(gtsam.GenericProjectionFactorCal3_S2(gtsam.Point2(*xy), self.noise, X(frame),
                                                                   L(track_id), self.K))
                    used.add(track_id)
        for track_id in used:
            values.insert(L(track_id), self.landmarks[track_id])
        params = gtsam.LevenbergMarquardtParams()
        params.setMaxIterations(self.config.ba_iterations)
        try:
            result = gtsam.LevenbergMarquardtOptimizer(graph, values, params).optimize()
        except RuntimeError as e:  # an indeterminate system: report, never a traceback
            raise SlamError(f"bundle adjustment failed ({len(self.poses)} poses, {len(used)} landmarks): {e}") from None
        for frame in self.poses:
            self.poses[frame] = result.atPose3(X(frame))
        self.landmarks = {i: np.asarray(result.atPoint3(L(i)), np.float64).reshape(3) for i in used}
        self._gate()

    def _gate(self) -> None:
        """Observations reprojecting beyond ``max_reprojection_px`` (or behind the camera) leave the
        problem; landmarks with fewer than two observations left are dropped."""
        support: Dict[int, int] = {}
        for frame, pose in self.poses.items():
            P = self.K_matrix @ _world_to_camera(pose)
            for track_id, xy in self.observations[frame].items():
                if track_id not in self.landmarks or (frame, track_id) in self.rejected:
                    continue
                projected = P @ np.append(self.landmarks[track_id], 1.0)
                gate = self.config.max_reprojection_px
                if projected[2] <= 0 or np.linalg.norm(projected[:2] / projected[2] - xy) > gate:
                    self.rejected.add((frame, track_id))
                    self.counts["gated"] += 1
                else:
                    support[track_id] = support.get(track_id, 0) + 1
        self.landmarks = {i: p for i, p in self.landmarks.items() if support.get(i, 0) >= 2}

    # --- result -----------------------------------------------------------------------------------
    def finish(self) -> VOTrajectory:
        """Every registered frame's pose (in frame order)."""
        if self.first_pair is None:
            best = max((len(set(self.observations[0]) & set(o)) for o in self.observations[1:]), default=0)
            raise SlamError(f"initialisation failed: no frame of {self.counts['frames']} shares "
                            f"{self.config.min_init_inliers} well-triangulated essential-matrix inliers with the first "
                            f"(the best shares {best} tracks with it)")
        frames = sorted(self.poses)
        observations = sum(1 for f in frames for i in self.observations[f]
                           if i in self.landmarks and (f, i) not in self.rejected)
        stats = {**self.counts, "registered": len(frames), "keyframes": len(frames),
                 "first_pair": list(self.first_pair), "landmarks": len(self.landmarks),
                 "observations_per_landmark": observations / max(len(self.landmarks), 1)}
        poses = [self.poses[f] for f in frames]
        return VOTrajectory(np.array([self.stamps_ns[f] for f in frames], np.int64),
                            np.array([p.rotation().matrix() for p in poses]).reshape(-1, 3, 3),
                            np.array([p.translation() for p in poses]).reshape(-1, 3),
                            np.ones(len(frames), bool), stats)


def mono_observations(result) -> Tuple[np.ndarray, np.ndarray]:
    """A :class:`superpoint_ros.frontend.FrameResult` -> ``(track_ids (K,), xy (K, 2))``."""
    return (np.asarray(result.track_ids, np.int64).reshape(-1),
            np.asarray(result.features.keypoints, np.float64).reshape(-1, 2))
