"""Issue 8, bad input matrix: every bad frame is skipped with a specific, throttled log line, the
node stays alive, and tracks never cross a discontinuity. Real rclpy and DDS on loopback
(conftest.py keeps DDS on this machine); random weights (plumbing, not quality)."""
import time

import cv2
import numpy as np
import pytest
from rclpy.parameter import Parameter

from node_harness import Harness, image_msg
from superpoint_ros.frontend import Frontend
from superpoint_ros.image import ImageError
from superpoint_ros.params import PARAMETERS
from superpoint_ros.io.messages import decode_features
from superpoint_ros.stamps import stamp_ns_from_seconds as ns

pytestmark = pytest.mark.ros

SIZE = (96, 128)  # small frames: a node test must take seconds on 2 shared cores


def crop(image, k=0, size=SIZE):
    return np.ascontiguousarray(image[100:100 + size[0], 60 + 4 * k:60 + 4 * k + size[1]])


def stamp(msg):
    return msg.header.stamp.sec * 10 ** 9 + msg.header.stamp.nanosec


@pytest.fixture
def base(random_weights):
    return {"extractor.weights": random_weights, "extractor.device": "cpu", "extractor.max_keypoints": 100,
            "matching.ratio_test": 0.0, "matching.max_distance": 2.0, "diagnostics.period": 0.2,
            "input.queue_size": 20}  # no drops: every bad frame reaches the worker


@pytest.fixture(scope="class")
def mono(random_weights):
    """One mono node for the bad-frame matrix (each case checks the skip counter moves by one)."""
    params = {"extractor.weights": random_weights, "extractor.device": "cpu", "extractor.max_keypoints": 100,
              "input.queue_size": 20, "diagnostics.period": 0.2}
    h = Harness(params, topics=("features", "temporal_matches", "/diagnostics"))
    h.pub = h.publisher("image")
    yield h
    h.close()


def set_param(h, name, value):
    [result] = h.node.set_parameters([Parameter(name, value=value)])
    assert result.successful, result.reason


def with_data(msg, data):
    msg.data = data
    return msg


def with_fields(msg, **fields):
    for k, v in fields.items():
        setattr(msg, k, v)
    return msg


def bad_frames(camera_image):
    good = crop(camera_image)
    nan = np.full((40, 40), 0.5, np.float32)
    nan[3, 5] = np.nan
    inf = np.full((40, 40), 0.5, np.float32)
    inf[7, 7] = np.inf
    return {
        "unsupported encoding": (image_msg(good, 0, encoding="32SC4"), "unsupported image encoding '32SC4'"),
        "empty data": (with_data(image_msg(good, 0), b""), "image data has 0 bytes"),
        "height larger than the data": (with_fields(image_msg(good, 0), height=SIZE[0] + 1),
                                        f"expected step*height = {SIZE[1]}*{SIZE[0] + 1}"),
        "step longer than the data": (with_fields(image_msg(good, 0), step=SIZE[1] + 4), "expected step*height"),
        "step shorter than a row": (with_fields(image_msg(good, 0), step=SIZE[1] - 1), "shorter than a row"),
        "width wider than the step": (with_fields(image_msg(good, 0), width=SIZE[1] * 2), "shorter than a row"),
        "truncated data": (with_data(image_msg(good, 0), good.tobytes()[:-7]), "image data has"),
        "zero-sized": (with_data(with_fields(image_msg(good, 0), height=0, width=0, step=0), b""), "0x0 px is too small"),
        "smaller than a cell": (image_msg(good[:6, :6], 0), "6x6 px is too small"),
        "NaN in a float image": (image_msg(nan, 0, encoding="32FC1"), "NaN or infinite"),
        "inf in a float image": (image_msg(inf, 0, encoding="32FC1"), "NaN or infinite"),
        "inf in a 64-bit float image": (image_msg(inf.astype(np.float64), 0, encoding="64FC1"), "NaN or infinite"),
    }


