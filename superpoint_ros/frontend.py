"""The visual front-end the ROS node runs, without ROS: features, tracks, temporal and stereo matches.

The rosbag evaluator and the node call exactly this code with the same parameter file:

>>> from superpoint_ros.params import load_params
>>> frontend = Frontend(load_params("config/superpoint_stereo.yaml"))
>>> result = frontend.process_stereo(left, right, stamp_s=12.5, frame_id="cam0")
>>> result.features.keypoints, result.track_ids           # (N, 2) float32 xy px, (N,) int64
>>> result.temporal.indices, result.temporal.inliers      # (M, 2) (prev idx, curr idx), (M,) bool
>>> result.stereo.indices, result.stereo.disparities      # (K, 2) (left idx, right idx), (K,) px

Per frame: extract (left + right in ONE batched forward pass), match against the previous frame
(mutual nearest neighbour + ratio test), reject outliers with OpenCV USAC (F or H), carry track IDs
over the surviving matches, match left/right under the rectified epipolar constraint.

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
"""
from __future__ import annotations

import time
from collections import deque
from contextlib import contextmanager
from functools import partial
from dataclasses import dataclass, field, replace
from typing import Any, Dict, Mapping, Optional

import cv2
import numpy as np
import torch

from .extractor import FeatureExtractor, Features, NetworkInput, rescale_pixels
from .flow import flow_image, refine_with_flow
from .geometry import match_rectified_stereo, ransac_inliers
from .image import ImageError
from .matching import match_descriptors
from .params import FRONTEND_PARAMETERS, PARAMETERS, ParamsError, extractor_conf, validate
from .tracking import TrackTable
from .weights import WeightsError

#: Parameters fixed when the Frontend is built (they shape the network, not the thresholds).
FIXED_PARAMETERS = tuple(n for n in FRONTEND_PARAMETERS if PARAMETERS[n].read_only)
MIN_IMAGE_SIDE = 8  # px: one SuperPoint cell; smaller images have no detector output at all
#: Flow limits confirming a re-found track (tracking.max_age): stricter than for a match, because
#: the points matching missed are the hard ones (edge-like patches, where the flow can slide along
#: the edge and still come back). Sample bag, max_age 2, re-found positions off by > 1 px under
#: ground truth: 21 % with the match limits (0.5 px back, 2 px shift), 2 % with these.
REFOUND_FLOW = {"max_back_error": 0.1, "max_shift": 1.0}


class FrameSkipped(RuntimeError):
    """A frame that could not be processed for a reason other than bad input (out of memory,
    non-finite network output). Nothing was changed: the caller skips the frame and goes on."""


def is_out_of_memory(error: BaseException) -> bool:
    """``torch.cuda.OutOfMemoryError`` or a generic RuntimeError saying "out of memory"
    (CUDA allocator, cuDNN/cuBLAS workspaces and some CPU allocators word it that way)."""
    return isinstance(error, torch.cuda.OutOfMemoryError) or "out of memory" in str(error).lower()


@dataclass
class TemporalMatches:
    """Matches between the previous frame (stamp ``previous_stamp_s``) and the current one.

    ``indices``: ``(M, 2)`` int64 rows ``(index into the previous frame's features, index into the
    current frame's features)``; ``distances``: ``(M,)`` float32 descriptor distances;
    ``inliers``: ``(M,)`` bool geometric inliers (all ``True`` when ``verified`` is ``False``; with
    ``tracking.flow_refinement`` also ``False`` where the optical flow contradicts the match);
    ``model``: the 3x3 F or H mapping previous -> current, or ``None``.
    """

    indices: np.ndarray
    distances: np.ndarray
    inliers: np.ndarray
    previous_stamp_s: float
    previous_frame_id: str
    verified: bool = False
    model: Optional[np.ndarray] = None

    def __len__(self) -> int:
        return int(self.indices.shape[0])


@dataclass
class StereoMatches:
    """Left/right matches of one rectified pair (same stamp). ``indices``: ``(K, 2)`` int64 rows
    ``(index into left features, index into right features)``; ``distances``: ``(K,)`` float32;
    ``disparities``: ``(K,)`` float32 px, ``x_left - x_right``."""

    indices: np.ndarray
    distances: np.ndarray
    disparities: np.ndarray

    def __len__(self) -> int:
        return int(self.indices.shape[0])


