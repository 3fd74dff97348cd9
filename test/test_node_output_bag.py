"""The node and ``superpoint-eval-bag --output-bag`` turn the same frames into the same messages:
one results->messages function, one stereo synchroniser, exact integer-nanosecond stamps."""
import numpy as np
import pytest

from node_harness import image_msg
from superpoint_ros.evaluation import bag_eval, output_bag
from superpoint_ros.io import bags
from superpoint_ros.io.messages import FRAME_OUTPUTS, decode_features, decode_stereo_matches, decode_temporal_matches

pytestmark = pytest.mark.ros

T0 = 1_700_000_000_123_456_789  # odd nanoseconds, which float seconds round away
PERIOD_NS = 33_333_333
LEFT, RIGHT = "/cam/left/image_rect", "/cam/right/image_rect"
SHIFT = 8  # px per frame, a multiple of the network's cell


def stereo_frames(n=4):
    """``n`` rectified pairs of a real photo pair, the camera panning right: (stamp ns, left, right)."""
    from skimage import data

    left, right, _ = data.stereo_motorcycle()
    left, right = (np.ascontiguousarray(np.asarray(im)[..., 0]) for im in (left, right))  # mono8
    crop = lambda im, k: np.ascontiguousarray(im[200:320, 300 + SHIFT * k:460 + SHIFT * k])  # noqa: E731
    return [(T0 + k * PERIOD_NS, crop(left, k), crop(right, k)) for k in range(n)]


def stamp(msg) -> int:
    return msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec


def decoded(name, msg):
    """Every array a message of output ``name`` carries, plus its header stamp and frame_id."""
    if name in ("features", "features_right"):
        f = decode_features(msg)
        arrays = {k: getattr(f, k) for k in ("keypoints", "scores", "descriptors", "track_ids", "track_lengths")}
    elif name == "temporal_matches":
        arrays = decode_temporal_matches(msg)
    else:
        arrays = decode_stereo_matches(msg)
    return {**arrays, "stamp": stamp(msg), "frame_id": msg.header.frame_id}


def assert_same(a: dict, b: dict, where: str) -> None:
    assert a.keys() == b.keys(), where
    for key in a:
        if isinstance(a[key], np.ndarray):
            assert a[key].dtype == b[key].dtype and np.array_equal(a[key], b[key]), f"{where}: {key}"
        else:
            assert a[key] == b[key], f"{where}: {key}"


@pytest.fixture
def params(random_weights):
    return {"extractor.weights": random_weights, "extractor.device": "cpu", "extractor.precision": "fp32",
            "extractor.max_keypoints": 150, "matching.ratio_test": 0.0, "matching.max_distance": 2.0,
            "stereo.enabled": True, "stereo.max_disparity": 64.0, "sync.mode": "exact"}


def test_node_and_output_bag_write_identical_messages_with_exact_stamps(params, harness_factory, tmp_path):
    from superpoint_ros.params import validate

    frames = stereo_frames()
    # the output bag: the frames through superpoint-eval-bag
    bag = tmp_path / "in_bag"
    with bags.BagWriter(bag, storage="mcap") as writer:
        for t, left, right in frames:
            writer.write(RIGHT, bags.image_message(right, t, "right_cam"), t + 3_000_000)  # right first
            writer.write(LEFT, bags.image_message(left, t, "left_cam"), t + 3_000_000)
    out_bag = tmp_path / "out_bag"
    summary, _, _ = bag_eval.evaluate_bag(bag, LEFT, RIGHT, validate(params), output_bag=out_bag, storage="mcap",
                                          show_progress=False, output_namespace="/")
    assert summary["frames"] == len(frames)
    written = {name: [] for name in FRAME_OUTPUTS}
    topics = output_bag.output_topics("/")
    by_topic = {topic: name for name, topic in topics.items()}
    for item in bags.read_messages(out_bag, list(topics.values())):
        written[by_topic[item.topic]].append(decoded(by_topic[item.topic], item.message))

    # the node: the same frames on its stereo inputs
    h = harness_factory(params, topics=FRAME_OUTPUTS)
    pub_l, pub_r = h.publisher("left/image_rect"), h.publisher("right/image_rect")
    for k, (t, left, right) in enumerate(frames):
        pub_r.publish(image_msg(right, t, "right_cam"))
        h.publish_and_wait(pub_l, image_msg(left, t, "left_cam"), topic="stereo_matches")
        h.wait_for(lambda: all(h.count(n) >= (k if n == "temporal_matches" else k + 1) for n in FRAME_OUTPUTS),
                   5.0, "every output of the frame")
    published = {name: [decoded(name, m) for m in h.received[name]] for name in FRAME_OUTPUTS}

    for name in FRAME_OUTPUTS:
        expected = len(frames) - 1 if name == "temporal_matches" else len(frames)
        assert len(published[name]) == len(written[name]) == expected, name
        for k, (a, b) in enumerate(zip(published[name], written[name])):
            assert_same(a, b, f"{name} #{k}")
    stamps = [t for t, _, _ in frames]
    assert [m["stamp"] for m in written["features"]] == stamps
    assert [m["frame_id"] for m in written["features_right"]] == ["right_cam"] * len(frames)
    # previous_stamp: exactly the earlier frame's header stamp (the rows it refers to are there)
    for k, temporal in enumerate(written["temporal_matches"], start=1):
        assert temporal["stamp"] == stamps[k] and len(temporal["indices"]) > 0
        sec, nanosec = temporal["previous_stamp"]
        assert sec * 10**9 + nanosec == stamps[k - 1]
    assert len(written["stereo_matches"][0]["indices"]) > 0
