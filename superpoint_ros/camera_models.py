"""Camera models from ``sensor_msgs/CameraInfo``: undistortion, keypoint rectification, velocities.

ROS-free (numpy + OpenCV). A :class:`CameraModel` holds what a CameraInfo says about one camera;
:func:`undistort_points` lifts keypoints to normalised, undistorted camera coordinates (what SLAM
back-ends work in), :func:`rectify_points` maps raw keypoints into the rectified stereo frame.

Pixel convention: the package's (keypoints.py) has integer values at pixel *centres*, the image
spanning ``[-0.5, W - 0.5]``. OpenCV's calibration (and so ROS's CameraInfo ``K``, written by
OpenCV-based calibrators) uses the same convention: ``cornerSubPix``/``findChessboardCorners``
report the centre of pixel ``(col, row)`` as ``(col, row)``. So keypoints go to OpenCV as they
are, with no 0.5 shift; a centred principal point is ``((W - 1) / 2, (H - 1) / 2)``.

Distortion models (the ``distortion_model`` strings of ``sensor_msgs/distortion_models.h``, the
coefficient order of OpenCV, which ROS uses unchanged):

- ``plumb_bob``: ``(k1, k2, p1, p2[, k3])``, OpenCV's radial-tangential model;
- ``rational_polynomial``: ``(k1, k2, p1, p2, k3, k4, k5, k6)``, OpenCV's rational model;
- ``equidistant``: ``(k1, k2, k3, k4)``, OpenCV's ``cv2.fisheye`` (Kannala-Brandt) model;
- no distortion: an empty model name, or any of the above with all-zero (or no) coefficients.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import cv2
import numpy as np

#: Coefficient counts each distortion model accepts (CameraInfo ``D`` lengths).
DISTORTION_LENGTHS = {
    "plumb_bob": (4, 5),
    "rational_polynomial": (8,),
    "equidistant": (4,),
}
#: Names for "no distortion" (``D`` must then be empty or all zero).
NO_DISTORTION = ""

#: Undistortion iterations: OpenCV's default (5 iterations for undistortPoints) leaves ~1e-2
#: normalised units of error near the corners of a strongly distorted lens; these converge.
UNDISTORT_CRITERIA = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-12)
#: A point whose undistortion does not re-project to within this many pixels of the input lies
#: outside the model's invertible region (e.g. beyond 90 degrees of a fisheye): NaN.
ROUND_TRIP_TOLERANCE_PX = 1e-3


class CameraInfoError(ValueError):
    """A CameraInfo that cannot be used (uncalibrated, malformed, or of an unsupported model)."""


class UnsupportedDistortionModel(CameraInfoError):
    """The CameraInfo's ``distortion_model`` is none this package knows: keypoints stay in pixels
    (the node logs it once and publishes pixel-only output)."""


def _field(msg, name: str):
    """``msg.name`` of a ROS 2 (lower-case) or ROS 1 (upper-case ``K, D, R, P``) CameraInfo."""
    for attribute in (name, name.upper()):
        if hasattr(msg, attribute):
            return getattr(msg, attribute)
    raise CameraInfoError(f"camera info has no field {name!r} (nor {name.upper()!r})")


def _matrix(values, shape: Tuple[int, int], name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    if array.size != shape[0] * shape[1]:
        raise CameraInfoError(f"camera info {name} has {array.size} values, expected {shape[0] * shape[1]}")
    if not np.all(np.isfinite(array)):
        raise CameraInfoError(f"camera info {name} has non-finite values: {array.tolist()}")
    return array.reshape(shape)


@dataclass(frozen=True, eq=False)
class CameraModel:
    """One calibrated camera. ``width``, ``height``: px; ``K``: ``(3, 3)`` float64 intrinsics;
    ``D``: ``(n,)`` float64 coefficients of ``distortion_model`` (module docstring); ``R``:
    ``(3, 3)`` rectification rotation (raw camera -> rectified camera; identity for a mono
    camera); ``P``: ``(3, 4)`` rectified projection (``None`` when the CameraInfo has none)."""

    width: int
    height: int
    K: np.ndarray
    D: np.ndarray
    distortion_model: str = NO_DISTORTION
    R: Optional[np.ndarray] = None
    P: Optional[np.ndarray] = None

    def __post_init__(self):
        object.__setattr__(self, "width", int(self.width))
        object.__setattr__(self, "height", int(self.height))
        object.__setattr__(self, "K", _matrix(self.K, (3, 3), "K"))
        object.__setattr__(self, "D", np.asarray(self.D, dtype=np.float64).reshape(-1))
        object.__setattr__(self, "R", np.eye(3) if self.R is None else _matrix(self.R, (3, 3), "R"))
        if self.P is not None:
            object.__setattr__(self, "P", _matrix(self.P, (3, 4), "P"))
        self._validate()

    def _validate(self) -> None:
        if self.width <= 0 or self.height <= 0:
            raise CameraInfoError(f"camera info size {self.width}x{self.height} px is not positive")
        if not np.any(self.K):
            raise CameraInfoError("camera info K is all zero: the camera is uncalibrated")
        if not (self.K[0, 0] > 0 and self.K[1, 1] > 0):
            raise CameraInfoError(f"camera info focal lengths must be positive, got fx={self.K[0, 0]}, fy={self.K[1, 1]}")
        if not np.all(np.isfinite(self.D)):
            raise CameraInfoError(f"camera info D has non-finite values: {self.D.tolist()}")
        if not (np.allclose(self.R @ self.R.T, np.eye(3), atol=1e-6) and np.linalg.det(self.R) > 0):
            raise CameraInfoError(f"camera info R is not a rotation matrix: {self.R.tolist()}")
        model = self.distortion_model
        if model == NO_DISTORTION:
            if np.any(self.D):
                raise UnsupportedDistortionModel(
                    f"camera info has distortion coefficients {self.D.tolist()} but no distortion_model")
            return
        if model not in DISTORTION_LENGTHS:
            raise UnsupportedDistortionModel(
                f"unsupported distortion_model {model!r} (supported: {', '.join(DISTORTION_LENGTHS)}, or none)")
        if self.D.size and self.D.size not in DISTORTION_LENGTHS[model]:
            raise CameraInfoError(f"distortion_model {model!r} takes {' or '.join(map(str, DISTORTION_LENGTHS[model]))}"
                                  f" coefficients, camera info D has {self.D.size}")

    @classmethod
    def from_camera_info(cls, msg) -> "CameraModel":
        """From any object with ``sensor_msgs/CameraInfo`` fields (rclpy or rosbags messages,
        ROS 1 upper-case ``K, D, R, P`` too). Raises :class:`CameraInfoError` (or its subclass
        :class:`UnsupportedDistortionModel`) with the reason when the info cannot be used.
        An all-zero ``R`` (some mono drivers) means identity; an all-zero ``P`` means none."""
        r = _matrix(_field(msg, "r"), (3, 3), "R")
        p = _matrix(_field(msg, "p"), (3, 4), "P")
        return cls(width=int(_field(msg, "width")), height=int(_field(msg, "height")),
                   K=_matrix(_field(msg, "k"), (3, 3), "K"), D=np.asarray(_field(msg, "d"), np.float64),
                   distortion_model=str(_field(msg, "distortion_model")),
                   R=r if np.any(r) else None, P=p if np.any(p) else None)

    @property
    def is_distorted(self) -> bool:
        return self.distortion_model != NO_DISTORTION and bool(np.any(self.D))

    @property
    def is_fisheye(self) -> bool:
        return self.distortion_model == "equidistant"

    @property
    def focal_px(self) -> float:
        """Mean focal length ``(fx + fy) / 2``, px: converts pixel thresholds to normalised ones."""
        return float(self.K[0, 0] + self.K[1, 1]) / 2.0

    @property
    def image_size(self) -> Tuple[int, int]:
        """``(height, width)`` px, the package's order for image sizes."""
        return int(self.height), int(self.width)

    def same_calibration(self, other: Optional["CameraModel"]) -> bool:
        """Whether ``other`` describes the same camera (size, distortion and every matrix
        exactly; "no distortion" is one camera however it is written, e.g. ``""`` or
        ``plumb_bob`` with zero D): a change means new intrinsics, so tracks must restart."""
        if other is None:
            return False
        p_equal = (self.P is None and other.P is None) or (
            self.P is not None and other.P is not None and np.array_equal(self.P, other.P))
        distortion_equal = (not self.is_distorted and not other.is_distorted) or (
            self.distortion_model == other.distortion_model and np.array_equal(self.D, other.D))
        return (self.image_size == other.image_size and distortion_equal and np.array_equal(self.K, other.K)
                and np.array_equal(self.R, other.R) and p_equal)


