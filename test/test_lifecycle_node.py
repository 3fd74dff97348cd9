"""superpoint_lifecycle_node over real loopback DDS, driven as a lifecycle manager drives it: through
its lifecycle_msgs ChangeState/GetState services, called from another node.

conftest.py keeps DDS on this machine. Random weights: these tests check the state machine and
the plumbing, not feature quality.
"""
import gc
import os
import signal
import subprocess
import sys
import threading
import time
import weakref
from pathlib import Path

import pytest
import rclpy
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rcl_interfaces.msg import Log
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.parameter_client import AsyncParameterClient
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from node_harness import RELIABLE, Harness, image_msg
from superpoint_ros.ros.lifecycle_node import SuperPointLifecycleNode
from superpoint_ros.io.messages import decode_features
from superpoint_ros.ros.node import INPUT_TOPICS

pytestmark = pytest.mark.ros

ROOT = Path(__file__).resolve().parents[1]
TRANSITION_TIMEOUT_S = 120.0  # configure loads and warms up the network on a shared CPU
STAMPS = [1_700_000_000_000_000_000 + k * 33_333_333 for k in range(8)]
ROSOUT_QOS = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


@pytest.fixture
def params(random_weights):
    return {"extractor.weights": random_weights, "extractor.device": "cpu", "extractor.max_keypoints": 300,
            "matching.ratio_test": 0.0, "matching.max_distance": 2.0, "diagnostics.period": 0.2}


class LifecycleClient:
    """The node's ChangeState and GetState services, called from ``node`` (spun elsewhere)."""

    def __init__(self, node, wait_for, target: str = "superpoint_node", discovery_timeout: float = 10.0):
        self.wait_for = wait_for
        self.change = node.create_client(ChangeState, f"{target}/change_state")
        self.get = node.create_client(GetState, f"{target}/get_state")
        for client in (self.change, self.get):
            assert client.wait_for_service(timeout_sec=discovery_timeout), client.srv_name

    def _call(self, client, request):
        future = client.call_async(request)
        self.wait_for(future.done, TRANSITION_TIMEOUT_S, f"a reply from {client.srv_name}")
        return future.result()

    def transition(self, transition_id: int) -> bool:
        return self._call(self.change, ChangeState.Request(transition=Transition(id=transition_id))).success

    def state(self) -> str:
        return self._call(self.get, GetState.Request()).current_state.label


@pytest.fixture
def managed(params):
    """(harness running SuperPointLifecycleNode, its lifecycle client); ``managed.make(params)``."""
    made = []

    def make(node_params):
        harness = Harness(node_params, topics=("features", "/diagnostics"), node_class=SuperPointLifecycleNode)
        made.append(harness)
        return harness, LifecycleClient(harness.probe, harness.wait_for)

    yield make
    for harness in made:
        harness.close()


def frame(image, k):
    """A 240x320 crop moving 8 px per frame."""
    return image[100:340, 60 + 8 * k:380 + 8 * k]


def stamp(msg) -> int:
    return msg.header.stamp.sec * 10 ** 9 + msg.header.stamp.nanosec


def image_subscriptions(node) -> list:
    return [s.topic_name for s in node.subscriptions if s.topic_name.lstrip("/") in INPUT_TOPICS]


def output_publishers(node) -> list:
    return [p.topic_name for p in node.publishers if p.topic_name in ("/features", "/temporal_matches",
                                                                      "/debug_image", "/diagnostics")]


