"""``superpoint-eval-bag --output-bag``: the node's output topics written to a bag, with the input images.

The messages are the node's own (:func:`superpoint_ros.io.messages.frame_messages`, the codec the
node publishes with), under the topic names a node in ``namespace`` publishes, so the bag replays
in rviz/Foxglove or feeds ``superpoint-bag-play`` like a recording of the node.
"""
from __future__ import annotations

from typing import Dict, Optional

from ..io import bags, messages
from .bag_frames import Frame

#: The node's output topics (relative names, resolved in the node's namespace).
NODE_OUTPUTS = ("features", "features_right", "temporal_matches", "stereo_matches")
#: The namespace the launch files (launch/*.launch.py) give the node.
DEFAULT_NAMESPACE = "/superpoint"


class OutputBag:
    """Writes the node's output messages (its codec's :func:`frame_messages`, its topic names)
    plus the input images. ``vins_layout``: ``"fusion"`` or ``"mono"`` also writes the node's
    ``vins_feature`` topic (``sensor_msgs/PointCloud`` in that VINS layout; frames without
    intrinsics have none), as ``output.vins_feature`` does in the node."""

    def __init__(self, writer: bags.BagWriter, namespace: str = DEFAULT_NAMESPACE, vins_layout: Optional[str] = None):
        if vins_layout is not None and vins_layout not in messages.VINS_LAYOUTS:
            raise ValueError(f"VINS layout must be one of {', '.join(messages.VINS_LAYOUTS)}, got {vins_layout!r}")
        self.writer, self.messages, self.vins_layout = writer, messages, vins_layout
        self.classes = messages.MessageClasses.from_typestore(bags.typestore().types)
        self.topics = output_topics(namespace, vins=vins_layout is not None)

    def write(self, frame: Frame, result) -> None:
        for topic, msgtype, raw, log_time in frame.raw:
            self.writer.write_raw(topic, msgtype, raw, log_time)
        # as the node: the right features carry the right frame_id and the left stamp
        for name, msg in self.messages.frame_messages(result, frame.frame_id, self.classes, frame.right_frame_id,
                                                      vins_layout=self.vins_layout).items():
            self.writer.write(self.topics[name], msg, frame.log_time_ns)


def output_topics(namespace: str = "/", vins: bool = False) -> Dict[str, str]:
    """The node's output topic names as a node in ``namespace`` publishes them (``/features``...
    for ``ros2 run superpoint_ros superpoint_node``; ``/cam/features``... with ``__ns:=/cam``);
    ``vins``: with the ``vins_feature`` topic."""
    prefix = "/" + namespace.strip("/") if namespace.strip("/") else ""
    names = NODE_OUTPUTS + ((messages.VINS_OUTPUT,) if vins else ())
    return {name: f"{prefix}/{name}" for name in names}
