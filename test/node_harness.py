"""Test helper: the node under test plus a probe node, both on a real executor over loopback DDS.

conftest.py sets ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST and a private ROS_DOMAIN_ID before this
module imports rclpy.
"""
from __future__ import annotations

import threading
import time
from typing import Callable, Dict, List

import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image, PointCloud2
from diagnostic_msgs.msg import DiagnosticArray

from superpoint_ros.ros.node import SuperPointNode

RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


def image_msg(array: np.ndarray, stamp_ns: int, frame_id: str = "cam", encoding: str = None) -> Image:
    """numpy -> sensor_msgs/Image (mono8 / bgr8 by shape unless given)."""
    array = np.ascontiguousarray(array)
    msg = Image()
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(int(stamp_ns), 1_000_000_000)
    msg.header.frame_id = frame_id
    msg.height, msg.width = array.shape[:2]
    msg.encoding = encoding or ("mono8" if array.ndim == 2 else "bgr8")
    msg.is_bigendian = 0
    msg.step = array.strides[0]
    msg.data = array.tobytes()
    return msg


class Harness:
    """Starts :class:`SuperPointNode` (or ``node_class``, e.g. the lifecycle node) with ``params``
    (and ``node_kwargs``, e.g. ``cli_args`` with ``-r`` remaps) and a probe node that records its outputs."""

    def __init__(self, params: Dict, topics=("features", "temporal_matches"), debug: bool = False,
                 node_class: type = SuperPointNode, **node_kwargs):
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        overrides = [Parameter(name, value=value) for name, value in params.items()]
        try:
            self.node = node_class(context=self.context, parameter_overrides=overrides, **node_kwargs)
        except Exception:
            rclpy.shutdown(context=self.context)
            raise
        self.probe = rclpy.create_node("probe", context=self.context)
        self.received: Dict[str, List] = {t: [] for t in topics}
        self._lock = threading.Lock()
        self.subs = [self.probe.create_subscription(PointCloud2, t, self._recorder(t), RELIABLE) for t in topics
                     if t not in ("debug_image", "/diagnostics")]
        if "debug_image" in topics:
            self.subs.append(self.probe.create_subscription(Image, "debug_image", self._recorder("debug_image"), RELIABLE))
        if "/diagnostics" in topics:
            self.subs.append(self.probe.create_subscription(DiagnosticArray, "/diagnostics",
                                                            self._recorder("/diagnostics"), 10))
        # single-threaded, like the node's own main(): rclpy's MultiThreadedExecutor (Kilted) was measured
        # here delivering some messages 0.5-2.4 s late even with nothing else running
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.executor.add_node(self.probe)
        self._spin = threading.Thread(target=self.executor.spin, daemon=True)
        self._spin.start()

    def _recorder(self, topic: str):
        def record(msg):
            with self._lock:
                self.received[topic].append(msg)
        return record

    def publisher(self, topic: str, compressed: bool = False):
        pub = self.probe.create_publisher(CompressedImage if compressed else Image, topic, RELIABLE)
        self.wait_for(lambda: pub.get_subscription_count() > 0, 5.0, f"discovery of {topic}")
        return pub

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.01)
        raise AssertionError(f"timed out after {timeout} s waiting for {what}")

    def count(self, topic: str) -> int:
        with self._lock:
            return len(self.received[topic])

    def publish_and_wait(self, pub, msg, topic: str = "features", timeout: float = 10.0):
        """Publish one frame and wait for the node's next message on ``topic``."""
        before = self.count(topic)
        pub.publish(msg)
        self.wait_for(lambda: self.count(topic) > before, timeout, f"a message on {topic}")
        return self.received[topic][-1]

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=5.0)
        self._spin.join(timeout=5.0)
        self.node.destroy_node()
        self.probe.destroy_node()
        rclpy.shutdown(context=self.context)
