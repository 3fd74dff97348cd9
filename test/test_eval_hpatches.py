"""superpoint-make-dataset and superpoint-eval end to end on tiny real-photo datasets."""
import json

import cv2
import numpy as np
import pytest

from superpoint_ros.evaluation import hpatches, make_dataset, metrics

SIZE = (120, 160)


@pytest.fixture(scope="module")
def sources():
    from skimage import data

    return [("astronaut", np.ascontiguousarray(data.astronaut()[..., ::-1])),
            ("coffee", np.ascontiguousarray(data.coffee()[..., ::-1]))]


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory, sources):
    root = tmp_path_factory.mktemp("hp") / "ds"
    make_dataset.make_dataset(root, {"size": SIZE, "variants": 1}, sources)
    return root


def test_dataset_has_hpatches_layout(tiny_dataset):
    manifest = json.loads((tiny_dataset / "dataset.json").read_text())
    assert sorted(manifest["sequences"]) == ["i_astronaut", "i_coffee", "v_astronaut", "v_coffee"]
    for seq in manifest["sequences"]:
        folder = tiny_dataset / seq
        for k in range(1, 7):
            assert cv2.imread(str(folder / f"{k}.png")).shape == (*SIZE, 3)
        for k in range(2, 7):
            h = np.loadtxt(folder / f"H_1_{k}")
            assert h.shape == (3, 3)
            if seq.startswith("i_"):
                np.testing.assert_array_equal(h, np.eye(3))


