"""The Frontend's cameras: which calibration applies to a frame, what a change of it means,
keypoint rectification of a raw stereo pair, and per-track image velocities.

ROS-free helpers of :class:`superpoint_ros.frontend.Frontend` (``set_cameras``); the camera
maths itself is :mod:`superpoint_ros.camera_models`'. Points are ``(N, 2)`` xy pixels in the
package's convention (integers at pixel centres) unless a name says normalised.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

from .camera_models import CameraModel, rectify_points, undistort_points


def _size_text(size_hw: Tuple[int, int]) -> str:
    return f"{size_hw[1]}x{size_hw[0]}"


def calibration_change(old: Optional[CameraModel], new: Optional[CameraModel], side: str) -> Optional[str]:
    """Why tracks must restart when camera ``old`` is replaced by ``new``: both known and not the
    same calibration (:meth:`CameraModel.same_calibration`), e.g. ``"left camera calibration
    changed (size 640x480 -> 1280x720 px, K)"``; else ``None``. A camera appearing or going away
    (``None`` on either side) is no change of intrinsics: keypoints stay in the same pixels."""
    if old is None or new is None or old.same_calibration(new):
        return None
    changed = []
    if old.image_size != new.image_size:
        changed.append(f"size {_size_text(old.image_size)} -> {_size_text(new.image_size)} px")
    for name in ("K", "R"):
        if not np.array_equal(getattr(old, name), getattr(new, name)):
            changed.append(name)
    if (old.distortion_model, old.D.tolist()) != (new.distortion_model, new.D.tolist()):
        changed.append(f"distortion {old.distortion_model or 'none'} -> {new.distortion_model or 'none'}"
                       if old.distortion_model != new.distortion_model else "D")
    if (old.P is None) != (new.P is None) or (old.P is not None and not np.array_equal(old.P, new.P)):
        changed.append("P")
    return f"{side} camera calibration changed ({', '.join(changed)})"


def size_mismatch(camera: Optional[CameraModel], image_size_hw: Tuple[int, int], side: str) -> Optional[str]:
    """Why ``camera`` cannot describe an image of ``image_size_hw`` (``(height, width)`` px): its
    CameraInfo is for another size (a resolution change whose camera_info has not arrived, or a
    wrong topic); ``None`` when it fits or there is no camera."""
    if camera is None or tuple(camera.image_size) == tuple(image_size_hw):
        return None
    return (f"{side} camera_info is for {_size_text(camera.image_size)} px but the image is "
            f"{_size_text(image_size_hw)} px (width x height)")


def is_rectified(camera: CameraModel) -> bool:
    """Whether ``camera``'s images already are its rectified images: no distortion, identity
    ``R`` and ``P``'s left 3x3 equal to ``K`` (or no ``P``), so :func:`rectify_points` would be
    the identity (what ``image_proc``'s ``image_rect`` topics and the sample bag publish)."""
    return (not camera.is_distorted and np.array_equal(camera.R, np.eye(3))
            and (camera.P is None or np.array_equal(camera.P[:, :3], camera.K)))


@dataclass(frozen=True)
class KeypointRectification:
    """A raw (distorted and/or unrectified) stereo pair whose *keypoints* are mapped into the
    rectified frame its CameraInfo ``R`` and ``P`` define, where matching points share a row."""

    left: CameraModel
    right: CameraModel

    @classmethod
    def needed(cls, left: Optional[CameraModel], right: Optional[CameraModel]) -> Optional["KeypointRectification"]:
        """The rectification of a raw pair: both cameras known with a ``P``, and at least one of
        them not rectified already (:func:`is_rectified`); ``None`` otherwise (rectified images,
        or no calibration to rectify with: the row-aligned match runs on the pixels as they are)."""
        if left is None or right is None or left.P is None or right.P is None:
            return None
        if is_rectified(left) and is_rectified(right):
            return None
        return cls(left, right)

    def left_points(self, xy: np.ndarray) -> np.ndarray:
        """Raw left keypoints ``(N, 2)`` px -> ``(N, 2)`` float32 rectified px (NaN where the
        camera model cannot map them: they never match)."""
        return rectify_points(self.left, xy).astype(np.float32)

    def right_points(self, xy: np.ndarray) -> np.ndarray:
        """As :meth:`left_points` for the right camera."""
        return rectify_points(self.right, xy).astype(np.float32)


def previous_rows(previous_ids: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """``(N,)`` int64: the row of each of ``ids`` in ``previous_ids`` (unique track ids of the
    previous frame), ``-1`` where the track was not in it (new, or re-found after a gap)."""
    previous_ids, ids = np.asarray(previous_ids, np.int64), np.asarray(ids, np.int64)
    rows = np.full(len(ids), -1, np.int64)
    if len(previous_ids) == 0 or len(ids) == 0:
        return rows
    order = np.argsort(previous_ids, kind="stable")
    where = np.clip(np.searchsorted(previous_ids[order], ids), 0, len(order) - 1)
    found = previous_ids[order[where]] == ids
    rows[found] = order[where[found]]
    return rows


def track_velocities(rows: np.ndarray, previous_points: np.ndarray, points: np.ndarray, dt_ns: int) -> np.ndarray:
    """``(N, 2)`` float32 velocity of each point over ``dt_ns`` (int, > 0) nanoseconds:
    ``(points[i] - previous_points[rows[i]]) / dt`` in the points' units per second, ``0`` where
    ``rows[i] < 0`` (a new track), NaN where either position is NaN (not undistortable)."""
    velocity = np.zeros((len(points), 2), np.float32)
    tracked = np.flatnonzero(rows >= 0)
    if len(tracked):
        if int(dt_ns) <= 0:
            raise ValueError(f"tracks continue only forward in time, got dt_ns={dt_ns!r}")
        delta = np.asarray(points, np.float64)[tracked] - np.asarray(previous_points, np.float64)[rows[tracked]]
        velocity[tracked] = delta / (int(dt_ns) * 1e-9)
    return velocity


def normalised_or_none(camera: Optional[CameraModel], xy: np.ndarray) -> Optional[np.ndarray]:
    """:func:`undistort_points` of ``xy`` (``(N, 2)`` float64), or ``None`` without a camera."""
    return None if camera is None else undistort_points(camera, xy)
