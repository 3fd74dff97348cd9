"""Reading a bag's frames for the bag evaluators (``superpoint-eval-bag``, ``superpoint-eval-slam``).

Mono frames, or stereo pairs paired by header stamp with the node's synchroniser
(:class:`superpoint_ros.sync.StampSynchronizer`), and the ``camera_info`` topics next to the image
topics. Messages come from :mod:`superpoint_ros.io.bags` (rosbag2 sqlite3/mcap, ROS 1 bags).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np

from ..io import bags
from ..sync import StampSynchronizer


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
    """A frame to process: stamp, frame_id, images, and the input messages' raw data for copying."""

    stamp_ns: int
    log_time_ns: int
    frame_id: str
    left: np.ndarray
    right: Optional[np.ndarray] = None
    raw: List[Tuple[str, str, bytes, int]] = field(default_factory=list)  # (topic, msgtype, cdr, log time)
    right_frame_id: Optional[str] = None


def iterate_frames(bag: Path, left_topic: str, right_topic: Optional[str] = None, slop_ns: int = 0,
                   queue_size: int = 10) -> Iterator[Frame]:
    """Mono frames, or stereo pairs matched by header stamp in bag order by the node's
    synchroniser (:class:`superpoint_ros.sync.StampSynchronizer`: exact stamps first, else the
    closest within ``slop_ns``; at most ``queue_size`` unpaired images wait per side)."""
    topic_list = [left_topic] + ([right_topic] if right_topic else [])
    sync = StampSynchronizer(topic_list, slop_ns, queue_size)
    for item in bags.read_messages(bag, topic_list):
        message = item.message
        entry = (bags.stamp_ns(message), item.log_time_ns, message.header.frame_id, bags.message_image(message),
                 (item.topic, item.msgtype, item.raw, item.log_time_ns))
        matched = sync.add(item.topic, entry[0], entry)
        if matched is None:
            continue
        if right_topic is None:
            yield Frame(entry[0], entry[1], entry[2], entry[3], None, [entry[4]])
            continue
        left, right = matched
        yield Frame(left[0], max(left[1], right[1]), left[2], left[3], right[3], [left[4], right[4]], right[2])

