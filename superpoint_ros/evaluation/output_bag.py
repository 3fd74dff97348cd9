"""``superpoint-eval-bag --output-bag``: the node's output topics written to a bag, with the input images.

The messages are the node's own (:func:`superpoint_ros.io.messages.frame_messages`, the codec the
node publishes with), under the topic names a node in ``namespace`` publishes, so the bag replays
in rviz/Foxglove or feeds ``superpoint-bag-play`` like a recording of the node.
"""
from __future__ import annotations

from typing import Dict

from ..io import bags, messages
from .bag_frames import Frame

#: The node's output topics (relative names, resolved in the node's namespace).
NODE_OUTPUTS = ("features", "features_right", "temporal_matches", "stereo_matches")
#: The namespace the launch files (launch/*.launch.py) give the node.
DEFAULT_NAMESPACE = "/superpoint"


class OutputBag:
    """Writes the node's output messages (its codec's :func:`frame_messages`, its topic names)
    plus the input images."""

    def __init__(self, writer: bags.BagWriter, namespace: str = DEFAULT_NAMESPACE):
        self.writer, self.messages = writer, messages
        self.classes = messages.MessageClasses(
            bags.msg_class("std_msgs/msg/Header"), bags.msg_class("builtin_interfaces/msg/Time"),
            bags.msg_class("sensor_msgs/msg/PointCloud2"), bags.msg_class("sensor_msgs/msg/PointField"),
            data_as_array=True)
        self.topics = output_topics(namespace)

    def write(self, frame: Frame, result) -> None:
        for topic, msgtype, raw, log_time in frame.raw:
            self.writer.write_raw(topic, msgtype, raw, log_time)
        # as the node: the right features carry the right frame_id and the left stamp
        for name, msg in self.messages.frame_messages(result, frame.frame_id, self.classes,
                                                      frame.right_frame_id).items():
            self.writer.write(self.topics[name], msg, frame.log_time_ns)


def output_topics(namespace: str = "/") -> Dict[str, str]:
    """The node's output topic names as a node in ``namespace`` publishes them (``/features``...
    for ``ros2 run superpoint_ros superpoint_node``; ``/cam/features``... with ``__ns:=/cam``)."""
    prefix = "/" + namespace.strip("/") if namespace.strip("/") else ""
    return {name: f"{prefix}/{name}" for name in NODE_OUTPUTS}

