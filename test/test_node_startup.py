"""superpoint_node as a real process: start-up faults exit non-zero with one clear line and no
traceback; the shipped parameter files start it; SIGINT stops it cleanly."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.ros

ROOT = Path(__file__).resolve().parents[1]


def run_node(*ros_args, timeout=60):
    return subprocess.run([sys.executable, "-m", "superpoint_ros.ros.node", "--ros-args", *ros_args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, env=dict(os.environ))


def assert_one_clear_error(result, *fragments):
    assert result.returncode not in (0, None), result.stderr
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout, result.stderr
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


def test_missing_weights(tmp_path):
    assert_one_clear_error(run_node("-p", f"extractor.weights:={tmp_path / 'nope.pt'}"), "weight file not found")


def test_corrupt_weights(tmp_path):
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(b"PK\x03\x04 this is not a torch file" * 10)
    assert_one_clear_error(run_node("-p", f"extractor.weights:={bad}"), str(bad))


def test_cuda_requested_without_cuda(random_weights):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert_one_clear_error(run_node("-p", f"extractor.weights:={random_weights}", "-p", "extractor.device:=cuda"),
                           "CUDA is not available")


def test_invalid_parameter_file_lists_every_problem(tmp_path, random_weights):
    params = tmp_path / "bad.yaml"
    params.write_text("superpoint_node:\n  ros__parameters:\n    extractor:\n      nms_radius: 99\n"
                      "    ransac:\n      model: affine\n    stereo:\n      max_disparty: 3.0\n")
    result = run_node("--params-file", str(params), "-p", f"extractor.weights:={random_weights}")
    assert_one_clear_error(result, "extractor.nms_radius=99 is outside [0, 32]", "ransac.model='affine'",
                           "unknown parameter 'stereo.max_disparty'")


@pytest.mark.parametrize("config", ["superpoint_mono.yaml", "superpoint_stereo.yaml"])
def test_shipped_parameter_files_start_the_node_and_sigint_stops_it(config, random_weights):
    proc = subprocess.Popen([sys.executable, "-m", "superpoint_ros.ros.node", "--ros-args", "--params-file",
                             str(ROOT / "config" / config), "-p", f"extractor.weights:={random_weights}"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        lines = []
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            lines.append(line)
            if "front-end ready" in line or proc.poll() is not None:
                break
        assert "front-end ready" in lines[-1], "".join(lines)
        assert ("stereo" if "stereo" in config else "mono") in lines[-1]
        from superpoint_ros.extractor import FeatureExtractor  # what runs the network is logged
        from superpoint_ros.params import frontend_conf, load_params

        shipped = frontend_conf(load_params(ROOT / "config" / config)).extractor
        expected = FeatureExtractor(shipped, weights=random_weights)
        assert f"network {expected.backend_name}," in lines[-1], lines[-1]
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err
        assert "Traceback" not in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_help_prints_usage_and_does_not_start_the_node():
    result = subprocess.run([sys.executable, "-m", "superpoint_ros.ros.node", "--help"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.startswith("usage: superpoint_node"), result.stderr
    assert "--params-file" in result.stdout and "features" in result.stdout and "front-end ready" not in result.stderr
