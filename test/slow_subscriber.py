"""A separate process that subscribes to ``features`` (reliable, depth 1) and takes 0.5 s per
message (``--stuck``: stays in its first message until terminated); prints ``received <stamp ns>``
per message. Used by test_reliability_runtime.py."""
import sys
import time

import rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import PointCloud2


def main() -> None:
    seconds_per_message = 3600.0 if "--stuck" in sys.argv[1:] else 0.5
    rclpy.init()
    node = rclpy.create_node("slow_subscriber")

    def on_features(msg) -> None:
        print("received", msg.header.stamp.sec * 10 ** 9 + msg.header.stamp.nanosec, flush=True)
        end = time.monotonic() + seconds_per_message
        while time.monotonic() < end and rclpy.ok():  # SIGTERM shuts the context down: leave then
            time.sleep(0.05)

    node.create_subscription(PointCloud2, "features", on_features,
                             QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE))
    print("ready", flush=True)
    try:
        rclpy.spin(node)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