CASES = ["unsupported encoding", "empty data", "height larger than the data", "step longer than the data",
         "step shorter than a row", "width wider than the step", "truncated data", "zero-sized",
         "smaller than a cell", "NaN in a float image", "inf in a float image", "inf in a 64-bit float image"]


class TestOneNode:
    """The bad-frame matrix on one node (class scope: it must be gone before the tests below start
    nodes of their own, or both would answer on the same topics)."""

    @pytest.mark.parametrize("case", CASES)
    def test_bad_frame_is_skipped_logged_and_the_node_stays_alive(self, mono, camera_image, capfd, case):
        h = mono
        msg, fragment = bad_frames(camera_image)[case]
        before_skipped, before_features = h.node.stats.skipped, h.count("features")
        h.node.log_throttled.forget()  # a fresh throttle window: cases of one kind share one otherwise
        msg.header.stamp.sec = 1000 + CASES.index(case)
        h.pub.publish(msg)
        h.wait_for(lambda: h.node.stats.skipped == before_skipped + 1, 5.0, f"the {case} frame to be skipped")
        assert fragment in h.node.stats.last_error, h.node.stats.last_error
        # the node is alive: the next good frame gets features (and nothing came out for the bad one)
        cloud = h.publish_and_wait(h.pub, image_msg(crop(camera_image), (1000 + CASES.index(case)) * 10 ** 9 + 1))
        assert h.count("features") == before_features + 1 and len(decode_features(cloud)) > 0
        log = capfd.readouterr().err
        lines = [line for line in log.splitlines() if "skipped a frame" in line]
        assert len(lines) == 1 and fragment in lines[0], log  # one specific line per kind of fault


    def test_a_flood_of_one_fault_is_logged_once_and_does_not_hide_another(self, mono, camera_image, capfd):
        h = mono
        before = h.node.stats.skipped
        capfd.readouterr()
        bad = image_msg(crop(camera_image), 0, encoding="weird_encoding")
        for k in range(5):
            bad.header.stamp.nanosec = k
            h.pub.publish(bad)
        h.wait_for(lambda: h.node.stats.skipped == before + 5, 5.0, "5 skipped frames")
        other = with_data(image_msg(crop(camera_image), 9), b"\x00" * 10)
        h.pub.publish(other)
        h.wait_for(lambda: h.node.stats.skipped == before + 6, 5.0, "the other fault")
        time.sleep(0.1)
        lines = [line for line in capfd.readouterr().err.splitlines() if "skipped a frame" in line]
        assert len([line for line in lines if "weird_encoding" in line]) == 1, lines  # throttled
        assert len([line for line in lines if "image data has 10 bytes" in line]) == 1, lines  # not hidden
        seen = h.count("/diagnostics")
        h.wait_for(lambda: h.count("/diagnostics") > seen + 1, 3.0, "diagnostics")
        values = {kv.key: kv.value for kv in h.received["/diagnostics"][-1].status[0].values}
        assert int(values["frames_skipped"]) == h.node.stats.skipped


    def test_huge_images_are_resized_or_rejected_per_parameter(self, mono, camera_image, capfd):
        h = mono
        big = np.ascontiguousarray(np.repeat(np.repeat(camera_image[:128, :192], 2, axis=0), 2, axis=1))  # 384x256
        set_param(h, "image.max_size", 192)
        try:
            set_param(h, "image.oversize", "resize")
            cloud = h.publish_and_wait(h.pub, image_msg(big, 2000 * 10 ** 9))
            kp = decode_features(cloud).keypoints
            assert len(kp) > 0
            # keypoints in the input's pixels: they spread over the full 384 px width, not the 192 px network image
            assert kp[:, 0].max() > 200 and (kp[:, 0] <= 383).all() and (kp[:, 1] <= 255).all() and (kp >= 0).all()
            h.publish_and_wait(h.pub, image_msg(big, 2000 * 10 ** 9 + 10 ** 8))
            time.sleep(0.1)
            notes = [line for line in capfd.readouterr().err.splitlines()
                     if "input images of 384x256 px are larger than image.max_size=192 px: resized to 192x128 px" in line]
            assert len(notes) == 1, notes  # once per input size, not per frame
            set_param(h, "image.oversize", "reject")
            before = h.node.stats.skipped
            h.pub.publish(image_msg(big, 2001 * 10 ** 9))
            h.wait_for(lambda: h.node.stats.skipped == before + 1, 5.0, "the huge frame to be rejected")
            assert "384x256 px is larger than image.max_size=192" in h.node.stats.last_error
            time.sleep(0.1)
            assert "larger than image.max_size=192" in capfd.readouterr().err
            h.publish_and_wait(h.pub, image_msg(crop(camera_image), 2002 * 10 ** 9))  # normal frames still pass
        finally:
            set_param(h, "image.max_size", PARAMETERS["image.max_size"].default)
            set_param(h, "image.oversize", "resize")


    def test_image_smaller_than_the_border_is_skipped(self, mono, camera_image):
        h = mono
        set_param(h, "extractor.remove_borders", 20)
        try:
            before = h.node.stats.skipped
            h.pub.publish(image_msg(camera_image[:40, :64], 3000 * 10 ** 9))  # 40 <= 2 * 20
            h.wait_for(lambda: h.node.stats.skipped == before + 1, 5.0, "the frame to be skipped")
            assert "no pixels inside the extractor.remove_borders=20 px border" in h.node.stats.last_error
        finally:
            set_param(h, "extractor.remove_borders", 4)