def test_configure_activate_deactivate_cleanup_reconfigure_shutdown(managed, params, camera_image):
    h, lifecycle = managed(params)
    node = h.node
    assert lifecycle.state() == "unconfigured"
    assert node.frontend is None and not image_subscriptions(node) and not output_publishers(node)

    assert lifecycle.transition(Transition.TRANSITION_CONFIGURE)
    assert lifecycle.state() == "inactive"
    assert node.frontend is not None and len(output_publishers(node)) == 4
    assert not image_subscriptions(node) and not list(node.timers)  # configured, not processing yet
    pub = h.probe.create_publisher(Image, "image", RELIABLE)
    pub.publish(image_msg(frame(camera_image, 0), STAMPS[0]))  # while inactive: never answered

    assert lifecycle.transition(Transition.TRANSITION_ACTIVATE)
    assert lifecycle.state() == "active"
    h.wait_for(lambda: pub.get_subscription_count() > 0, 10.0, "the node's image subscription")
    assert image_subscriptions(node) == ["/image"]
    first = [h.publish_and_wait(pub, image_msg(frame(camera_image, k), STAMPS[k])) for k in (1, 2)]
    h.wait_for(lambda: h.count("/diagnostics") > 0, 10.0, "/diagnostics while active")
    assert decode_features(first[1]).track_lengths.max() == 2  # tracked from frame 1

    assert lifecycle.transition(Transition.TRANSITION_DEACTIVATE)
    assert lifecycle.state() == "inactive"
    assert not image_subscriptions(node) and not list(node.timers)
    h.wait_for(lambda: pub.get_subscription_count() == 0, 10.0, "the image subscription to go")
    pub.publish(image_msg(frame(camera_image, 3), STAMPS[3]))  # while inactive: never answered

    assert lifecycle.transition(Transition.TRANSITION_ACTIVATE)
    h.wait_for(lambda: pub.get_subscription_count() > 0, 10.0, "the node's image subscription")
    again = h.publish_and_wait(pub, image_msg(frame(camera_image, 4), STAMPS[4]))
    assert [stamp(c) for c in h.received["features"]] == [STAMPS[1], STAMPS[2], STAMPS[4]]
    assert decode_features(again).track_lengths.max() == 1  # activation starts a new stream

    assert lifecycle.transition(Transition.TRANSITION_DEACTIVATE)
    network = weakref.ref(node.frontend.extractor)
    assert lifecycle.transition(Transition.TRANSITION_CLEANUP)
    assert lifecycle.state() == "unconfigured"
    gc.collect()
    assert node.frontend is None and network() is None  # nothing holds the network any more
    assert not output_publishers(node)

    assert lifecycle.transition(Transition.TRANSITION_CONFIGURE)  # configure again after cleanup
    assert lifecycle.transition(Transition.TRANSITION_ACTIVATE)
    h.wait_for(lambda: pub.get_subscription_count() > 0, 10.0, "the node's image subscription")
    last = h.publish_and_wait(pub, image_msg(frame(camera_image, 5), STAMPS[5]))
    assert stamp(last) == STAMPS[5] and len(decode_features(last)) == 300

    assert lifecycle.transition(Transition.TRANSITION_ACTIVE_SHUTDOWN)  # shutdown straight from active
    assert lifecycle.state() == "finalized"
    assert node.frontend is None and not image_subscriptions(node) and not output_publishers(node)
    assert not list(node.timers) and not node._worker.is_alive()


def test_stereo_pairs_are_answered_only_while_active(managed, params, camera_image):
    h, lifecycle = managed({**params, "stereo.enabled": True})
    assert lifecycle.transition(Transition.TRANSITION_CONFIGURE)
    assert len(output_publishers(h.node)) == 4 and not image_subscriptions(h.node)
    for round_ in range(2):  # activate, deactivate, and again: a fresh pairing each time
        assert lifecycle.transition(Transition.TRANSITION_ACTIVATE)
        left, right = h.publisher("left/image_rect"), h.publisher("right/image_rect")  # waits for the node
        assert sorted(image_subscriptions(h.node)) == ["/left/image_rect", "/right/image_rect"]
        pair_stamp = STAMPS[round_]
        before = h.count("features")
        right.publish(image_msg(frame(camera_image, 1), pair_stamp, "right"))
        left.publish(image_msg(frame(camera_image, 0), pair_stamp, "left"))
        h.wait_for(lambda: h.count("features") > before, 10.0, "features of the pair")
        assert stamp(h.received["features"][-1]) == pair_stamp
        assert lifecycle.transition(Transition.TRANSITION_DEACTIVATE)
        assert not image_subscriptions(h.node) and h.node.synchronizer is None
        h.probe.destroy_publisher(left)
        h.probe.destroy_publisher(right)


def test_bad_weights_fail_configure_with_one_error_line_and_stay_unconfigured(managed, params, tmp_path):
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(b"PK\x03\x04 this is not a torch file" * 10)
    h, lifecycle = managed({**params, "extractor.weights": str(bad)})
    logs = []
    h.probe.create_subscription(Log, "/rosout", logs.append, ROSOUT_QOS)
    for _ in range(2):  # and the node is still there to try again
        assert not lifecycle.transition(Transition.TRANSITION_CONFIGURE)
        assert lifecycle.state() == "unconfigured"
    assert h.node.frontend is None and not output_publishers(h.node)

    def errors():
        return [m.msg for m in list(logs) if m.name == "superpoint_node" and m.level >= Log.ERROR]

    h.wait_for(lambda: len(errors()) >= 2, 10.0, "the error lines on /rosout")
    assert len(errors()) == 2, errors()  # one per attempt
    assert all(e.startswith("configure failed: ") and str(bad) in e for e in errors()), errors()
    assert lifecycle.transition(Transition.TRANSITION_UNCONFIGURED_SHUTDOWN)
    assert lifecycle.state() == "finalized"


