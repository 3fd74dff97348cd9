"""superpoint-bag-play over real rclpy + loopback DDS: every frame, in order, stamps untouched."""
import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest

from superpoint_ros.io import bags

rclpy = pytest.importorskip("rclpy")
pytestmark = pytest.mark.ros

NUM_FRAMES = 8
PERIOD_NS = 50_000_000  # 20 Hz
T0_NS = 1_700_000_123_000_000_000


def _frame(i):
    image = np.zeros((24, 32), np.uint8)
    image[:, :] = 10 * i
    image[i, i] = 255  # a per-frame marker pixel
    return image


@pytest.fixture(scope="module", params=["sqlite3", "mcap", "rosbag1"])
def small_bag(request, tmp_path_factory):
    path = tmp_path_factory.mktemp("play") / f"bag_{request.param}"
    if request.param == "rosbag1":  # a ROS 1 .bag is played as ROS 2 messages
        from ros1_bag import write_ros1_bag

        path = path.with_suffix(".bag")
        stamps = [T0_NS + i * PERIOD_NS + (1234 if i % 2 else 0) for i in range(NUM_FRAMES)]
        write_ros1_bag(path, [_frame(i) for i in range(NUM_FRAMES)], stamps, np.eye(3), "/cam/image",
                       "/cam/camera_info", "cam", receive_delay_ns=2_000_000)
        return path
    with bags.BagWriter(path, storage=request.param) as bag:
        for i in range(NUM_FRAMES):
            stamp = T0_NS + i * PERIOD_NS + (1234 if i % 2 else 0)  # odd nanoseconds survive
            bag.write("/cam/image", bags.image_message(_frame(i), stamp, "cam"), stamp + 2_000_000)
            bag.write("/cam/camera_info", bags.camera_info_message(np.eye(3), (24, 32), stamp, "cam"), stamp + 2_000_000)
    return path


def _spin_until(executor, predicate, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not predicate():
        executor.spin_once(timeout_sec=0.05)
    return predicate()


def test_bag_play_delivers_every_frame_in_order_with_stamps(small_bag):
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image

    topic = f"/play_test_{os.getpid()}/image"
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        node = rclpy.create_node("bag_play_test_listener", context=context)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        received, infos = [], []
        qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        node.create_subscription(Image, topic, lambda m: received.append(
            (m.header.stamp.sec * 10**9 + m.header.stamp.nanosec, m.header.frame_id,
             np.frombuffer(bytes(m.data), np.uint8).reshape(m.height, m.width).copy())), qos)
        node.create_subscription(CameraInfo, "/cam/camera_info", infos.append, qos)
        rate = 2.0
        player = subprocess.Popen(
            [sys.executable, "-m", "superpoint_ros.ros.bag_play", str(small_bag), "--rate", str(rate),
             "--remap", f"/cam/image:={topic}", "--wait-for-subscribers", "1", "--wait-timeout", "20"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=os.environ.copy())
        try:
            assert _spin_until(executor, lambda: len(received) >= NUM_FRAMES and len(infos) >= NUM_FRAMES, 40), \
                f"got {len(received)} images / {len(infos)} infos; player: {player.stdout.read() if player.poll() is not None else 'running'}"
            output, _ = player.communicate(timeout=20)
        finally:
            if player.poll() is None:
                player.kill()
        assert player.returncode == 0, output
        expected = [T0_NS + i * PERIOD_NS + (1234 if i % 2 else 0) for i in range(NUM_FRAMES)]
        assert [r[0] for r in received] == expected          # every frame, in order, exact stamps
        assert all(r[1] == "cam" for r in received)
        for i, (_, _, image) in enumerate(received):
            np.testing.assert_array_equal(image, _frame(i))
        assert f"{topic}: {NUM_FRAMES} messages" in output
        # original timing / rate: the span of receive times is (N-1) periods
        duration = float(re.search(r"done in ([0-9.]+) s", output).group(1))
        span = (expected[-1] - expected[0]) / 1e9
        assert duration >= 0.9 * span / rate
    finally:
        node.destroy_node()
        rclpy.shutdown(context=context)


def test_bag_play_rejects_unknown_topic_and_bad_rate(tmp_path, capsys):
    from superpoint_ros.ros import bag_play

    path = tmp_path / "bag"
    with bags.BagWriter(path) as bag:
        bag.write("/cam/image", bags.image_message(_frame(0), T0_NS, "cam"), T0_NS)
    assert bag_play.main([str(path), "--topics", "/nope"]) == 2
    err = capsys.readouterr().err
    assert "/nope" in err and "/cam/image" in err
    assert bag_play.main([str(path), "--rate", "0"]) == 2
    assert "rate" in capsys.readouterr().err
    assert bag_play.main([str(tmp_path / "missing_bag")]) == 2
    assert "not found" in capsys.readouterr().err
    assert bag_play.main([str(path), "--remap", "cam/image=x"]) == 2
    assert "FROM:=TO" in capsys.readouterr().err
