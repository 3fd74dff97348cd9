"""A separate process that plays a camera driver: publishes ``--frames`` bgr8 images of
``--size HxW`` on ``image`` at ``--rate`` Hz with ``--reliability`` QoS, once the topic has a
subscriber. Prints ``ready`` when it has one (or ``no subscriber`` and exits 1), then ``done``.
Stamps are ``k * 10**8`` ns for frame k = 1..frames. Used by test_node_inputs.py: a driver in
another process talks to the node through a real DDS transport (in one process Fast DDS delivers
intra-process and never fragments)."""
import argparse
import sys
import time

import numpy as np
import rclpy
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--topic", default="image")
    p.add_argument("--size", default="480x512")
    p.add_argument("--frames", type=int, default=10)
    p.add_argument("--rate", type=float, default=2.0)
    p.add_argument("--reliability", choices=["reliable", "best_effort"], default="reliable")
    p.add_argument("--wait", type=float, default=20.0, help="seconds to wait for a subscriber")
    args = p.parse_args()
    height, width = map(int, args.size.split("x"))
    rclpy.init()
    node = rclpy.create_node("camera_driver")
    reliability = ReliabilityPolicy.RELIABLE if args.reliability == "reliable" else ReliabilityPolicy.BEST_EFFORT
    pub = node.create_publisher(Image, args.topic, QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5,
                                                              reliability=reliability))
    deadline = time.monotonic() + args.wait
    while pub.get_subscription_count() == 0:
        if time.monotonic() > deadline:
            print("no subscriber", flush=True)
            return 1
        time.sleep(0.05)
    time.sleep(0.5)  # the subscriber's side of the match completes too
    print("ready", flush=True)
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8)
    image = np.ascontiguousarray(np.repeat(np.repeat(texture, 8, axis=0), 8, axis=1))
    for k in range(1, args.frames + 1):
        msg = Image(height=height, width=width, encoding="bgr8", is_bigendian=0, step=width * 3)
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(k * 10 ** 8, 10 ** 9)
        msg.header.frame_id = "camera"
        msg.data = np.roll(image, k, axis=1).tobytes()
        pub.publish(msg)
        time.sleep(1.0 / args.rate)
    time.sleep(1.0)  # a reliable writer keeps repairing lost fragments while it lives
    print("done", flush=True)
    node.destroy_node()
    rclpy.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