def test_parameters_set_while_unconfigured_are_checked_and_used_at_configure(managed, params, camera_image):
    h, lifecycle = managed(params)
    client = AsyncParameterClient(h.probe, "superpoint_node")
    assert client.wait_for_services(timeout_sec=10.0)

    def set_parameters(**values):
        future = client.set_parameters([Parameter(k.replace("__", "."), value=v) for k, v in values.items()])
        h.wait_for(future.done, 10.0, "set_parameters")
        return [r.successful for r in future.result().results]

    assert set_parameters(extractor__max_keypoints=100_001) == [False]  # out of range, even unconfigured
    # each value is valid on its own; together they contradict: accepted now, configure refuses
    assert set_parameters(stereo__min_disparity=50.0, stereo__max_disparity=10.0) == [True, True]
    assert not lifecycle.transition(Transition.TRANSITION_CONFIGURE)
    assert lifecycle.state() == "unconfigured"
    assert set_parameters(stereo__max_disparity=100.0, extractor__max_keypoints=50) == [True, True]
    assert lifecycle.transition(Transition.TRANSITION_CONFIGURE)
    assert lifecycle.transition(Transition.TRANSITION_ACTIVATE)
    pub = h.publisher("image")
    cloud = h.publish_and_wait(pub, image_msg(frame(camera_image, 0), STAMPS[0]))
    assert len(decode_features(cloud)) == 50


def test_destroy_node_removes_the_lifecycle_services_from_the_graph(managed, params):
    h, lifecycle = managed(params)
    assert lifecycle.transition(Transition.TRANSITION_CONFIGURE)
    h.node.destroy_node()  # what main() does at Ctrl-C, here from the inactive state
    h.wait_for(lambda: not lifecycle.change.service_is_ready() and not lifecycle.get.service_is_ready(), 10.0,
               "the lifecycle services to leave the graph")
    assert h.node.frontend is None


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs CUDA")
def test_cleanup_gives_the_network_memory_back_on_cuda(managed, params):
    import torch

    h, lifecycle = managed({**params, "extractor.device": "cuda"})
    assert lifecycle.transition(Transition.TRANSITION_CONFIGURE)
    model = h.node.frontend.extractor.model
    weight_bytes = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    del model
    torch.cuda.synchronize()
    allocated, reserved = torch.cuda.memory_allocated(), torch.cuda.memory_reserved()
    assert lifecycle.transition(Transition.TRANSITION_CLEANUP)
    # at least the weights are freed (library workspaces may stay), and the cache is given back
    assert allocated - torch.cuda.memory_allocated() >= weight_bytes
    assert torch.cuda.memory_reserved() < reserved


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:  # a guard against hanging, not a timing check
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


def test_executable_starts_unconfigured_is_driven_over_dds_and_sigint_stops_it(random_weights):
    proc = subprocess.Popen([sys.executable, "-m", "superpoint_ros.ros.lifecycle_node", "--ros-args",
                             "--params-file", str(ROOT / "config" / "superpoint_mono.yaml"),
                             "-p", f"extractor.weights:={random_weights}"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    context = rclpy.Context()
    rclpy.init(context=context)
    manager = rclpy.create_node("lifecycle_manager_probe", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(manager)
    spin = threading.Thread(target=executor.spin, daemon=True)
    spin.start()
    try:
        lifecycle = LifecycleClient(manager, wait_for, discovery_timeout=60.0)  # the process starts
        assert lifecycle.state() == "unconfigured"
        assert lifecycle.transition(Transition.TRANSITION_CONFIGURE)
        assert lifecycle.transition(Transition.TRANSITION_ACTIVATE)
        assert lifecycle.state() == "active"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert "Traceback" not in err and "front-end ready" in err, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        executor.shutdown(timeout_sec=5.0)
        spin.join(timeout=5.0)
        manager.destroy_node()
        rclpy.shutdown(context=context)


def test_help_prints_usage_and_does_not_start_the_node():
    result = subprocess.run([sys.executable, "-m", "superpoint_ros.ros.lifecycle_node", "--help"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.startswith("usage: superpoint_lifecycle_node"), result.stderr
    assert "configure" in result.stdout and "front-end ready" not in result.stderr
