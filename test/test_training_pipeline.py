"""scripts/train_default_model.sh --smoke: all four stages end to end, as the lead runs it."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

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
    final = out / "superpoint_ros_smoke.pt"  # never named like the shipped model
    assert not (out / "superpoint_ros_v1.pt").exists()
    model, provenance = load_model(final)
    assert final.stat().st_size < 10 * 2 ** 20
    assert set(provenance["iterations"]) == {"magicpoint", "superpoint"}
    assert provenance["training_sources"] and all("astronaut" not in s for s in provenance["training_sources"])
    assert "MagicPoint" in provenance["stages"]["magicpoint_eval_synthetic"]
    sanity = json.loads((out / "superpoint_ros_smoke.sanity.json").read_text())
    assert sanity["keypoints"][0] > 0
    for name in ("magicpoint", "adapt", "superpoint", "finalize"):
        assert (out / "logs" / f"{name}.log").stat().st_size > 0
    features = FeatureExtractor(weights=str(final), device="cpu")(camera_image)
    assert features.descriptors.shape[1] == model.config.descriptor_dim


def test_script_rejects_bad_arguments(tmp_path):
    result = subprocess.run(["bash", "scripts/train_default_model.sh", str(tmp_path), "--until", "nowhere"],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2 and "usage" in result.stderr


def _interpreter_env(tmp_path, target):
    """An environment without PYTHON or an activated venv whose project venv (SUPERPOINT_VENV) is a
    wrapper around ``target`` that records its use."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    wrapper = venv / "bin" / "python"
    wrapper.write_text(f'#!/bin/sh\necho used >> "{tmp_path / "used"}"\nexec "{target}" "$@"\n')
    wrapper.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHON", "VIRTUAL_ENV")}
    return {**env, "SUPERPOINT_VENV": str(venv)}


def test_script_uses_the_project_venv_without_an_activated_one(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / ".done_magicpoint").touch()  # stop right after the interpreter check
    result = subprocess.run(["bash", "scripts/train_default_model.sh", str(out), "--smoke", "--until", "magicpoint"],
                            cwd=ROOT, env=_interpreter_env(tmp_path, sys.executable), capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (tmp_path / "used").is_file() and "| torch" in (out / "logs" / "env.log").read_text()


def test_script_without_torch_says_how_to_set_up(tmp_path):
    no_torch = "/usr/bin/python3"
    if not Path(no_torch).is_file() or subprocess.run([no_torch, "-c", "import torch"],
                                                      capture_output=True).returncode == 0:
        pytest.skip("needs a system python3 without torch")
    result = subprocess.run(["bash", "scripts/train_default_model.sh", str(tmp_path / "run"), "--smoke"],
                            cwd=ROOT, env=_interpreter_env(tmp_path, no_torch), capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2 and "cannot import torch" in result.stderr and "bootstrap.sh" in result.stderr
    assert "Traceback" not in result.stderr


def test_v2_smoke_fine_tunes_on_a_photo_folder_and_resumes(tmp_path):
    """scripts/train_v2.sh --smoke on a folder of photos with a manifest: evaluation photos stay
    out, licences reach the checkpoint, and a second call continues from the saved state."""
    import cv2
    from skimage import data as skdata

    photos = tmp_path / "photos" / "set"
    photos.mkdir(parents=True)
    names = {"brick": skdata.brick(), "grass": skdata.grass(), "gravel": skdata.gravel(),
             "camera": skdata.camera(), "astronaut": skdata.astronaut()[..., 0]}
    for name, image in names.items():
        cv2.imwrite(str(photos / f"{name}.jpg"), image)
    (tmp_path / "photos" / "MANIFEST.tsv").write_text(
        "relpath\trepo\tcommit\tsource_path\tlicence\n"
        + "".join(f"set/{n}.jpg\tscikit-image/scikit-image\tv0\tdata/{n}\tBSD-3-Clause\n" for n in names))
    out = tmp_path / "run"
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    command = ["bash", "scripts/train_v2.sh", str(out), "--images", str(tmp_path / "photos"), "--smoke"]
    first = subprocess.run(command + ["--until", "adapt"], cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=300)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "stopping after adapt" in first.stdout and not (out / "superpoint").exists()
    second = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "adapt: already done" in second.stdout
    _, provenance = load_model(out / "superpoint_ros_v2.pt")
    sources = {Path(s).stem for s in provenance["training_sources"]}
    assert "astronaut" not in sources and sources <= set(names) and sources
    assert provenance["training_licences"][0]["licence"] == "BSD-3-Clause"
    assert "train_v2.sh" in provenance["pipeline"]
    third = subprocess.run(command + ["--until", "superpoint"], cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=300)
    assert third.returncode == 0, third.stdout[-3000:] + third.stderr[-3000:]
    assert "resuming from" in (out / "logs" / "superpoint.log").read_text()
