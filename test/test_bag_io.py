"""rosbags read/write round trips for both rosbag2 storage formats, and the sample bag."""
import cv2
import numpy as np
import pytest

from superpoint_ros.io import bags
from superpoint_ros.evaluation.bag_frames import iterate_frames
from superpoint_ros.evaluation.pose import read_tum
from superpoint_ros.evaluation.sample_data import SampleConf, TOPICS, ensure_sample_bag, intrinsics, trajectory

STORAGES = ["sqlite3", "mcap"]


@pytest.mark.parametrize("storage", STORAGES)
def test_round_trip_images_camera_info_and_raw(tmp_path, storage):
    rng = np.random.default_rng(1)
    images = {
        "mono8": rng.integers(0, 256, (7, 9), dtype=np.uint8),
        "bgr8": rng.integers(0, 256, (7, 9, 3), dtype=np.uint8),
        "mono16": rng.integers(0, 65536, (7, 9), dtype=np.uint16),
        "32FC1": rng.normal(size=(7, 9)).astype(np.float32),
    }
    path = tmp_path / "bag"
    K = np.array([[50.0, 0, 4], [0, 51.0, 3], [0, 0, 1]])
    with bags.BagWriter(path, storage=storage) as bag:
        for i, (encoding, image) in enumerate(images.items()):
            bag.write(f"/img/{encoding}", bags.image_message(image, 1_000_000_000 * 7 + i, f"f{i}"), 100 + i)
        bag.write("/info", bags.camera_info_message(K, (7, 9), 5, "cam"), 50)
        raw = bags.typestore().serialize_cdr(bags.image_message(images["mono8"], 42, "raw"), "sensor_msgs/msg/Image")
        bag.write_raw("/img/raw", "sensor_msgs/msg/Image", raw, 200)
    found = bags.topics(path)
    assert found["/info"] == ("sensor_msgs/msg/CameraInfo", 1)
    assert all(found[f"/img/{e}"] == ("sensor_msgs/msg/Image", 1) for e in images)
    messages = list(bags.read_messages(path))
    assert [m.log_time_ns for m in messages] == [50, 100, 101, 102, 103, 200]  # log-time order
    for i, (encoding, image) in enumerate(images.items()):
        (item,) = [m for m in messages if m.topic == f"/img/{encoding}"]
        assert item.message.encoding == encoding and item.message.header.frame_id == f"f{i}"
        assert bags.stamp_ns(item.message) == 7_000_000_000 + i
        decoded = bags.message_image(item.message)
        assert decoded.dtype == image.dtype
        np.testing.assert_array_equal(decoded.reshape(image.shape), image)
    info = next(m.message for m in messages if m.topic == "/info")
    np.testing.assert_array_equal(info.k.reshape(3, 3), K)
    assert (info.height, info.width) == (7, 9)
    raw_item = next(m for m in messages if m.topic == "/img/raw")
    assert raw_item.raw == raw and bags.stamp_ns(raw_item.message) == 42


def test_reader_and_writer_errors(tmp_path):
    path = tmp_path / "bag"
    with bags.BagWriter(path) as bag:
        bag.write("/a", bags.image_message(np.zeros((2, 2), np.uint8), 1, "a"), 1)
        with pytest.raises(bags.BagError, match="already has type"):
            bag.write("/a", bags.camera_info_message(np.eye(3), (2, 2), 1, "a"), 2)
    with pytest.raises(bags.BagError, match="already exists"):
        bags.BagWriter(path)
    with pytest.raises(bags.BagError, match="storage"):
        bags.BagWriter(tmp_path / "x", storage="rosbag1")
    with pytest.raises(bags.BagError, match=r"/nope.*available: /a"):
        list(bags.read_messages(path, ["/nope"]))
    with pytest.raises(bags.BagError, match="not found"):
        bags.topics(tmp_path / "missing")
    with pytest.raises(bags.BagError, match="no default encoding"):
        bags.image_message(np.zeros((2, 2), np.int64), 0, "x")
    with pytest.raises(bags.BagError, match="negative"):
        bags.image_message(np.zeros((2, 2), np.uint8), -1, "x")


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    conf = SampleConf(size=(48, 64), num_frames=5, storage="mcap")
    return ensure_sample_bag(tmp_path_factory.mktemp("sample"), conf)


def test_sample_bag_contents_and_ground_truth(sample):
    found = bags.topics(sample.bag)
    for key in ("left_image", "right_image", "left_info", "right_info", "ground_truth"):
        assert found[TOPICS[key]][1] == 5
    frames = list(iterate_frames(sample.bag, TOPICS["left_image"], TOPICS["right_image"]))
    assert len(frames) == 5
    assert [f.stamp_ns for f in frames] == sorted(f.stamp_ns for f in frames)
    assert all(f.left.shape == (48, 64) and f.right.shape == (48, 64) and f.left.dtype == np.uint8 for f in frames)
    assert not np.array_equal(frames[0].left, frames[0].right)  # the right camera is elsewhere
    gt = read_tum(sample.groundtruth)
    np.testing.assert_array_equal(gt.stamps_ns, [f.stamp_ns for f in frames])  # exact ns, no float rounding
    for (_, rotation, centre), r, c in zip(trajectory(sample.conf), gt.rotations, gt.positions):
        np.testing.assert_allclose(r, rotation, atol=1e-7)
        np.testing.assert_allclose(c, centre, atol=1e-8)
    infos = {m.topic: m.message for m in bags.read_messages(sample.bag, [TOPICS["left_info"], TOPICS["right_info"]])}
    p_right = infos[TOPICS["right_info"]].p.reshape(3, 4)
    K = intrinsics(sample.conf)
    assert p_right[0, 3] == pytest.approx(-K[0, 0] * sample.baseline_m)


