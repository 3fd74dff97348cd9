"""superpoint-make-dataset --conditions: the condition splits have the right homographies and
levels that grow along the sequence, and superpoint-eval reports each as its own split."""
import json

import cv2
import numpy as np
import pytest

from superpoint_ros.evaluation import hpatches, make_dataset
from superpoint_ros.evaluation.make_dataset import CONDITION_LEVELS, CONDITIONS

SIZE = (120, 160)


@pytest.fixture(scope="module")
def sources():
    from skimage import data

    return [("astronaut", np.ascontiguousarray(data.astronaut()[..., ::-1]))]


@pytest.fixture(scope="module")
def conditions_dataset(tmp_path_factory, sources):
    root = tmp_path_factory.mktemp("cond") / "ds"
    make_dataset.make_dataset(root, {"size": SIZE, "variants": 1}, sources, kinds="", conditions=CONDITIONS)
    return root


def read(folder, k, flags=cv2.IMREAD_GRAYSCALE):
    return cv2.imread(str(folder / f"{k}.png"), flags)


def homographies(folder):
    return [np.loadtxt(folder / f"H_1_{k}") for k in range(2, 7)]


def test_manifest_lists_every_condition_and_its_levels(conditions_dataset):
    manifest = json.loads((conditions_dataset / "dataset.json").read_text())
    assert manifest["sequences"] == [f"{c}_astronaut" for c in CONDITIONS]
    assert set(manifest["conditions"]) == set(CONDITIONS)
    for condition, entry in manifest["conditions"].items():
        assert entry["levels"] == list(CONDITION_LEVELS[condition][0]) and entry["unit"]


def test_rotation_and_scale_homographies_have_the_stated_levels(conditions_dataset):
    centre = np.array([(SIZE[1] - 1) / 2, (SIZE[0] - 1) / 2, 1.0])
    for h, level in zip(homographies(conditions_dataset / "rotation_astronaut"), CONDITION_LEVELS["rotation"][0]):
        assert abs(np.degrees(np.arctan2(h[1, 0], h[0, 0]))) == pytest.approx(level)
        assert np.linalg.det(h[:2, :2]) == pytest.approx(1.0) and np.allclose(h[2], [0, 0, 1])
        np.testing.assert_allclose(h @ centre, centre, atol=1e-6)  # about the image centre
    for h, level in zip(homographies(conditions_dataset / "scale_astronaut"), CONDITION_LEVELS["scale"][0]):
        assert abs(np.log2(np.sqrt(np.linalg.det(h[:2, :2])))) == pytest.approx(level)
        assert h[1, 0] == pytest.approx(0.0) and h[0, 1] == pytest.approx(0.0)
        np.testing.assert_allclose(h @ centre, centre, atol=1e-6)
    # the full range of the issue: +-60 deg, 0.5x .. 2x
    assert max(CONDITION_LEVELS["rotation"][0]) == 60.0 and max(CONDITION_LEVELS["scale"][0]) == 1.0