def test_viewpoint_images_really_are_related_by_their_homographies(tiny_dataset):
    folder = tiny_dataset / "v_astronaut"
    ref = cv2.imread(str(folder / "1.png"), cv2.IMREAD_GRAYSCALE).astype(np.float32)
    for k in range(2, 7):
        h = np.loadtxt(folder / f"H_1_{k}")
        view = cv2.imread(str(folder / f"{k}.png"), cv2.IMREAD_GRAYSCALE).astype(np.float32)
        predicted = cv2.warpPerspective(ref, h, (SIZE[1], SIZE[0]), borderValue=-1)
        valid = cv2.erode((predicted >= 0).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
        assert valid.mean() > 0.2
        right = np.abs(predicted - view)[valid].mean()
        wrong = np.abs(cv2.warpPerspective(ref, np.eye(3), (SIZE[1], SIZE[0])) - view)[valid].mean()
        assert right < 12 and right < 0.6 * wrong, (k, right, wrong)  # noise + resampling only


def test_illumination_changes_grow_and_geometry_stays(tiny_dataset):
    folder = tiny_dataset / "i_coffee"
    images = [cv2.imread(str(folder / f"{k}.png")).astype(np.float32) for k in range(1, 7)]
    change = [np.abs(im - images[0]).mean() for im in images[1:]]
    assert change[-1] > change[0] > 0
    edges = [cv2.Canny(im.astype(np.uint8), 50, 150) > 0 for im in (images[0], images[2])]
    assert (edges[0] & cv2.dilate(edges[1].astype(np.uint8), np.ones((3, 3))).astype(bool)).sum() > 0.5 * edges[0].sum()


def test_dataset_is_reproducible(tmp_path, sources):
    a, b = tmp_path / "a", tmp_path / "b"
    for root in (a, b):
        make_dataset.make_dataset(root, {"size": (64, 80), "variants": 2}, sources[:1], kinds="v")
    for seq in ("v_astronaut", "v_astronaut_2"):
        for name in ["1.png", "6.png", "H_1_6"]:
            assert (a / seq / name).read_bytes() == (b / seq / name).read_bytes()
    assert (a / "v_astronaut" / "H_1_6").read_bytes() != (a / "v_astronaut_2" / "H_1_6").read_bytes()


def test_make_dataset_cli_and_bad_input(tmp_path, capsys):
    assert make_dataset.main([str(tmp_path / "ds"), "--size", "64x80", "--max-sources", "1", "--variants", "1",
                              "--kinds", "v"]) == 0
    assert len(json.loads((tmp_path / "ds" / "dataset.json").read_text())["sequences"]) == 1
    assert make_dataset.main([str(tmp_path / "x"), "--images", str(tmp_path / "nope")]) == 2
    assert "not a folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        make_dataset.main([str(tmp_path / "y"), "--size", "64-80"])


def test_benchmark_baselines_on_identical_images_are_perfect(tmp_path, sources):
    folder = tmp_path / "ds" / "v_same"
    folder.mkdir(parents=True)
    image = cv2.resize(sources[0][1], (SIZE[1], SIZE[0]), interpolation=cv2.INTER_AREA)
    for k in range(1, 7):
        cv2.imwrite(str(folder / f"{k}.png"), image)
    for k in range(2, 7):
        np.savetxt(folder / f"H_1_{k}", np.eye(3))
    report = hpatches.run_benchmark(tmp_path / "ds", ["orb", "sift"], None, {"resize": None}, show_progress=False)
    for method in ("orb", "sift"):
        overall = report["results"][method]["overall"]
        assert overall["num_pairs"] == 5
        assert overall["repeatability"] == 1.0
        assert overall["mma"] == [1.0] * 10
        assert overall["homography_accuracy"] == {"1": 1.0, "3": 1.0, "5": 1.0}


def test_superpoint_eval_cli_full_table(tiny_dataset, random_weights, tmp_path, capsys):
    out = tmp_path / "eval"
    code = hpatches.main([str(tiny_dataset), "--no-default-model", "--weights", f"rnd={random_weights}",
                          "--resize", "96x128", "--top-k", "300", "--detector-top-k", "100", "-o", str(out), "--quiet"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| split | method | Rep |" in printed and "| overall | sift |" in printed and "| v | rnd |" in printed
    report = json.loads((out / "results.json").read_text())
    assert report["protocol"]["resolution"].startswith("96x128")
    assert report["protocol"]["top_k"] == 300 and report["protocol"]["detector_top_k"] == 100
    assert set(report["results"]) == {"rnd", "orb", "sift"}
    assert report["methods"]["rnd"]["weights"] == random_weights
    for method, by_split in report["results"].items():
        assert by_split["overall"]["num_pairs"] == 20
        assert by_split["i"]["num_pairs"] == by_split["v"]["num_pairs"] == 10
        assert len(by_split["overall"]["mma"]) == 10
        assert all(a <= b + 1e-12 for a, b in zip(by_split["overall"]["mma"], by_split["overall"]["mma"][1:]))
        assert by_split["overall"]["num_keypoints"] <= 300
    # the ground truth is right: SIFT recovers most viewpoint homographies of these real photos
    assert report["results"]["sift"]["v"]["homography_accuracy"]["5"] >= 0.6
    assert report["results"]["sift"]["v"]["mma"][2] >= 0.5
    assert len(report["pairs"]["sift"]) == 20
    png = cv2.imread(str(out / "mma.png"))
    assert png is not None and png.shape[1] > 600
    assert report["protocol"]["subpixel"] is False and report["methods"]["rnd"]["conf"]["subpixel"] is False


def test_superpoint_eval_subpixel_option_reaches_the_extractor(tiny_dataset, random_weights, tmp_path):
    code = hpatches.main([str(tiny_dataset), "--no-default-model", "--weights", f"rnd={random_weights}",
                          "--baselines", "", "--subpixel", "--resize", "96x128", "--max-sequences", "2",
                          "-o", str(tmp_path), "--quiet"])
    assert code == 0
    report = json.loads((tmp_path / "results.json").read_text())
    assert report["protocol"]["subpixel"] is True and report["methods"]["rnd"]["conf"]["subpixel"] is True


def test_superpoint_eval_errors(tmp_path, capsys):
    assert hpatches.main([str(tmp_path / "missing"), "--no-default-model"]) == 2
    assert "not found" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert hpatches.main([str(tmp_path / "empty"), "--no-default-model"]) == 2
    assert "no HPatches sequences" in capsys.readouterr().err
    broken = tmp_path / "broken" / "v_x"
    broken.mkdir(parents=True)
    assert hpatches.main([str(tmp_path / "broken"), "--no-default-model", "--quiet"]) == 2
    assert "image 1 missing" in capsys.readouterr().err
    assert hpatches.main([str(tmp_path / "broken"), "--no-default-model", "--baselines", ""]) == 2
    assert "nothing to evaluate" in capsys.readouterr().err
    assert hpatches.main([str(tmp_path / "broken"), "--no-default-model", "--weights", str(tmp_path / "no.pt"),
                          "--quiet"]) == 2
    assert "no.pt" in capsys.readouterr().err


def test_resized_homographies_stay_consistent(tiny_dataset):
    images, homographies = hpatches.load_sequence(tiny_dataset / "v_astronaut", (60, 100))
    native, native_h = hpatches.load_sequence(tiny_dataset / "v_astronaut", None)
    s = hpatches.resize_matrix(SIZE, (60, 100))
    kp = np.array([[10.0, 20.0], [100.0, 50.0]])
    np.testing.assert_allclose(metrics.warp_points(metrics.warp_points(kp, s), homographies[3]),
                               metrics.warp_points(metrics.warp_points(kp, native_h[3]), s), atol=1e-9)
    assert images[0].shape == (60, 100) and native[0].shape == SIZE


def test_default_model_beats_chance_on_real_photos(tiny_dataset, trained_weights):
    """Quality: the shipped model recovers most homographies of the tiny set (skipped without it)."""
    report = hpatches.run_benchmark(tiny_dataset, ["superpoint"], None, {"resize": None, "device": "cpu"},
                                    show_progress=False)
    result = report["results"]["superpoint"]
    assert result["i"]["homography_accuracy"]["5"] >= 0.8
    assert result["overall"]["homography_accuracy"]["5"] >= 0.6
    assert result["overall"]["mma"][2] >= 0.5 and result["overall"]["repeatability"] >= 0.4


def test_make_dataset_says_when_opencv_doc_is_missing(tmp_path, capsys):
    from pathlib import Path

    assert make_dataset.main([str(tmp_path / "ds"), "--size", "64x80", "--max-sources", "1", "--variants", "1",
                              "--kinds", "v"]) == 0
    out = capsys.readouterr().out
    assert "1 sequences (5 pairs)" in out
    missing = not any(Path(d).is_dir() for d in make_dataset.OPENCV_DOC_DIRS)
    assert ("apt-get install opencv-doc" in out) == missing and ("5 pairs without its photos" in out) == missing