def same_camera(a: Optional[CameraModel], b: Optional[CameraModel]) -> bool:
    """Whether two optional cameras are the same (both absent, or the same calibration)."""
    return a is None and b is None or (a is not None and a.same_calibration(b))

#: image_proc's names of rectified images (``image_rect``, ``image_rect_color``)
RECTIFIED_TOPIC_PREFIX = "image_rect"
IMAGE_KINDS = ("auto", "raw", "rectified")


def images_are_rectified(image_topic: str, kind: str = "auto") -> bool:
    """Whether the images on ``image_topic`` are already rectified (``camera_info.images``):
    ``rectified`` / ``raw`` as told, ``auto`` by image_proc's naming (the topic's last name
    starts with ``image_rect``). Why it matters: a CameraInfo always describes the *raw* camera
    (D, R, P), also when it sits next to ``image_rect``."""
    if kind not in IMAGE_KINDS:
        raise ValueError(f"camera_info.images {kind!r} is not one of {', '.join(IMAGE_KINDS)}")
    if kind != "auto":
        return kind == "rectified"
    return image_topic.rstrip("/").rsplit("/", 1)[-1].startswith(RECTIFIED_TOPIC_PREFIX)


def rectified_camera(camera: CameraModel) -> CameraModel:
    """The camera of the rectified images made from ``camera``'s raw ones (what image_proc
    publishes on ``image_rect``): ``K = P[:, :3]``, no distortion, identity ``R``, the same ``P``
    (its baseline column kept). Without ``P`` the rectified camera is the undistorted one
    (``K`` kept). Applying it to rectified images keeps keypoints from being rectified twice."""
    K = camera.K if camera.P is None else camera.P[:, :3]
    return CameraModel(camera.width, camera.height, K, np.zeros(0), NO_DISTORTION, np.eye(3), camera.P)