@dataclass
class FrameResult:
    """Everything the front-end knows about one frame (mono, or the left image of a pair).

    ``track_ids``: ``(N,)`` int64 row-aligned with ``features``; ``track_lengths``: ``(N,)`` int32
    frames observed (1 = new); ``temporal``: ``None`` on the first frame after a reset;
    ``right_features``/``stereo``: stereo only; ``timings``: milliseconds per stage
    (``extract``, ``temporal_match``, ``ransac``, ``tracking``, ``stereo_match``, ``total``);
    ``reset_reason``: why the tracks were reset before this frame, or ``None``.
    """

    stamp_s: float
    frame_id: str
    features: Features
    track_ids: np.ndarray
    track_lengths: np.ndarray
    temporal: Optional[TemporalMatches] = None
    right_features: Optional[Features] = None
    stereo: Optional[StereoMatches] = None
    timings: Dict[str, float] = field(default_factory=dict)
    reset_reason: Optional[str] = None


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


def continuity_break(previous_stamp_s: float, previous_frame_id: str, stamp_s: float, frame_id: str,
                     max_time_gap_s: float, previous_size: Optional[tuple] = None,
                     size: Optional[tuple] = None) -> Optional[str]:
    """Why tracks must not continue from the previous frame to this one (a ``frame_id`` change, an
    image size change (``(height, width)`` px, when given), time going backwards or repeating, a gap
    above ``max_time_gap_s`` seconds), or ``None``."""
    gap = stamp_s - previous_stamp_s
    if frame_id != previous_frame_id:
        return f"frame_id changed from {previous_frame_id!r} to {frame_id!r}"
    if previous_size is not None and size is not None and tuple(previous_size) != tuple(size):
        # another camera mode or driver setting: pixel positions of the two frames do not compare
        return (f"image size changed from {previous_size[1]}x{previous_size[0]} to {size[1]}x{size[0]} px "
                f"(width x height)")
    if gap <= 0:
        return f"time went backwards by {-gap:.6f} s" if gap < 0 else "repeated stamp"
    if gap > max_time_gap_s:
        return f"time jumped forward by {gap:.3f} s (> tracking.max_time_gap)"
    return None


