"""Shared fixtures. ROS tests must never let DDS leave this machine: set that before anything
imports rclpy."""
import os
import random

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("ROS_DOMAIN_ID", str(100 + random.Random(os.getpid()).randrange(100)))
os.environ.setdefault("ROS_LOG_DIR", os.path.join(os.environ.get("TMPDIR", "/tmp"), "superpoint_ros_test_logs"))

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from hypothesis import settings  # noqa: E402

from superpoint_ros.backends import configure_process  # noqa: E402
from superpoint_ros.model import SuperPointConfig, SuperPointNet  # noqa: E402
from superpoint_ros.weights import save_checkpoint  # noqa: E402

# the test process is an entry point too: the process-wide settings every main() makes
configure_process()

# Property tests search the same examples on every run (a CI failure reproduces anywhere);
# HYPOTHESIS_PROFILE=explore searches new random examples on each run.
settings.register_profile("repeatable", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))


@pytest.fixture(autouse=True)
def auto_precision_pinned(request, monkeypatch):
    """``precision='auto'`` picks int8 on CPUs with VNNI and float32 elsewhere, so a test that
    inherits it compares different numbers on different machines. In-process tests get float32
    for ``auto``; tests of int8 ask for ``precision='int8'`` explicitly, and tests marked
    ``cpu_precision`` see the CPU's own choice. SUPERPOINT_TEST_AUTO_PRECISION=cpu lifts the pin
    for the whole run, =int8 makes ``auto`` pick int8 as on a VNNI CPU (the ONNX Runtime int8
    network still runs the kernels this CPU has). Child processes (node, demo, soak) are not
    pinned: they assert behaviour, not numbers."""
    mode = os.environ.get("SUPERPOINT_TEST_AUTO_PRECISION", "fp32")
    if mode not in ("fp32", "int8", "cpu"):
        raise pytest.UsageError(f"SUPERPOINT_TEST_AUTO_PRECISION must be fp32, int8 or cpu, got {mode!r}")
    if mode == "cpu" or request.node.get_closest_marker("cpu_precision"):
        return
    from superpoint_ros import backends

    choose = backends.auto_precision_is_int8
    monkeypatch.setattr(backends, "auto_precision_is_int8",
                        lambda device, conf: choose(device, conf, cpu_dot_product=mode == "int8"))


@pytest.fixture
def harness_factory():
    """``make(params, **kwargs)`` -> a started in-process node :class:`node_harness.Harness`;
    every one made is closed after the test. (Imported here, not at the top: rclpy only where a
    test uses it.)"""
    from node_harness import Harness

    made = []

    def make(params, **kwargs):
        made.append(Harness(params, **kwargs))
        return made[-1]

    yield make
    for h in made:
        h.close()


@pytest.fixture(scope="module")
def one_torch_thread():
    """Small tensors on a shared 2-core box: OpenMP barriers cost more than the maths."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def random_model() -> SuperPointNet:
    torch.manual_seed(0)
    return SuperPointNet(SuperPointConfig()).eval()


@pytest.fixture(scope="session")
def random_weights(tmp_path_factory, random_model) -> str:
    path = tmp_path_factory.mktemp("weights") / "random.pt"
    save_checkpoint(path, random_model, {"training_data": "none (random init, tests only)"})
    return str(path)


@pytest.fixture(scope="session")
def trained_weights() -> str:
    """The shipped default model's path; tests of trained behaviour skip without it."""
    from superpoint_ros.weights import WeightsError, default_weights_path

    try:
        return str(default_weights_path())
    except WeightsError as e:
        pytest.skip(f"needs the trained default model: {e}")


@pytest.fixture(scope="session")
def camera_image() -> np.ndarray:
    """A real 512x512 uint8 grayscale photo (scikit-image's 'camera')."""
    from skimage import data

    return data.camera()


@pytest.fixture(scope="session")
def astronaut_bgr() -> np.ndarray:
    """A real 512x512x3 uint8 photo in BGR order."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[..., ::-1])
