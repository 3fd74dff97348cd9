"""The node's ``sensor_msgs/CameraInfo`` inputs: which intrinsics each frame is processed with.

Topics (``camera_info.mode`` auto or required; none with off): mono ``camera_info``, stereo
``left/camera_info`` and ``right/camera_info``, each next to its image topic as image_transport
names it (the resolved image topic's namespace + ``/camera_info``: ``-r image:=/camera/image_raw``
subscribes ``/camera/camera_info``; a remap of ``camera_info`` itself wins). Reliability and depth
as the images' (``qos.reliability``, ``qos.depth``).

Each frame takes the camera_info of its own stamp (:class:`superpoint_ros.sync.StampSynchronizer`:
exact stamp first, else the closest within ``sync.slop`` as ``sync.mode`` says; drivers publish
camera_info at the image stamp), else the latest one received. A CameraModel is built only when
the message's calibration fields change (:func:`calibration_key`). A camera_info that cannot be
used (``CameraInfoError``: unknown distortion model, uncalibrated, malformed), one whose size is
not the image's, or none at all with ``camera_info.mode: required``, makes the frame pixel-only,
with the reason (:attr:`CameraInfoChoice.problems`: the node logs them throttled and warns in
diagnostics).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Tuple

from sensor_msgs.msg import CameraInfo

from ..camera_models import CameraInfoError, CameraModel, camera_for_images, images_are_rectified
from ..stamps import message_stamp_ns
from ..sync import StampSynchronizer, slop_ns_for
from .inputs import ImageInput

INFO_NAME = "camera_info"


def camera_info_topic(node, image_base: str, info_base: str) -> str:
    """The resolved camera_info topic of the image input ``image_base`` (e.g. ``"image"``):
    ``info_base`` (e.g. ``"camera_info"``) where it is remapped, else the resolved image topic's
    namespace + ``/camera_info`` (image_transport's rule)."""
    remapped = node.resolve_topic_name(info_base)
    if remapped != node.resolve_topic_name(info_base, only_expand=True):
        return remapped
    namespace = node.resolve_topic_name(image_base).rsplit("/", 1)[0]
    return f"{namespace}/{INFO_NAME}"


def calibration_key(msg) -> Tuple:
    """The fields a :class:`CameraModel` is built from (size, distortion model, D, K, R, P), as
    comparable values: equal keys, same camera."""
    return (int(msg.width), int(msg.height), str(msg.distortion_model),
            *(tuple(float(v) for v in getattr(msg, name)) for name in ("d", "k", "r", "p")))


@dataclass(frozen=True)
class Calibration:
    """What one camera_info message gives: the ``camera``, or ``error`` (why it cannot be used)."""

    camera: Optional[CameraModel]
    error: Optional[str] = None


class CameraInfoTrack:
    """The camera_info messages of one camera (``topic``): stamped for pairing with frames, the
    latest kept, and the model of the last distinct calibration cached. Thread-safe (the
    subscription adds, the worker looks up)."""

    def __init__(self, topic: str, slop_ns: int, queue_size: int, rectified_images: bool = False):
        self.topic = topic
        #: the images are rectified already (camera_info.images): use the rectified camera
        self.rectified_images = rectified_images
        self._sync = StampSynchronizer(("frame", INFO_NAME), slop_ns, queue_size)
        self._lock = threading.Lock()
        self.latest: Any = None
        self.received = 0
        self._key: Optional[Tuple] = None
        self._calibration: Optional[Calibration] = None

    def add(self, stamp_ns: int, msg) -> None:
        """A camera_info message (stamp ``stamp_ns``). A set it forms pairs it with a frame that
        was processed before it arrived (with the latest then): nothing more to do for that one."""
        self._sync.add(INFO_NAME, stamp_ns, msg)
        with self._lock:
            self.latest, self.received = msg, self.received + 1

    def lookup(self, stamp_ns: int) -> Tuple[Any, bool]:
        """(the camera_info for the frame stamped ``stamp_ns``, whether it matched by stamp):
        the stamp's own, else the latest received (``None`` before the first)."""
        pair = self._sync.add("frame", stamp_ns, stamp_ns)
        if pair is not None:
            return pair[1], True
        with self._lock:
            return self.latest, False

    def calibration(self, msg) -> Calibration:
        """The model of ``msg``, built only when its calibration differs from the last one's."""
        key = calibration_key(msg)
        with self._lock:
            if key == self._key:
                return self._calibration
        try:
            calibration = Calibration(camera_for_images(msg, self.rectified_images))
        except CameraInfoError as e:
            calibration = Calibration(None, str(e))
        with self._lock:
            self._key, self._calibration = key, calibration
        return calibration


@dataclass(frozen=True)
class CameraInfoChoice:
    """The intrinsics one frame is processed with: ``left`` (mono or left) and ``right``
    (stereo) models or ``None`` (pixel-only); ``problems``: why a camera is not used, for the
    log and diagnostics; ``summary``: what is used, for diagnostics (``camera_info`` value)."""

    left: Optional[CameraModel]
    right: Optional[CameraModel]
    problems: Tuple[str, ...]
    summary: str


class CameraInfoInputs:
    """The camera_info subscriptions of a node (one per image input, in ``image_bases`` order:
    mono, or left and right) and the per-frame choice of intrinsics (:meth:`for_frame`)."""

    def __init__(self, node, mode: str, image_bases: Sequence[str], info_bases: Sequence[str], depth: int,
                 reliability: str, sync_mode: str, slop_s: float, queue_size: int, images: str = "auto"):
        if mode not in ("auto", "required"):
            raise ValueError(f"camera_info.mode {mode!r} subscribes nothing (auto or required do)")
        self.required = mode == "required"
        slop_ns = slop_ns_for(sync_mode, slop_s)
        self.tracks = [CameraInfoTrack(camera_info_topic(node, image, info), slop_ns, queue_size,
                                       images_are_rectified(node.resolve_topic_name(image), images))
                       for image, info in zip(image_bases, info_bases)]
        self.inputs = [ImageInput(node, CameraInfo, track.topic, self._feed(track), depth, reliability)
                       for track in self.tracks]

    @staticmethod
    def _feed(track: CameraInfoTrack):
        def on_camera_info(msg) -> None:
            track.add(message_stamp_ns(msg), msg)
        return on_camera_info

    def _camera(self, track: CameraInfoTrack, stamp_ns: int, image_size: Tuple[int, int]):
        """(model or None, problem or None, summary) of one camera for one frame."""
        msg, matched = track.lookup(stamp_ns)
        if msg is None:
            if self.required:
                return None, (f"no camera_info on {track.topic} yet (camera_info.mode: required): "
                              f"pixel-only output"), f"{track.topic}: none yet"
            return None, None, f"{track.topic}: none yet"
        calibration = track.calibration(msg)
        if calibration.camera is None:
            return None, f"camera_info on {track.topic} cannot be used ({calibration.error}): pixel-only output", \
                f"{track.topic}: unusable"
        camera = calibration.camera
        if camera.image_size != tuple(image_size):
            (h, w), (ih, iw) = camera.image_size, image_size
            return None, (f"camera_info on {track.topic} is for {w}x{h} px images, the image is {iw}x{ih} px: "
                          f"pixel-only output"), f"{track.topic}: size mismatch"
        # rectified images (camera_info.images): the camera is CameraInfo's P, whatever its distortion
        model = "rectified (P)" if track.rectified_images else camera.distortion_model or "no distortion"
        return camera, None, (f"{track.topic}: {model} {camera.width}x{camera.height} px "
                              f"({'stamp match' if matched else 'latest'})")

    def for_frame(self, stamp_ns: int, image_sizes: Sequence[Tuple[int, int]]) -> CameraInfoChoice:
        """The intrinsics for the frame stamped ``stamp_ns`` whose images are ``image_sizes``
        (``(height, width)`` px each, in input order). Stereo without the left camera is
        pixel-only on both sides; without the right one the left is still used."""
        cameras: List[Optional[CameraModel]] = []
        problems, summaries = [], []
        for track, size in zip(self.tracks, image_sizes):
            camera, problem, summary = self._camera(track, stamp_ns, size)
            cameras.append(camera)
            summaries.append(summary)
            if problem:
                problems.append(problem)
        left = cameras[0]
        right = cameras[1] if len(cameras) > 1 and left is not None else None
        return CameraInfoChoice(left, right, tuple(problems), "; ".join(summaries))
