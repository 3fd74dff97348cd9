"""The built-in stereo synchroniser (used when message_filters is not installed)."""
import pytest
from sensor_msgs.msg import Image

from superpoint_ros.ros.sync import StereoSynchronizer, stamp_ns

pytestmark = pytest.mark.ros


def msg(t_ns: int, tag: str) -> Image:
    m = Image()
    m.header.stamp.sec, m.header.stamp.nanosec = divmod(t_ns, 1_000_000_000)
    m.header.frame_id = tag
    return m


def test_exact_mode_pairs_only_identical_stamps():
    pairs = []
    sync = StereoSynchronizer(lambda l, r: pairs.append((stamp_ns(l), stamp_ns(r))), mode="exact")
    sync.add_left(msg(100, "l"))
    sync.add_right(msg(101, "r"))  # 1 ns apart: not a pair
    sync.add_right(msg(100, "r"))
    assert pairs == [(100, 100)]


def test_approximate_mode_pairs_within_slop_in_either_arrival_order():
    pairs = []
    sync = StereoSynchronizer(lambda l, r: pairs.append((l.header.frame_id, stamp_ns(l), stamp_ns(r))),
                              mode="approximate", slop=0.002)
    sync.add_right(msg(1_000_000_000, "L?"))          # right first
    sync.add_left(msg(1_001_000_000, "left"))         # 1 ms later: pairs
    sync.add_left(msg(2_000_000_000, "left"))
    sync.add_right(msg(2_005_000_000, "right"))       # 5 ms > slop: no pair
    assert pairs == [("left", 1_001_000_000, 1_000_000_000)]


def test_closest_partner_wins_and_older_unpaired_messages_are_discarded():
    pairs = []
    sync = StereoSynchronizer(lambda l, r: pairs.append((stamp_ns(l), stamp_ns(r))), slop=0.010, queue_size=10)
    for t in (0, 30_000_000, 60_000_000):
        sync.add_left(msg(t, "l"))
    sync.add_right(msg(33_000_000, "r"))   # closest left is 30 ms; the 0 ms left can never pair now
    assert pairs == [(30_000_000, 33_000_000)]
    assert sync.unpaired_dropped == 1 and len(sync.queues[0]) == 1


def test_queue_is_bounded():
    sync = StereoSynchronizer(lambda l, r: None, slop=0.0, queue_size=3)
    for k in range(5):
        sync.add_left(msg(k, "l"))
    assert len(sync.queues[0]) == 3 and sync.unpaired_dropped == 2


def test_bad_mode():
    with pytest.raises(ValueError, match="exact or approximate"):
        StereoSynchronizer(lambda l, r: None, mode="nearest")
