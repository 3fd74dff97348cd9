"""Issue 14, the node's inputs: reliability matched to the publishers (``qos.reliability: auto``),
the Fast DDS shared-memory warning, resolved topic names in the start-up log, and compressed
topics derived from the resolved image topic. Real rclpy and DDS on loopback (conftest.py keeps
DDS on this machine); the camera of the first tests is another process (test/camera_driver.py),
since inside one process Fast DDS delivers without a transport."""
import os
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.utilities import get_rmw_implementation_identifier
from sensor_msgs.msg import CompressedImage, Image

from node_harness import image_msg
from superpoint_ros.ros.inputs import FASTDDS_DEFAULT_SEGMENT_BYTES, PROFILE_ENV, SharedMemoryCheck, shm_segment_bytes

pytestmark = pytest.mark.ros

ROOT = Path(__file__).resolve().parents[1]
DRIVER = Path(__file__).with_name("camera_driver.py")
FRAMES = 6


@pytest.fixture
def base(random_weights):
    # qos.* left at their defaults; the queue holds every frame so that only DDS can lose one, and
    # the network runs on a quarter-size image so that 2 shared cores keep up
    return {"extractor.weights": random_weights, "extractor.device": "cpu", "extractor.max_keypoints": 100,
            "extractor.input_scale": 0.25, "input.queue_size": FRAMES, "diagnostics.period": 0.2}


