"""Reading a bag's frames for the bag evaluators (``superpoint-eval-bag``, ``superpoint-eval-slam``).

Mono frames, or stereo pairs paired by header stamp with the node's synchroniser
(:class:`superpoint_ros.sync.StampSynchronizer`), and the ``camera_info`` topics next to the image
topics: each frame carries its cameras' CameraInfo, paired by stamp as the node pairs them, and
:class:`BagCameras` turns them into camera models. Messages come from
:mod:`superpoint_ros.io.bags` (rosbag2 sqlite3/mcap, ROS 1 bags).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np

from ..camera_models import CameraInfoError, CameraModel, camera_for_images, same_camera
from ..io import bags
from ..sync import StampSynchronizer

logger = logging.getLogger(__name__)


def camera_matrix(info) -> np.ndarray:
    """K of a rectified camera from sensor_msgs/CameraInfo (P[:3, :3], falling back to K)."""
    p = np.asarray(info.p, np.float64).reshape(3, 4)
    K = p[:, :3] if p[0, 0] > 0 else np.asarray(info.k, np.float64).reshape(3, 3)
    if K[0, 0] <= 0 or K[1, 1] <= 0:
        raise bags.BagError("camera_info has no valid intrinsics (fx, fy <= 0)")
    return K


def find_camera_info(bag: Path, image_topic: str, available: Dict[str, Tuple[str, int]]) -> Optional[str]:
    """The camera_info topic next to an image topic (``.../image_rect`` -> ``.../camera_info``)."""
    base = image_topic.rsplit("/", 1)[0]
    candidate = f"{base}/camera_info"
    if available.get(candidate, ("",))[0] == bags.CAMERA_INFO_TYPE:
        return candidate
    return None


def first_camera_info(bag: Path, topic: str):
    for item in bags.read_messages(bag, [topic]):
        return item.message
    return None


@dataclass
class Frame:
    """A frame to process: stamp, frame_id, images, and the input messages' raw data for copying.
    ``left_info`` / ``right_info``: the CameraInfo messages paired with it (None when the bag has
    none for that camera, or none has arrived yet)."""

    stamp_ns: int
    log_time_ns: int
    frame_id: str
    left: np.ndarray
    right: Optional[np.ndarray] = None
    raw: List[Tuple[str, str, bytes, int]] = field(default_factory=list)  # (topic, msgtype, cdr, log time)
    right_frame_id: Optional[str] = None
    left_info: Any = None
    right_info: Any = None


class CameraInfoPairing:
    """Pairs frames with one camera's CameraInfo messages by stamp, with the node's synchroniser:
    the info with the frame's exact stamp first, else the closest within ``slop_ns`` (either may
    arrive first); a frame whose info has not come by the time the next frame does gets the
    latest info received (a camera that publishes its info rarely, or with other stamps)."""

    def __init__(self, slop_ns: int = 0, queue_size: int = 10):
        self._sync = StampSynchronizer(("frame", "info"), slop_ns, queue_size)
        #: the last CameraInfo received (None before the first)
        self.latest = None

    def add_info(self, stamp_ns: int, info) -> Optional["_Pending"]:
        """Feed a CameraInfo; returns the waiting frame it pairs with, if any."""
        self.latest = info
        matched = self._sync.add("info", stamp_ns, info)
        return None if matched is None else matched[0]

    def add_frame(self, stamp_ns: int, frame: "_Pending"):
        """Feed a frame; returns its CameraInfo when one already received pairs with it, else None
        (the frame waits in the synchroniser for :meth:`add_info`)."""
        matched = self._sync.add("frame", stamp_ns, frame)
        return None if matched is None else matched[1]


@dataclass
class _Pending:
    """A frame waiting for the CameraInfo of ``missing`` cameras ("left", "right")."""

    frame: Frame
    missing: set
    done: bool = False


def _frame_of(matched, right_topic: Optional[str]) -> Frame:
    if right_topic is None:
        (entry,) = matched
        return Frame(entry[0], entry[1], entry[2], entry[3], None, [entry[4]])
    left, right = matched
    return Frame(left[0], max(left[1], right[1]), left[2], left[3], right[3], [left[4], right[4]], right[2])


def iterate_frames(bag: Path, left_topic: str, right_topic: Optional[str] = None, slop_ns: int = 0,
                   queue_size: int = 10, left_info_topic: Optional[str] = None,
                   right_info_topic: Optional[str] = None) -> Iterator[Frame]:
    """Mono frames, or stereo pairs matched by header stamp in bag order by the node's
    synchroniser (:class:`superpoint_ros.sync.StampSynchronizer`: exact stamps first, else the
    closest within ``slop_ns``; at most ``queue_size`` unpaired images wait per side), in stamp
    order of completion. With ``left_info_topic`` / ``right_info_topic`` each frame also carries
    its cameras' CameraInfo (:class:`CameraInfoPairing`); a frame then waits at most until the
    next frame is complete."""
    image_topics = [left_topic] + ([right_topic] if right_topic else [])
    info_sides = {topic: side for side, topic in (("left", left_info_topic), ("right", right_info_topic)) if topic}
    images = StampSynchronizer(image_topics, slop_ns, queue_size)
    pairings = {side: CameraInfoPairing(slop_ns, queue_size) for side in info_sides.values()}
    pending: List[_Pending] = []

    def release(waiting: _Pending) -> Frame:
        for side in waiting.missing:  # its own info never came: the latest one, as the node does
            setattr(waiting.frame, f"{side}_info", pairings[side].latest)
        waiting.done = True
        return waiting.frame

    for item in bags.read_messages(bag, image_topics + list(info_sides)):
        message = item.message
        if item.topic in info_sides:
            side = info_sides[item.topic]
            waiting = pairings[side].add_info(bags.stamp_ns(message), message)
            if waiting is not None and not waiting.done:
                setattr(waiting.frame, f"{side}_info", message)
                waiting.missing.discard(side)
        else:
            entry = (bags.stamp_ns(message), item.log_time_ns, message.header.frame_id, bags.message_image(message),
                     (item.topic, item.msgtype, item.raw, item.log_time_ns))
            matched = images.add(item.topic, entry[0], entry)
            if matched is None:
                continue
            waiting = _Pending(_frame_of(matched, right_topic), set())
            for side, pairing in pairings.items():
                info = pairing.add_frame(waiting.frame.stamp_ns, waiting)
                if info is None:
                    waiting.missing.add(side)
                else:
                    setattr(waiting.frame, f"{side}_info", info)
            while pending:  # the frames before this one have had their chance
                yield release(pending.pop(0))
            pending.append(waiting)
        while pending and not pending[0].missing:
            yield release(pending.pop(0))
    for waiting in pending:
        yield release(waiting)


class BagCameras:
    """The camera models of the frames, from their CameraInfo messages
    (:meth:`superpoint_ros.camera_models.CameraModel.from_camera_info`). A CameraInfo that cannot
    be used (unknown distortion model, uncalibrated, malformed) gives ``None`` -- pixel-only --
    and one warning per distinct reason, not one per frame."""

    def __init__(self, warn: Callable[[str], None] = logger.warning, rectified_images: Tuple[bool, bool] = (False, False)):
        #: (left, right) images already rectified (camera_info.images): their rectified cameras are used
        self.rectified_images = rectified_images
        self.left: Optional[CameraModel] = None
        self.right: Optional[CameraModel] = None
        #: the warnings given, each once, in order
        self.warnings: List[str] = []
        self._warn = warn

    def _model(self, info, side: str) -> Optional[CameraModel]:
        if info is None:
            return None
        try:
            return camera_for_images(info, self.rectified_images[side == "right"])
        except CameraInfoError as e:
            self.warn_once(f"{side} camera_info unusable, pixel-only output: {e}")
            return None

    def warn_once(self, reason: str) -> None:
        """Log ``reason`` unless it was logged already; it is kept in :attr:`warnings`."""
        if reason not in self.warnings:
            self.warnings.append(reason)
            self._warn(reason)

    def update(self, frame: Frame) -> bool:
        """Read ``frame``'s CameraInfo; True when a camera model changed (appeared, went, or
        has a new calibration): then :attr:`left` / :attr:`right` are the new models."""
        left, right = self._model(frame.left_info, "left"), self._model(frame.right_info, "right")
        if left is None and right is not None:
            # as the node: without the left camera the pair is pixel-only (the Frontend needs the left one)
            self.warn_once("stereo without a usable left camera_info: the pair is processed pixel-only")
            right = None
        changed = not (same_camera(left, self.left) and same_camera(right, self.right))
        if changed:
            self.left, self.right = left, right
        return changed

