"""The homography metrics on constructed cases with known answers."""
import numpy as np
import pytest

from superpoint_ros.evaluation import metrics
from superpoint_ros.evaluation.hpatches import resize_matrix

SIZE = (120, 160)  # (H, W)


def grid_points(step=12, margin=6, size=SIZE):
    ys, xs = np.mgrid[margin:size[0] - margin:step, margin:size[1] - margin:step]
    return np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float64)


def a_homography():
    return np.array([[0.95, 0.05, 4.0], [-0.04, 1.02, -3.0], [1e-4, -5e-5, 1.0]])


def test_identical_pair_scores_perfectly():
    kp = grid_points()
    matches = np.stack([np.arange(len(kp))] * 2, axis=1)
    result = metrics.evaluate_pair(kp, kp, matches, np.eye(3), SIZE, SIZE)
    assert result["repeatability"] == 1.0
    assert result["localization_error"] == 0.0
    assert result["mma"] == [1.0] * 10
    assert result["matching_score"] == 1.0
    assert result["corner_error"] < 1e-6
    assert all(result["homography_correct"].values())


def test_known_warp_has_zero_corner_error_and_full_accuracy():
    h = a_homography()
    kp0 = grid_points()
    kp1 = metrics.warp_points(kp0, h)
    inside = metrics.inside_image(kp1, SIZE)
    kp0, kp1 = kp0[inside], kp1[inside]
    rng = np.random.default_rng(0)
    order = rng.permutation(len(kp1))  # matches are by index, not by position in the arrays
    kp1 = kp1[order]
    matches = np.stack([order, np.arange(len(order))], axis=1)
    result = metrics.evaluate_pair(kp0, kp1, matches, h, SIZE, SIZE)
    assert result["corner_error"] < 1e-3
    assert result["homography_correct"] == {"1": True, "3": True, "5": True}
    assert result["mma"] == [1.0] * 10
    assert result["repeatability"] == pytest.approx(1.0)
    assert result["localization_error"] < 1e-9


def test_deliberately_wrong_homography_scores_zero():
    h = a_homography()
    kp0 = grid_points()
    kp1 = metrics.warp_points(kp0, h)
    matches = np.stack([np.arange(len(kp0))] * 2, axis=1)
    wrong = np.array([[1, 0, 7.0], [0, 1, 5.0], [0, 0, 1]]) @ h  # off by (7, 5) px: beyond every threshold but 10
    result = metrics.evaluate_pair(kp0, kp1, matches, wrong, SIZE, SIZE)
    assert result["repeatability"] == 0.0
    assert np.isnan(result["localization_error"])
    assert result["matching_score"] == 0.0
    assert result["mma"][:8] == [0.0] * 8      # error sqrt(74) ~ 8.6 px
    assert result["mma"][8:] == [1.0, 1.0]
    assert result["corner_error"] == pytest.approx(np.hypot(7, 5), rel=1e-3)
    assert not any(result["homography_correct"].values())


def test_repeatability_threshold_and_localisation_error():
    kp0 = grid_points()
    shifted = kp0 + np.array([2.0, 0.0])
    r = metrics.repeatability(kp0, shifted, np.eye(3), SIZE, SIZE, threshold=3.0)
    assert r["repeatability"] == pytest.approx(1.0, abs=0.05)  # only border points lose a partner
    assert r["localization_error"] == pytest.approx(2.0)
    # grid step 12: at 5 px the nearest other point is 5 or 7 px away -> nothing within 3 px
    r = metrics.repeatability(kp0, kp0 + np.array([5.0, 0.0]), np.eye(3), SIZE, SIZE, threshold=3.0)
    assert r["repeatability"] == 0.0


def test_points_outside_the_shared_region_do_not_count():
    kp0 = grid_points()
    h = np.array([[1, 0, 80.0], [0, 1, 0], [0, 0, 1]])  # image 1 sees only the left half of image 0
    kp1 = metrics.warp_points(kp0, h)
    kp1 = kp1[metrics.inside_image(kp1, SIZE)]
    r = metrics.repeatability(kp0, kp1, h, SIZE, SIZE)
    assert r["num_shared0"] == len(kp1) < len(kp0)
    assert r["repeatability"] == 1.0


def test_mma_thresholds_and_empty_matches():
    acc = metrics.mean_matching_accuracy(np.array([0.5, 1.5, 2.5]), thresholds=(1, 2, 3))
    np.testing.assert_allclose(acc, [1 / 3, 2 / 3, 1.0])
    assert metrics.mean_matching_accuracy(np.zeros(0)).tolist() == [0.0] * 10
    kp = grid_points()
    result = metrics.evaluate_pair(kp, kp, np.zeros((0, 2), int), np.eye(3), SIZE, SIZE)
    assert result["num_matches"] == 0 and result["corner_error"] == np.inf
    assert not any(result["homography_correct"].values())


def test_detector_top_k_uses_best_points_only():
    kp0 = grid_points()
    kp1 = kp0.copy()
    kp1[:10] += 50.0  # the 10 best points of image 1 are all wrong
    r_top = metrics.evaluate_pair(kp0, kp1, np.zeros((0, 2), int), np.eye(3), SIZE, SIZE, detector_top_k=10)
    r_all = metrics.evaluate_pair(kp0, kp1, np.zeros((0, 2), int), np.eye(3), SIZE, SIZE)
    assert r_top["repeatability"] < 0.2 < 0.8 < r_all["repeatability"]


def test_warp_points_inverse_and_bad_shape():
    h = a_homography()
    kp = grid_points()
    np.testing.assert_allclose(metrics.warp_points(metrics.warp_points(kp, h), np.linalg.inv(h)), kp, atol=1e-9)
    with pytest.raises(ValueError, match="3x3"):
        metrics.warp_points(kp, np.eye(2))


def test_resize_matrix_keeps_pixel_centre_convention():
    s = resize_matrix((100, 200), (50, 100))  # factor 1/2: pixels 0,1 -> new pixel 0 centre at 0.5 old
    np.testing.assert_allclose(metrics.warp_points(np.array([[0.5, 0.5], [-0.5, -0.5], [199.5, 99.5]]), s),
                               [[0.0, 0.0], [-0.5, -0.5], [99.5, 49.5]])


def test_aggregate_fractions_and_nan_handling():
    kp = grid_points()
    good = metrics.evaluate_pair(kp, kp, np.stack([np.arange(len(kp))] * 2, 1), np.eye(3), SIZE, SIZE)
    bad = metrics.evaluate_pair(kp, kp + 6, np.zeros((0, 2), int), np.eye(3), SIZE, SIZE)
    agg = metrics.aggregate([good, bad])
    assert agg["num_pairs"] == 2
    assert agg["homography_accuracy"] == {"1": 0.5, "3": 0.5, "5": 0.5}
    assert agg["localization_error"] == 0.0  # the NaN of the pair without repeated points is ignored
    assert agg["mma"][0] == 0.5
