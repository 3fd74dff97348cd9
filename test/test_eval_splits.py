"""superpoint-eval reports every split of an HPatches-layout folder (v, i, b, n and any other
prefix), per sequence and per level, with keypoint-count ratios, and several sizes in one run.
The folder is built here from a real photo and known homographies."""
import json

import cv2
import numpy as np
import pytest

from superpoint_ros.evaluation import hpatches
from superpoint_ros.evaluation.make_dataset import centred_similarity

SIZE = (180, 240)


def write(folder, images, homographies):
    folder.mkdir(parents=True)
    for k, image in enumerate(images, start=1):
        cv2.imwrite(str(folder / f"{k}.png"), image)
    for k, h in enumerate(homographies, start=2):
        np.savetxt(folder / f"H_1_{k}", h)


@pytest.fixture(scope="module")
def photo():
    from skimage import data

    gray = cv2.cvtColor(np.ascontiguousarray(data.astronaut()[..., ::-1]), cv2.COLOR_BGR2GRAY)
    return cv2.resize(gray, (SIZE[1], SIZE[0]), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def split_dataset(tmp_path_factory, photo):
    root = tmp_path_factory.mktemp("splits") / "ds"
    eye = [np.eye(3)] * 5
    rotations = [centred_similarity(SIZE, angle_deg=3.0 * k) for k in range(1, 6)]
    write(root / "v_turn", [photo] + [cv2.warpPerspective(photo, h, (SIZE[1], SIZE[0]),
                                                          borderMode=cv2.BORDER_REFLECT_101) for h in rotations],
          rotations)
    write(root / "i_same", [photo] * 6, eye)
    write(root / "b_gauss", [photo] + [cv2.GaussianBlur(photo, (0, 0), s) for s in (0.7, 1.4, 2.1, 2.8, 3.5)], eye)
    jpeg = [cv2.imdecode(cv2.imencode(".jpg", photo, [cv2.IMWRITE_JPEG_QUALITY, q])[1], cv2.IMREAD_GRAYSCALE)
            for q in (60, 40, 20, 10, 5)]
    write(root / "n_jpeg", [photo] + jpeg, eye)
    half = photo.copy()
    half[:, SIZE[1] // 2:] = 128  # no texture on the right: about half the keypoints
    write(root / "x_half", [photo] + [half] * 5, eye)
    (root / "notes").mkdir()          # not a sequence: no <split>_ prefix
    (root / "__pycache__").mkdir()
    return root


def test_every_split_is_reported(split_dataset, tmp_path, capsys):
    assert [s.name for s in hpatches.find_sequences(split_dataset)] == ["b_gauss", "i_same", "n_jpeg", "v_turn",
                                                                        "x_half"]
    code = hpatches.main([str(split_dataset), "--no-default-model", "--baselines", "orb,sift", "--resize", "native",
                          "-o", str(tmp_path), "--quiet"])
    assert code == 0
    printed = capsys.readouterr().out
    for split in ("v", "i", "b", "n", "x", "overall"):
        assert f"| {split} | sift |" in printed
    assert printed.index("| v | sift |") < printed.index("| i | sift |") < printed.index("| b | sift |") \
        < printed.index("| n | sift |") < printed.index("| x | sift |") < printed.index("| overall | sift |")
    report = json.loads((tmp_path / "results.json").read_text())
    assert report["splits"] == ["v", "i", "b", "n", "x"]
    for method in ("orb", "sift"):
        results = report["results"][method]
        assert list(results) == ["v", "i", "b", "n", "x", "overall"]
        assert all(results[s]["num_pairs"] == 5 for s in report["splits"]) and results["overall"]["num_pairs"] == 25
        assert set(report["sequences"][method]) == {"b_gauss", "i_same", "n_jpeg", "v_turn", "x_half"}
        assert report["sequences"][method]["b_gauss"]["num_pairs"] == 5
        assert list(report["levels"][method]["b"]) == ["2", "3", "4", "5", "6"]
        assert report["levels"][method]["b"]["2"]["num_pairs"] == 1
        assert {p["split"] for p in report["pairs"][method]} == set(report["splits"])
    # the ground truth holds for the rotations and the photometric splits
    assert report["results"]["sift"]["v"]["homography_accuracy"]["3"] == 1.0
    assert report["results"]["sift"]["n"]["mma"][2] > 0.8
    # blur grows along the sequence: the weakest level matches better than the strongest
    assert report["levels"]["sift"]["b"]["2"]["mma"][0] > report["levels"]["sift"]["b"]["6"]["mma"][0]
    assert cv2.imread(str(tmp_path / "mma.png")) is not None


def test_keypoint_ratio_to_the_first_image(split_dataset):
    report = hpatches.run_benchmark(split_dataset, ["sift"], None, {"resize": None}, show_progress=False)
    results = report["results"]["sift"]
    assert results["i"]["keypoint_ratio_min"] == results["i"]["keypoint_ratio_median"] == 1.0
    assert results["x"]["keypoint_ratio_median"] < 0.75  # half of the picture is flat
    assert results["overall"]["keypoint_ratio_min"] == min(results[s]["keypoint_ratio_min"] for s in report["splits"])
    for pair in report["pairs"]["sift"]:
        assert pair["keypoint_ratio"] == pytest.approx(pair["num_keypoints_other"] / pair["num_keypoints_first"])
        assert pair["num_keypoints"] == 0.5 * (pair["num_keypoints_other"] + pair["num_keypoints_first"])
    ratios = [p["keypoint_ratio"] for p in report["pairs"]["sift"] if p["split"] == "b"]
    assert results["b"]["keypoint_ratio_median"] == pytest.approx(np.median(ratios))
    assert results["b"]["keypoint_ratio_min"] < 1.0  # blur removes SIFT keypoints


def test_several_sizes_in_one_run(split_dataset, random_weights, tmp_path, capsys):
    code = hpatches.main([str(split_dataset), "--no-default-model", "--weights", f"rnd={random_weights}",
                          "--precision", "fp32", "--baselines", "orb", "--sizes", "60x80,96x128",
                          "--max-sequences", "3", "-o", str(tmp_path), "--quiet"])
    assert code == 0
    printed = capsys.readouterr().out
    assert printed.count("| split | method |") == 2
    for label in ("60x80", "96x128"):
        report = json.loads((tmp_path / label / "results.json").read_text())
        assert report["protocol"]["resize"] == [int(v) for v in label.split("x")]
        assert report["protocol"]["num_sequences"] == 3 and len(report["splits"]) == 3  # one per split
        assert report["methods"]["rnd"]["conf"]["precision"] == "fp32"
        assert (tmp_path / label / "mma.png").is_file()
    assert not (tmp_path / "results.json").exists()
    with pytest.raises(SystemExit):
        hpatches.main([str(split_dataset), "--sizes", "60x80,60x80"])


def test_truncation_keeps_every_split(split_dataset):
    sequences = hpatches.find_sequences(split_dataset)
    chosen = hpatches.truncate_sequences(sequences, 4)
    assert len(chosen) == 4 and len({hpatches.split_of_sequence(s.name) for s in chosen}) == 4


def test_split_names():
    assert hpatches.split_of_sequence("v_wall") == "v"
    assert hpatches.split_of_sequence("rotation_astronaut_2") == "rotation"
    for name in ("notes", "__pycache__", "_x", "V_wall", "v_", "2_x"):
        assert hpatches.split_of_sequence(name) is None, name
    assert hpatches.ordered_splits({"x", "n", "jpeg", "v", "a"}) == ["v", "n", "jpeg", "a", "x"]
