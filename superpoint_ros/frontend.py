"""The visual front-end the ROS node runs, without ROS: features, tracks, temporal and stereo matches.

The rosbag evaluator and the node call exactly this code with the same parameter file:

>>> from superpoint_ros.params import load_params
>>> frontend = Frontend(load_params("config/superpoint_stereo.yaml"))
>>> result = frontend.process_stereo(left, right, stamp_ns=12_500_000_000, frame_id="cam0")
>>> result.features.keypoints, result.track_ids           # (N, 2) float32 xy px, (N,) int64
>>> result.temporal.indices, result.temporal.inliers      # (M, 2) (prev idx, curr idx), (M,) bool
>>> result.stereo.indices, result.stereo.disparities      # (K, 2) (left idx, right idx), (K,) px

Per frame: extract (left + right in ONE batched forward pass), match against the previous frame
(mutual nearest neighbour + ratio test), reject outliers with OpenCV USAC (F or H on pixels; E on
normalised coordinates when the camera is known), carry track IDs over the surviving matches, match
left/right under the rectified epipolar constraint (a raw pair: on its rectified keypoints).

Cameras (``sensor_msgs/CameraInfo``, :meth:`Frontend.set_cameras`) add undistorted normalised
coordinates and velocities to the results (:class:`FrameResult`); without them everything runs on
pixels, exactly as before cameras existed.

Input checks (docs/reliability.md): images smaller than one 8x8 cell or than the border
(``extractor.remove_borders``) and stereo pairs of different size or pixel format raise
:class:`~superpoint_ros.image.ImageError`; images larger than ``image.max_size`` are resized
(before the network and the optical flow; keypoints still in input pixels,
``result.features.resized_to`` says so) or rejected per ``image.oversize``; running out of memory in
the network or non-finite network output raises :class:`FrameSkipped`. In all these cases the
state (tracks, previous frame) is unchanged, so the caller can skip the frame and go on.

Tracks never cross a discontinuity: a change of ``frame_id`` or of the input image size, time going
backwards (or repeating), or a forward gap above ``tracking.max_time_gap`` resets them
(``result.reset_reason`` says why); :meth:`Frontend.reset` does the same on request (e.g. a bag loop).

Stamps are integer nanoseconds (``int`` or numpy integer, e.g. a ROS header's
``sec * 10**9 + nanosec``), exact end to end: ``result.temporal.previous_stamp_ns`` is the previous
frame's stamp as given (:mod:`superpoint_ros.stamps` converts seconds).
"""
from __future__ import annotations

import os
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial
from dataclasses import dataclass, field, replace
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .camera_models import CameraModel, same_camera, undistort_points
from .config import FlowConf, FrontendConf
from .extractor import FeatureExtractor, Features, FeatureSource, NetworkInput, rescale_pixels
from .flow import flow_image, refine_with_flow
from .geometry import RansacResult, essential_inliers, match_rectified_stereo, ransac_inliers
from .image import ImageError
from .matching import match_descriptors
from .params import FRONTEND_PARAMETERS, PARAMETERS, ParamsError, frontend_conf, ros_params, validate
from .rig import (KeypointRectification, calibration_change, normalised_or_none, previous_rows, size_mismatch,
                  track_velocities)
from .stamps import check_stamp_ns, seconds_text, stamp_ns_from_seconds
from .tracking import TrackTable
from .weights import WeightsError

#: Parameters fixed when the Frontend is built (they shape the network, not the thresholds).
FIXED_PARAMETERS = tuple(n for n in FRONTEND_PARAMETERS if PARAMETERS[n].read_only)
MIN_IMAGE_SIDE = 8  # px: one SuperPoint cell; smaller images have no detector output at all


