"""The stamp synchroniser the node and the bag reader pair stereo images with (no ROS)."""
import pytest

from superpoint_ros.stamps import NS_PER_S
from superpoint_ros.sync import StampSynchronizer, slop_ns_for

T0 = 1_700_000_000_123_456_789  # a present-day stamp with odd nanoseconds


def feed(sync, arrivals):
    """``arrivals``: (input, stamp ns) in arrival order -> the sets formed, as stamp tuples
    (each message here is its own stamp)."""
    formed = []
    for name, stamp in arrivals:
        out = sync.add(name, stamp, (name, stamp))
        if out is not None:
            formed.append(tuple(s for _, s in out))
    return formed


def test_exact_mode_pairs_only_identical_stamps_and_returns_sets_in_input_order():
    sync = StampSynchronizer(("left", "right"), slop_ns=0)
    assert feed(sync, [("right", T0), ("left", T0 + 1), ("left", T0)]) == [(T0, T0)]
    assert sync.add("right", T0 + 5, "r") is None  # 4 ns from the waiting left: no pair
    assert sync.queued("left") == 1 and sync.queued("right") == 1 and sync.sets == 1


def test_an_exact_match_wins_over_a_closer_approximate_order():
    sync = StampSynchronizer(("left", "right"), slop_ns=10_000_000)
    # the left at T0 - 1 ms arrived first and is within the slop, but the exact stamp is queued too
    assert feed(sync, [("left", T0 - 1_000_000), ("left", T0), ("right", T0)]) == [(T0, T0)]
    assert sync.dropped_unpaired == 1  # the T0 - 1 ms left can never pair now


def test_approximate_mode_pairs_within_slop_in_either_arrival_order():
    sync = StampSynchronizer(("left", "right"), slop_ns_for("approximate", 0.002))
    formed = feed(sync, [("right", T0), ("left", T0 + 1_000_000),               # right first, 1 ms: a pair
                         ("left", T0 + NS_PER_S), ("right", T0 + NS_PER_S + 5_000_000)])  # 5 ms > slop
    assert formed == [(T0 + 1_000_000, T0)]
    assert sync.queued("left") == 1 and sync.queued("right") == 1


def test_closest_partner_wins_and_older_unpaired_messages_are_discarded():
    sync = StampSynchronizer(("left", "right"), slop_ns=10_000_000)
    formed = feed(sync, [("left", 0), ("left", 30_000_000), ("left", 60_000_000), ("right", 33_000_000)])
    assert formed == [(30_000_000, 33_000_000)]
    assert sync.dropped_unpaired == 1 and sync.queued("left") == 1  # the 60 ms left still waits


def test_out_of_order_arrivals_still_pair():
    sync = StampSynchronizer(("left", "right"), slop_ns=0)
    t1, t2 = T0, T0 + 33_333_333
    formed = feed(sync, [("left", t2), ("left", t1), ("right", t1), ("right", t2)])
    assert formed == [(t1, t1), (t2, t2)] and sync.dropped == 0


def test_a_full_queue_drops_its_oldest_arrival_and_counts_it():
    sync = StampSynchronizer(("left", "right"), slop_ns=0, queue_size=3)
    feed(sync, [("left", T0 + k) for k in range(5)])
    assert sync.queued("left") == 3 and sync.dropped_overflow == 2
    assert feed(sync, [("right", T0)]) == []  # its partner was dropped
    assert feed(sync, [("right", T0 + 2)]) == [(T0 + 2, T0 + 2)]


def test_unpairable_messages_are_counted_not_paired():
    sync = StampSynchronizer(("left", "right"), slop_ns=1_000_000, queue_size=2)
    # right stamps 0.5 s after every left: never within 1 ms
    formed = feed(sync, [(side, T0 + k * NS_PER_S + (NS_PER_S // 2 if side == "right" else 0))
                         for k in range(4) for side in ("left", "right")])
    assert formed == [] and sync.sets == 0
    assert sync.received == 8 and sync.dropped_overflow == 4 and sync.dropped == 4


def test_three_inputs_form_a_set_only_when_all_are_present():
    sync = StampSynchronizer(("image", "camera_info", "depth"), slop_ns=0)
    assert feed(sync, [("camera_info", T0), ("image", T0), ("depth", T0 + 1), ("depth", T0)]) == [(T0, T0, T0)]
    assert sync.queued("depth") == 1  # the T0 + 1 depth is newer than the set: it waits


def test_a_single_input_passes_every_message_through():
    sync = StampSynchronizer(("image",))
    assert feed(sync, [("image", T0), ("image", T0 + 1)]) == [(T0,), (T0 + 1,)]


def test_bad_arguments_are_refused_with_reasons():
    with pytest.raises(ValueError, match="exact or approximate"):
        slop_ns_for("nearest", 0.1)
    assert slop_ns_for("exact", 0.5) == 0 and slop_ns_for("approximate", 0.005) == 5_000_000
    with pytest.raises(ValueError, match="distinct"):
        StampSynchronizer(("left", "left"))
    with pytest.raises(ValueError, match="queue_size"):
        StampSynchronizer(("left", "right"), queue_size=0)
    sync = StampSynchronizer(("left", "right"))
    with pytest.raises(KeyError, match="unknown input 'middle'"):
        sync.add("middle", T0, None)
    with pytest.raises(TypeError, match="stamp_ns_from_seconds"):
        sync.add("left", 1.5, None)
