"""Ground-truth poses and relative-pose maths shared by the evaluation tools
(``superpoint-eval-bag``, ``superpoint-eval-posed``).

Conventions: poses are camera (optical frame: x right, y down, z forward) -> world, ``(R_wc, C_w)``;
a relative pose ``(R, t)`` maps camera-0 coordinates to camera-1 coordinates, ``x1 = R x0 + t``;
points are ``(N, 2)`` float xy pixels; ``K`` is the 3x3 intrinsic matrix.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple

import cv2
import numpy as np

NS = 1_000_000_000


@dataclass
class Trajectory:
    """Poses of a camera: ``stamps_ns`` ``(P,)`` int64 sorted, ``rotations`` ``(P, 3, 3)`` and
    ``positions`` ``(P, 3)``: camera (optical frame) -> world."""

    stamps_ns: np.ndarray
    rotations: np.ndarray
    positions: np.ndarray

    def lookup(self, stamp_ns: int, max_dt_ns: int) -> Optional[Tuple[np.ndarray, np.ndarray]]:
        """The pose nearest in time, or None when none is within ``max_dt_ns``."""
        if len(self.stamps_ns) == 0:
            return None
        i = int(np.searchsorted(self.stamps_ns, stamp_ns))
        best = min((j for j in (i - 1, i) if 0 <= j < len(self.stamps_ns)),
                   key=lambda j: abs(int(self.stamps_ns[j]) - stamp_ns))
        if abs(int(self.stamps_ns[best]) - stamp_ns) > max_dt_ns:
            return None
        return self.rotations[best], self.positions[best]


def _seconds_to_ns(text: str) -> int:
    """Exact decimal seconds -> integer ns (float parsing would lose the nanoseconds)."""
    whole, _, frac = text.partition(".")
    return int(whole) * NS + int((frac + "000000000")[:9]) * (-1 if text.startswith("-") else 1)


def read_tum(path: Path) -> Trajectory:
    """TUM RGB-D format: ``timestamp tx ty tz qx qy qz qw`` per line, ``#`` comments."""
    from scipy.spatial.transform import Rotation  # optional: scipy comes with scikit-image (the eval extra), not a pip requirement

    stamps, positions, quats = [], [], []
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.replace(",", " ").split()
        if len(parts) != 8:
            raise ValueError(f"{path}:{number}: expected 8 values (t tx ty tz qx qy qz qw), got {len(parts)}")
        try:
            values = [float(v) for v in parts[1:]]
            stamps.append(_seconds_to_ns(parts[0]))
        except ValueError:
            raise ValueError(f"{path}:{number}: not a number in {line!r}") from None
        positions.append(values[:3])
        quats.append(values[3:])
    if not stamps:
        raise ValueError(f"{path}: no poses")
    order = np.argsort(stamps, kind="stable")
    quats = np.asarray(quats)[order]
    if np.any(np.abs(np.linalg.norm(quats, axis=1) - 1) > 1e-3):
        raise ValueError(f"{path}: quaternions must have unit norm")
    return Trajectory(np.asarray(stamps, np.int64)[order], Rotation.from_quat(quats).as_matrix(),
                      np.asarray(positions, np.float64)[order])


def relative_pose(pose0, pose1) -> Tuple[np.ndarray, np.ndarray]:
    """``(R, t)`` with ``x1 = R x0 + t`` (camera-0 -> camera-1 coordinates) from two
    camera->world poses ``(R_wc, C_w)``."""
    (r0, c0), (r1, c1) = pose0, pose1
    return r1.T @ r0, r1.T @ (c0 - c1)


def rotation_angle_deg(rotation: np.ndarray) -> float:
    cos = (np.trace(rotation) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))


def direction_angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    cos = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-300))
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))


def essential_pose_inliers(points0: np.ndarray, points1: np.ndarray, K: np.ndarray, threshold_px: float = 1.0
                           ) -> Optional[Tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``(R, t unit, inliers)`` of camera 1 w.r.t. camera 0 (``x1 = R x0 + t``) from ``(M, 2)`` xy
    pixel correspondences via the essential matrix (OpenCV USAC MAGSAC++ with local optimisation and
    a final fit on all inliers, + cheirality), or None; ``inliers`` ``(M,)`` bool: the matches that
    fit the model within ``threshold_px`` and lie in front of both cameras. Plain RANSAC would return
    the best 5-point sample's model, whose error is dominated by which sample wins (any change in the
    point set reshuffles it). Reproducible without seeding: USAC keeps its own generator state,
    not OpenCV's global RNG (tested in test/test_backends.py)."""
    if len(points0) < 5:
        return None
    # USAC refuses non-contiguous arrays (the plain RANSAC path copied them)
    p0, p1 = (np.ascontiguousarray(p, np.float64).reshape(-1, 2) for p in (points0, points1))
    K = np.ascontiguousarray(K, np.float64)
    try:
        E, mask = cv2.findEssentialMat(p0, p1, K, cv2.USAC_MAGSAC, 0.999, threshold_px)
        if E is None or E.shape != (3, 3):
            return None
        _, R, t, mask = cv2.recoverPose(E, p0, p1, K, mask=mask)
    except cv2.error:
        return None
    return R, t.reshape(3), mask.reshape(-1) > 0


def essential_pose(points0: np.ndarray, points1: np.ndarray, K: np.ndarray, threshold_px: float = 1.0
                   ) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """``(R, t unit)`` of :func:`essential_pose_inliers` (without the inlier mask), or None."""
    estimate = essential_pose_inliers(points0, points1, K, threshold_px)
    return None if estimate is None else estimate[:2]


def pose_errors(points0, points1, K, gt_rotation, gt_translation, threshold_px=1.0) -> Optional[Dict[str, float]]:
    """Rotation error and translation-direction error (degrees) of the essential-matrix pose."""
    estimate = essential_pose(points0, points1, K, threshold_px)
    if estimate is None:
        return None
    R, t = estimate
    return {"rotation_error_deg": rotation_angle_deg(R.T @ gt_rotation),
            "translation_direction_error_deg": direction_angle_deg(t, gt_translation)}


def skew(v: np.ndarray) -> np.ndarray:
    return np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]], np.float64)


def epipolar_distances(points0: np.ndarray, points1: np.ndarray, K: np.ndarray, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """``(M,)`` symmetric point-to-epipolar-line distance (px) under the true relative pose."""
    K_inv = np.linalg.inv(K)
    F = K_inv.T @ skew(t) @ R @ K_inv
    h0 = np.hstack([points0, np.ones((len(points0), 1))])
    h1 = np.hstack([points1, np.ones((len(points1), 1))])
    lines1, lines0 = h0 @ F.T, h1 @ F  # epipolar lines in image 1 and image 0
    algebraic = np.abs(np.sum(h1 * lines1, axis=1))
    d1 = algebraic / (np.linalg.norm(lines1[:, :2], axis=1) + 1e-300)
    d0 = algebraic / (np.linalg.norm(lines0[:, :2], axis=1) + 1e-300)
    return 0.5 * (d0 + d1)