@dataclass(frozen=True)
class FlowFrame:
    """What the optical flow (``tracking.flow_refinement``) sees of one frame.

    ``images``: contrast-normalised ``(h, w)`` uint8 copies of the network's (possibly resized)
    images, the left (or mono) image first, then the right one; ``scale``: ``(sx, sy)`` input px
    per flow-image px when they were resized (``image.max_size``), else ``None``.
    """

    images: Tuple[np.ndarray, ...]
    scale: Optional[tuple] = None

    @property
    def left(self) -> np.ndarray:
        return self.images[0]

    def to_flow_pixels(self, xy: np.ndarray) -> np.ndarray:
        """``(N, 2)`` xy input px -> px of the flow images, pixel centres at integers."""
        return rescale_pixels(xy, None if self.scale is None else (1.0 / self.scale[0], 1.0 / self.scale[1]))

    def from_flow_pixels(self, xy: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`to_flow_pixels`."""
        return rescale_pixels(xy, self.scale)


#: Background threads for the CPU work of a frame that waits on nothing: the flow images
#: (``tracking.flow_refinement``, single-threaded numpy/OpenCV filters, ~2 ms per 480x640 image)
#: are made there while the temporal match and RANSAC run, so on 2 cores the two overlap instead of
#: adding up. Shared by the process's Frontends: an idle thread is reused, a new one started (up to
#: the CPU count) when several front-ends work at once. Results are identical to making them in line.
_BACKGROUND_THREADS = os.cpu_count() or 2
_background = ThreadPoolExecutor(_BACKGROUND_THREADS, thread_name_prefix="superpoint_frontend")


def _new_background_after_fork() -> None:
    # a forked child inherits the executor but not its threads: its tasks would never run
    global _background
    _background = ThreadPoolExecutor(_BACKGROUND_THREADS, thread_name_prefix="superpoint_frontend")


os.register_at_fork(after_in_child=_new_background_after_fork)


def run_in_background(function, *args) -> Future:
    """``function(*args)`` in a background thread; in line (an already finished Future) once the
    interpreter is shutting down and no new thread may start."""
    try:
        return _background.submit(function, *args)
    except RuntimeError:  # "cannot schedule new futures after interpreter shutdown"
        done: Future = Future()
        done.set_result(function(*args))
        return done


def make_flow_frame(grays: Sequence[np.ndarray], scale: Optional[tuple]) -> FlowFrame:
    """:class:`FlowFrame` of the network's images ``grays`` (each ``(h, w)`` float32 in [0, 1]);
    ``scale``: ``(sx, sy)`` input px per network px when they were resized, else ``None``."""
    return FlowFrame(tuple(flow_image(g) for g in grays), scale)


class FrameSkipped(RuntimeError):
    """A frame that could not be processed for a reason other than bad input (out of memory,
    non-finite network output). Nothing was changed: the caller skips the frame and goes on."""


def is_out_of_memory(error: BaseException) -> bool:
    """``torch.cuda.OutOfMemoryError`` or a generic RuntimeError saying "out of memory"
    (CUDA allocator, cuDNN/cuBLAS workspaces and some CPU allocators word it that way)."""
    return isinstance(error, torch.cuda.OutOfMemoryError) or "out of memory" in str(error).lower()


@dataclass
class TemporalMatches:
    """Matches between the previous frame (stamp ``previous_stamp_ns``, int ns) and the current one.

    ``indices``: ``(M, 2)`` int64 rows ``(index into the previous frame's features, index into the
    current frame's features)``; ``distances``: ``(M,)`` float32 descriptor distances;
    ``inliers``: ``(M,)`` bool geometric inliers (all ``True`` when ``verified`` is ``False``; with
    ``tracking.flow_refinement`` also ``False`` where the optical flow contradicts the match);
    ``model``: the 3x3 matrix mapping previous -> current, or ``None``; ``model_type``: what it is,
    ``"fundamental"`` or ``"homography"`` (raw pixels) or ``"essential"`` (normalised undistorted
    coordinates, ``x1^T E x0 = 0``: ``ransac.model`` essential/auto with intrinsics).
    """

    indices: np.ndarray
    distances: np.ndarray
    inliers: np.ndarray
    previous_stamp_ns: int
    previous_frame_id: str
    verified: bool = False
    model: Optional[np.ndarray] = None
    model_type: Optional[str] = None

    def __len__(self) -> int:
        return int(self.indices.shape[0])


@dataclass
class StereoMatches:
    """Left/right matches of one stereo pair (same stamp). ``indices``: ``(K, 2)`` int64 rows
    ``(index into left features, index into right features)``; ``distances``: ``(K,)`` float32;
    ``disparities``: ``(K,)`` float32 px, ``x_left - x_right`` in the rectified frame.

    Rectified images: the keypoints are rectified pixels, ``left_rectified``/``right_rectified``
    are ``None``. A raw pair (cameras with ``R``/``P`` that are not rectified already,
    :meth:`Frontend.set_cameras`): the keypoints stay raw pixels and ``left_rectified`` /
    ``right_rectified`` are the matched points' ``(K, 2)`` float32 positions in the rectified
    frame, where the match was made (row error ``y_left - y_right`` and disparity are theirs).
    """

    indices: np.ndarray
    distances: np.ndarray
    disparities: np.ndarray
    left_rectified: Optional[np.ndarray] = None
    right_rectified: Optional[np.ndarray] = None

    def __len__(self) -> int:
        return int(self.indices.shape[0])


@dataclass
class FrameResult:
    """Everything the front-end knows about one frame (mono, or the left image of a pair).

    ``stamp_ns``: the frame's stamp, int nanoseconds, as given to ``process_*``;
    ``track_ids``: ``(N,)`` int64 row-aligned with ``features``; ``track_lengths``: ``(N,)`` int32
    frames observed (1 = new); ``temporal``: ``None`` on the first frame after a reset;
    ``right_features``/``stereo``: stereo only; ``timings``: milliseconds per stage
    (``extract``, ``temporal_match``, ``ransac``, ``flow_refinement``, ``tracking``,
    ``stereo_match``, ``camera_geometry``, ``total``; ``flow_refinement`` is the temporal flow plus
    any wait for the flow images, which are made in the background during the temporal match);
    ``reset_reason``: why the tracks were reset before this frame, or ``None``.

    Camera geometry (:meth:`Frontend.set_cameras`): ``camera`` / ``right_camera``: the
    :class:`~superpoint_ros.camera_models.CameraModel` used for this frame, or ``None`` (none set,
    or ``camera_problem`` says why it was not used); ``normalized``: ``(N, 2)`` float64
    undistorted normalised ``(x/z, y/z)`` of ``features.keypoints`` in the (raw) camera's frame,
    NaN where the model cannot invert a point, ``None`` without ``camera``; ``right_normalized``:
    the same for ``right_features``; ``velocity_px``: ``(N, 2)`` float32 px/s, always set: the
    change since the previous frame's position of the same track id over the stamp difference, 0
    for a track not in the previous frame (new, re-found, or after a reset);
    ``velocity_normalized``: ``(N, 2)`` float32 normalised units/s likewise (NaN where a position
    is NaN), ``None`` without ``camera``; ``camera_problem``: why a set camera was not used for
    this frame (its size differs from the image's), else ``None``.
    """

    stamp_ns: int
    frame_id: str
    features: Features
    track_ids: np.ndarray
    track_lengths: np.ndarray
    temporal: Optional[TemporalMatches] = None
    right_features: Optional[Features] = None
    stereo: Optional[StereoMatches] = None
    timings: Dict[str, float] = field(default_factory=dict)
    reset_reason: Optional[str] = None
    normalized: Optional[np.ndarray] = None
    right_normalized: Optional[np.ndarray] = None
    velocity_px: Optional[np.ndarray] = None
    velocity_normalized: Optional[np.ndarray] = None
    camera: Optional[CameraModel] = None
    right_camera: Optional[CameraModel] = None
    camera_problem: Optional[str] = None


@dataclass(frozen=True)
class FrameCameras:
    """The cameras one frame is processed with (those set, less any whose size is not the
    image's: ``problem`` says why) and, for a raw stereo pair, its keypoint rectification."""

    left: Optional[CameraModel] = None
    right: Optional[CameraModel] = None
    problem: Optional[str] = None
    rectification: Optional[KeypointRectification] = None


class _Clock:
    """Stage timer: ``with clock("extract"): ...`` adds the stage's milliseconds to ``timings``."""

    def __init__(self):
        self.timings: Dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[stage] = self.timings.get(stage, 0.0) + (time.perf_counter() - start) * 1e3


def continuity_break(previous_stamp_ns: int, previous_frame_id: str, stamp_ns: int, frame_id: str,
                     max_time_gap_ns: int, previous_size: Optional[tuple] = None,
                     size: Optional[tuple] = None) -> Optional[str]:
    """Why tracks must not continue from the previous frame to this one (a ``frame_id`` change, an
    image size change (``(height, width)`` px, when given), time going backwards or repeating, a gap
    above ``max_time_gap_ns``), or ``None``. Stamps and the gap are integer nanoseconds."""
    gap = int(stamp_ns) - int(previous_stamp_ns)
    if frame_id != previous_frame_id:
        return f"frame_id changed from {previous_frame_id!r} to {frame_id!r}"
    if previous_size is not None and size is not None and tuple(previous_size) != tuple(size):
        # another camera mode or driver setting: pixel positions of the two frames do not compare
        return (f"image size changed from {previous_size[1]}x{previous_size[0]} to {size[1]}x{size[0]} px "
                f"(width x height)")
    if gap <= 0:
        return f"time went backwards by {seconds_text(-gap)} s" if gap < 0 else "repeated stamp"
    if gap > max_time_gap_ns:
        return f"time jumped forward by {seconds_text(gap, 3)} s (> tracking.max_time_gap)"
    return None


class Frontend:
    """Stateful front-end for one camera (or one rectified stereo rig).

    ``conf``: a :class:`~superpoint_ros.config.FrontendConf`, or flat dotted parameters (any
    subset of :data:`superpoint_ros.params.PARAMETERS`; the output of
    :func:`superpoint_ros.params.load_params` works as is); missing values are the shipped ones,
    so ``Frontend()`` is the node with ``config/superpoint_mono.yaml``. ``extractor``: an already
    built feature source to share (:class:`~superpoint_ros.extractor.FeatureSource`; then the
    ``extractor.*`` model options are ignored). The Frontend passes its own detector and image
    settings with every call, so Frontends sharing an extractor do not interfere.

    ``conf`` (typed) is what the processing reads; ``params`` (flat, validated, node-only names
    included) is what it was configured with, for :meth:`update` and the callers' reports.
    """

    def __init__(self, conf: Union[FrontendConf, Mapping[str, Any], None] = None,
                 extractor: Optional[FeatureSource] = None):
        if isinstance(conf, FrontendConf):
            self.params, self.conf = validate(ros_params(conf)), conf
        else:
            self.params = validate(conf or {})
            self.conf = frontend_conf(self.params)
        #: start-up notes for the caller's log (e.g. the CPU fall-back)
        self.warnings: list = []
        self.extractor = extractor if extractor is not None else self._build_extractor()
        self.tracks = TrackTable(self.conf.tracking.max_age, self.conf.tracking.max_displacement)
        self._previous: Optional[FrameResult] = None
        # the flow's view of the last frames, newest last (tracking.flow_refinement; re-found tracks)
        self._flow_history: deque = deque(maxlen=max(1, self.conf.tracking.max_age))
        # set_cameras: the calibration in use, and a reset it caused that the next result reports
        self._cameras: Tuple[Optional[CameraModel], Optional[CameraModel]] = (None, None)
        self._last_left_camera: Optional[CameraModel] = None  # the latest known one, through a None
        self._camera_reset_reason: Optional[str] = None

    # --- configuration -------------------------------------------------------------------------
    def update(self, changes: Mapping[str, Any]) -> None:
        """Change run-time parameters (thresholds, RANSAC, tracking, stereo limits).

        Raises :class:`ParamsError` (and changes nothing) for an invalid value or a parameter that
        is fixed at construction (``extractor.weights``/``device``/``fp16``/``num_threads``).
        """
        fixed = [n for n in changes if n in FIXED_PARAMETERS and changes[n] != self.params[n]]
        if fixed:
            raise ParamsError(f"cannot change {', '.join(fixed)} at run time (restart with the new value)")
        params = validate({**self.params, **changes})
        self.params, self.conf = params, frontend_conf(params, base=self.conf)
        self.tracks.max_age = self.conf.tracking.max_age
        self.tracks.max_displacement = self.conf.tracking.max_displacement
        self._flow_history = deque(self._flow_history, maxlen=max(1, self.conf.tracking.max_age))

    @property
    def weights_path(self) -> Optional[str]:
        """What produced the features (weight file, ``opencv-orb``, ...), for reports."""
        return self.extractor.weights_path

    def _build_extractor(self) -> FeatureExtractor:
        model = self.conf.model
        if self.conf.cpu_fallback and model.device.startswith("cuda") and not torch.cuda.is_available():
            # an explicit choice of the user (device.cpu_fallback): slower, but the robot keeps its front-end
            self.warnings.append(f"extractor.device={model.device!r} but CUDA is not available: running on the CPU "
                                 f"(device.cpu_fallback is true)")
            model = replace(model, device="cpu")
        try:
            return FeatureExtractor(replace(self.conf.extractor, model=model))
        except WeightsError as e:
            # every weight problem names the file (some core messages, e.g. an unknown architecture, do not)
            path = str(model.weights or "the default model")
            if path in str(e):
                raise
            raise WeightsError(f"{path}: {e}") from None

    @property
    def ratio_test(self) -> Optional[float]:
        return self.conf.matching.ratio_test

    @property
    def max_distance(self) -> Optional[float]:
        return self.conf.matching.max_distance

    def _on_device(self, array: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(array, device=self.extractor.device)  # zero-copy on CPU

    def reset(self) -> None:
        """Forget the previous frame and all tracks (new track IDs continue from the counter)."""
        self._previous = None
        self._flow_history.clear()
        self.tracks.reset()

    # --- cameras (issue 16) --------------------------------------------------------------------
    def set_cameras(self, left: Optional[CameraModel], right: Optional[CameraModel] = None) -> Optional[str]:
        """Set (or clear, ``None``) the intrinsics of the mono/left and the right camera, e.g.
        from ``sensor_msgs/CameraInfo`` (:meth:`CameraModel.from_camera_info`).

        With a camera the results carry normalised coordinates and velocities (:class:`FrameResult`),
        ``ransac.model`` essential/auto verifies temporal matches with an essential matrix, and a
        raw stereo pair (cameras with ``R`` and ``P`` whose images are not rectified already) is
        matched by rectifying its keypoints. The same calibration again is a no-op (call it with
        every CameraInfo). A *changed* calibration of the left camera (re-calibration, another
        resolution) resets the tracks: the reason is returned and the next result's
        ``reset_reason`` says it too; "changed" compares with the latest left camera set, also
        across a ``None`` in between. A camera appearing or going away, or a change of the right
        camera only, keeps the tracks (their pixels mean the same) and returns ``None``.
        Call it from the thread that calls ``process_*`` (the Frontend is not thread-safe).
        """
        for side, camera in (("left", left), ("right", right)):
            if camera is not None and not isinstance(camera, CameraModel):
                raise TypeError(f"{side} camera must be a CameraModel or None, got {type(camera).__name__}")
        if left is None and right is not None:
            raise ValueError("a right camera needs the left one (the tracks follow the left camera)")
        old_left, old_right = self._last_left_camera, self._cameras[1]
        # the same calibration again keeps the model in use (the previous frame's normalised points stay valid)
        self._cameras = tuple(old if same_camera(old, new) else new for old, new in ((old_left, left), (old_right, right)))
        self._last_left_camera = self._cameras[0] or old_left
        reason = calibration_change(old_left, left, "left")
        if reason is None or self._previous is None:
            return None  # nothing to reset (a first frame has no tracks to lose)
        self.reset()
        self._camera_reset_reason = reason
        return reason

    @property
    def cameras(self) -> Tuple[Optional[CameraModel], Optional[CameraModel]]:
        """``(left, right)`` as :meth:`set_cameras` last set them."""
        return self._cameras

    def _frame_cameras(self, left_size: Tuple[int, int], right_size: Optional[Tuple[int, int]] = None) -> FrameCameras:
        """The cameras for a frame of these image sizes (``(height, width)`` px; ``right_size``
        for stereo): a left camera of another size makes the frame pixel-only, a right one of
        another size leaves the right points pixel-only (and the pair matched as rectified)."""
        left, right = self._cameras
        problem = size_mismatch(left, left_size, "left")
        if problem:
            return FrameCameras(problem=problem + ": processed pixel-only")
        if right_size is None:
            return FrameCameras(left)
        problem = size_mismatch(right, right_size, "right")
        if problem:
            return FrameCameras(left, None, problem + ": right points pixel-only, stereo matched as rectified")
        return FrameCameras(left, right, None, KeypointRectification.needed(left, right))

    # --- processing ----------------------------------------------------------------------------
    def process_mono(self, image: np.ndarray, stamp_ns: int, frame_id: str) -> FrameResult:
        """One image (gray/BGR, uint8/uint16/float in [0, 1]) taken at ``stamp_ns`` (integer
        nanoseconds; a float raises TypeError)."""
        stamp_ns = check_stamp_ns(stamp_ns)
        clock = _Clock()
        reset_reason = self._continuity_break(stamp_ns, frame_id, image)
        with clock("extract"):
            (features,), network_input = self._extract([image])
        flow = self._start_flow_frame(network_input)
        self._reset_on(reset_reason)
        cameras = self._frame_cameras(image.shape[:2])
        return self._track(features, None, stamp_ns, frame_id, clock, reset_reason, flow, cameras)

    def process_stereo(self, left: np.ndarray, right: np.ndarray, stamp_ns: int, frame_id: str) -> FrameResult:
        """A stereo pair of equal size taken at ``stamp_ns`` (integer nanoseconds); tracks follow
        the left image. Rectified images, or raw ones with both cameras set (:meth:`set_cameras`:
        their keypoints are rectified for the match)."""
        stamp_ns = check_stamp_ns(stamp_ns)
        if getattr(left, "shape", None) is None or getattr(right, "shape", None) is None:
            raise ImageError("stereo images must be numpy arrays")
        if left.shape[:2] != right.shape[:2]:
            raise ImageError(f"stereo images differ in size: left {left.shape[1]}x{left.shape[0]}, "
                             f"right {right.shape[1]}x{right.shape[0]} (width x height)")
        if left.shape != right.shape or left.dtype != right.dtype:
            raise ImageError(f"stereo images differ in pixel format: left {left.dtype} {left.shape}, "
                             f"right {right.dtype} {right.shape}")
        clock = _Clock()
        reset_reason = self._continuity_break(stamp_ns, frame_id, left)
        with clock("extract"):
            (features, right_features), network_input = self._extract([left, right])  # one forward pass
        flow = self._start_flow_frame(network_input)
        self._reset_on(reset_reason)
        cameras = self._frame_cameras(left.shape[:2], right.shape[:2])
        return self._track(features, right_features, stamp_ns, frame_id, clock, reset_reason, flow, cameras)

    def _start_flow_frame(self, network_input: NetworkInput) -> Optional[Future]:
        """The optical flow's view of this frame (a :class:`FlowFrame`), made in a background
        thread, when ``tracking.flow_refinement`` is on; else ``None`` (not needed). Started after
        the forward pass, not before: on the CPU a busy thread next to the network's own made the
        frame no faster (measured); it overlaps the temporal match and RANSAC instead."""
        if not self.conf.tracking.flow_refinement:
            return None
        return run_in_background(make_flow_frame, network_input.grays, network_input.scale)

    def _check_size(self, images: list) -> None:
        """The ``image.oversize=reject`` policy: raise :class:`ImageError` for images larger than
        ``image.max_size`` (resizing is the extractor's, :meth:`FeatureExtractor.prepare`)."""
        image = images[0]
        if not isinstance(image, np.ndarray) or image.ndim < 2:
            raise ImageError(f"expected a numpy image, got {type(image).__name__}")
        h, w = image.shape[:2]
        max_size = self.conf.image.max_size
        if max_size and max(h, w) > max_size and self.conf.image.oversize == "reject":
            raise ImageError(f"image of {w}x{h} px is larger than image.max_size={max_size} px "
                             f"(image.oversize=reject)")

    def _check_network_size(self, network_input: NetworkInput) -> None:
        """Images the network has no output for (after any resize) raise :class:`ImageError`."""
        (nh, nw), (h, w) = network_input.size, network_input.input_size
        border = self.conf.detector.remove_borders
        if min(nh, nw) < MIN_IMAGE_SIDE:
            raise ImageError(f"image of {nw}x{nh} px is smaller than one {MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE} SuperPoint "
                             f"cell" + (f" (after resizing {w}x{h} to image.max_size)" if network_input.scale else ""))
        if min(nh, nw) <= 2 * border:
            raise ImageError(f"image of {nw}x{nh} px has no pixels inside the extractor.remove_borders={border} px "
                             f"border")

    def _extract(self, images: list) -> tuple:
        """Features of equal-size images in one forward pass, in input pixels, and the network's
        input (:class:`NetworkInput`, resized per ``image.max_size``); raises ImageError for
        unusable input and FrameSkipped for out-of-memory or non-finite network output."""
        self._check_size(images)
        network_input = self.extractor.prepare(images, self.conf.image)
        self._check_network_size(network_input)
        try:
            features = self.extractor.extract_prepared(network_input, self.conf.detector)
        except RuntimeError as e:
            if not is_out_of_memory(e):
                raise
            if self.extractor.device.type == "cuda":
                torch.cuda.empty_cache()  # give the cached blocks back so the next, normal frame fits
            (h, w), (nh, nw) = network_input.input_size, network_input.size
            raise FrameSkipped(f"out of memory on {self.extractor.device} for {len(images)} image(s) of {w}x{h} px "
                               f"(network input {nw}x{nh} px; lower image.max_size): "
                               f"{str(e).splitlines()[0][:200]}") from None
        for f in features:
            if not (np.isfinite(f.keypoints).all() and np.isfinite(f.scores).all() and np.isfinite(f.descriptors).all()):
                # e.g. an fp16 overflow: never hand NaN to a SLAM back-end
                raise FrameSkipped("the network produced non-finite keypoints, scores or descriptors")
        return features, network_input

    def _continuity_break(self, stamp_ns: int, frame_id: str, image: np.ndarray) -> Optional[str]:
        """Why this frame cannot continue the previous one's tracks (:func:`continuity_break`), or
        ``None``; changes nothing (the frame may still be rejected: :meth:`_reset_on` resets)."""
        previous = self._previous
        if previous is None:
            return None
        size = getattr(image, "shape", (0, 0))[:2]
        # tracking.max_time_gap is in seconds (the parameter table's unit): to ns here, once
        max_time_gap_ns = stamp_ns_from_seconds(self.conf.tracking.max_time_gap)
        return continuity_break(previous.stamp_ns, previous.frame_id, stamp_ns, frame_id, max_time_gap_ns,
                                previous.features.image_size, size)

    def _reset_on(self, reason: Optional[str]) -> None:
        if reason:
            self.reset()

    def _track(self, features: Features, right_features: Optional[Features], stamp_ns: int, frame_id: str,
               clock: _Clock, reset_reason: Optional[str], flow_job: Optional[Future] = None,
               cameras: FrameCameras = FrameCameras()) -> FrameResult:
        """Matches, tracks and stereo of an extracted frame. ``flow_job``: the Future of the
        frame's :class:`FlowFrame` (:meth:`_start_flow_frame`; awaited after the temporal match
        and RANSAC, which do not need it), given when ``tracking.flow_refinement`` is on;
        ``cameras``: the frame's (:meth:`_frame_cameras`)."""
        conf = self.conf
        refine = conf.tracking.flow_refinement
        if refine and flow_job is None:
            raise ValueError("tracking.flow_refinement is on: the frame's FlowFrame is needed")
        previous = self._previous
        temporal = None
        accepted = np.zeros((0, 2), dtype=np.int64)
        if previous is not None:
            with clock("temporal_match"):
                # on the extractor's device: on a GPU this keeps matching from dominating the frame
                matches = match_descriptors(self._on_device(previous.features.descriptors),
                                            self._on_device(features.descriptors), self.ratio_test, self.max_distance)
            with clock("ransac"):
                geometry, model_type = self._verify_temporal(previous, features, matches.indices, cameras.left)
                inliers = geometry.inliers
            temporal = TemporalMatches(matches.indices, matches.distances, inliers, previous.stamp_ns,
                                       previous.frame_id, geometry.verified, geometry.model, model_type)
            accepted = matches.indices[inliers]
        flow = None
        if flow_job is not None:
            with clock("flow_refinement"):  # what is left of making the flow images: wait for them
                flow = flow_job.result()
        if temporal is not None and refine:
            with clock("flow_refinement"):
                features, contradicted = self._refine_temporal(features, previous.features, accepted, flow)
            if contradicted.any():  # the patch went elsewhere: a wrong match, though RANSAC kept it
                temporal.inliers = inliers.copy()
                temporal.inliers[np.flatnonzero(inliers)[contradicted]] = False
                accepted = matches.indices[temporal.inliers]
        with clock("tracking"):
            verify = partial(self._verify_refound, flow) if refine else None
            track_ids, track_lengths = self.tracks.update(features.keypoints, features.descriptors, accepted,
                                                          self.ratio_test, self.max_distance, verify)
            if self.tracks.keypoints is not features.keypoints:  # re-found tracks moved to the flow's position
                features = replace(features, keypoints=self.tracks.keypoints)
        stereo = None
        if right_features is not None:
            with clock("stereo_match"):
                right_features, stereo = self._match_stereo(features, right_features, flow, cameras.rectification)
        if self._camera_reset_reason is not None:  # set_cameras reset the tracks before this frame
            reset_reason = "; ".join(r for r in (self._camera_reset_reason, reset_reason) if r)
            self._camera_reset_reason = None
        result = FrameResult(stamp_ns, frame_id, features, track_ids, track_lengths, temporal,
                             right_features, stereo, clock.timings, reset_reason)
        with clock("camera_geometry"):
            result = self._with_camera_geometry(result, previous, cameras)
        clock.timings["total"] = sum(t for stage, t in clock.timings.items() if stage != "total")
        self._previous = result
        if refine:
            self._flow_history.append(flow)
        else:
            self._flow_history.clear()
        return result

    def _verify_temporal(self, previous: FrameResult, features: Features, indices: np.ndarray,
                         camera: Optional[CameraModel]) -> Tuple[RansacResult, Optional[str]]:
        """Geometric verification (``ransac.*``) of temporal matches ``indices`` ``(M, 2)``
        (prev idx, curr idx) -> ``(RansacResult, model type or None)``: an essential matrix on
        normalised coordinates for ``essential``/``auto`` with a ``camera``, else F or H on pixels."""
        ransac = self.conf.ransac
        if not ransac.enabled:
            return RansacResult(np.ones(len(indices), dtype=bool), None, False), None
        model = ransac.model
        if model in ("essential", "auto") and camera is not None:
            geometry = essential_inliers(
                self._previous_normalized(previous, camera, indices[:, 0]),
                undistort_points(camera, features.keypoints[indices[:, 1]]), ransac.threshold, camera.focal_px,
                ransac.method, ransac.confidence, ransac.max_iterations, ransac.min_matches)
            return geometry, "essential" if geometry.verified else None
        model = "fundamental" if model in ("essential", "auto") else model  # no intrinsics: pixels
        geometry = ransac_inliers(previous.features.keypoints[indices[:, 0]], features.keypoints[indices[:, 1]],
                                  model, ransac.method, ransac.threshold, ransac.confidence, ransac.max_iterations,
                                  ransac.min_matches)
        return geometry, model if geometry.verified else None

    @staticmethod
    def _previous_normalized(previous: FrameResult, camera: CameraModel, rows: Optional[np.ndarray] = None) -> np.ndarray:
        """Normalised coordinates of ``previous``'s keypoints (those at ``rows``, default all)
        under ``camera``: its own when it was processed with this camera, else computed."""
        if previous.camera is camera and previous.normalized is not None:
            return previous.normalized if rows is None else previous.normalized[rows]
        keypoints = previous.features.keypoints
        return undistort_points(camera, keypoints if rows is None else keypoints[rows])

    def _with_camera_geometry(self, result: FrameResult, previous: Optional[FrameResult],
                              cameras: FrameCameras) -> FrameResult:
        """``result`` with its cameras, normalised coordinates and velocities (:class:`FrameResult`);
        ``previous``: the frame its tracks continue (``None`` after a reset)."""
        keypoints, camera = result.features.keypoints, cameras.left
        normalized = normalised_or_none(camera, keypoints)
        rows = np.full(len(keypoints), -1, np.int64)
        previous_xy = previous_normalized = np.zeros((0, 2))
        dt_ns = 0
        if previous is not None:
            rows, dt_ns = previous_rows(previous.track_ids, result.track_ids), result.stamp_ns - previous.stamp_ns
            previous_xy = previous.features.keypoints
            if camera is not None and (rows >= 0).any():
                previous_normalized = self._previous_normalized(previous, camera)
        right = result.right_features
        return replace(result, normalized=normalized, velocity_px=track_velocities(rows, previous_xy, keypoints, dt_ns),
                       velocity_normalized=None if camera is None else
                       track_velocities(rows, previous_normalized, normalized, dt_ns),
                       right_normalized=None if right is None else normalised_or_none(cameras.right, right.keypoints),
                       camera=camera, right_camera=cameras.right if right is not None else None,
                       camera_problem=cameras.problem)

    def _match_stereo(self, features: Features, right_features: Features, flow: Optional[FlowFrame],
                      rectification: Optional[KeypointRectification]) -> Tuple[Features, StereoMatches]:
        """Left/right matches under the rectified epipolar constraint (``stereo.*``): on the
        keypoints as they are (rectified images), or on their rectified positions (a raw pair,
        ``rectification``; keypoints stay raw). Returns ``(right features, refined by flow when
        tracking.flow_refinement is on, StereoMatches)``."""
        conf = self.conf
        left_xy, right_xy = features.keypoints, right_features.keypoints
        if rectification is not None:
            left_xy, right_xy = rectification.left_points(left_xy), rectification.right_points(right_xy)
        indices, distances, disparities = match_rectified_stereo(
            left_xy, features.descriptors, right_xy, right_features.descriptors,
            conf.stereo.epipolar_tolerance, conf.stereo.min_disparity, conf.stereo.max_disparity,
            self.ratio_test, self.max_distance, device=self.extractor.device)
        if conf.tracking.flow_refinement and len(indices):
            right_features, disparities, keep = self._refine_stereo(features, right_features, indices, flow,
                                                                    rectification)
            indices, distances, disparities = indices[keep], distances[keep], disparities[keep]
        if rectification is None:
            return right_features, StereoMatches(indices, distances, disparities)
        right_rectified = rectification.right_points(right_features.keypoints[indices[:, 1]])  # as refined
        return right_features, StereoMatches(indices, distances, disparities, left_xy[indices[:, 0]], right_rectified)

    # --- tracking.flow_refinement ----------------------------------------------------------------
    @staticmethod
    def _flow(image0: np.ndarray, image1: np.ndarray, points0: np.ndarray, guesses1: np.ndarray,
              frame: FlowFrame, conf: FlowConf) -> tuple:
        """:func:`~superpoint_ros.flow.refine_with_flow` with points in input px: the flow runs in
        the flow images' pixels (its limits, e.g. ``max_shift``, are in those pixels). ``frame``'s
        scale applies to both images: frames of one track share the input size (a size change
        resets the tracks)."""
        refined, ok, contradicted = refine_with_flow(image0, image1, frame.to_flow_pixels(points0),
                                                     frame.to_flow_pixels(guesses1), conf)
        return frame.from_flow_pixels(refined), ok, contradicted

    def _refine_temporal(self, features: Features, previous: Features, accepted: np.ndarray,
                         flow: FlowFrame) -> tuple:
        """Current positions of the accepted temporal matches ``(prev idx, curr idx)``, refined by
        flow from the previous image (kept as they are across a size change or without matches).
        Returns ``(features, contradicted (len(accepted),) bool)``: matches the flow contradicts
        (:func:`superpoint_ros.flow.refine_with_flow`)."""
        previous_gray = self._flow_history[-1].left if self._flow_history else None
        if previous_gray is None or previous_gray.shape != flow.left.shape or not len(accepted):
            return features, np.zeros(len(accepted), dtype=bool)
        refined, ok, contradicted = self._flow(previous_gray, flow.left, previous.keypoints[accepted[:, 0]],
                                               features.keypoints[accepted[:, 1]], flow, self.conf.tracking.flow)
        return _with_refined(features, accepted[:, 1], refined, ok), contradicted

    def _refine_stereo(self, left: Features, right: Features, indices: np.ndarray, flow: FlowFrame,
                       rectification: Optional[KeypointRectification] = None) -> tuple:
        """Right points of the stereo matches ``(left idx, right idx)`` refined by flow from the
        left image -> ``(right features, disparities (K,) float32 px, keep (K,) bool)``; ``keep`` is
        False for the matches the flow contradicts.

        The flow runs on the images as they are: a raw pair (``rectification``) is refined in raw
        pixels, and the refined point is rectified again for the stereo limits and the disparity
        (the rows of a raw pair are not epipolar lines)."""
        stereo = self.conf.stereo
        left_xy = left.keypoints[indices[:, 0]]
        refined, ok, contradicted = self._flow(flow.images[0], flow.images[1], left_xy,
                                               right.keypoints[indices[:, 1]], flow, self.conf.tracking.flow)
        left_match, refined_match = left_xy, refined  # where the limits apply: the rectified frame
        if rectification is not None:
            left_match, refined_match = rectification.left_points(left_xy), rectification.right_points(refined)
        disparity = left_match[:, 0] - refined_match[:, 0]
        # a refined point must still obey the rectified-stereo limits (NaN, not rectifiable: it does not)
        ok &= ((np.abs(refined_match[:, 1] - left_match[:, 1]) <= stereo.epipolar_tolerance)
               & (disparity >= stereo.min_disparity) & (disparity <= stereo.max_disparity))
        right = _with_refined(right, indices[:, 1], refined, ok)
        right_match = right.keypoints[indices[:, 1]]
        if rectification is not None:
            right_match = rectification.right_points(right_match)
        return right, (left_match[:, 0] - right_match[:, 0]).astype(np.float32), ~contradicted

    # --- tracking.max_age ------------------------------------------------------------------------
    def _verify_refound(self, flow: FlowFrame, frames_ago: np.ndarray, last_xy: np.ndarray,
                        candidate_xy: np.ndarray) -> tuple:
        """Whether lost tracks last seen ``frames_ago`` (``(K,)`` int) frames before the current
        frame (``flow``) at ``last_xy`` really are at the keypoints ``candidate_xy`` (``(K, 2)`` xy
        px) the descriptors re-found them on: flow from the image each was last seen in must confirm
        it within ``tracking.refound_flow``. Returns ``(ok (K,) bool, xy (K, 2))``, xy the flow's
        positions (as for any refined match). Used only with flow refinement (without it, nothing
        confirms)."""
        current, history = flow.left, self._flow_history
        candidate_xy = np.asarray(candidate_xy, np.float32)
        ok, xy = np.zeros(len(frames_ago), dtype=bool), candidate_xy.copy()
        for ago in np.unique(frames_ago):
            if ago > len(history) or history[-ago].left.shape != current.shape:
                continue  # that image is gone (or of another size): cannot confirm
            rows = np.flatnonzero(frames_ago == ago)
            refined, ok[rows], _ = self._flow(history[-ago].left, current, last_xy[rows], candidate_xy[rows],
                                              flow, self.conf.tracking.refound_flow)
            xy[rows] = np.where(ok[rows, None], refined, candidate_xy[rows])  # unrefined: exactly the keypoint
        return ok, xy


def _with_refined(features: Features, rows: np.ndarray, refined: np.ndarray, ok: np.ndarray) -> Features:
    """``features`` with ``keypoints[rows[ok]]`` replaced by ``refined[ok]`` (a new array; the rest,
    descriptors included, unchanged)."""
    if not ok.any():
        return features
    keypoints = features.keypoints.copy()
    keypoints[rows[ok]] = refined[ok]
    return replace(features, keypoints=keypoints)
