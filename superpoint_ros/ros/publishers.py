"""The node's outputs: front-end results -> :func:`superpoint_ros.io.messages.frame_messages` ->
publishers, and the debug image.

Every output publisher accepts rclpy's QoS overrides (``qos_overrides.<topic>.publisher.<policy>``
for history, depth and reliability: :data:`OUTPUT_QOS_OVERRIDES`); their defaults are keep-last
``qos.depth`` (/diagnostics: 10), reliable, volatile.
"""
from __future__ import annotations

from collections import deque
from typing import Callable, Dict, List, Optional

import numpy as np
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import Point32
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import ChannelFloat32, Image, PointCloud, PointCloud2, PointField
from std_msgs.msg import Header

from ..io.messages import VINS_OUTPUT, MessageClasses, frame_messages
from ..visualization import draw_keypoints, draw_tracks

#: what the node's output messages are built with (superpoint_ros.io.messages.frame_messages)
RCLPY_MESSAGES = MessageClasses(Header, Time, PointCloud2, PointField, point_cloud=PointCloud, point32=Point32,
                                channel=ChannelFloat32)
DEBUG_TOPIC, DIAGNOSTICS_TOPIC = "debug_image", "/diagnostics"
STEREO_OUTPUTS = ("features_right", "stereo_matches")
DIAGNOSTICS_DEPTH = 10
#: the QoS policies a user may override on every output publisher (rclpy declares the read-only
#: parameters ``qos_overrides.<resolved topic>.publisher.<policy>``)
OUTPUT_QOS_OVERRIDES = QoSOverridingOptions.with_default_policies()
QOS_OVERRIDE_POLICIES = tuple(p.name.lower() for p in OUTPUT_QOS_OVERRIDES.policy_kinds)


def output_topics(stereo: bool, vins: bool) -> List[str]:
    """The relative names of the topics the node publishes, in log order."""
    topics = ["features", *(STEREO_OUTPUTS if stereo else ()), "temporal_matches"]
    if vins:
        topics.append(VINS_OUTPUT)
    return topics + [DEBUG_TOPIC, DIAGNOSTICS_TOPIC]


class OutputPublishers:
    """The publishers of one node. ``create(msg_type, topic, qos, **kwargs)``: the node's
    ``create_publisher`` (or ``create_lifecycle_publisher``); ``depth``: ``qos.depth``;
    ``vins_layout``: ``output.vins_feature`` (``""`` = no vins_feature topic)."""

    def __init__(self, create: Callable, depth: int, stereo: bool, vins_layout: str = ""):
        def publisher(msg_type, topic, history_depth=depth):
            # a profile of its own: rclpy writes the topic's overrides into the profile it is given
            qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=history_depth, reliability=ReliabilityPolicy.RELIABLE)
            return create(msg_type, topic, qos, qos_overriding_options=OUTPUT_QOS_OVERRIDES)

        self.vins_layout = vins_layout or None
        self.frames: Dict[str, object] = {}  # frame_messages' output name -> publisher
        for topic in output_topics(stereo, bool(vins_layout)):
            if topic == VINS_OUTPUT:
                self.frames[topic] = publisher(PointCloud, topic)
            elif topic == DEBUG_TOPIC:
                self.debug_image = publisher(Image, topic)
            elif topic == DIAGNOSTICS_TOPIC:
                self.diagnostics = publisher(DiagnosticArray, topic, DIAGNOSTICS_DEPTH)
            else:
                self.frames[topic] = publisher(PointCloud2, topic)
        self.features = self.frames["features"]

    def all(self) -> list:
        """Every publisher, in :func:`output_topics` order."""
        return [*self.frames.values(), self.debug_image, self.diagnostics]

    def debug_wanted(self) -> bool:
        """Someone subscribes to debug_image (drawing costs CPU: only then)."""
        return self.debug_image.get_subscription_count() > 0

    def publish_frame(self, result, frame_id: str, right_frame_id: Optional[str] = None) -> None:
        """The result's output messages (as the output bag writes them), each on its topic."""
        for name, msg in frame_messages(result, frame_id, RCLPY_MESSAGES, right_frame_id, self.vins_layout).items():
            self.frames[name].publish(msg)


class DebugImage:
    """The debug image: keypoints coloured by score and each track's last ``length`` positions
    (the trails are this object's state; a reset clears them)."""

    def __init__(self):
        self._trails: Dict[int, deque] = {}

    def clear(self) -> None:
        self._trails.clear()

    def render(self, image: np.ndarray, result, header, length: int) -> Image:
        """``image`` (the decoded input, gray or bgr) with ``result``'s keypoints and trails, as
        a bgr8 Image with ``header``."""
        if result.reset_reason or result.temporal is None:
            self._trails.clear()
        current = {}
        for track_id, xy in zip(result.track_ids.tolist(), result.features.keypoints):
            trail = self._trails.get(track_id) or deque(maxlen=max(length, 1))
            trail.append(xy)
            current[track_id] = trail
        self._trails = current
        canvas = draw_keypoints(image, result.features.keypoints, result.features.scores)
        if length > 1:
            draw_tracks(canvas, [np.array(t) for t in current.values() if len(t) > 1])
        msg = Image(header=header, height=canvas.shape[0], width=canvas.shape[1], encoding="bgr8",
                    is_bigendian=0, step=canvas.shape[1] * 3)
        msg.data = canvas.tobytes()
        return msg
