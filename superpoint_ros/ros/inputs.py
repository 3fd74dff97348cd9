"""The node's image inputs: topic names, reliability, and the Fast DDS shared-memory check.

- :func:`input_topic`: the fully resolved name of an input (namespace and ``-r`` remaps applied);
  a compressed input is ``<resolved image topic>/compressed`` as image_transport names it, so
  remapping ``image`` is enough.
- :class:`ImageInput`: one image subscription whose reliability is ``qos.reliability``; ``auto``
  subscribes with what the topic's publishers offer (rosbag2's rule, :func:`offered_reliability`)
  once one is seen and re-subscribes when they change.
- :class:`SharedMemoryCheck`: frames larger than this process's Fast DDS shared-memory segment
  (default 512 KiB, smaller than one 640x480 bgr8 frame) are fragmented; it says so, once.
"""
from __future__ import annotations

import os
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence, Tuple

from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

COMPRESSED_SUFFIX = "/compressed"
#: Fast DDS's SharedMemTransportDescriptor segment_size default (512*1024 octets, Fast DDS docs,
#: "Shared Memory Transport"); measured here: the segment file Fast DDS 3.2 creates without a
#: profile is 549,408 bytes (segment plus its bookkeeping).
FASTDDS_DEFAULT_SEGMENT_BYTES = 512 * 1024
PROFILE_ENV = "FASTDDS_DEFAULT_PROFILES_FILE"
RELIABILITY_NAMES = {ReliabilityPolicy.RELIABLE: "reliable", ReliabilityPolicy.BEST_EFFORT: "best_effort"}


def input_topic(node, base: str, compressed: bool) -> str:
    """The fully resolved topic of the image input ``base`` (relative, e.g. ``"image"``).

    With ``compressed``: ``<resolved base>/compressed``, as image_transport derives it, so
    ``-r image:=/camera/image_raw`` subscribes ``/camera/image_raw/compressed``; a remap of
    ``<base>/compressed`` itself still wins.
    """
    resolved = node.resolve_topic_name(base)
    if not compressed:
        return resolved
    own = base + COMPRESSED_SUFFIX
    remapped = node.resolve_topic_name(own)
    if remapped != node.resolve_topic_name(own, only_expand=True):
        return remapped
    return resolved + COMPRESSED_SUFFIX


def offered_reliability(publishers: Sequence) -> Optional[ReliabilityPolicy]:
    """The reliability that hears every publisher at its best (rosbag2's rule): RELIABLE when all
    offer reliable, else BEST_EFFORT (a reliable subscription does not match a best-effort
    publisher); ``None`` without publishers. ``publishers``: rclpy TopicEndpointInfo."""
    if not publishers:
        return None
    if all(p.qos_profile.reliability == ReliabilityPolicy.RELIABLE for p in publishers):
        return ReliabilityPolicy.RELIABLE
    return ReliabilityPolicy.BEST_EFFORT


class ImageInput:
    """One image subscription on the resolved ``topic``, keep-last ``depth``.

    ``reliability``: ``"reliable"`` or ``"best_effort"`` subscribe at once; ``"auto"`` waits for
    a publisher and subscribes with :func:`offered_reliability`; :meth:`refresh` (the node calls
    it on a timer) re-subscribes when the publishers' offer changes. Every choice is logged.
    """

    def __init__(self, node, msg_type, topic: str, callback: Callable, depth: int, reliability: str):
        self.node, self.msg_type, self.topic, self.callback, self.depth = node, msg_type, topic, callback, depth
        self.auto = reliability == "auto"
        self.subscription = None
        self.reliability: Optional[ReliabilityPolicy] = None  # of self.subscription
        if self.auto:
            self.refresh()
        else:
            self._subscribe(ReliabilityPolicy.RELIABLE if reliability == "reliable" else ReliabilityPolicy.BEST_EFFORT)

    def refresh(self) -> None:
        """auto: (re-)subscribe if the publishers now offer another reliability than subscribed."""
        if not self.auto:
            return
        publishers = self.node.get_publishers_info_by_topic(self.topic)
        wanted = offered_reliability(publishers)
        if wanted is None or wanted == self.reliability:
            return
        reliable = sum(p.qos_profile.reliability == ReliabilityPolicy.RELIABLE for p in publishers)
        verb = "subscribed" if self.subscription is None else "re-subscribed"
        self._subscribe(wanted)
        self.node.get_logger().info(
            f"{verb} to {self.topic} {RELIABILITY_NAMES[wanted]} (qos.reliability auto: {reliable} of "
            f"{len(publishers)} publisher(s) offer reliable)")

    def _subscribe(self, reliability: ReliabilityPolicy) -> None:
        if self.subscription is not None:
            self.node.destroy_subscription(self.subscription)
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=self.depth, reliability=reliability)
        self.subscription = self.node.create_subscription(self.msg_type, self.topic, self.callback, qos)
        self.reliability = reliability

    def reliability_text(self) -> str:
        """``reliable``, ``best_effort``, ``reliable (auto)`` or ``auto: waiting for a publisher``."""
        if self.reliability is None:
            return "auto: waiting for a publisher"
        return RELIABILITY_NAMES[self.reliability] + (" (auto)" if self.auto else "")

    def describe(self) -> str:
        """``/camera/image_raw (sensor_msgs/Image, reliable)`` for the start-up log."""
        return f"{self.topic} (sensor_msgs/{self.msg_type.__name__}, {self.reliability_text()})"


