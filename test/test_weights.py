import os
import pickle
import warnings
from collections import OrderedDict

import numpy as np
import pytest
import torch

from superpoint_ros import SMALL, SuperPointConfig, SuperPointNet, WeightsError, load_model, load_weights, save_checkpoint
from superpoint_ros.backends import export_onnx
from superpoint_ros.training.export import export_torchscript
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
    with pytest.raises(WeightsError, match="not a PyTorch checkpoint"):
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
    # a refused file is one clear error: no pickle-protocol warning, no advice to drop weights_only
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(WeightsError) as err:
            load_weights(legacy)
    assert not [w for w in caught if "pickle protocol" in str(w.message)], [str(w.message) for w in caught]
    assert "weights_only" not in str(err.value)


def _assert_clear_refusal(path, expected):
    """load_weights refuses ``path`` with ``expected`` in the message, no torch advice, no warning."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(WeightsError) as err:
            load_weights(path)
    message = str(err.value)
    assert expected in message and str(path) in message
    assert "weights_only" not in message and "Re-running" not in message, message
    assert not caught, [str(w.message) for w in caught]


def test_onnx_and_torchscript_exports_are_named_as_exports(tmp_path):
    torch.manual_seed(0)
    model = SuperPointNet(SMALL).eval()
    onnx_path = tmp_path / "model.bin"  # not named .onnx: recognised by its bytes
    onnx_path.write_bytes(export_onnx(model))
    _assert_clear_refusal(onnx_path, "an ONNX model: this is an export for other runtimes; pass the .pt checkpoint")
    scripted = export_torchscript(model, tmp_path / "model.torchscript.pt")  # superpoint-export's
    _assert_clear_refusal(scripted, "a TorchScript export: this is an export for other runtimes")


def test_random_bytes_are_not_a_pytorch_checkpoint(tmp_path):
    path = tmp_path / "noise.pt"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    _assert_clear_refusal(path, "not a PyTorch checkpoint")


@pytest.mark.parametrize("layout", ["published", "checkpoint"])
def test_non_finite_weights_are_refused_naming_the_key(tmp_path, random_model, layout):
    sd = {k: v.clone() for k, v in random_model.state_dict().items()}
    sd["conv3a.weight"][0, 0, 0, 0] = float("nan")
    sd["convDb.bias"][:] = float("inf")
    path = tmp_path / "nan.pt"
    if layout == "published":
        torch.save(sd, path)
    else:
        broken = SuperPointNet(random_model.config)
        broken.load_state_dict(sd)
        save_checkpoint(path, broken)
    with pytest.raises(WeightsError, match=r"NaN or infinite values: conv3a.weight \(1 of 73728 values\), "
                                           r"convDb.bias \(256 of 256 values\)"):
        load_weights(path)


@pytest.mark.parametrize("wrap", ["DataParallel", "torch.compile", "both"])
def test_wrapped_model_state_dicts_load_with_the_prefix_stripped(tmp_path, random_model, wrap):
    # real wrappers' state_dicts: DataParallel adds "module." as DistributedDataParallel does;
    # torch.compile adds "_orig_mod." (it compiles lazily, so nothing is compiled here)
    wrapped = {"DataParallel": lambda m: torch.nn.DataParallel(m), "torch.compile": torch.compile,
               "both": lambda m: torch.nn.DataParallel(torch.compile(m))}[wrap](random_model)
    path = tmp_path / "wrapped.pt"
    torch.save(wrapped.state_dict(), path)
    assert all(k.startswith(("module.", "_orig_mod.")) for k in torch.load(path, weights_only=True))
    model, provenance = load_model(path)
    expected = {"DataParallel": ["'module.'"], "torch.compile": ["'_orig_mod.'"],
                "both": ["'module.'", "'_orig_mod.'"]}[wrap]
    notes = provenance["load_notes"]
    assert len(notes) == len(expected) and all(p in n for p, n in zip(expected, notes)), notes
    x = torch.rand(1, 1, 32, 48)
    assert torch.equal(model(x)["logits"], random_model(x)["logits"])


# --- rpautrat/SuperPoint's PyTorch layout (superpoint_pytorch.py, superpoint_v6_from_tf.pth) ------
# Written here from the published facts: every block is Conv2d -> ReLU -> BatchNorm2d(eps=1e-3)
# (named conv / activation / bn); the backbone is 4 stages of 2 blocks, a 2x2 max-pool after each of
# the first 3 stages (after the BatchNorm); detector and descriptor heads are a 3x3 block (with
# ReLU) then a 1x1 block without ReLU (but with BatchNorm); 65 detector channels; the descriptor is
# L2-normalised.

class _Block(torch.nn.Sequential):
    def __init__(self, c_in, c_out, kernel, relu=True):
        super().__init__(OrderedDict(conv=torch.nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2),
                                     activation=torch.nn.ReLU() if relu else torch.nn.Identity(),
                                     bn=torch.nn.BatchNorm2d(c_out, eps=1e-3)))


class _BatchNormSuperPoint(torch.nn.Module):
    def __init__(self, channels=(64, 64, 128, 128, 256), descriptor_dim=256):
        super().__init__()
        stages, c_prev = [], 1
        for i, c in enumerate(channels[:4]):
            layers = [_Block(c_prev, c, 3), _Block(c, c, 3)]
            if i < 3:
                layers.append(torch.nn.MaxPool2d(2, 2))
            stages.append(torch.nn.Sequential(*layers))
            c_prev = c
        self.backbone = torch.nn.Sequential(*stages)
        self.detector = torch.nn.Sequential(_Block(c_prev, channels[4], 3), _Block(channels[4], 65, 1, relu=False))
        self.descriptor = torch.nn.Sequential(_Block(c_prev, channels[4], 3),
                                              _Block(channels[4], descriptor_dim, 1, relu=False))

    def forward(self, image):
        features = self.backbone(image)
        return {"logits": self.detector(features),
                "descriptors": torch.nn.functional.normalize(self.descriptor(features), p=2, dim=1)}


def _random_batchnorm_statistics(model, generator):
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                c = module.num_features
                module.weight.copy_(torch.randn(c, generator=generator))  # some negative scales too
                module.bias.copy_(torch.randn(c, generator=generator) * 0.5)
                module.running_mean.copy_(torch.rand(c, generator=generator))
                module.running_var.copy_(torch.rand(c, generator=generator) * 2 + 0.05)
                module.num_batches_tracked.fill_(1000)
    return model.eval()


def test_batchnorm_layout_has_the_published_key_names_and_shapes():
    sd = _BatchNormSuperPoint().state_dict()
    assert tuple(sd["backbone.0.0.conv.weight"].shape) == (64, 1, 3, 3)
    assert tuple(sd["backbone.3.1.bn.running_var"].shape) == (128,)
    assert tuple(sd["detector.1.conv.weight"].shape) == (65, 256, 1, 1)
    assert tuple(sd["descriptor.1.bn.weight"].shape) == (256,)
    assert "backbone.0.2.weight" not in sd  # the max-pool holds nothing
    assert len(sd) == 12 * (2 + 5)  # 12 blocks: conv weight/bias + bn weight/bias/mean/var/count


@pytest.mark.parametrize("channels,descriptor_dim", [((64, 64, 128, 128, 256), 256), ((8, 8, 16, 16, 32), 24)])
def test_batchnorm_layout_converts_on_load_and_reproduces_the_original(tmp_path, channels, descriptor_dim):
    generator = torch.Generator().manual_seed(1)
    torch.manual_seed(1)
    reference = _random_batchnorm_statistics(_BatchNormSuperPoint(channels, descriptor_dim), generator)
    path = tmp_path / "superpoint_v6_from_tf.pth"
    torch.save(reference.state_dict(), path)
    model, provenance = load_model(path)
    assert model.config == SuperPointConfig(encoder_channels=channels[:4], head_channels=channels[4],
                                            descriptor_dim=descriptor_dim, post_relu_affine=True)
    assert provenance["format"] == "published" and "BatchNorm layout" in provenance["load_notes"][0]
    image = torch.rand(2, 1, 48, 64, generator=generator)  # borders matter: zero padding at every conv
    with torch.no_grad():
        expected, got = reference(image), model(image)
    scale = expected["logits"].abs().max()
    assert torch.allclose(got["logits"], expected["logits"], rtol=0, atol=1e-4 * float(scale))
    assert torch.allclose(got["descriptors"], expected["descriptors"], rtol=0, atol=1e-4)


def test_converted_batchnorm_weights_round_trip_through_a_checkpoint(tmp_path):
    generator = torch.Generator().manual_seed(2)
    torch.manual_seed(2)
    reference = _random_batchnorm_statistics(_BatchNormSuperPoint((8, 8, 16, 16, 32), 16), generator)
    torch.save(reference.state_dict(), tmp_path / "bn.pth")
    model, _ = load_model(tmp_path / "bn.pth")
    again, _ = load_model(save_checkpoint(tmp_path / "converted.pt", model))
    torch.save(model.state_dict(), tmp_path / "bare.pt")  # a bare state_dict with the affine keys
    bare, _ = load_model(tmp_path / "bare.pt")
    image = torch.rand(1, 1, 32, 40, generator=generator)
    with torch.no_grad():
        for other in (again, bare):
            assert torch.equal(other(image)["logits"], model(image)["logits"])


def test_batchnorm_layout_with_a_missing_statistic_names_the_key(tmp_path):
    sd = _BatchNormSuperPoint((8, 8, 16, 16, 32), 16).state_dict()
    del sd["backbone.2.1.bn.running_var"]
    torch.save(sd, tmp_path / "bn.pth")
    with pytest.raises(WeightsError, match="backbone.2.1.bn.running_var"):
        load_weights(tmp_path / "bn.pth")
