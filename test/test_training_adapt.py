"""Homographic adaptation (superpoint_ros.training.adapt)."""
import os
import time

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from superpoint_ros.model import CELL
from superpoint_ros.training import adapt
from superpoint_ros.training.homographies import HomographyParams, sample_homography, warp_points


pytestmark = pytest.mark.usefixtures("one_torch_thread")

DOTS = np.array([[12, 10], [40, 20], [66, 14], [20, 44], [52, 50], [70, 40]], np.float64)


class BlobDetector(nn.Module):
    """A fixed, exactly equivariant detector standing in for a trained MagicPoint: a cell's logits
    are its pixels' brightness (x20), the dustbin logit 3, so the heatmap peaks on bright blobs."""

    def forward(self, image):
        logits = torch.cat([F.pixel_unshuffle(image * 20, CELL),
                            torch.full_like(image[:, :, ::CELL, ::CELL], 3.0)], dim=1)
        return {"logits": logits}


def _blob_image():
    image = np.zeros((64, 80), np.float32)
    for x, y in DOTS.astype(int):
        image[y, x] = 1.0
    image = cv2.GaussianBlur(image, (0, 0), 1.5)
    return (image / image.max() * 255).astype(np.uint8)


def _conf(**extra):
    conf = dict(adapt.default_conf, num_homographies=12, batch_size=5, detection_threshold=0.2, nms_radius=3,
                border=2, device="cpu", num_workers=0, homography=HomographyParams(scale_min=0.75).to_dict())
    conf.update(extra)
    return conf


def _label(tmp_path, name, image, conf):
    folder = tmp_path / name
    folder.mkdir()
    cv2.imwrite(str(folder / "img.png"), image)
    adapt.adapt_folder(BlobDetector(), folder, tmp_path / f"{name}_labels", conf, progress=False)
    return np.load(tmp_path / f"{name}_labels" / "img.npy")


def _nearest(a, b):
    return np.linalg.norm(a[:, None] - b[None], axis=-1).min(axis=1)


def test_labels_are_the_blobs_and_follow_the_warp(tmp_path):
    image = _blob_image()
    conf = _conf()
    labels = _label(tmp_path, "a", image, conf)
    assert labels.dtype == np.float32 and labels.shape == (len(DOTS), 2)
    assert _nearest(labels, DOTS).max() <= 1.0 and _nearest(DOTS, labels).max() <= 1.0

    # adapting a warped copy gives the warped labels (the aggregation undoes its own warps correctly)
    h = sample_homography(np.random.default_rng(3), image.shape, HomographyParams(scale_min=0.85,
                                                                                 max_angle_deg=15))
    warped = cv2.warpPerspective(image, h, (80, 64), flags=cv2.INTER_LINEAR)
    labels_warped = _label(tmp_path, "b", warped, conf)
    expected = warp_points(h, labels.astype(np.float64))
    inside = (expected[:, 0] >= 4) & (expected[:, 0] < 76) & (expected[:, 1] >= 4) & (expected[:, 1] < 60)
    assert inside.sum() >= 3
    assert _nearest(expected[inside], labels_warped).max() <= 1.5
    assert _nearest(labels_warped, expected).max() <= 1.5


def test_aggregation_of_an_equivariant_detector_matches_one_pass():
    image = torch.from_numpy(_blob_image().astype(np.float32) / 255)[None, None]
    single = adapt.aggregate_heatmap(BlobDetector(), image, torch.eye(3, dtype=torch.float64)[None], 1)
    conf = _conf()
    hom = adapt.sample_adaptation_homographies(conf, 0, (64, 80))
    assert hom.shape == (12, 3, 3) and torch.equal(hom[0], torch.eye(3, dtype=torch.float64))
    many = adapt.aggregate_heatmap(BlobDetector(), image, hom, 5)
    assert many.max() <= 1.0 and many.min() >= 0.0
    far = np.ones((64, 80), bool)
    for x, y in DOTS.astype(int):
        window = many[y - 3:y + 4, x - 3:x + 4]
        dy, dx = np.unravel_index(int(window.argmax()), window.shape)
        assert abs(dx - 3) <= 1 and abs(dy - 3) <= 1, "the averaged response must peak at the blob"
        assert window.max() > 0.2 and single[y, x] > 0.5
        far[max(y - 4, 0):y + 5, max(x - 4, 0):x + 5] = False
    assert many[torch.from_numpy(far)].max() < 0.05


