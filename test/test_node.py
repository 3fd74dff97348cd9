"""superpoint_node with real rclpy and real DDS on loopback (in-process executor).

conftest.py keeps DDS on this machine (LOCALHOST, private domain id). Random weights: these tests
check the plumbing (stamps, layouts, tracks, constraints, parameters, bad input), not quality.
"""

import cv2
import numpy as np
import pytest
from rcl_interfaces.msg import ParameterValue
from rclpy.parameter import Parameter
from rclpy.parameter_client import AsyncParameterClient

from node_harness import image_msg
from superpoint_ros.io.messages import decode_features, decode_stereo_matches, decode_temporal_matches

pytestmark = pytest.mark.ros

SHIFT = 8


@pytest.fixture
def base(random_weights):
    return {"extractor.weights": random_weights, "extractor.device": "cpu", "extractor.max_keypoints": 300,
            "matching.ratio_test": 0.0, "matching.max_distance": 2.0, "diagnostics.period": 0.2}


def panning(image, k, size=(240, 320)):
    return image[100:100 + size[0], 60 + SHIFT * k:60 + SHIFT * k + size[1]]


def stamp(msg):
    return msg.header.stamp.sec * 10 ** 9 + msg.header.stamp.nanosec


def test_mono_stamps_features_and_persistent_tracks(base, harness_factory, camera_image):
    h = harness_factory(base)
    pub = h.publisher("image")
    stamps = [1_700_000_000_000_000_007 + k * 33_333_333 for k in range(5)]
    clouds = [h.publish_and_wait(pub, image_msg(panning(camera_image, k), s, "camera_optical"))
              for k, s in enumerate(stamps)]
    h.wait_for(lambda: h.count("temporal_matches") >= 4, 5.0, "temporal matches")
    assert [stamp(c) for c in clouds] == stamps  # exact to the nanosecond
    assert {c.header.frame_id for c in clouds} == {"camera_optical"}
    features = [decode_features(c) for c in clouds]
    assert all(len(f) == 300 and f.descriptors.shape == (300, 256) for f in features)
    assert np.allclose(np.linalg.norm(features[0].descriptors, axis=1), 1.0, atol=1e-5)
    assert features[-1].track_lengths.max() == 5  # some points tracked through all frames
    temporal = h.received["temporal_matches"]
    for k, msg in enumerate(temporal, start=1):
        t = decode_temporal_matches(msg)
        assert stamp(msg) == stamps[k]
        assert t["previous_stamp"] == divmod(stamps[k - 1], 10 ** 9)  # the pair is unambiguous
        prev, cur = features[k - 1], features[k]
        inl = t["indices"][t["inliers"]]
        assert len(inl) >= 20
        assert np.array_equal(cur.track_ids[inl[:, 1]], prev.track_ids[inl[:, 0]])
        motion = cur.keypoints[inl[:, 1]] - prev.keypoints[inl[:, 0]]
        assert np.median(np.abs(motion - [-SHIFT, 0]).max(axis=1)) < 1.0


def test_stereo_pairs_obey_the_epipolar_constraint(base, harness_factory):
    from skimage import data

    left, right, _ = data.stereo_motorcycle()
    left, right = np.ascontiguousarray(left[100:340, 200:520]), np.ascontiguousarray(right[100:340, 200:520])
    params = {**base, "stereo.enabled": True, "stereo.epipolar_tolerance": 1.0, "stereo.max_disparity": 64.0,
              "sync.slop": 0.002}
    h = harness_factory(params, topics=("features", "features_right", "stereo_matches"))
    pub_l, pub_r = h.publisher("left/image_rect"), h.publisher("right/image_rect")
    t = 5_000_000_123
    pub_r.publish(image_msg(right, t + 1_000_000, "right_cam"))  # 1 ms apart: within the slop
    pub_l.publish(image_msg(left, t, "left_cam"))
    h.wait_for(lambda: h.count("stereo_matches") >= 1, 10.0, "stereo matches")
    h.wait_for(lambda: h.count("features_right") >= 1, 2.0, "right features")
    matches_msg, left_msg, right_msg = (h.received[k][0] for k in ("stereo_matches", "features", "features_right"))
    assert stamp(matches_msg) == stamp(left_msg) == stamp(right_msg) == t
    assert left_msg.header.frame_id == "left_cam" and right_msg.header.frame_id == "right_cam"
    s = decode_stereo_matches(matches_msg)
    lf, rf = decode_features(left_msg), decode_features(right_msg)
    assert len(s["indices"]) > 0
    lk, rk = lf.keypoints[s["indices"][:, 0]], rf.keypoints[s["indices"][:, 1]]
    assert np.array_equal(lk, s["left_keypoints"]) and np.array_equal(rk, s["right_keypoints"])
    assert (np.abs(lk[:, 1] - rk[:, 1]) <= 1.0).all()
    assert ((s["disparities"] >= 0) & (s["disparities"] <= 64.0)).all()
    # a pair of different sizes is skipped with a reason; the node keeps going
    pub_l.publish(image_msg(left, t + 10 ** 8, "left_cam"))
    pub_r.publish(image_msg(right[:, :200], t + 10 ** 8, "right_cam"))
    h.wait_for(lambda: h.node.stats.skipped == 1, 5.0, "the mismatched pair to be skipped")
    assert "differ in size" in h.node.stats.last_error
    pub_l.publish(image_msg(left, t + 2 * 10 ** 8, "left_cam"))
    pub_r.publish(image_msg(right, t + 2 * 10 ** 8, "right_cam"))
    h.wait_for(lambda: h.count("stereo_matches") >= 2, 10.0, "stereo matches after the bad pair")