def new_tracks_only(features, earlier):
    """All tracks of ``features`` start here: length 1 and IDs never seen in ``earlier``."""
    seen = set(np.concatenate([f.track_ids for f in earlier]).tolist())
    return (features.track_lengths == 1).all() and not (set(features.track_ids.tolist()) & seen)


@pytest.mark.parametrize("discontinuity, reason", [
    ("bag loop", "time went backwards"),
    ("repeated stamp", "repeated stamp"),
    ("time jump", "time jumped forward"),
    ("frame_id change", "frame_id changed from 'cam' to 'other_cam'"),
])
def test_tracks_reset_and_are_never_matched_across_a_discontinuity(base, harness_factory, camera_image,
                                                                   discontinuity, reason):
    h = harness_factory(base, topics=("features", "temporal_matches", "/diagnostics"))
    pub = h.publisher("image")
    t0 = 50 * 10 ** 9
    stamps = [t0, t0 + 10 ** 8, t0 + 2 * 10 ** 8]
    before = [decode_features(h.publish_and_wait(pub, image_msg(crop(camera_image, k), s)))
              for k, s in enumerate(stamps)]
    h.wait_for(lambda: h.count("temporal_matches") == 2, 5.0, "2 temporal matches")
    assert before[-1].track_lengths.max() == 3  # tracks did form before the discontinuity
    next_stamp, frame_id = {"bag loop": (t0, "cam"), "repeated stamp": (stamps[-1], "cam"),
                            "time jump": (stamps[-1] + 5 * 10 ** 9, "cam"),  # > tracking.max_time_gap (1 s)
                            "frame_id change": (stamps[-1] + 10 ** 8, "other_cam")}[discontinuity]
    after = decode_features(h.publish_and_wait(pub, image_msg(crop(camera_image, 3), next_stamp, frame_id)))
    assert new_tracks_only(after, before)
    follow = decode_features(h.publish_and_wait(pub, image_msg(crop(camera_image, 4), next_stamp + 10 ** 8, frame_id)))
    h.wait_for(lambda: h.count("temporal_matches") == 3, 5.0, "temporal matches after the reset")
    # no temporal matches message for the frame after the discontinuity; the next one pairs with it
    assert [stamp(m) for m in h.received["temporal_matches"]] == stamps[1:] + [next_stamp + 10 ** 8]
    assert follow.track_lengths.max() == 2 and set(follow.track_ids.tolist()) & set(after.track_ids.tolist())
    assert reason in h.node.stats.last_reset
    h.wait_for(lambda: any(reason in {kv.key: kv.value for kv in d.status[0].values}.get("last_track_reset", "")
                           for d in h.received["/diagnostics"]), 3.0, "the reset in diagnostics")


