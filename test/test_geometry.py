"""Outlier rejection (OpenCV USAC) and rectified-stereo matching on constructed data and on a real
rectified pair (the shipped model's keypoints and descriptors)."""
import numpy as np
import pytest
import torch

from superpoint_ros.geometry import match_rectified_stereo, ransac_inliers, stereo_candidate_pairs, stereo_candidates
from superpoint_ros.matching import match_descriptors


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


@pytest.fixture(scope="module")
def real_stereo_features(trained_weights):
    """The shipped model's fp32 features of Middlebury's rectified motorcycle pair (scikit-image)."""
    from skimage import data

    from superpoint_ros.extractor import FeatureExtractor

    left, right, _ = data.stereo_motorcycle()
    extractor = FeatureExtractor(weights=trained_weights, device="cpu", precision="fp32", max_keypoints=1000)
    return extractor([np.ascontiguousarray(left[..., ::-1]), np.ascontiguousarray(right[..., ::-1])])


def _as_set(pairs):
    return {tuple(p) for p in np.asarray(pairs).tolist()}


@pytest.mark.parametrize("tolerance, min_disparity, max_disparity", [(2.0, 0.0, 128.0), (0.25, 0.0, 40.0),
                                                                     (5.0, -4.0, 300.0)])
def test_stereo_candidate_pairs_are_exactly_the_masks_pairs(real_stereo_features, tolerance, min_disparity,
                                                            max_disparity):
    left, right = (torch.from_numpy(f.keypoints) for f in real_stereo_features)
    mask = stereo_candidates(left, right, tolerance, min_disparity, max_disparity)
    pairs = stereo_candidate_pairs(left, right, tolerance, min_disparity, max_disparity)
    assert len(pairs) == int(mask.sum()) > 0 and _as_set(pairs) == _as_set(mask.nonzero())
    assert bool((pairs[1:, 0] >= pairs[:-1, 0]).all())  # rows grouped by left keypoint


@pytest.mark.parametrize("ratio_test, max_distance", [(0.9, 1.2), (None, None), (1.0, 0.7), (0.6, None)])
def test_rectified_stereo_matching_equals_the_dense_masked_matcher_on_real_descriptors(
        real_stereo_features, ratio_test, max_distance):
    """Only the candidate pairs' similarities are computed, yet the matches are those of the
    dense (N, M) masked matcher, ratio test against the second-best allowed candidate included;
    distances agree to float32 rounding (the dot products are summed in another order)."""
    lf, rf = real_stereo_features
    mask = stereo_candidates(torch.from_numpy(lf.keypoints), torch.from_numpy(rf.keypoints), 2.0, 0.0, 128.0)
    dense = match_descriptors(lf.descriptors, rf.descriptors, ratio_test, max_distance, allowed=mask)
    indices, distances, disparities = match_rectified_stereo(lf.keypoints, lf.descriptors, rf.keypoints,
                                                             rf.descriptors, 2.0, 0.0, 128.0, ratio_test, max_distance)
    assert len(dense) >= 100
    assert np.array_equal(indices, dense.indices)
    assert np.allclose(distances, dense.distances, atol=1e-5, rtol=0)
    assert np.array_equal(disparities, lf.keypoints[indices[:, 0], 0] - rf.keypoints[indices[:, 1], 0])


def test_rectified_stereo_matching_without_candidates_is_empty():
    xy = np.float32([[10, 10], [20, 30]])
    desc = np.eye(2, 8, dtype=np.float32)
    indices, distances, disparities = match_rectified_stereo(xy, desc, xy + np.float32([0, 50]), desc, 2.0, 0.0, 64.0)
    assert indices.shape == (0, 2) and distances.shape == (0,) and disparities.shape == (0,)
    indices, _, _ = match_rectified_stereo(xy[:0], desc[:0], xy, desc, 2.0, 0.0, 64.0, ratio_test=0.9)
    assert indices.shape == (0, 2)