def _as_points(xy) -> np.ndarray:
    points = np.asarray(xy, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"expected (N, 2) xy points, got shape {points.shape}")
    return np.ascontiguousarray(points)


def _undistort_pinhole(camera: CameraModel, points: np.ndarray) -> np.ndarray:
    src = points.reshape(-1, 1, 2)
    if hasattr(cv2, "undistortPointsIter"):  # OpenCV 4.x
        out = cv2.undistortPointsIter(src, camera.K, camera.D, None, None, UNDISTORT_CRITERIA)
    else:  # OpenCV 5 merged the criteria into undistortPoints
        out = cv2.undistortPoints(src, camera.K, camera.D, criteria=UNDISTORT_CRITERIA)
    return out.reshape(-1, 2)


def project_normalised(camera: CameraModel, xy_normalised) -> np.ndarray:
    """The forward model: ``(N, 2)`` normalised undistorted coordinates (``x/z, y/z`` in the
    camera frame, before ``R``) -> ``(N, 2)`` float64 distorted pixels (OpenCV's projectPoints)."""
    normalised = _as_points(xy_normalised)
    if len(normalised) == 0:
        return np.zeros((0, 2))
    rays = np.hstack([normalised, np.ones((len(normalised), 1))]).reshape(-1, 1, 3)
    zero = np.zeros(3)
    if camera.is_fisheye:
        pixels, _ = cv2.fisheye.projectPoints(rays, zero, zero, camera.K, camera.D if camera.D.size else np.zeros(4))
    else:
        pixels, _ = cv2.projectPoints(rays, zero, zero, camera.K, camera.D if camera.is_distorted else None)
    return pixels.reshape(-1, 2).astype(np.float64)


