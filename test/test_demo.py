"""The live path: bag -> superpoint-bag-play -> superpoint_node -> features, and superpoint-demo
end to end (real rclpy, real DDS on loopback, the node as its own process, random weights)."""
import json
import os
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from superpoint_ros.io import bags
from superpoint_ros.evaluation.sample_data import SampleConf, ensure_sample_bag

rclpy = pytest.importorskip("rclpy")
pytestmark = pytest.mark.ros


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    return ensure_sample_bag(tmp_path_factory.mktemp("demo_sample"), SampleConf(size=(96, 128), num_frames=8))


def test_bag_player_feeds_the_node_every_frame(sample, random_weights, tmp_path):
    """Timed replay of the sample bag into a stereo node; the features of every frame come back with
    the bag's stamps, in order, and the stereo matches obey the rectified epipolar constraint."""
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import PointCloud2

    from superpoint_ros.evaluation.bag_eval import default_params_file
    from superpoint_ros.io.messages import decode_features, decode_stereo_matches

    namespace = f"/live_{os.getpid()}"
    env = {**os.environ, "ROS_LOG_DIR": str(tmp_path)}
    node = subprocess.Popen(
        [sys.executable, "-m", "superpoint_ros.ros.node", "--ros-args", "-r", f"__ns:={namespace}",
         "--params-file", str(default_params_file(stereo=True)), "-p", f"extractor.weights:={random_weights}",
         "-p", "extractor.max_keypoints:=200", "-p", "qos.reliability:=reliable", "-p", "qos.depth:=20",
         "-p", "input.queue_size:=20",  # a test must not depend on CPU speed: keep every frame
         "-r", f"left/image_rect:={namespace}/left", "-r", f"right/image_rect:={namespace}/right"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    context = rclpy.Context()
    rclpy.init(context=context)
    player = None
    try:
        listener = rclpy.create_node("live_path_listener", context=context)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(listener)
        features, stereo = {}, {}
        qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        stamp = lambda m: m.header.stamp.sec * 10**9 + m.header.stamp.nanosec  # noqa: E731
        listener.create_subscription(PointCloud2, f"{namespace}/features",
                                     lambda m: features.setdefault(stamp(m), decode_features(m)), qos)
        listener.create_subscription(PointCloud2, f"{namespace}/stereo_matches",
                                     lambda m: stereo.setdefault(stamp(m), decode_stereo_matches(m)), qos)
        # the listener must be matched before the first frame: wait for the node's publishers
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and listener.count_publishers(f"{namespace}/stereo_matches") == 0:
            assert node.poll() is None, node.stdout.read()
            executor.spin_once(timeout_sec=0.1)
        player = subprocess.Popen(
            [sys.executable, "-m", "superpoint_ros.ros.bag_play", str(sample.bag), "--rate", "0.5",
             "--topics", sample.topics["left_image"], sample.topics["right_image"],
             "--remap", f"{sample.topics['left_image']}:={namespace}/left",
             "--remap", f"{sample.topics['right_image']}:={namespace}/right",
             "--wait-for-subscribers", "1", "--wait-timeout", "60"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and len(stereo) < 8:
            assert node.poll() is None, node.stdout.read()
            executor.spin_once(timeout_sec=0.1)
        output, _ = player.communicate(timeout=30)
        assert player.returncode == 0, output
    finally:
        if player is not None and player.poll() is None:
            player.kill()
        node.terminate()
        node.wait(timeout=20)
        listener.destroy_node()
        rclpy.shutdown(context=context)
    expected = [bags.stamp_ns(m.message) for m in bags.read_messages(sample.bag, [sample.topics["left_image"]])]
    assert sorted(features) == expected and sorted(stereo) == expected
    for s in expected:
        assert 0 < len(features[s]) <= 200
        match = stereo[s]
        assert np.all(np.abs(match["left_keypoints"][:, 1] - match["right_keypoints"][:, 1]) <= 2.0 + 1e-6)
        np.testing.assert_array_equal(match["left_keypoints"], features[s].keypoints[match["indices"][:, 0]])
    # tracks persist: some track of the last frame was seen since earlier frames
    assert features[expected[-1]].track_lengths.max() > 1


def test_demo_end_to_end(random_weights, tmp_path):
    out = tmp_path / "demo"
    readme_png = tmp_path / "readme" / "demo_tracks.png"
    env = {key: value for key, value in os.environ.items() if key != "ROS_AUTOMATIC_DISCOVERY_RANGE"}
    env["ROS_STATIC_PEERS"] = "192.0.2.1"  # the demo must drop it and force LOCALHOST itself
    result = subprocess.run(
        [sys.executable, "-m", "superpoint_ros.ros.demo", "--weights", random_weights, "--size", "96x128",
         "--frames", "6", "-o", str(out), "--readme-image", str(readme_png),
         "--set", "extractor.max_keypoints:=150", "--exposure-jitter", "0.2"],
        capture_output=True, text=True, timeout=240, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    printed = result.stdout
    assert f"weights: {random_weights}" in printed
    assert "DDS on localhost only" in printed
    frame_lines = [line for line in printed.splitlines() if line.startswith("frame ")]
    assert len(frame_lines) == 6 and frame_lines[-1].startswith("frame   6/6")
    assert "| stereo matches / frame |" in printed and "| rotation error [deg] |" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == 6 and summary["frames_without_answer"] == 0
    assert summary["weights"] == random_weights and summary["mode"] == "stereo"
    assert summary["keypoints_per_frame"]["max"] <= 150
    assert summary["pose"]["pairs"] >= 1
    assert summary["stereo_epipolar_error_px"]["max"] <= 2.0
    assert cv2.imread(str(out / "tracks.png")).shape == (96, 128, 3)
    assert readme_png.stat().st_size < 300_000
    log = (out / "node.log").read_text()
    assert "front-end ready" in log and random_weights in log
    # the node and the offline evaluator run the same front-end code with the same parameter file
    from superpoint_ros.evaluation.bag_eval import default_params_file, evaluate_bag
    from superpoint_ros.params import load_params

    (bag,) = out.glob("cache/*/bag")
    assert bag.parent.name.endswith("_exposure0.2") and "exposure jitter 0.2" in printed
    params = load_params(default_params_file(stereo=True),
                         overrides={"extractor.weights": random_weights, "extractor.max_keypoints": 150})
    offline, _, _ = evaluate_bag(bag, "/stereo/left/image_rect", "/stereo/right/image_rect", params,
                                 show_progress=False)
    assert offline["frames"] == 6
    for key in ("keypoints_per_frame", "temporal_matches_per_frame", "stereo_matches_per_frame"):
        assert abs(offline[key]["mean"] - summary[key]["mean"]) <= 0.02 * max(summary[key]["mean"], 1), key


def test_demo_without_weights_says_what_is_missing(tmp_path, monkeypatch, capsys):
    from superpoint_ros import WeightsError
    from superpoint_ros.ros import demo

    assert demo.main(["--weights", str(tmp_path / "nope.pt"), "-o", str(tmp_path)]) == 2
    assert "nope.pt" in capsys.readouterr().err

    def missing():
        raise WeightsError("default model superpoint_ros_v1.pt not found")

    monkeypatch.setattr(demo, "default_weights_path", missing)  # the name demo resolves weights with
    assert demo.main(["-o", str(tmp_path)]) == 2
    assert "superpoint_ros_v1.pt not found" in capsys.readouterr().err


def test_demo_rejects_a_bad_exposure_jitter(tmp_path, capsys):
    from superpoint_ros.ros import demo

    assert demo.main(["--exposure-jitter", "2", "-o", str(tmp_path)]) == 2
    assert "--exposure-jitter must be in [0, 1]" in capsys.readouterr().err
