"""scripts/train_default_model.sh --smoke: all four stages end to end, as the lead runs it."""
import json
import os
import subprocess
import sys
from pathlib import Path

from superpoint_ros.extractor import FeatureExtractor
from superpoint_ros.weights import load_model

ROOT = Path(__file__).resolve().parent.parent


def test_smoke_pipeline_writes_a_loadable_default_model(tmp_path, camera_image):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    first = subprocess.run(["bash", "scripts/train_default_model.sh", str(out), "--smoke", "--until", "adapt"],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "stopping after adapt" in first.stdout and not (out / "superpoint").exists()
    assert list((out / "labels").glob("*.npy"))
    second = subprocess.run(["bash", "scripts/train_default_model.sh", str(out), "--smoke"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "magicpoint: already done" in second.stdout
    final = out / "superpoint_ros_v1.pt"
    model, provenance = load_model(final)
    assert final.stat().st_size < 10 * 2 ** 20
    assert set(provenance["iterations"]) == {"magicpoint", "superpoint"}
    assert provenance["training_sources"] and all("astronaut" not in s for s in provenance["training_sources"])
    assert "MagicPoint" in provenance["stages"]["magicpoint_eval_synthetic"]
    sanity = json.loads((out / "superpoint_ros_v1.sanity.json").read_text())
    assert sanity["keypoints"][0] > 0
    for name in ("magicpoint", "adapt", "superpoint", "finalize"):
        assert (out / "logs" / f"{name}.log").stat().st_size > 0
    features = FeatureExtractor(weights=str(final), device="cpu")(camera_image)
    assert features.descriptors.shape[1] == model.config.descriptor_dim


def test_script_rejects_bad_arguments(tmp_path):
    result = subprocess.run(["bash", "scripts/train_default_model.sh", str(tmp_path), "--until", "nowhere"],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2 and "usage" in result.stderr