def test_stereo_pair_of_different_encodings_is_skipped(base, harness_factory, camera_image):
    h = harness_factory({**base, "stereo.enabled": True}, topics=("features", "stereo_matches"))
    pub_l, pub_r = h.publisher("left/image_rect"), h.publisher("right/image_rect")
    left = crop(camera_image)
    pub_l.publish(image_msg(left, 10 ** 9, "l"))
    pub_r.publish(image_msg(cv2.cvtColor(left, cv2.COLOR_GRAY2BGR), 10 ** 9, "r"))
    h.wait_for(lambda: h.node.stats.skipped == 1, 5.0, "the mixed pair to be skipped")
    assert "stereo images differ in encoding: left 'mono8', right 'bgr8'" in h.node.stats.last_error
    pub_l.publish(image_msg(left, 2 * 10 ** 9, "l"))
    pub_r.publish(image_msg(left, 2 * 10 ** 9, "r"))
    h.wait_for(lambda: h.count("stereo_matches") == 1, 10.0, "a good pair after the bad one")
    assert h.count("features") == 1


def test_an_unsupported_encoding_in_a_stereo_pair_is_reported_as_unsupported(base, harness_factory, camera_image):
    h = harness_factory({**base, "stereo.enabled": True}, topics=("features", "stereo_matches"))
    pub_l, pub_r = h.publisher("left/image_rect"), h.publisher("right/image_rect")
    left = crop(camera_image)
    for k, (left_encoding, right_encoding) in enumerate([("mono8", "mono9"), ("mono9", "mono8")], start=1):
        pub_l.publish(image_msg(left, k * 10 ** 9, "l", encoding=left_encoding))
        pub_r.publish(image_msg(left, k * 10 ** 9, "r", encoding=right_encoding))
        h.wait_for(lambda: h.node.stats.skipped == k, 5.0, f"pair {k} to be skipped")
        # the real fault, not its symptom ("differ in encoding")
        assert "unsupported image encoding 'mono9'" in h.node.stats.last_error, h.node.stats.last_error
    assert h.count("features") == 0


def test_different_reset_reasons_in_quick_succession_are_each_logged(base, harness_factory, camera_image, capfd):
    h = harness_factory(base)
    pub = h.publisher("image")
    capfd.readouterr()
    for k, stamp_s in enumerate([10, 20, 15, 16]):  # then a jump forward, then a bag loop, within 5 s
        h.publish_and_wait(pub, image_msg(crop(camera_image, k), stamp_s * 10 ** 9))
    time.sleep(0.1)
    lines = [line for line in capfd.readouterr().err.splitlines() if "tracks reset" in line]
    assert any("time jumped forward by 10.000 s" in line for line in lines), lines
    assert any("time went backwards by 5.000000 s" in line for line in lines), lines  # not hidden by the jump
    assert len(lines) == 2, lines