def run_driver(*args, timeout=90):
    """The camera process, without a Fast DDS profile (the default shared-memory segment)."""
    env = {k: v for k, v in os.environ.items() if k != PROFILE_ENV}
    result = subprocess.run([sys.executable, str(DRIVER), "--frames", str(FRAMES), *args], env=env,
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0 and "done" in result.stdout, result.stdout + result.stderr
    return result


def diagnostics_values(h):
    status = h.received["/diagnostics"][-1].status[0]
    return status, {kv.key: kv.value for kv in status.values}


def test_reliable_camera_of_large_frames_gets_every_frame_answered_at_default_qos(base, harness_factory, capfd,
                                                                                monkeypatch):
    monkeypatch.delenv(PROFILE_ENV, raising=False)  # what the node checks: no shared-memory profile
    h = harness_factory(base, topics=("features", "/diagnostics"))
    assert h.node.inputs[0].reliability is None  # auto: nothing chosen before a publisher exists
    run_driver("--size", "480x512", "--rate", "4", "--reliability", "reliable")  # 737,280-byte frames
    h.wait_for(lambda: h.node.stats.received == FRAMES, 10.0, f"all {FRAMES} frames at the node")
    h.wait_for(lambda: h.count("features") == FRAMES, 60.0, f"features for all {FRAMES} frames")
    assert h.node.inputs[0].reliability == ReliabilityPolicy.RELIABLE
    time.sleep(0.1)
    log = capfd.readouterr().err
    assert "subscribed to /image reliable (qos.reliability auto: 1 of 1 publisher(s) offer reliable)" in log, log
    if get_rmw_implementation_identifier().startswith("rmw_fastrtps"):
        warnings = [line for line in log.splitlines() if "larger than the Fast DDS shared-memory segment" in line]
        assert len(warnings) == 1, log  # once, not per frame
        assert "images of 737280 bytes" in warnings[0] and f"of {FASTDDS_DEFAULT_SEGMENT_BYTES} bytes" in warnings[0]
        assert f"export {PROFILE_ENV}=" in warnings[0] and "fastdds_shm.xml" in warnings[0]
        h.wait_for(lambda: "transport_warning" in diagnostics_values(h)[1], 3.0, "the warning in diagnostics")
        status, values = diagnostics_values(h)
        assert status.level == status.WARN and "fastdds_shm.xml" in values["transport_warning"]
        assert values["input_reliability"] == "reliable (auto)" and values["input_topics"] == "/image"


def test_best_effort_camera_still_works(base, harness_factory, capfd):
    h = harness_factory(base)
    run_driver("--size", "120x160", "--rate", "4", "--reliability", "best_effort")  # 57,600 bytes: one piece
    # best effort may lose a frame right after matching; the rest arrive
    h.wait_for(lambda: h.node.stats.received >= FRAMES - 1, 10.0, "the camera's frames at the node")
    h.wait_for(lambda: h.count("features") == h.node.stats.received, 30.0, "their features")
    assert h.node.inputs[0].reliability == ReliabilityPolicy.BEST_EFFORT
    time.sleep(0.1)
    log = capfd.readouterr().err
    assert "subscribed to /image best_effort (qos.reliability auto: 0 of 1 publisher(s) offer reliable)" in log, log
    assert "shared-memory segment" not in log  # small frames: nothing to warn about


def test_auto_follows_the_publishers_as_they_change(base, harness_factory, camera_image, capfd):
    h = harness_factory(base)
    reliable = h.publisher("image")  # waits until the node has subscribed
    assert h.node.inputs[0].reliability == ReliabilityPolicy.RELIABLE
    frame = np.ascontiguousarray(camera_image[:96, :128])
    h.publish_and_wait(reliable, image_msg(frame, 10 ** 9))
    best_effort = h.probe.create_publisher(Image, "image",
                                           QoSProfile(depth=5, reliability=ReliabilityPolicy.BEST_EFFORT))
    # a reliable subscription would never hear this publisher: auto re-subscribes best effort
    h.wait_for(lambda: h.node.inputs[0].reliability == ReliabilityPolicy.BEST_EFFORT, 5.0,
               "the best-effort re-subscription")
    h.wait_for(lambda: best_effort.get_subscription_count() > 0, 5.0, "the best-effort publisher's match")
    time.sleep(0.2)
    h.publish_and_wait(best_effort, image_msg(frame, 2 * 10 ** 9))
    h.probe.destroy_publisher(best_effort)
    h.wait_for(lambda: h.node.inputs[0].reliability == ReliabilityPolicy.RELIABLE, 5.0, "back to reliable")
    time.sleep(0.1)
    log = capfd.readouterr().err
    assert "re-subscribed to /image best_effort (qos.reliability auto: 1 of 2 publisher(s) offer reliable)" in log, log
    assert "re-subscribed to /image reliable (qos.reliability auto: 1 of 1 publisher(s) offer reliable)" in log, log


@pytest.mark.parametrize("reliability", ["reliable", "best_effort"])
def test_explicit_reliability_subscribes_at_once(base, harness_factory, reliability):
    h = harness_factory({**base, "qos.reliability": reliability})
    [info] = h.node.get_subscriptions_info_by_topic("/image")
    assert info.qos_profile.reliability == ReliabilityPolicy[reliability.upper()]


def test_start_up_log_names_the_resolved_topics_and_compressed_follows_the_image_remap(base, harness_factory,
                                                                                     camera_image, capfd):
    h = harness_factory({**base, "input.compressed": True},
                        cli_args=["--ros-args", "-r", "image:=/camera/image_raw"])  # README's remap
    assert [i.topic for i in h.node.inputs] == ["/camera/image_raw/compressed"]  # as image_transport names it
    log = capfd.readouterr().err
    [line] = [line for line in log.splitlines() if "inputs: " in line]
    assert "inputs: /camera/image_raw/compressed (sensor_msgs/CompressedImage, auto: waiting for a publisher)" in line
    assert "outputs: /features, /temporal_matches, /debug_image, /diagnostics" in line
    pub = h.publisher("/camera/image_raw/compressed", compressed=True)
    ok, png = cv2.imencode(".png", np.ascontiguousarray(camera_image[:96, :128]))
    msg = CompressedImage(format="mono8; png compressed")
    msg.header.stamp.sec = 7
    msg.data = png.tobytes()
    assert h.publish_and_wait(pub, msg).header.stamp.sec == 7


def test_stereo_topics_resolve_with_namespace_and_remaps(base, harness_factory, capfd):
    h = harness_factory({**base, "stereo.enabled": True, "input.compressed": True},
                        cli_args=["--ros-args", "-r", "__ns:=/robot", "-r", "left/image_rect:=/stereo/left",
                                  "-r", "right/image_rect/compressed:=/stereo/right_jpeg"])
    # left: the remapped image topic + /compressed; right: its own compressed remap wins
    assert [i.topic for i in h.node.inputs] == ["/stereo/left/compressed", "/stereo/right_jpeg"]
    log = capfd.readouterr().err
    [line] = [line for line in log.splitlines() if "inputs: " in line]
    assert "/stereo/left/compressed (sensor_msgs/CompressedImage" in line and "/stereo/right_jpeg (" in line
    assert ("outputs: /robot/features, /robot/features_right, /robot/stereo_matches, /robot/temporal_matches, "
            "/robot/debug_image, /diagnostics") in line


def test_shared_memory_segment_from_the_profile(tmp_path):
    assert shm_segment_bytes({}) == (FASTDDS_DEFAULT_SEGMENT_BYTES, f"{PROFILE_ENV} is not set")
    shipped = str(ROOT / "config" / "fastdds_shm.xml")
    assert shm_segment_bytes({PROFILE_ENV: shipped}) == (16 * 1024 * 1024, f"{PROFILE_ENV}={shipped}")
    udp_only = tmp_path / "udp.xml"
    udp_only.write_text('<dds xmlns="http://www.eprosima.com"><profiles><transport_descriptors><transport_descriptor>'
                        '<transport_id>u</transport_id><type>UDPv4</type></transport_descriptor>'
                        '</transport_descriptors></profiles></dds>')
    size, source = shm_segment_bytes({PROFILE_ENV: str(udp_only)})
    assert size == FASTDDS_DEFAULT_SEGMENT_BYTES and "sets no SHM segment_size" in source
    size, source = shm_segment_bytes({PROFILE_ENV: str(tmp_path / "missing.xml")})
    assert size == FASTDDS_DEFAULT_SEGMENT_BYTES and "not a readable profile" in source
    # with the shipped profile a 640x480 bgr8 frame fits; without it, the warning names the fix
    frame = image_msg(np.zeros((480, 640, 3), np.uint8), 0)
    assert SharedMemoryCheck("rmw_fastrtps_cpp", {PROFILE_ENV: shipped}).check(frame) is None
    check = SharedMemoryCheck("rmw_fastrtps_cpp", {})
    assert "images of 921600 bytes" in check.check(frame) and check.check(frame) is None  # once
    assert SharedMemoryCheck("rmw_cyclonedds_cpp", {}).check(frame) is None  # not Fast DDS: not our business
