"""Track IDs: persistent while matching, never reused, re-found within max_age."""
import numpy as np

from superpoint_ros.tracking import TrackTable


def _desc(n, seed=0, dim=32):
    d = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return d / np.linalg.norm(d, axis=1, keepdims=True)


def test_ids_follow_matches_and_new_points_get_fresh_ids():
    table = TrackTable()
    kp = np.zeros((4, 2), np.float32)
    d = _desc(4)
    ids0, len0 = table.update(kp, d, np.zeros((0, 2), np.int64))
    assert ids0.tolist() == [0, 1, 2, 3] and len0.tolist() == [1, 1, 1, 1] and ids0.dtype == np.int64
    # frame 1: 3 points; new 0 <- old 2, new 2 <- old 0; new 1 unmatched
    ids1, len1 = table.update(kp[:3], d[:3], np.array([[2, 0], [0, 2]]))
    assert ids1.tolist() == [2, 4, 0] and len1.tolist() == [2, 1, 2]
    ids2, len2 = table.update(kp[:2], d[:2], np.array([[2, 1]]))  # track 0 continues a third frame
    assert ids2.tolist() == [5, 0] and len2.tolist() == [1, 3]


def test_ids_are_never_reused_after_reset():
    table = TrackTable()
    kp, d = np.zeros((3, 2), np.float32), _desc(3)
    first, _ = table.update(kp, d, np.zeros((0, 2), np.int64))
    table.reset()
    second, lengths = table.update(kp, d, np.array([[0, 0]]))  # stale matches after reset: ignored
    assert set(first).isdisjoint(second) and lengths.tolist() == [1, 1, 1]


def test_lost_track_is_refound_within_max_age_only():
    d = _desc(3, seed=1)
    kp = np.array([[10, 10], [100, 100], [200, 50]], np.float32)
    none = np.zeros((0, 2), np.int64)
    for max_age, expect_refound in ((2, True), (0, False)):
        table = TrackTable(max_age=max_age, max_displacement=20.0)
        ids0, _ = table.update(kp, d, none)
        table.update(kp[:1], d[:1], np.array([[0, 0]]))  # tracks 1, 2 missed in this frame
        ids2, lengths2 = table.update(kp + 5.0, d, np.array([[0, 0]]))
        if expect_refound:
            assert ids2.tolist() == ids0.tolist() and lengths2.tolist() == [3, 2, 2]
        else:
            assert ids2[0] == ids0[0] and set(ids2[1:]).isdisjoint(ids0)


def test_lost_track_is_not_refound_far_away_or_after_max_age():
    d = _desc(2, seed=2)
    kp = np.array([[10, 10], [100, 100]], np.float32)
    none = np.zeros((0, 2), np.int64)
    table = TrackTable(max_age=1, max_displacement=20.0)
    ids0, _ = table.update(kp, d, none)
    table.update(kp[:0], d[:0], none)                        # missed once
    ids2, _ = table.update(kp + np.float32([50, 0]), d, none)  # moved 50 px > 20 px
    assert set(ids2).isdisjoint(ids0)
    table = TrackTable(max_age=1, max_displacement=20.0)
    ids0, _ = table.update(kp, d, none)
    table.update(kp[:0], d[:0], none)
    table.update(kp[:0], d[:0], none)                        # missed twice > max_age
    ids3, _ = table.update(kp, d, none)
    assert set(ids3).isdisjoint(ids0)


def test_refound_tracks_pass_the_verifier_and_take_its_position():
    """The verifier sees (frames since last seen, last position, candidate position) of each track
    re-found by descriptor; rejected ones stay lost (new ID), accepted ones move to its position."""
    d = _desc(3, seed=3)
    kp = np.array([[10, 10], [100, 100], [200, 50]], np.float32)
    none = np.zeros((0, 2), np.int64)
    seen = []

    def verify(frames_ago, last_xy, candidate_xy):
        seen.append((frames_ago.copy(), last_xy.copy(), candidate_xy.copy()))
        ok = last_xy[:, 0] < 150                       # reject the track last seen at x = 200
        return ok, candidate_xy + np.float32([0.25, -0.5])

    table = TrackTable(max_age=2, max_displacement=20.0)
    ids0, _ = table.update(kp, d, none, verify_refound=verify)
    table.update(kp[:1], d[:1], np.array([[0, 0]]), verify_refound=verify)   # tracks 1, 2 missed here
    ids2, lengths2 = table.update(kp + 5.0, d, np.array([[0, 0]]), verify_refound=verify)
    frames_ago, last_xy, candidate_xy = seen[-1]
    assert frames_ago.tolist() == [2, 2] and np.allclose(last_xy, kp[1:]) and np.allclose(candidate_xy, kp[1:] + 5)
    assert ids2[:2].tolist() == ids0[:2].tolist() and lengths2[:2].tolist() == [3, 2]
    assert ids2[2] not in ids0 and lengths2[2] == 1
    moved = table.keypoints
    assert np.allclose(moved[1], kp[1] + 5 + [0.25, -0.5]) and np.allclose(moved[[0, 2]], kp[[0, 2]] + 5)