def undistort_points(camera: CameraModel, xy) -> np.ndarray:
    """Keypoints ``(N, 2)`` xy pixels of the *raw* image (package convention, module docstring)
    -> ``(N, 2)`` float64 normalised undistorted coordinates ``(x/z, y/z)`` of the rays in the
    camera frame (before the stereo rectification ``R``).

    OpenCV's iterative inverse (``undistortPoints`` with :data:`UNDISTORT_CRITERIA`, or
    ``cv2.fisheye.undistortPoints``); each result is checked by re-projecting it, and a point
    the model cannot invert (outside its valid region: beyond 90 degrees from the axis of a
    fisheye, past the fold of a strong polynomial) comes back as NaN instead of a wrong value.
    """
    points = _as_points(xy)
    if len(points) == 0:
        return np.zeros((0, 2))
    if not camera.is_distorted:  # exact: the inverse of K (skew included)
        rays = np.hstack([points, np.ones((len(points), 1))]) @ np.linalg.inv(camera.K).T
        return rays[:, :2] / rays[:, 2:3]
    if camera.is_fisheye:
        normalised = cv2.fisheye.undistortPoints(points.reshape(-1, 1, 2), camera.K, camera.D,
                                                 criteria=UNDISTORT_CRITERIA).reshape(-1, 2).astype(np.float64)
    else:
        normalised = _undistort_pinhole(camera, points)
    with np.errstate(invalid="ignore", over="ignore"):
        finite = np.all(np.isfinite(normalised), axis=1)
        reprojected = np.full_like(points, np.nan)
        reprojected[finite] = project_normalised(camera, normalised[finite])
        error = np.linalg.norm(reprojected - points, axis=1)
    normalised[~(error <= ROUND_TRIP_TOLERANCE_PX)] = np.nan
    return normalised


def rectify_points(camera: CameraModel, xy) -> np.ndarray:
    """Raw keypoints ``(N, 2)`` xy px -> ``(N, 2)`` float64 xy px of the rectified image that
    ``camera.R`` and ``camera.P`` define (what ``image_proc`` would make of the raw image):
    undistort, rotate by ``R``, project with the left 3x3 of ``P`` (as OpenCV's
    ``undistortPoints(K, D, R, P)``; ``P``'s baseline column only matters for 3D points).
    NaN where the point cannot be undistorted or lies behind the rectified camera."""
    if camera.P is None:
        raise CameraInfoError("camera info has no projection matrix P: cannot rectify")
    normalised = undistort_points(camera, xy)
    rays = np.hstack([normalised, np.ones((len(normalised), 1))]) @ camera.R.T
    projected = rays @ camera.P[:, :3].T
    with np.errstate(invalid="ignore", divide="ignore"):
        pixels = projected[:, :2] / projected[:, 2:3]
    pixels[~(rays[:, 2] > 0)] = np.nan
    return pixels



def camera_for_images(msg, rectified_images: bool) -> CameraModel:
    """The camera of the images a CameraInfo ``msg`` comes with: the raw camera it describes, or
    its :func:`rectified_camera` when the images are rectified already (``camera_info.images``).
    Raises :class:`CameraInfoError` (or :class:`UnsupportedDistortionModel`) when it cannot be used."""
    camera = CameraModel.from_camera_info(msg)
    return rectified_camera(camera) if rectified_images else camera