class Frontend:
    """Stateful front-end for one camera (or one rectified stereo rig).

    ``conf``: flat dotted parameters (any subset of :data:`superpoint_ros.params.PARAMETERS`;
    the output of :func:`superpoint_ros.params.load_params` works as is). ``extractor``: an
    already built :class:`FeatureExtractor` to share (then the ``extractor.*`` model options in
    ``conf`` are ignored, the thresholds still apply).
    """

    def __init__(self, conf: Optional[Mapping[str, Any]] = None, extractor: Optional[FeatureExtractor] = None):
        self.conf = validate(conf or {})
        #: start-up notes for the caller's log (e.g. the CPU fall-back)
        self.warnings: list = []
        self.extractor = extractor if extractor is not None else self._build_extractor()
        self._apply_extractor_thresholds()
        self.tracks = TrackTable(self.conf["tracking.max_age"], self.conf["tracking.max_displacement"])
        self._previous: Optional[FrameResult] = None
        # contrast-normalised uint8 left images of the last frames, newest last (flow_refinement)
        self._grays: deque = deque(maxlen=max(1, self.conf["tracking.max_age"]))
        # (sx, sy) input px per flow-image px of the current frame (image.max_size), or None
        self._flow_scale: Optional[tuple] = None

    # --- configuration -------------------------------------------------------------------------
    def update(self, changes: Mapping[str, Any]) -> None:
        """Change run-time parameters (thresholds, RANSAC, tracking, stereo limits).

        Raises :class:`ParamsError` (and changes nothing) for an invalid value or a parameter that
        is fixed at construction (``extractor.weights``/``device``/``fp16``/``num_threads``).
        """
        fixed = [n for n in changes if n in FIXED_PARAMETERS and changes[n] != self.conf[n]]
        if fixed:
            raise ParamsError(f"cannot change {', '.join(fixed)} at run time (restart with the new value)")
        self.conf = validate({**self.conf, **changes})
        self._apply_extractor_thresholds()
        self.tracks.max_age = self.conf["tracking.max_age"]
        self.tracks.max_displacement = self.conf["tracking.max_displacement"]
        self._grays = deque(self._grays, maxlen=max(1, self.conf["tracking.max_age"]))

    def _build_extractor(self) -> FeatureExtractor:
        conf = self._extractor_conf()
        try:
            return FeatureExtractor(conf)
        except WeightsError as e:
            # every weight problem names the file (some core messages, e.g. an unknown architecture, do not)
            path = str(conf["weights"] or "the default model")
            if path in str(e):
                raise
            raise WeightsError(f"{path}: {e}") from None

    def _extractor_conf(self) -> Dict[str, Any]:
        conf = {**extractor_conf(self.conf), **self._image_conf()}
        device = str(conf["device"])
        if self.conf["device.cpu_fallback"] and device.startswith("cuda") and not torch.cuda.is_available():
            # an explicit choice of the user (device.cpu_fallback): slower, but the robot keeps its front-end
            self.warnings.append(f"extractor.device={device!r} but CUDA is not available: running on the CPU "
                                 f"(device.cpu_fallback is true)")
            conf["device"] = "cpu"
        return conf

    def _apply_extractor_thresholds(self) -> None:
        conf = extractor_conf(self.conf)
        for key in ("nms_radius", "detection_threshold", "max_keypoints", "remove_borders", "uniform_cell",
                    "max_per_cell", "subpixel"):
            self.extractor.conf[key] = conf[key]
        self.extractor.conf.update(self._image_conf())

    def _image_conf(self) -> Dict[str, Any]:
        """The ``image.*`` parameters the extractor applies (resize, 16-bit scaling)."""
        return {"max_size": self.conf["image.max_size"], "bit_depth": self.conf["image.bit_depth"]}

    @property
    def ratio_test(self) -> Optional[float]:
        return self.conf["matching.ratio_test"] or None

    @property
    def max_distance(self) -> Optional[float]:
        value = self.conf["matching.max_distance"]
        return None if value >= 2.0 else value

    def _on_device(self, array: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(array, device=self.extractor.device)  # zero-copy on CPU

    def reset(self) -> None:
        """Forget the previous frame and all tracks (new track IDs continue from the counter)."""
        self._previous = None
        self._grays.clear()
        self.tracks.reset()

    # --- processing ----------------------------------------------------------------------------
    def process_mono(self, image: np.ndarray, stamp_s: float, frame_id: str) -> FrameResult:
        """One image (gray/BGR, uint8/uint16/float in [0, 1]) taken at ``stamp_s`` seconds."""
        clock = _Clock()
        reset_reason = self._continuity_break(stamp_s, frame_id, image)
        with clock("extract"):
            (features,), network_input = self._extract([image])
        with clock("flow_refinement"):
            gray = self._gray_images(network_input)
        self._reset_on(reset_reason)
        return self._track(features, None, stamp_s, frame_id, clock, reset_reason, gray)

    def process_stereo(self, left: np.ndarray, right: np.ndarray, stamp_s: float, frame_id: str) -> FrameResult:
        """A rectified stereo pair of equal size; tracks follow the left image."""
        if getattr(left, "shape", None) is None or getattr(right, "shape", None) is None:
            raise ImageError("stereo images must be numpy arrays")
        if left.shape[:2] != right.shape[:2]:
            raise ImageError(f"stereo images differ in size: left {left.shape[1]}x{left.shape[0]}, "
                             f"right {right.shape[1]}x{right.shape[0]} (width x height)")
        if left.shape != right.shape or left.dtype != right.dtype:
            raise ImageError(f"stereo images differ in pixel format: left {left.dtype} {left.shape}, "
                             f"right {right.dtype} {right.shape}")
        clock = _Clock()
        reset_reason = self._continuity_break(stamp_s, frame_id, left)
        with clock("extract"):
            (features, right_features), network_input = self._extract([left, right])  # one forward pass
        with clock("flow_refinement"):
            gray = self._gray_images(network_input)
        self._reset_on(reset_reason)
        return self._track(features, right_features, stamp_s, frame_id, clock, reset_reason, gray)

    def _gray_images(self, network_input: NetworkInput) -> Optional[list]:
        """Contrast-normalised uint8 copies of the network's (possibly resized) images for the
        optical flow (``superpoint_ros.flow``), only when ``tracking.flow_refinement`` is on. The
        flow works in their pixels (:meth:`_to_flow_pixels`)."""
        if not self.conf["tracking.flow_refinement"]:
            return None
        self._flow_scale = network_input.scale
        return [flow_image(g) for g in network_input.grays]

    def _check_size(self, images: list) -> None:
        """The ``image.oversize=reject`` policy: raise :class:`ImageError` for images larger than
        ``image.max_size`` (resizing is the extractor's, :meth:`FeatureExtractor.prepare`)."""
        image = images[0]
        if not isinstance(image, np.ndarray) or image.ndim < 2:
            raise ImageError(f"expected a numpy image, got {type(image).__name__}")
        h, w = image.shape[:2]
        max_size = self.conf["image.max_size"]
        if max_size and max(h, w) > max_size and self.conf["image.oversize"] == "reject":
            raise ImageError(f"image of {w}x{h} px is larger than image.max_size={max_size} px "
                             f"(image.oversize=reject)")

    def _check_network_size(self, network_input: NetworkInput) -> None:
        """Images the network has no output for (after any resize) raise :class:`ImageError`."""
        (nh, nw), (h, w) = network_input.size, network_input.input_size
        border = self.conf["extractor.remove_borders"]
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
        network_input = self.extractor.prepare(images)
        self._check_network_size(network_input)
        try:
            features = self.extractor.extract_prepared(network_input)
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

    def _continuity_break(self, stamp_s: float, frame_id: str, image: np.ndarray) -> Optional[str]:
        """Why this frame cannot continue the previous one's tracks (:func:`continuity_break`), or
        ``None``; changes nothing (the frame may still be rejected: :meth:`_reset_on` resets)."""
        if not np.isfinite(stamp_s):
            raise ValueError(f"frame stamp must be finite, got {stamp_s!r}")
        previous = self._previous
        if previous is None:
            return None
        size = getattr(image, "shape", (0, 0))[:2]
        return continuity_break(previous.stamp_s, previous.frame_id, stamp_s, frame_id,
                                self.conf["tracking.max_time_gap"], previous.features.image_size, size)

    def _reset_on(self, reason: Optional[str]) -> None:
        if reason:
            self.reset()

    def _track(self, features: Features, right_features: Optional[Features], stamp_s: float, frame_id: str,
               clock: _Clock, reset_reason: Optional[str], gray: Optional[list] = None) -> FrameResult:
        conf = self.conf
        previous = self._previous
        temporal = None
        accepted = np.zeros((0, 2), dtype=np.int64)
        if previous is not None:
            with clock("temporal_match"):
                # on the extractor's device: on a GPU this keeps matching from dominating the frame
                matches = match_descriptors(self._on_device(previous.features.descriptors),
                                            self._on_device(features.descriptors), self.ratio_test, self.max_distance)
            with clock("ransac"):
                if conf["ransac.enabled"]:
                    geometry = ransac_inliers(
                        previous.features.keypoints[matches.indices[:, 0]], features.keypoints[matches.indices[:, 1]],
                        conf["ransac.model"], conf["ransac.method"], conf["ransac.threshold"],
                        conf["ransac.confidence"], conf["ransac.max_iterations"], conf["ransac.min_matches"])
                    inliers, verified, model = geometry.inliers, geometry.verified, geometry.model
                else:
                    inliers, verified, model = np.ones(len(matches), dtype=bool), False, None
            temporal = TemporalMatches(matches.indices, matches.distances, inliers, previous.stamp_s,
                                       previous.frame_id, verified, model)
            accepted = matches.indices[inliers]
            if gray is not None:
                with clock("flow_refinement"):
                    features, contradicted = self._refine_temporal(features, previous.features, accepted, gray[0])
                if contradicted.any():  # the patch went elsewhere: a wrong match, though RANSAC kept it
                    temporal.inliers = inliers.copy()
                    temporal.inliers[np.flatnonzero(inliers)[contradicted]] = False
                    accepted = matches.indices[temporal.inliers]
        with clock("tracking"):
            verify = None if gray is None else partial(self._verify_refound, gray[0])
            track_ids, track_lengths = self.tracks.update(features.keypoints, features.descriptors, accepted,
                                                          self.ratio_test, self.max_distance, verify)
            if self.tracks.keypoints is not features.keypoints:  # re-found tracks moved to the flow's position
                features = replace(features, keypoints=self.tracks.keypoints)
        stereo = None
        if right_features is not None:
            with clock("stereo_match"):
                indices, distances, disparities = match_rectified_stereo(
                    features.keypoints, features.descriptors, right_features.keypoints, right_features.descriptors,
                    conf["stereo.epipolar_tolerance"], conf["stereo.min_disparity"], conf["stereo.max_disparity"],
                    self.ratio_test, self.max_distance, device=self.extractor.device)
                if gray is not None and len(indices):
                    right_features, disparities, keep = self._refine_stereo(features, right_features, indices, gray)
                    indices, distances, disparities = indices[keep], distances[keep], disparities[keep]
            stereo = StereoMatches(indices, distances, disparities)
        clock.timings["total"] = sum(clock.timings.values())
        result = FrameResult(float(stamp_s), frame_id, features, track_ids, track_lengths, temporal,
                             right_features, stereo, clock.timings, reset_reason)
        self._previous = result
        if gray is None:
            self._grays.clear()
        else:
            self._grays.append(gray[0])
        return result

    @property
    def _previous_gray(self) -> Optional[np.ndarray]:
        return self._grays[-1] if self._grays else None

    # --- tracking.flow_refinement ----------------------------------------------------------------
    def _to_flow_pixels(self, xy: np.ndarray) -> np.ndarray:
        """``(N, 2)`` xy input px -> px of the (resized) flow images, pixel centres at integers."""
        scale = self._flow_scale
        return rescale_pixels(xy, None if scale is None else (1.0 / scale[0], 1.0 / scale[1]))

    def _from_flow_pixels(self, xy: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`_to_flow_pixels`."""
        return rescale_pixels(xy, self._flow_scale)

    def _flow(self, image0: np.ndarray, image1: np.ndarray, points0: np.ndarray, guesses1: np.ndarray,
              conf: Optional[dict] = None) -> tuple:
        """:func:`~superpoint_ros.flow.refine_with_flow` with points in input px: the flow runs in
        the flow images' pixels (its limits, e.g. ``max_shift``, are in those pixels)."""
        refined, ok, contradicted = refine_with_flow(image0, image1, self._to_flow_pixels(points0),
                                                     self._to_flow_pixels(guesses1), conf)
        return self._from_flow_pixels(refined), ok, contradicted

    def _refine_temporal(self, features: Features, previous: Features, accepted: np.ndarray,
                         gray: np.ndarray) -> tuple:
        """Current positions of the accepted temporal matches ``(prev idx, curr idx)``, refined by
        flow from the previous image (kept as they are across a size change or without matches).
        Returns ``(features, contradicted (len(accepted),) bool)``: matches the flow contradicts
        (:func:`superpoint_ros.flow.refine_with_flow`)."""
        previous_gray = self._previous_gray
        if previous_gray is None or previous_gray.shape != gray.shape or not len(accepted):
            return features, np.zeros(len(accepted), dtype=bool)
        refined, ok, contradicted = self._flow(previous_gray, gray, previous.keypoints[accepted[:, 0]],
                                               features.keypoints[accepted[:, 1]])
        return _with_refined(features, accepted[:, 1], refined, ok), contradicted

    def _refine_stereo(self, left: Features, right: Features, indices: np.ndarray, gray: list) -> tuple:
        """Right points of the stereo matches ``(left idx, right idx)`` refined by flow from the
        left image -> ``(right features, disparities (K,) float32 px, keep (K,) bool)``; ``keep`` is
        False for the matches the flow contradicts."""
        conf = self.conf
        left_xy = left.keypoints[indices[:, 0]]
        refined, ok, contradicted = self._flow(gray[0], gray[1], left_xy, right.keypoints[indices[:, 1]])
        disparity = left_xy[:, 0] - refined[:, 0]
        # a refined point must still obey the rectified-stereo limits
        ok &= ((np.abs(refined[:, 1] - left_xy[:, 1]) <= conf["stereo.epipolar_tolerance"])
               & (disparity >= conf["stereo.min_disparity"]) & (disparity <= conf["stereo.max_disparity"]))
        right = _with_refined(right, indices[:, 1], refined, ok)
        return right, (left_xy[:, 0] - right.keypoints[indices[:, 1], 0]).astype(np.float32), ~contradicted

    # --- tracking.max_age ------------------------------------------------------------------------
    def _verify_refound(self, current: np.ndarray, frames_ago: np.ndarray, last_xy: np.ndarray,
                        candidate_xy: np.ndarray) -> tuple:
        """Whether lost tracks last seen ``frames_ago`` (``(K,)`` int) frames before the image
        ``current`` at ``last_xy`` really are at the keypoints ``candidate_xy`` (``(K, 2)`` xy px)
        the descriptors re-found them on: flow from the image each was last seen in must confirm it
        within :data:`REFOUND_FLOW`. Returns ``(ok (K,) bool, xy (K, 2))``, xy the flow's positions
        (as for any refined match). Used only with flow refinement (without it, nothing confirms)."""
        candidate_xy = np.asarray(candidate_xy, np.float32)
        ok, xy = np.zeros(len(frames_ago), dtype=bool), candidate_xy.copy()
        for ago in np.unique(frames_ago):
            if ago > len(self._grays) or self._grays[-ago].shape != current.shape:
                continue  # that image is gone (or of another size): cannot confirm
            rows = np.flatnonzero(frames_ago == ago)
            refined, ok[rows], _ = self._flow(self._grays[-ago], current, last_xy[rows], candidate_xy[rows],
                                              REFOUND_FLOW)
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