def test_debug_image_only_while_subscribed_and_diagnostics(base, harness_factory, astronaut_bgr):
    h = harness_factory(base, topics=("features", "/diagnostics"))
    pub = h.publisher("image")
    colour = np.ascontiguousarray(astronaut_bgr[:240, :320])
    h.publish_and_wait(pub, image_msg(colour, 10 ** 9))
    assert h.node.stats.debug_images == 0  # nobody listening: nothing drawn
    images = []
    sub = h.probe.create_subscription(type(image_msg(colour, 0)), "debug_image", images.append, 10)
    h.wait_for(lambda: h.node.outputs.debug_image.get_subscription_count() > 0, 5.0, "debug subscriber discovery")
    for k in range(2):
        h.publish_and_wait(pub, image_msg(colour, 2 * 10 ** 9 + k * 10 ** 8))
    h.wait_for(lambda: len(images) >= 2, 5.0, "debug images")
    assert images[-1].encoding == "bgr8" and (images[-1].height, images[-1].width) == (240, 320)
    assert stamp(images[-1]) == 2 * 10 ** 9 + 10 ** 8
    h.probe.destroy_subscription(sub)
    h.wait_for(lambda: h.node.outputs.debug_image.get_subscription_count() == 0, 5.0, "debug unsubscribe")
    drawn = h.node.stats.debug_images
    h.publish_and_wait(pub, image_msg(colour, 3 * 10 ** 9))
    assert h.node.stats.debug_images == drawn
    h.wait_for(lambda: any(dict((kv.key, kv.value) for kv in d.status[0].values).get("frames_processed") == "4"
                           for d in h.received["/diagnostics"]), 5.0, "diagnostics with 4 frames")
    status = h.received["/diagnostics"][-1].status[0]
    values = {kv.key: kv.value for kv in status.values}
    assert "superpoint_node" in status.name and values["device"] == "cpu" and float(values["mean_extract_ms"]) > 0
    assert values["network"] == h.node.frontend.extractor.backend_name  # e.g. onnxruntime+int8


def test_bad_input_is_skipped_and_the_node_stays_alive(base, harness_factory, camera_image):
    h = harness_factory({**base, "input.queue_size": 10}, topics=("features", "/diagnostics"))  # no drops
    pub = h.publisher("image")
    good = panning(camera_image, 0)
    bad = [image_msg(good, 1, encoding="32SC4"),                  # unsupported encoding
           image_msg(camera_image[:8, :8], 2),                     # tiny
           image_msg(np.full((40, 40), np.nan, np.float32), 3, encoding="32FC1")]  # NaN
    empty = image_msg(good, 4)
    empty.data = b""                                               # empty data
    short_step = image_msg(good, 5)
    short_step.step = 100                                          # step shorter than a row
    for msg in bad + [empty, short_step]:
        pub.publish(msg)
    h.wait_for(lambda: h.node.stats.skipped == 5, 5.0, "5 skipped frames")
    cloud = h.publish_and_wait(pub, image_msg(good, 10 ** 9))
    assert stamp(cloud) == 10 ** 9 and len(decode_features(cloud)) == 300
    assert "step" in h.node.stats.last_error or "shorter" in h.node.stats.last_error


def test_queue_keeps_the_newest_frame_and_counts_drops(base, harness_factory, camera_image):
    h = harness_factory({**base, "input.queue_size": 1})
    pub = h.publisher("image")
    frames = [image_msg(panning(camera_image, k), 10 ** 9 + k * 10 ** 7) for k in range(8)]
    for msg in frames:
        pub.publish(msg)
    last = stamp(frames[-1])
    h.wait_for(lambda: h.count("features") and stamp(h.received["features"][-1]) == last, 10.0,
               "the newest frame's features")
    stats = h.node.stats
    assert stats.received == stats.processed + stats.dropped and stats.processed == h.count("features")
    assert stats.dropped >= 1, vars(stats)  # ~100 ms per frame vs a burst: some must be dropped
    assert stamp(h.received["features"][-1]) == stamp(frames[-1])  # the newest frame won