def profile_path() -> str:
    """Where config/fastdds_shm.xml is: the source tree, the pip prefix or the ROS share folder;
    the ``ros2 pkg prefix`` spelling when none is found."""
    candidates = [Path(__file__).resolve().parents[2] / "config" / "fastdds_shm.xml",
                  Path(sys.prefix) / "share" / "superpoint_ros" / "config" / "fastdds_shm.xml"]
    try:  # a colcon/ROS install
        from ament_index_python.packages import get_package_share_directory

        candidates.append(Path(get_package_share_directory("superpoint_ros")) / "config" / "fastdds_shm.xml")
    except Exception:  # ament_index absent, or the package not in AMENT_PREFIX_PATH
        pass
    for candidate in candidates:
        if candidate.is_file():
            return str(candidate)
    return "$(ros2 pkg prefix superpoint_ros)/share/superpoint_ros/config/fastdds_shm.xml"


def shm_segment_bytes(environ: Mapping[str, str]) -> Tuple[int, str]:
    """(bytes, where from): the largest SHM ``segment_size`` of the Fast DDS profile file in
    ``environ[FASTDDS_DEFAULT_PROFILES_FILE]``, or Fast DDS's default when the variable is unset,
    the file unreadable or without one."""
    path = environ.get(PROFILE_ENV, "")
    if not path:
        return FASTDDS_DEFAULT_SEGMENT_BYTES, f"{PROFILE_ENV} is not set"
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as e:
        return FASTDDS_DEFAULT_SEGMENT_BYTES, f"{PROFILE_ENV}={path} is not a readable profile ({e})"
    sizes = []
    for element in root.iter():
        if element.tag.rsplit("}", 1)[-1] != "transport_descriptor":
            continue
        fields = {child.tag.rsplit("}", 1)[-1]: (child.text or "").strip() for child in element}
        if fields.get("type") == "SHM" and fields.get("segment_size", "").isdigit():
            sizes.append(int(fields["segment_size"]))
    if not sizes:
        return FASTDDS_DEFAULT_SEGMENT_BYTES, f"{PROFILE_ENV}={path} sets no SHM segment_size"
    return max(sizes), f"{PROFILE_ENV}={path}"


class SharedMemoryCheck:
    """Says once that images are larger than this process's Fast DDS shared-memory segment:
    such frames go in fragments, and a best-effort subscription to a reliable camera then loses
    most of them. Inactive on other RMWs."""

    def __init__(self, rmw_implementation: str, environ: Mapping[str, str] = os.environ):
        self.active = rmw_implementation.startswith("rmw_fastrtps")
        self.segment_bytes, self.source = shm_segment_bytes(environ) if self.active else (0, "")
        self.warning: Optional[str] = None

    def check(self, msg) -> Optional[str]:
        """The warning the first time ``msg.data`` (bytes) exceeds the segment, else ``None``."""
        if not self.active or self.warning is not None or len(msg.data) <= self.segment_bytes:
            return None
        self.warning = (f"images of {len(msg.data)} bytes are larger than the Fast DDS shared-memory segment of "
                        f"{self.segment_bytes} bytes ({self.source}): they travel in fragments, slowly, and a "
                        f"best-effort subscription loses most of them; export {PROFILE_ENV}={profile_path()} "
                        f"for the camera driver and this node (docs/node.md)")
        return self.warning
