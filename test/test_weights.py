import os
import pickle

import pytest
import torch

from superpoint_ros import SMALL, SuperPointNet, WeightsError, load_model, load_weights, save_checkpoint
from superpoint_ros.weights import FORMAT

PUBLISHED_KEYS = [f"{name}.{p}" for name in
                  ["conv1a", "conv1b", "conv2a", "conv2b", "conv3a", "conv3b", "conv4a", "conv4b",
                   "convPa", "convPb", "convDa", "convDb"] for p in ("weight", "bias")]


def test_published_layout_loads_and_matches(tmp_path, random_model):
    path = tmp_path / "superpoint_v1.pth"
    sd = random_model.state_dict()
    assert sorted(sd) == sorted(PUBLISHED_KEYS)
    torch.save(sd, path)  # the published file is a bare state_dict
    config, state_dict, provenance = load_weights(path)
    assert config == random_model.config and provenance == {"format": "published"}
    model, _ = load_model(path)
    x = torch.rand(1, 1, 32, 48)
    assert torch.equal(model(x)["logits"], random_model(x)["logits"])


def test_project_checkpoint_round_trips_config_and_provenance(tmp_path):
    torch.manual_seed(3)
    small = SuperPointNet(SMALL)
    path = save_checkpoint(tmp_path / "small.pt", small, {"training_data": "synthetic", "iterations": 12})
    config, state_dict, provenance = load_weights(path)
    assert config == SMALL
    assert provenance["iterations"] == 12 and provenance["training_data"] == "synthetic"
    assert "date" in provenance
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == FORMAT
    for k, v in small.state_dict().items():
        assert torch.equal(state_dict[k], v)


def test_missing_file(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        load_weights(tmp_path / "nope.pt")


def test_not_a_torch_file(tmp_path):
    path = tmp_path / "notes.pt"
    path.write_text("these are not weights\n" * 10)
    with pytest.raises(WeightsError, match="not a torch weight file|not plain tensor data"):
        load_weights(path)


def test_truncated_file(tmp_path, random_weights):
    data = open(random_weights, "rb").read()
    path = tmp_path / "truncated.pt"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="truncated or corrupt"):
        load_weights(path)


def test_missing_and_unexpected_keys_are_named(tmp_path, random_model):
    sd = dict(random_model.state_dict())
    del sd["convDb.bias"]
    sd["extra.weight"] = torch.zeros(1)
    torch.save(sd, tmp_path / "bad.pt")
    with pytest.raises(WeightsError) as err:
        load_weights(tmp_path / "bad.pt")
    assert "missing keys: convDb.bias" in str(err.value)
    assert "unexpected keys: extra.weight" in str(err.value)


def test_wrong_shapes_are_named(tmp_path, random_model):
    sd = dict(random_model.state_dict())
    sd["conv2a.weight"] = torch.zeros(64, 64, 5, 5)
    torch.save(sd, tmp_path / "shape.pt")
    with pytest.raises(WeightsError, match=r"conv2a.weight has shape \(64, 64, 5, 5\), expected \(64, 64, 3, 3\)"):
        load_weights(tmp_path / "shape.pt")
    sd = dict(random_model.state_dict())
    sd["convPb.weight"] = torch.zeros(64, 256, 1, 1)
    torch.save(sd, tmp_path / "det.pt")
    with pytest.raises(WeightsError, match="65"):
        load_weights(tmp_path / "det.pt")


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_code_executing_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"conv1a.weight": _Exploit(marker)}, path)
    with pytest.raises(WeightsError, match="refused"):
        load_weights(path)
    assert not marker.exists()
    # a plain (non-zip) pickle carrying the same payload is refused too
    legacy = tmp_path / "evil_legacy.pt"
    legacy.write_bytes(pickle.dumps(_Exploit(marker)))
    with pytest.raises(WeightsError):
        load_weights(legacy)
    assert not marker.exists()