def test_adaptation_resumes_over_a_folder(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    image = _blob_image()
    for k in range(3):
        cv2.imwrite(str(folder / f"im{k}.png"), np.roll(image, 8 * k, axis=1))
    out = tmp_path / "labels"
    first = adapt.adapt_folder(BlobDetector(), folder, out, _conf(max_minutes=0, num_workers=2), progress=False)
    assert first["labelled_now"] == 1 and first["remaining"] == 2  # the budget stops it after one image
    done = sorted(out.glob("*.npy"))
    assert len(done) == 1
    stamp = os.stat(done[0]).st_mtime_ns
    time.sleep(0.01)
    second = adapt.adapt_folder(BlobDetector(), folder, out, _conf(), progress=False)
    assert second["labelled_now"] == 2 and second["remaining"] == 0
    assert os.stat(done[0]).st_mtime_ns == stamp, "a finished label must not be recomputed"
    assert not list(out.glob("*.tmp.npy"))


def test_cli_with_a_real_checkpoint(tmp_path, random_weights, camera_image):
    folder = tmp_path / "images"
    folder.mkdir()
    cv2.imwrite(str(folder / "camera.png"), cv2.resize(camera_image, (84, 66)))  # not a multiple of 8
    adapt.main(["--weights", random_weights, "--images", str(folder), "--out", str(tmp_path / "labels"),
                "--set", "num_homographies=3", "batch_size=3", "detection_threshold=0.0", "max_points=50",
                "num_workers=0",
                "device=cpu"])
    labels = np.load(tmp_path / "labels" / "camera.npy")
    assert labels.shape == (50, 2)
    assert labels[:, 0].max() < 80 and labels[:, 1].max() < 64 and labels.min() >= 0



def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="image folder not found"):
        adapt.adapt_folder(BlobDetector(), tmp_path / "nope", tmp_path / "out", _conf(), progress=False)


def test_min_points_keeps_the_best_maxima_of_a_weak_heatmap():
    heat = torch.zeros(40, 40)
    for (x, y), v in zip([(10, 10), (30, 12), (20, 30)], [0.010, 0.008, 0.002]):
        heat[y, x] = v
    strict = dict(_conf(), detection_threshold=0.015, min_points=0, border=2, nms_radius=2)
    assert len(adapt.heatmap_to_points(heat, strict)[0]) == 0
    rescued = dict(strict, min_points=2, min_points_floor=0.003)
    points, scores = adapt.heatmap_to_points(heat, rescued)
    assert points.tolist() == [[10, 10], [30, 12]] and scores[0] > scores[1]
    rescued_more = dict(rescued, min_points=5)  # the 0.002 peak stays below the floor
    assert len(adapt.heatmap_to_points(heat, rescued_more)[0]) == 2


def test_bad_weights_are_one_clear_line_and_exit_2(tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    cv2.imwrite(str(folder / "img.png"), _blob_image())
    weights = tmp_path / "model.pt"
    torch.save({"conv1a.weight": torch.full((64, 1, 3, 3), float("nan"))}, weights)
    with pytest.raises(SystemExit) as exit_info:
        adapt.main(["--weights", str(weights), "--images", str(folder), "--out", str(tmp_path / "labels")])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith(f"superpoint-adapt: error: {weights}: weights hold NaN") and "conv1a.weight" in err


def test_shuffled_order_labels_a_seeded_subset_and_resumes_it(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    image = _blob_image()
    for k in range(6):
        cv2.imwrite(str(folder / f"im{k}.png"), np.roll(image, 4 * k, axis=1))
    listing = list(enumerate(sorted(folder.glob("*.png"))))
    orders = [[p.name for _, p in adapt.visiting_order(listing, _conf(order="shuffled", seed=s))] for s in (0, 0, 1)]
    assert orders[0] == orders[1] and orders[0] != orders[2]
    assert sorted(orders[0]) == [p.name for _, p in listing] and orders[0] != sorted(orders[0])
    out = tmp_path / "labels"
    adapt.adapt_folder(BlobDetector(), folder, out, _conf(order="shuffled", max_minutes=0), progress=False)
    assert [p.name for p in out.glob("*.npy")] == [orders[0][0].replace(".png", ".npy")]
    adapt.adapt_folder(BlobDetector(), folder, out, _conf(order="shuffled"), progress=False)
    assert len(list(out.glob("*.npy"))) == 6
    with pytest.raises(ValueError, match="order must be"):
        adapt.visiting_order(listing, _conf(order="random"))
