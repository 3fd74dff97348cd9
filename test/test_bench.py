"""The benchmark suite's own pieces: the reference baseline is a correct greedy NMS, and the one
command runs and writes JSON (no timing asserted here: speed targets live in bench/)."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from bench.reference import ReferenceExtractor, greedy_nms
from bench.run import keypoint_agreement
from bench.timing import summary, time_variants
from superpoint_ros import FeatureExtractor

ROOT = Path(__file__).resolve().parents[1]


def test_greedy_nms_keeps_the_best_and_suppresses_its_window():
    heat = np.zeros((40, 40), np.float32)
    heat[10, 10] = 0.9
    heat[12, 13] = 0.5    # within 4 px of the stronger point: suppressed
    heat[10, 16] = 0.6    # 6 px away: kept
    heat[30, 30] = 0.2
    heat[38, 2] = 0.8     # in the 4 px border: never a candidate
    keypoints, scores = greedy_nms(heat, radius=4, threshold=0.1, border=4)
    assert keypoints.tolist() == [[10, 10], [16, 10], [30, 30]]   # xy, best first
    assert scores.tolist() == [np.float32(0.9), np.float32(0.6), np.float32(0.2)]


def test_greedy_nms_keeps_a_point_whose_suppressor_was_suppressed():
    heat = np.zeros((30, 30), np.float32)
    heat[10, 10], heat[10, 14], heat[10, 18] = 1.0, 0.8, 0.7
    keypoints, _ = greedy_nms(heat, radius=4, threshold=0.0, border=0)
    assert keypoints.tolist() == [[10, 10], [18, 10]]


def test_reference_extractor_agrees_with_the_optimised_one(random_model, random_weights, camera_image):
    image = camera_image[:240, :320]
    reference = ReferenceExtractor(random_model, detection_threshold=0.0155, max_keypoints=200)
    fast = FeatureExtractor(weights=random_weights, device="cpu", precision="fp32", detection_threshold=0.0155,
                            max_keypoints=200,  # float32: this compares the NMS, not the int8 network
                            uniform_cell=None, subpixel=False)  # plain top-k at pixels, as the reference
    fr, ff = reference(image), fast(image)
    assert len(fr) == 200 and fr.descriptors.shape == (200, 256)
    assert np.all(np.diff(fr.scores) <= 0)
    # greedy NMS vs the 3-pass approximation, on a random network's near-ties: mostly the same points
    assert keypoint_agreement(fr.keypoints, ff.keypoints) > 0.8
    # the reference does not change the model it was given
    assert next(random_model.parameters()).dtype == torch.float32


def test_keypoint_agreement():
    a = np.array([[0.0, 0.0], [10.0, 10.0]])
    assert keypoint_agreement(a, a + 0.5) == 1.0
    assert keypoint_agreement(a, np.array([[10.0, 11.5]])) == 0.0
    assert keypoint_agreement(a, np.array([[10.0, 11.0]])) == 0.5


def test_time_variants_interleaves_and_summarises():
    order = []
    samples = time_variants({"a": lambda i: order.append("a"), "b": lambda i: order.append("b")}, repeats=3,
                            warmup=1, device=torch.device("cpu"))
    assert order == ["a", "b"] * 4 and [len(v) for v in samples.values()] == [3, 3]
    s = summary([1.0, 2.0, 3.0])
    assert s["ms_median"] == 2.0 and s["n"] == 3


def test_frontend_section_times_the_shipped_stereo_frontend(tmp_path, random_weights):
    out = tmp_path / "bench.json"
    result = subprocess.run([sys.executable, "-m", "bench.run", "--quick", "--sections", "frontend", "--resolutions",
                             "240x320", "--repeats", "3", "--weights", random_weights, "--json", str(out)],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    rows = {r["variant"]: r for r in json.loads(out.read_text())["results"] if r["section"] == "frontend"}
    shipped = rows["Frontend.process_stereo, shipped stereo config"]
    assert rows["batched extraction only (network + decoding)"]["ms_median"] > 0 and shipped["n"] >= 3
    assert "flow_refinement" in shipped["stage_ms"] and "stereo_match" in shipped["stage_ms"], shipped
    # issue 17's row: the same front-end with the network's output replayed (no forward pass)
    replayed = {r["variant"]: r for r in json.loads(out.read_text())["results"] if r["section"] == "frontend_cpu_side"}
    cpu_side = replayed["shipped stereo config, network replayed"]
    assert "flow_refinement" in cpu_side["stage_ms"] and "stereo_match" in cpu_side["stage_ms"], cpu_side
    assert cpu_side["ms_median"] > 0 and cpu_side["n"] == 96  # 4 passes over the 24 pairs


def test_the_one_command_writes_json(tmp_path, random_weights):
    out = tmp_path / "bench.json"
    result = subprocess.run([sys.executable, "-m", "bench.run", "--quick", "--sections", "matching", "--weights",
                             random_weights, "--json", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text())
    rows = {r["variant"]: r for r in data["results"]}
    assert "OpenCV BFMatcher L2 crossCheck (baseline)" in rows
    assert rows["match_descriptors (numpy in/out)"]["ms_median"] > 0
    assert data["meta"]["device"] and data["targets"][0]["target"].startswith("matching")
    bad = subprocess.run([sys.executable, "-m", "bench.run", "--sections", "nope"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2 and "unknown" in bad.stderr


def test_threads_bench_prints_both_counts_and_leaves_one_thread(capsys):
    from bench import threads

    assert threads.main(["--rounds", "1", "--threads", "2"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "ms" not in line]
    names = [r.split(" | ")[0][2:] for r in rows]
    assert len(names) == 3 and names[0] == "decode (480x640)" and names[1].startswith("match (")
    assert names[2] == "eager fp32 network (480x640)"
    assert all(float(r.split(" | ")[1]) > 0 and float(r.split(" | ")[2]) > 0 for r in rows)
    assert torch.get_num_threads() == 1  # back to the entry points' setting
