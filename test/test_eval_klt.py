"""The VINS-style KLT baseline (superpoint_ros.evaluation.klt) on real photos with known motion."""
import numpy as np
import pytest

from superpoint_ros.evaluation.klt import KLTFrontend
from superpoint_ros.image import to_grayscale_uint8
from superpoint_ros.stamps import stamp_ns_from_seconds as ns


def window(image, dx, dy=0, size=(240, 320), origin=(100, 120)):
    """A crop whose content moves by (+dx, +dy) px relative to the crop at offset 0."""
    y0, x0 = origin[0] - dy, origin[1] - dx
    return np.ascontiguousarray(image[y0:y0 + size[0], x0:x0 + size[1]])


@pytest.fixture(scope="module")
def photo():
    from skimage import data

    return to_grayscale_uint8(data.astronaut())


def test_tracks_follow_a_known_translation_and_keep_their_ids(photo):
    klt = KLTFrontend({"extractor.max_keypoints": 300})
    first = klt.process_mono(window(photo, 0), ns(0.0), "cam")
    assert first.temporal is None and 100 < len(first.features) <= 300
    assert (first.track_lengths == 1).all() and len(set(first.track_ids.tolist())) == len(first.features)
    second = klt.process_mono(window(photo, 3, 2), ns(0.1), "cam")
    t = second.temporal
    assert t.verified and t.inliers.mean() > 0.9
    moved = second.features.keypoints[t.indices[:, 1]] - first.features.keypoints[t.indices[:, 0]]
    np.testing.assert_allclose(np.median(moved, axis=0), [3.0, 2.0], atol=0.05)
    inlier_rows = t.indices[t.inliers]
    # a continued track keeps its ID and counts one more frame
    np.testing.assert_array_equal(second.track_ids[inlier_rows[:, 1]], first.track_ids[inlier_rows[:, 0]])
    assert (second.track_lengths[inlier_rows[:, 1]] == 2).all()
    # new corners fill up the budget with fresh IDs
    fresh = second.track_lengths == 1
    assert not set(second.track_ids[fresh].tolist()) & set(first.track_ids.tolist())


def test_stereo_disparity_and_rows_of_a_shifted_pair(photo):
    klt = KLTFrontend({"extractor.max_keypoints": 300, "stereo.max_disparity": 64.0})
    left, right = window(photo, 0), window(photo, -7)  # right content 7 px further left: disparity 7
    result = klt.process_stereo(left, right, ns(0.0), "cam")
    assert len(result.stereo) > 0.8 * len(result.features)
    np.testing.assert_allclose(np.median(result.stereo.disparities), 7.0, atol=0.05)
    rows = result.features.keypoints[result.stereo.indices[:, 0], 1] - \
        result.right_features.keypoints[result.stereo.indices[:, 1], 1]
    assert np.abs(rows).max() <= 2.0


def test_a_time_jump_resets_the_tracks(photo):
    klt = KLTFrontend({"extractor.max_keypoints": 200, "tracking.max_time_gap": 1.0})
    first = klt.process_mono(window(photo, 0), ns(0.0), "cam")
    later = klt.process_mono(window(photo, 1), ns(5.0), "cam")
    assert later.temporal is None and "jumped forward" in later.reset_reason
    assert not set(later.track_ids.tolist()) & set(first.track_ids.tolist())
    with pytest.raises(ValueError, match="unknown KLT options"):
        KLTFrontend(conf={"window_size": 3})
