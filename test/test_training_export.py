"""TorchScript and ONNX export checked against eager PyTorch (superpoint_ros.training.export)."""
from pathlib import Path

import pytest
import torch

from superpoint_ros.model import SuperPointConfig, SuperPointNet
from superpoint_ros.training import export as ex
from superpoint_ros.weights import load_model, save_checkpoint


pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = SuperPointConfig(encoder_channels=(8, 8, 16, 16), head_channels=32, descriptor_dim=16)


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    torch.manual_seed(3)
    path = tmp_path_factory.mktemp("w") / "tiny.pt"
    save_checkpoint(path, SuperPointNet(TINY).eval(), {"training_data": "none (test)"})
    return path


def test_exports_match_eager_at_sizes_other_than_the_example(tmp_path, tiny_weights):
    report = ex.export(str(tiny_weights), tmp_path)
    assert set(report) == {"torchscript", "onnx"}
    for fmt, r in report.items():
        assert r["checked"], fmt
        assert max(r["max_abs_diff"].values()) < 1e-4, (fmt, r)
    model, _ = load_model(tiny_weights)
    x = torch.rand(3, 1, 136, 72)  # batch, height and width none of the checks used
    with torch.no_grad():
        eager = ex.TupleOutputs(model)(x)
        scripted = torch.jit.load(str(tmp_path / "tiny.torchscript.pt"))(x)
    import onnxruntime as ort

    onnx_out = ort.InferenceSession(str(tmp_path / "tiny.onnx"), providers=["CPUExecutionProvider"]).run(
        None, {"image": x.numpy()})
    for got in (scripted, [torch.from_numpy(a) for a in onnx_out]):
        assert got[0].shape == (3, 65, 17, 9) and got[1].shape == (3, 16, 17, 9)
        torch.testing.assert_close(got[0], eager[0], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(got[1], eager[1], atol=1e-4, rtol=1e-4)
    assert (tmp_path / "tiny.export.json").is_file()


def test_the_check_detects_a_wrong_export(tmp_path, tiny_weights):
    ex.export(str(tiny_weights), tmp_path)
    torch.manual_seed(99)
    other = SuperPointNet(TINY).eval()  # different weights than the exported file
    inputs = ex.check_inputs(((1, 32, 32),))
    assert max(ex.check_onnx(other, tmp_path / "tiny.onnx", inputs).values()) > 1e-3
    assert max(ex.check_torchscript(other, tmp_path / "tiny.torchscript.pt", inputs).values()) > 1e-3


def test_cli_fails_when_the_tolerance_is_not_met(tmp_path, tiny_weights, capsys):
    ex.main(["--weights", str(tiny_weights), "--out", str(tmp_path / "ok"), "--formats", "torchscript"])
    assert "torchscript" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        # ONNX Runtime's kernels differ from PyTorch's in the last bits: a zero tolerance must fail
        ex.main(["--weights", str(tiny_weights), "--out", str(tmp_path / "strict"), "--formats", "onnx",
                 "--tolerance", "0"])
    assert exit_info.value.code == 1
    assert "differs from eager" in capsys.readouterr().err



def test_int8_export_is_the_extractors_int8_network_and_checked(tmp_path, trained_weights):
    """``--formats onnx-int8`` writes what ``precision: int8`` runs, checked by descriptor
    direction (the trained model's 5th-percentile cosine: 0.993 with int8 weights on a VNNI CPU,
    0.963 with the uint8 weights a CPU without VNNI runs: ``INT8_MIN_COSINE``)."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from superpoint_ros.backends import int8_weight_type, quantize_onnx

    weights = Path(trained_weights)
    report = ex.export(trained_weights, tmp_path, formats=["onnx-int8"])
    r = report["onnx-int8"]
    assert r["weight_type"] == int8_weight_type()
    assert r["checked"] and ex.INT8_MIN_COSINE[r["weight_type"]] <= r["descriptor_cosine_p05"] <= 1.0
    assert max(r["max_abs_diff"].values()) > 1e-3  # really quantised, not a float copy
    model, _ = load_model(weights)
    assert (tmp_path / f"{weights.stem}.int8.onnx").read_bytes() == quantize_onnx(model.float().eval())
    with pytest.raises(RuntimeError, match="int8 descriptors differ"):
        ex.export(str(weights), tmp_path / "strict", formats=["onnx-int8"], int8_min_cosine=0.99999)


def test_bad_weights_are_one_clear_line_and_exit_2(tmp_path, capsys):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint at all" * 10)
    with pytest.raises(SystemExit) as exit_info:
        ex.main(["--weights", str(junk), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("superpoint-export: error:") and "not a PyTorch checkpoint" in err
