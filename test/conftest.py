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

from superpoint_ros.model import SuperPointConfig, SuperPointNet  # noqa: E402
from superpoint_ros.weights import save_checkpoint  # noqa: E402

# Property tests search the same examples on every run (a CI failure reproduces anywhere);
# HYPOTHESIS_PROFILE=explore searches new random examples on each run.
settings.register_profile("repeatable", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))


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
def camera_image() -> np.ndarray:
    """A real 512x512 uint8 grayscale photo (scikit-image's 'camera')."""
    from skimage import data

    return data.camera()


@pytest.fixture(scope="session")
def astronaut_bgr() -> np.ndarray:
    """A real 512x512x3 uint8 photo in BGR order."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[..., ::-1])