def test_compressed_input(base, harness_factory, camera_image):
    h = harness_factory({**base, "input.compressed": True})
    pub = h.publisher("image/compressed", compressed=True)
    ok, png = cv2.imencode(".png", panning(camera_image, 0))
    from sensor_msgs.msg import CompressedImage

    msg = CompressedImage(format="mono8; png compressed")
    msg.header.stamp.sec, msg.header.frame_id = 42, "cam"
    msg.data = png.tobytes()
    cloud = h.publish_and_wait(pub, msg)
    assert stamp(cloud) == 42 * 10 ** 9 and len(decode_features(cloud)) == 300


def test_run_time_parameters_through_the_parameter_service(base, harness_factory, camera_image):
    h = harness_factory(base)
    client = AsyncParameterClient(h.probe, "superpoint_node")
    assert client.wait_for_services(5.0)

    def set_params(**values):
        future = client.set_parameters([Parameter(k.replace("__", "."), value=v) for k, v in values.items()])
        h.wait_for(future.done, 5.0, "set_parameters reply")
        return future.result().results

    [ok] = set_params(extractor__max_keypoints=50)
    assert ok.successful
    pub = h.publisher("image")
    assert len(decode_features(h.publish_and_wait(pub, image_msg(panning(camera_image, 0), 10 ** 9)))) == 50
    [bad] = set_params(extractor__detection_threshold=2.0)
    assert not bad.successful
    [ro] = set_params(extractor__device="cuda")
    assert not ro.successful and ("read-only" in ro.reason.lower() or "run time" in ro.reason), ro.reason
    [choice] = set_params(ransac__model="affine")
    assert not choice.successful and "fundamental" in choice.reason
    future = client.get_parameters(["extractor.detection_threshold", "extractor.max_keypoints"])
    h.wait_for(future.done, 5.0, "get_parameters reply")
    values = future.result().values
    assert values[0].double_value == 0.005 and values[1].integer_value == 50
    assert isinstance(values[0], ParameterValue)


def test_declared_parameters_carry_ranges_and_descriptions(base, harness_factory):
    h = harness_factory(base)
    [d] = h.node.describe_parameters(["extractor.nms_radius"])
    assert d.integer_range[0].from_value == 0 and d.integer_range[0].to_value == 32 and d.description
    [d] = h.node.describe_parameters(["extractor.weights"])
    assert d.read_only
    [d] = h.node.describe_parameters(["ransac.model"])
    assert "homography" in d.additional_constraints


def test_stereo_matches_agree_with_ground_truth_disparity_with_the_trained_model(harness_factory, trained_weights):
    weights = trained_weights
    from skimage import data

    left, right, disparity = data.stereo_motorcycle()
    params = {"extractor.weights": weights, "extractor.device": "cpu", "stereo.enabled": True,
              "stereo.max_disparity": 80.0, "stereo.epipolar_tolerance": 2.0}
    h = harness_factory(params, topics=("features", "stereo_matches"))
    pub_l, pub_r = h.publisher("left/image_rect"), h.publisher("right/image_rect")
    pub_l.publish(image_msg(np.ascontiguousarray(left[..., ::-1]), 7, "left"))
    pub_r.publish(image_msg(np.ascontiguousarray(right[..., ::-1]), 7, "right"))
    h.wait_for(lambda: h.count("stereo_matches") >= 1, 30.0, "stereo matches")
    s = decode_stereo_matches(h.received["stereo_matches"][0])
    xy = np.round(s["left_keypoints"]).astype(int)
    truth = disparity[xy[:, 1], xy[:, 0]]
    known = np.isfinite(truth)
    assert known.sum() >= 30
    assert np.mean(np.abs(s["disparities"][known] - truth[known]) <= 3.0) >= 0.8


def test_qos_overrides_configure_the_output_publishers_and_others_are_rejected(base, harness_factory):
    from rclpy.qos import ReliabilityPolicy

    from superpoint_ros.params import ParamsError

    h = harness_factory({**base, "qos_overrides./features.publisher.reliability": "best_effort",
                         "qos_overrides./features.publisher.depth": 3}, topics=("temporal_matches",))
    h.wait_for(lambda: h.probe.get_publishers_info_by_topic("/features"), 5.0, "the features publisher")
    features = h.probe.get_publishers_info_by_topic("/features")[0].qos_profile
    temporal = h.probe.get_publishers_info_by_topic("/temporal_matches")[0].qos_profile
    assert features.reliability == ReliabilityPolicy.BEST_EFFORT and temporal.reliability == ReliabilityPolicy.RELIABLE
    # the graph does not carry the history depth: the publisher's own profile does
    assert h.node.outputs.features.qos_profile.depth == 3 and h.node.outputs.frames["temporal_matches"].qos_profile.depth == 5
    assert h.node.get_parameter("qos_overrides./features.publisher.reliability").value == "best_effort"
    for name in ("qos_overrides./image.subscription.reliability", "qos_overrides./features_right.publisher.depth"):
        with pytest.raises(ParamsError, match=f"{name} configures nothing"):  # mono: no features_right
            harness_factory({**base, name: 1})
