"""Detector evaluation on held-out synthetic shapes (superpoint_ros.training.detector_eval)."""
import numpy as np
import pytest
import torch

from superpoint_ros.model import SuperPointConfig, SuperPointNet
from superpoint_ros.training import detector_eval as de
from superpoint_ros.training import train_magicpoint as tm
from superpoint_ros.training.config import load_config


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_matching_is_greedy_by_score_and_one_to_one():
    truth = np.array([[10.0, 10.0], [30.0, 30.0]])
    points = np.array([[11.0, 10.0], [10.0, 12.0], [50.0, 50.0], [30.0, 31.5]], np.float32)
    scores = np.array([0.5, 0.9, 0.8, 0.1], np.float32)
    correct, errors, sorted_scores = de.match_detections(points, scores, truth, distance=3.0)
    # order by score: (10,12) 0.9 takes GT0; (50,50) misses; (11,10) finds GT0 taken; (30,31.5) takes GT1
    assert correct.tolist() == [True, False, False, True]
    np.testing.assert_allclose(errors[[0, 3]], [2.0, 1.5])
    assert sorted_scores.tolist() == sorted(scores.tolist(), reverse=True)


def test_summary_metrics_on_a_known_ranking():
    per_image = [(np.array([True, False, True]), np.array([1.0, np.nan, 2.0]), np.array([0.9, 0.5, 0.2]), 0.4)]
    r = de.summarise(per_image, num_truth=4)
    assert r["precision"] == 0.5 and r["recall"] == 0.25  # 2 detections above 0.4, one correct
    assert abs(r["mAP"] - (1.0 + 2 / 3) / 4) < 1e-9
    assert r["localisation_error_px"] == 1.0 and r["max_recall"] == 0.5


def test_evaluation_table_covers_magicpoint_and_the_opencv_baselines():
    conf = load_config(tm.default_conf, None, ["synthetic.height=64", "synthetic.width=80", "eval.num_images=12"])
    torch.manual_seed(0)
    model = SuperPointNet(SuperPointConfig(encoder_channels=(8, 8, 16, 16), head_channels=32, descriptor_dim=16))
    results = de.evaluate_on_synthetic(model, conf, batch_size=6)
    assert set(results) == {"MagicPoint", "FAST", "Harris", "Shi-Tomasi"}
    for name in ("FAST", "Harris", "Shi-Tomasi"):  # classic detectors do find these corners
        assert results[name]["max_recall"] > 0.5 and 0 < results[name]["mAP"] <= 1, (name, results[name])
        assert results[name]["localisation_error_px"] < 3.0
    table = de.format_table(results)
    assert all(name in table for name in results) and "mAP" in table


def test_cli_evaluates_any_checkpoint(tmp_path, capsys):
    from superpoint_ros.weights import save_checkpoint

    torch.manual_seed(0)
    path = tmp_path / "tiny_model.pt"
    save_checkpoint(path, SuperPointNet(SuperPointConfig(encoder_channels=(8, 8, 16, 16), head_channels=32,
                                                         descriptor_dim=16)))
    de.main(["--weights", str(path), "--set", "synthetic.height=48", "synthetic.width=64", "eval.num_images=4",
             "--json", str(tmp_path / "r.json")])
    out = capsys.readouterr().out
    assert "tiny_model" in out and "Shi-Tomasi" in out
    import json

    results = json.loads((tmp_path / "r.json").read_text())
    assert set(results) == {"tiny_model", "FAST", "Harris", "Shi-Tomasi"}