def test_sample_bag_is_cached_and_reproducible(sample, tmp_path):
    again = ensure_sample_bag(sample.folder.parent, sample.conf)  # cache hit: same folder, not rewritten
    assert again.folder == sample.folder
    fresh = ensure_sample_bag(tmp_path, sample.conf)
    first = [m.raw for m in bags.read_messages(sample.bag, [TOPICS["left_image"]])]
    second = [m.raw for m in bags.read_messages(fresh.bag, [TOPICS["left_image"]])]
    assert first == second


def test_exposure_jitter_changes_only_the_brightness(sample, tmp_path):
    """Auto-exposure simulation: same scene and noise stream, a gain per image; off by default
    (the default bag and its cache key are unchanged)."""
    from dataclasses import replace

    jittered = ensure_sample_bag(tmp_path, replace(sample.conf, exposure_jitter=0.3))
    assert jittered.folder.name == sample.folder.name + "_exposure0.3"
    plain = [f.left.astype(np.float64) for f in iterate_frames(sample.bag, TOPICS["left_image"], TOPICS["right_image"])]
    bright = [f.left.astype(np.float64) for f in iterate_frames(jittered.bag, TOPICS["left_image"],
                                                                 TOPICS["right_image"])]
    gains = [b.mean() / p.mean() for p, b in zip(plain, bright)]
    assert max(gains) - min(gains) > 0.05 and all(0.7 < g < 1.4 for g in gains)
    for p, b, g in zip(plain, bright, gains):  # the same image up to the gain (and rounding, clipping)
        assert np.corrcoef(p.ravel(), b.ravel())[0, 1] > 0.99


def test_motion_blur_smears_along_the_motion_only(sample, tmp_path):
    """Motion blur: the mean of renders over the shutter interval centred on the stamp (so the ground
    truth pose is the mid-exposure pose); off by default (the default bag and its key unchanged)."""
    from dataclasses import replace

    blurred = ensure_sample_bag(tmp_path, replace(sample.conf, motion_blur=0.8))
    assert blurred.folder.name == sample.folder.name + "_blur0.8"
    pairs = zip(iterate_frames(sample.bag, TOPICS["left_image"]), iterate_frames(blurred.bag, TOPICS["left_image"]))
    for sharp, smeared in pairs:
        a, b = sharp.left.astype(np.float64), smeared.left.astype(np.float64)
        assert abs(a.mean() - b.mean()) < 2.0  # same scene, same exposure
        detail = [np.abs(cv2.Laplacian(x, cv2.CV_64F)).mean() for x in (a, b)]
        assert detail[1] < 0.9 * detail[0], detail  # fine detail smeared out
        assert np.corrcoef(cv2.GaussianBlur(a, (0, 0), 3).ravel(), cv2.GaussianBlur(b, (0, 0), 3).ravel())[0, 1] > 0.98


def test_ros1_bags_read_as_ros2_messages_and_evaluate(tmp_path, random_weights):
    """A ROS 1 bag (e.g. EuRoC) works as is: messages come back as ROS 2 objects with CDR ``raw``
    (what the output bag and superpoint-bag-play re-publish), and the evaluator runs on it."""
    from skimage import data

    from ros1_bag import write_ros1_bag

    from superpoint_ros.evaluation import bag_eval

    photo = data.camera()[100:196, 100:228]
    frames = [np.roll(photo, 2 * i, axis=1) for i in range(4)]
    K = np.array([[100.0, 0, 63.5], [0, 100.0, 47.5], [0, 0, 1]])
    path = tmp_path / "euroc_like.bag"
    write_ros1_bag(path, frames, [1_400_000_000_000_000_000 + i * 50_000_000 for i in range(len(frames))], K)
    assert bags.topics(path)["/cam0/image_raw"] == ("sensor_msgs/msg/Image", 4)
    messages = list(bags.read_messages(path, ["/cam0/image_raw", "/cam0/camera_info"]))
    images = [m for m in messages if m.topic == "/cam0/image_raw"]
    info = next(m.message for m in messages if m.topic == "/cam0/camera_info")
    np.testing.assert_array_equal(np.asarray(info.k).reshape(3, 3), K)
    for frame, m in zip(frames, images):
        np.testing.assert_array_equal(bags.message_image(m.message), frame)
        again = bags.typestore().deserialize_cdr(m.raw, m.msgtype)  # raw is ROS 2 CDR
        np.testing.assert_array_equal(bags.message_image(again), frame)
        assert bags.stamp_ns(again) == bags.stamp_ns(m.message)
    out_bag = tmp_path / "out"
    code = bag_eval.main([str(path), "--image-topic", "/cam0/image_raw", "--weights", random_weights, "--quiet",
                          "--output", str(tmp_path / "report"), "--output-bag", str(out_bag)])
    assert code == 0
    summary = __import__("json").loads((tmp_path / "report" / "summary.json").read_text())
    assert summary["frames"] == 4 and summary["topics"]["camera_info"] == "/cam0/camera_info"
    copied = [m.message for m in bags.read_messages(out_bag, ["/cam0/image_raw"])]
    assert [bags.stamp_ns(m) for m in copied] == [bags.stamp_ns(m.message) for m in images]
    np.testing.assert_array_equal(bags.message_image(copied[-1]), frames[-1])