@pytest.mark.parametrize("condition", ["rotation", "scale"])
def test_geometric_views_really_are_related_by_their_homographies(conditions_dataset, condition):
    folder = conditions_dataset / f"{condition}_astronaut"
    ref = read(folder, 1).astype(np.float32)
    for k, h in enumerate(homographies(folder), start=2):
        view = read(folder, k).astype(np.float32)
        predicted = cv2.warpPerspective(ref, h, (SIZE[1], SIZE[0]), borderValue=-1)
        valid = cv2.erode((predicted >= 0).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
        right = np.abs(predicted - view)[valid].mean()
        wrong = np.abs(ref - view)[valid].mean()
        assert right < 12 and right < 0.6 * wrong, (k, right, wrong)


def test_photometric_conditions_keep_geometry_and_grow_along_the_sequence(conditions_dataset):
    def residual(condition):
        folder = conditions_dataset / f"{condition}_astronaut"
        for h in homographies(folder):
            np.testing.assert_array_equal(h, np.eye(3))
        ref = read(folder, 1).astype(np.float64)
        return ref, [read(folder, k).astype(np.float64) for k in range(2, 7)]

    ref, noisy = residual("noise")
    noise_std = [np.std(im - ref) for im in noisy]
    assert all(a < b for a, b in zip(noise_std, noise_std[1:])) and noise_std[-1] > 25, noise_std

    ref, blurred = residual("blur")
    sharpness = [cv2.Laplacian(im, cv2.CV_64F).var() for im in [ref] + blurred]
    # (the direction is random and the photo anisotropic: only the trend is monotonic here; the
    # kernel length is checked exactly in test_motion_blur_kernel_has_the_level_length)
    assert sharpness[0] > sharpness[1] > max(sharpness[2:]) and sharpness[-1] < 0.1 * sharpness[0], sharpness
    # the blur kernel is centred: the content does not move
    shift, _ = cv2.phaseCorrelate(ref, blurred[-1])
    assert np.hypot(*shift) < 0.5

    ref, compressed = residual("jpeg")
    error = [np.abs(im - ref).mean() for im in compressed]
    assert error[0] > 0 and error[-1] > 2 * error[0] and error == sorted(error), error

    ref, dark = residual("lowlight")
    for im, exposure in zip(dark, CONDITION_LEVELS["lowlight"][0]):
        assert im.mean() / ref.mean() == pytest.approx(exposure, rel=0.15)


@pytest.mark.parametrize("length, angle", [(3.0, 0.0), (11.0, 90.0), (21.0, 30.0)])
def test_motion_blur_kernel_has_the_level_length(length, angle):
    dot = np.zeros((61, 61), np.uint8)
    dot[30, 30] = 255
    streak = make_dataset.motion_blur(dot.astype(np.float32), length, angle)
    assert streak.sum() == pytest.approx(255.0, rel=1e-4)  # normalised
    ys, xs = np.nonzero(streak > 1e-3)
    along = (xs - 30) * np.cos(np.radians(angle)) + (ys - 30) * np.sin(np.radians(angle))
    across = -(xs - 30) * np.sin(np.radians(angle)) + (ys - 30) * np.cos(np.radians(angle))
    assert abs(along.max() - along.min() - length) <= 1.5 and np.abs(across).max() <= 1.0
    np.testing.assert_allclose(streak, streak[::-1, ::-1], atol=1e-4)  # centred: no shift


def test_conditions_leave_the_default_sequences_unchanged(tmp_path, sources):
    plain, extended = tmp_path / "plain", tmp_path / "extended"
    make_dataset.make_dataset(plain, {"size": (64, 80), "variants": 2}, sources)
    make_dataset.make_dataset(extended, {"size": (64, 80), "variants": 2}, sources, conditions=("jpeg", "rotation"))
    plain_names = json.loads((plain / "dataset.json").read_text())["sequences"]
    extended_names = json.loads((extended / "dataset.json").read_text())["sequences"]
    assert extended_names[:len(plain_names)] == plain_names
    assert extended_names[len(plain_names):] == ["jpeg_astronaut", "jpeg_astronaut_2", "rotation_astronaut",
                                                 "rotation_astronaut_2"]
    for sequence in plain_names:
        for name in ["1.png", "4.png", "6.png", "H_1_6"]:
            assert (plain / sequence / name).read_bytes() == (extended / sequence / name).read_bytes()
    # one condition's images do not depend on which other conditions are built
    alone = tmp_path / "alone"
    make_dataset.make_dataset(alone, {"size": (64, 80), "variants": 2}, sources, kinds="", conditions=("rotation",))
    assert (alone / "rotation_astronaut_2" / "5.png").read_bytes() == \
        (extended / "rotation_astronaut_2" / "5.png").read_bytes()


def test_cli_conditions_option(tmp_path, capsys):
    assert make_dataset.main([str(tmp_path / "ds"), "--size", "64x80", "--max-sources", "1", "--variants", "1",
                              "--kinds", "none", "--conditions", "blur,lowlight"]) == 0
    manifest = json.loads((tmp_path / "ds" / "dataset.json").read_text())
    assert [s.split("_")[0] for s in manifest["sequences"]] == ["blur", "lowlight"]
    with pytest.raises(SystemExit):
        make_dataset.main([str(tmp_path / "x"), "--conditions", "rotation,fog"])
    assert "fog" in capsys.readouterr().err
    assert make_dataset.parse_conditions("all") == CONDITIONS
    with pytest.raises(ValueError, match="nothing to build"):
        make_dataset.make_dataset(tmp_path / "y", {"size": (64, 80)}, [("a", np.zeros((300, 300, 3), np.uint8))],
                                  kinds="")


def test_superpoint_eval_reports_each_condition_split(conditions_dataset):
    report = hpatches.run_benchmark(conditions_dataset, ["sift"], None, {"resize": None}, show_progress=False)
    assert report["splits"] == list(CONDITIONS)
    levels = report["levels"]["sift"]
    for condition in CONDITIONS:
        assert report["results"]["sift"][condition]["num_pairs"] == 5
        assert list(levels[condition]) == ["2", "3", "4", "5", "6"]
    # the strongest level is harder than the weakest, for the conditions SIFT is not invariant to
    for condition in ("noise", "blur", "lowlight"):
        assert levels[condition]["2"]["mma"][2] > levels[condition]["6"]["mma"][2], condition