def test_left_right_stamps_that_never_pair_are_reported(base, harness_factory, camera_image, capfd):
    params = {**base, "stereo.enabled": True, "sync.slop": 0.002}
    h = harness_factory(params, topics=("features", "stereo_matches", "/diagnostics"))
    pub_l, pub_r = h.publisher("left/image_rect"), h.publisher("right/image_rect")
    image = crop(camera_image)
    for k in range(15):  # right always 40 ms behind: never within the 2 ms slop
        pub_l.publish(image_msg(image, 10 ** 9 + k * 10 ** 8, "l"))
        pub_r.publish(image_msg(image, 10 ** 9 + k * 10 ** 8 + 4 * 10 ** 7, "r"))
        time.sleep(0.02)

    def never_pair_warning():
        for d in h.received["/diagnostics"]:
            if d.status[0].level == d.status[0].WARN and "do not pair" in d.status[0].message:
                return d.status[0].message
        return None

    h.wait_for(never_pair_warning, 6.0, "a 'do not pair' diagnostics warning")  # judged over >= 2 s
    assert "sync.slop=0.002" in never_pair_warning() and h.count("features") == 0
    time.sleep(0.1)
    assert "left/right images do not pair" in capfd.readouterr().err
    pub_l.publish(image_msg(image, 5 * 10 ** 9, "l"))  # a pair that does match: processed
    pub_r.publish(image_msg(image, 5 * 10 ** 9 + 10 ** 6, "r"))
    h.wait_for(lambda: h.count("stereo_matches") == 1, 10.0, "the first real pair")


def test_a_stereo_camera_that_is_silent_is_reported(base, harness_factory, camera_image, capfd):
    h = harness_factory({**base, "stereo.enabled": True}, topics=("features", "/diagnostics"))
    pub_l = h.publisher("left/image_rect")
    image = crop(camera_image)
    deadline = time.monotonic() + 6.0
    k = 0
    while time.monotonic() < deadline and not any("only left images arrive" in d.status[0].message
                                                  for d in h.received["/diagnostics"]):
        pub_l.publish(image_msg(image, 10 ** 9 + k * 10 ** 8, "l"))  # the right camera is dead
        k += 1
        time.sleep(0.05)
    messages = [d.status[0].message for d in h.received["/diagnostics"]]
    assert any("only left images arrive: none on right/image_rect" in m for m in messages), messages
    time.sleep(0.1)
    assert "only left images arrive" in capfd.readouterr().err
    assert h.count("features") == 0


# --- the same checks without ROS (the Frontend the bag evaluator uses) -------------------------------
@pytest.fixture(scope="module")
def frontend(random_weights):
    return Frontend({"extractor.weights": random_weights, "extractor.device": "cpu", "extractor.max_keypoints": 200,
                     "image.max_size": 128})


def test_resized_keypoints_are_in_input_pixels(frontend, camera_image):
    small = np.ascontiguousarray(camera_image[:96, :128])
    big = np.ascontiguousarray(np.repeat(np.repeat(small, 2, axis=0), 2, axis=1))  # exactly 2x: area filter undoes it
    frontend.reset()
    reference = frontend.process_mono(small, ns(1.0), "a").features
    frontend.reset()
    resized = frontend.process_mono(big, ns(2.0), "a").features
    assert resized.image_size == (192, 256)
    assert np.allclose(resized.keypoints, (reference.keypoints + 0.5) * 2 - 0.5, atol=1e-4)
    assert np.array_equal(resized.descriptors, reference.descriptors)


def test_frontend_rejects_a_stereo_pair_of_different_pixel_formats_and_keeps_its_state(frontend, camera_image):
    image = np.ascontiguousarray(camera_image[:96, :128])
    frontend.reset()
    first = frontend.process_mono(image, ns(1.0), "a")
    with pytest.raises(ImageError, match="differ in pixel format"):
        frontend.process_stereo(image, image.astype(np.uint16) * 257, ns(1.1), "a")
    with pytest.raises(ImageError, match="smaller than one 8x8 SuperPoint cell"):
        frontend.process_mono(image[:7, :100], ns(1.2), "a")
    second = frontend.process_mono(image, ns(1.3), "a")  # bad frames left the tracks alone
    assert second.reset_reason is None and second.temporal is not None
    assert set(second.track_ids.tolist()) & set(first.track_ids.tolist())
