"""The parameter table and YAML loading shared by the node and the ROS-free front-end."""
from pathlib import Path

import pytest

import yaml

from superpoint_ros.config import FrontendConf
from superpoint_ros.params import (PARAMETERS, ParamsError, check_value, defaults, flatten, frontend_conf, load_params,
                                   markdown_table, ros_params, validate)

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["superpoint_mono.yaml", "superpoint_stereo.yaml"])
def test_shipped_configs_load_and_only_set_declared_parameters(name):
    params = load_params(ROOT / "config" / name)
    assert set(params) == set(PARAMETERS)
    assert params["stereo.enabled"] is (name == "superpoint_stereo.yaml")
    assert params["extractor.uniform_cell"] == 32


def test_every_default_is_valid_and_documented():
    for name, param in PARAMETERS.items():
        assert check_value(name, param.default) is None, name
        assert len(param.description) > 10, name
        assert name.count(".") == 1, name


def test_node_specific_and_wildcard_sections_nested_or_dotted(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("/**:\n  ros__parameters:\n    extractor:\n      max_keypoints: 10\n"
                 "/robot/superpoint_node:\n  ros__parameters:\n    tracking.max_age: 3\n    ransac.threshold: 2\n"
                 "other_node:\n  ros__parameters:\n    foo: 1\n")
    params = load_params(f)
    assert params["extractor.max_keypoints"] == 10 and params["tracking.max_age"] == 3
    assert params["ransac.threshold"] == 2.0 and isinstance(params["ransac.threshold"], float)
    assert load_params(f, overrides={"tracking.max_age": 5})["tracking.max_age"] == 5


def test_exponent_notation_is_a_number_as_ros_reads_it(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("superpoint_node:\n  ros__parameters:\n    extractor.detection_threshold: 5e-3\n")
    assert load_params(f)["extractor.detection_threshold"] == 0.005
    assert load_params(f, overrides={"ransac.threshold": "1.5e0"})["ransac.threshold"] == 1.5
    with pytest.raises(ParamsError, match="must be a number, got 'e-3'"):
        load_params(f, overrides={"ransac.threshold": "e-3"})


@pytest.mark.parametrize("text, message", [
    ("superpoint_node:\n  ros__parameters:\n    extractor.max_keypoints: 1.5\n", "must be an integer"),
    ("superpoint_node:\n  ros__parameters:\n    extractor.nms_radius: 99\n", "outside [0, 32]"),
    ("superpoint_node:\n  ros__parameters:\n    ransac.model: affine\n", "not one of fundamental, homography"),
    ("superpoint_node:\n  ros__parameters:\n    extractor.subpixel: 1\n", "must be a bool"),
    ("superpoint_node:\n  ros__parameters:\n    stereo.maxdisparity: 3.0\n", "unknown parameter 'stereo.maxdisparity'"),
    ("superpoint_node:\n  ros__parameters:\n    extractor.device: gpu\n", "auto, cpu, cuda or cuda:N"),
    ("superpoint_node:\n  ros__parameters:\n    stereo.min_disparity: 50.0\n    stereo.max_disparity: 10.0\n",
     "larger than"),
    ("other_node:\n  ros__parameters:\n    a: 1\n", "no 'ros__parameters' section for node 'superpoint_node'"),
    ("[1, 2]\n", "expected a mapping"),
    ("a: [\n", "not valid YAML"),
])
def test_invalid_files_give_specific_reasons(tmp_path, text, message):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(ParamsError) as info:
        load_params(f)
    assert message in str(info.value) and str(f) in str(info.value)


def test_missing_file():
    with pytest.raises(ParamsError, match="not found"):
        load_params("/nonexistent/params.yaml")


def test_every_problem_is_listed_at_once():
    with pytest.raises(ParamsError) as info:
        validate({"extractor.nms_radius": -1, "ransac.confidence": 2.0, "matching.ratio_test": float("nan")})
    text = str(info.value)
    assert "extractor.nms_radius" in text and "ransac.confidence" in text and "must be finite" in text


def test_the_defaults_are_the_typed_configuration_and_no_value_markers_become_none():
    assert frontend_conf(defaults()) == FrontendConf()
    assert frontend_conf({}) == FrontendConf()
    off = frontend_conf({"matching.ratio_test": 0.0, "matching.max_distance": 2.0, "extractor.uniform_cell": 0,
                         "extractor.max_keypoints": -1, "image.max_size": 0, "extractor.num_threads": 0})
    assert off.matching.ratio_test is None and off.matching.max_distance is None
    assert off.detector.uniform_cell is None and off.detector.max_keypoints is None and off.image.max_size is None
    assert off.model.weights is None and off.model.num_threads is None
    assert ros_params(off)["matching.ratio_test"] == 0.0 and ros_params(off)["extractor.uniform_cell"] == 0
    changed = frontend_conf({"extractor.max_keypoints": 7, "tracking.flow_refinement": False, "ransac.model": "homography",
                             "device.cpu_fallback": True, "extractor.weights": "w.pt"})
    assert (changed.detector.max_keypoints, changed.tracking.flow_refinement, changed.ransac.model) == (7, False, "homography")
    assert changed.cpu_fallback is True and changed.model.weights == "w.pt"
    assert frontend_conf(ros_params(changed)) == changed  # the two directions agree
    with pytest.raises(ParamsError, match="outside"):
        frontend_conf({"extractor.nms_radius": 99})


@pytest.mark.parametrize("name", ["superpoint_mono.yaml", "superpoint_stereo.yaml"])
def test_shipped_files_hold_only_their_mode(name):
    """The code defaults are the shipped values: the files only say mono or stereo."""
    document = yaml.safe_load((ROOT / "config" / name).read_text())
    assert set(flatten(document["/**"]["ros__parameters"])) == {"stereo.enabled"}


def test_docs_table_is_the_generated_one():
    """docs/node.md's parameter table is ``python -m superpoint_ros.params``'s output (defaults included)."""
    lines = (ROOT / "docs" / "node.md").read_text().splitlines()
    start = lines.index("| parameter | default | range / choices | run-time | description |")
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    assert "\n".join(lines[start:end]) == markdown_table(), "regenerate: python -m superpoint_ros.params"
    assert all(f"`{name}`" in markdown_table() for name in PARAMETERS)
