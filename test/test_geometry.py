"""Outlier rejection (OpenCV USAC) and rectified-stereo matching on constructed data."""
import numpy as np
import pytest
import torch

from superpoint_ros.geometry import match_rectified_stereo, ransac_inliers, stereo_candidates


def _two_views(n=120, outliers=30, seed=0):
    """Points of a random 3-D cloud seen by two cameras (general motion), plus gross outliers."""
    rng = np.random.default_rng(seed)
    X = np.c_[rng.uniform(-2, 2, (n, 2)), rng.uniform(4, 8, n)]
    K = np.array([[400.0, 0, 320], [0, 400, 240], [0, 0, 1]])
    angle = 0.05
    R = np.array([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]])
    t = np.array([0.3, 0.05, 0.1])
    project = lambda P: (P @ K.T)[:, :2] / (P @ K.T)[:, 2:]  # noqa: E731
    p0, p1 = project(X), project(X @ R.T + t)
    bad = rng.choice(n, outliers, replace=False)
    p1[bad] += rng.uniform(30, 80, (outliers, 2)) * rng.choice([-1, 1], (outliers, 2))
    truth = np.ones(n, bool)
    truth[bad] = False
    return p0, p1, truth


@pytest.mark.parametrize("method", ["magsac", "default", "accurate", "fast"])
def test_fundamental_ransac_separates_outliers(method):
    p0, p1, truth = _two_views()
    result = ransac_inliers(p0, p1, "fundamental", method, threshold=1.0)
    assert result.verified and result.model.shape == (3, 3)
    assert (result.inliers & ~truth).sum() == 0  # no gross outlier survives
    assert (result.inliers & truth).sum() >= 0.9 * truth.sum()


def test_homography_ransac_on_a_plane():
    rng = np.random.default_rng(1)
    p0 = rng.uniform(0, 500, (80, 2))
    H = np.array([[1.02, 0.01, 5.0], [-0.01, 0.98, -3.0], [1e-5, 0, 1]])
    q = np.c_[p0, np.ones(80)] @ H.T
    p1 = q[:, :2] / q[:, 2:]
    p1[:20] += 50.0
    result = ransac_inliers(p0, p1, "homography", threshold=1.0)
    assert result.verified
    assert not result.inliers[:20].any() and result.inliers[20:].all()


def test_too_few_matches_keeps_all_unverified():
    p0, p1, _ = _two_views(n=10, outliers=2)
    result = ransac_inliers(p0, p1, min_matches=15)
    assert not result.verified and result.model is None and result.inliers.all() and len(result.inliers) == 10


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="geometric model"):
        ransac_inliers(np.zeros((20, 2)), np.zeros((20, 2)), model="affine")
    with pytest.raises(ValueError, match="USAC method"):
        ransac_inliers(np.zeros((20, 2)), np.zeros((20, 2)), method="lmeds")
    with pytest.raises(ValueError, match="differ in size"):
        ransac_inliers(np.zeros((20, 2)), np.zeros((19, 2)))


def test_stereo_candidates_encode_rectified_constraints():
    left = torch.tensor([[100.0, 50.0]])
    right = torch.tensor([[90.0, 50.0], [90.0, 53.0], [101.0, 50.0], [10.0, 50.0], [60.0, 51.5]])
    allowed = stereo_candidates(left, right, epipolar_tolerance=2.0, min_disparity=0.0, max_disparity=64.0)
    # disparity 10 ok; dy=3 too far off the row; negative disparity; disparity 90 too big; 40 with dy 1.5 ok
    assert allowed[0].tolist() == [True, False, False, False, True]


def test_rectified_stereo_matching_recovers_a_known_shift():
    rng = np.random.default_rng(3)
    n = 50
    left = np.c_[rng.uniform(100, 600, n), rng.uniform(10, 400, n)].astype(np.float32)
    disparity = rng.uniform(5, 60, n).astype(np.float32)
    right = left - np.c_[disparity, np.zeros(n)].astype(np.float32)
    right[:, 1] += rng.uniform(-0.5, 0.5, n).astype(np.float32)
    desc = np.float32(rng.normal(size=(n, 64)))
    desc /= np.linalg.norm(desc, axis=1, keepdims=True)
    order = rng.permutation(n)
    indices, distances, disparities = match_rectified_stereo(left, desc, right[order], desc[order], 1.0, 0.0, 128.0,
                                                             ratio_test=0.9)
    assert len(indices) == n
    assert np.array_equal(order[indices[:, 1]], indices[:, 0])
    assert np.allclose(disparities, disparity[indices[:, 0]], atol=1e-4)
    # a tighter disparity range excludes the far ones
    indices, _, disparities = match_rectified_stereo(left, desc, right[order], desc[order], 1.0, 0.0, 30.0)
    assert len(indices) == int((disparity <= 30).sum()) and (disparities <= 30).all()
