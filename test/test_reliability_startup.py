"""Issue 8, start-up faults and security, on the node as a real process: a bad weight file, CUDA
requested but absent (error, or a logged CPU fall-back per ``device.cpu_fallback``), invalid
parameters -> non-zero exit with one clear line, no traceback. Weight files are only ever read with
``torch.load(weights_only=True)``; paths from parameters are never run or expanded by a shell.
(test_node_startup.py covers missing/corrupt weights and a bad parameter file.)"""
import os
import pickle
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.ros

ROOT = Path(__file__).resolve().parents[1]


def run_node(*ros_args, timeout=60, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "superpoint_ros.ros.node", "--ros-args", *ros_args], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, env=dict(os.environ))


def assert_one_clear_error(result, *fragments):
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def test_wrong_architecture_weights(tmp_path):
    # a real torch file of plain tensors, but another network's (e.g. a classifier's state_dict)
    other = {"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(1000, 512), "fc.bias": torch.zeros(1000)}
    path = tmp_path / "resnet_like.pt"
    torch.save(other, path)
    assert_one_clear_error(run_node("-p", f"extractor.weights:={path}"), str(path))


def test_superpoint_weights_with_a_wrong_shape(tmp_path, random_model):
    state = {k: v.clone() for k, v in random_model.state_dict().items()}
    state["convDb.weight"] = torch.zeros(128, 256, 1, 1)  # 128-d descriptor head on a 256-d trunk
    path = tmp_path / "mismatched.pt"
    torch.save(state, path)
    assert_one_clear_error(run_node("-p", f"extractor.weights:={path}"), str(path))


class _RunsCode:
    """A pickle that would create a marker file when unpickled without weights_only."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_weight_file_that_would_run_code_is_refused_and_does_not_run(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": _RunsCode(marker)}, path, pickle_module=pickle)
    line = assert_one_clear_error(run_node("-p", f"extractor.weights:={path}"), str(path))
    assert "refused to load" in line or "not plain tensor data" in line
    assert not marker.exists()


@pytest.mark.parametrize("template", ["$(touch {m})", "`touch {m}`; touch {m} | touch {m}", "$HOME/{m}"])
def test_weight_paths_are_never_run_by_a_shell(tmp_path, template):
    marker = tmp_path / "marker"
    weights = template.format(m=marker)
    params = tmp_path / "params.yaml"  # a params file carries any string; -p values must be valid YAML
    params.write_text(f"superpoint_node:\n  ros__parameters:\n    extractor:\n      weights: {weights!r}\n")
    line = assert_one_clear_error(run_node("--params-file", str(params), cwd=tmp_path), "weight file not found")
    assert weights in line  # the path as written: no shell or variable expansion
    assert not marker.exists()


def test_a_command_line_rcl_cannot_parse_is_one_clear_line():
    line = assert_one_clear_error(run_node("-p", "extractor.weights:=`touch x`"), "invalid command line")
    assert "extractor.weights" in line


def test_every_weight_load_in_the_package_is_weights_only():
    calls = []
    for path in (ROOT / "superpoint_ros").rglob("*.py"):
        text = path.read_text()
        for m in re.finditer(r"torch\.load\(([^)]*)\)", text):
            calls.append((path.relative_to(ROOT), m.group(1)))
        assert "shell=True" not in text and "os.system(" not in text, path
    assert calls, "no torch.load found: the check would be vacuous"
    unsafe = [c for c in calls if "weights_only=True" not in c[1]]
    assert not unsafe, unsafe


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_absent_falls_back_to_cpu_when_asked_and_says_so(random_weights):
    proc = subprocess.Popen([sys.executable, "-m", "superpoint_ros.ros.node", "--ros-args", "-p",
                             f"extractor.weights:={random_weights}", "-p", "extractor.device:=cuda", "-p",
                             "device.cpu_fallback:=true"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        lines, deadline = [], time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            lines.append(line)
            if "front-end ready" in line or proc.poll() is not None:
                break
        text = "".join(lines)
        assert "front-end ready" in lines[-1] and "device cpu" in lines[-1], text
        assert "CUDA is not available: running on the CPU (device.cpu_fallback is true)" in text
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
        assert proc.returncode == 0 and "Traceback" not in err, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("args, fragment", [
    (["extractor.max_keypoints:=lots"], "extractor.max_keypoints must be an integer, got 'lots'"),
    (["image.oversize:=shrink"], "image.oversize='shrink' is not one of resize, reject"),
    (["image.max_size:=-5"], "image.max_size=-5 is outside [0, 65536]"),
    (["diagnostics.period:=0.0"], "diagnostics.period=0.0 is outside"),
    (["tracking.max_time_gap:=.nan"], "tracking.max_time_gap must be finite"),
])
def test_invalid_parameters_exit_with_one_clear_line(random_weights, args, fragment):
    ros_args = ["-p", f"extractor.weights:={random_weights}"]
    for a in args:
        ros_args += ["-p", a]
    assert_one_clear_error(run_node(*ros_args), fragment)
